//! The contract between a degradation layer and the requests it reshapes.
//!
//! brace's degradation layer (`brace-degrade`) is generic: it knows a ladder of levels, a
//! response cache and when to move between levels, but not what a request looks like, nor
//! what a level changes in it. What it needs from a request it asks through [`Degradable`],
//! and from a response through [`DegradeResponse`]:
//!
//! - [`Degradable::Shape`]: what a live level says about a request (for chat requests: a
//!   model, a `max_tokens` cap, the features allowed — `brace_llm::degrade::Shape`), and
//!   [`Degradable::reshape`], which makes the request fit it and says what changed
//!   ([`Degradable::Reshaped`], a [`Reshape`]).
//! - [`Degradable::write_cache_key`]: write a canonical form of the request, which the layer
//!   hashes into a cache key. Two requests that should share a cached answer write the same
//!   bytes.
//! - [`Degradable::is_deterministic`]: whether the request is deterministic enough for its
//!   answer to be cached by default.
//! - [`Degradable::static_response`]: a complete response carrying a fixed message, for the
//!   static level.
//! - [`DegradeResponse::annotate`]: record in the response which level answered it, and how
//!   (live, from cache, static), so no response is silently degraded.
//! - [`DegradeResponse::tee`] / [`DegradeResponse::from_cached`]: hand a finished response
//!   to the cache (a stream once it completes) and rebuild one from it.
//!
//! `brace_llm` implements both traits for its chat types.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What reshaping a request changed, as a degradation level records it in the response.
///
/// `()` is the change of a request type that levels do not reshape.
pub trait Reshape: Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Nothing changed.
    fn nothing() -> Self;

    /// `true` if nothing changed.
    fn is_nothing(&self) -> bool;

    /// `true` if this change sends the request somewhere `previous` did not (another model,
    /// say), so that a failure a smaller request cannot change — a rate limit, a refused
    /// key — may still go differently: the degradation layer then asks again the providers
    /// it would otherwise leave out of a later pass.
    fn retargets(&self, previous: &Self) -> bool;
}

impl Reshape for () {
    fn nothing() -> Self {}

    fn is_nothing(&self) -> bool {
        true
    }

    fn retargets(&self, (): &Self) -> bool {
        false
    }
}

/// Where the answer to a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The inner service answered.
    Live,
    /// The response cache answered.
    Cache,
    /// The static level answered with its configured message.
    Static,
}

impl Origin {
    /// `live`, `cache` or `static`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Cache => "cache",
            Self::Static => "static",
        }
    }
}

/// Which level answered a request and how: what a degradation layer records in every
/// response it returns. `R` is what the level changed in the request
/// ([`Degradable::Reshaped`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Degradation<R> {
    /// The name of the level that answered.
    pub level: Arc<str>,
    /// Its position in the ladder, `0` being the top (full capability).
    pub index: usize,
    /// Where the answer came from.
    pub origin: Origin,
    /// What the level changed in the request (nothing for cache and static answers).
    pub reshaped: R,
}

impl<R: Reshape> Degradation<R> {
    /// `true` if the answer is not what the caller's request would have got at full
    /// capability: a lower level, a reshaped request, a cached or a static answer.
    pub fn is_degraded(&self) -> bool {
        self.index > 0 || self.origin != Origin::Live || !self.reshaped.is_nothing()
    }
}

/// A request that a degradation layer can reshape, cache and answer statically.
pub trait Degradable {
    /// The response the service returns for this request.
    type Response: DegradeResponse<Self::Reshaped>;

    /// What a live level says about the request: how to reshape it (for chat requests, a
    /// model, a `max_tokens` cap and the features allowed). The default shape changes
    /// nothing.
    type Shape: Clone + fmt::Debug + Default + PartialEq + Send + Sync + 'static;

    /// What [`reshape`](Self::reshape) changed, recorded in the response.
    type Reshaped: Reshape;

    /// Makes the request fit `shape` and says what changed (only what really changed: a
    /// feature the shape does not allow and the request did not use is not a change).
    fn reshape(&mut self, shape: &Self::Shape) -> Self::Reshaped;

    /// Records that the request is sent at the level named `level`, below the top of the
    /// ladder (called before [`reshape`](Self::reshape); never for the top level), so that
    /// services below can choose by level — a provider that names its own model for a
    /// level, say. Does nothing by default.
    fn set_level(&mut self, level: &Arc<str>) {
        let _ = level;
    }

    /// Writes the request's canonical form to `out`; the layer hashes it into the cache key.
    ///
    /// Requests that deserve the same answer must write the same bytes, and requests that
    /// do not must write different ones: leave out what does not change the answer (how it
    /// is delivered, who asked), keep everything that does (model, messages, sampling).
    ///
    /// # Errors
    ///
    /// Only those of `out`; a request whose canonical form cannot be written is not cached.
    fn write_cache_key(&self, out: &mut dyn io::Write) -> io::Result<()>;

    /// `true` if the answer depends little enough on chance to be worth caching, e.g. a
    /// temperature of 0. The layer caches only such requests unless configured otherwise.
    fn is_deterministic(&self) -> bool;

    /// `true` if the caller asked for a streamed response (a cached answer is then replayed
    /// as a stream).
    fn wants_stream(&self) -> bool;

    /// A complete, successful response whose content is `message`, as the static level
    /// returns it (in the form the caller asked for, streamed or not).
    fn static_response(&self, message: &str) -> Self::Response;
}

/// A response that a degradation layer can annotate, cache and replay; `R` is what a level
/// changed in the request ([`Degradable::Reshaped`]).
pub trait DegradeResponse<R>: Sized {
    /// What the cache keeps: the whole response, streams collected.
    type Cached: Send + Sync + 'static;

    /// Records which level answered and how.
    fn annotate(&mut self, degradation: &Degradation<R>);

    /// Passes the complete response to `fill` and returns the response unchanged to the
    /// caller. A whole response calls `fill` at once; a stream is teed: its items go on to
    /// the caller and are collected on the way, and `fill` is called when the stream ends
    /// successfully (never if it fails or is dropped early).
    fn tee<F>(self, fill: F) -> Self
    where
        F: FnOnce(Self::Cached) + Send + 'static;

    /// Rebuilds a response from the cache, as a stream if `stream` is `true`.
    fn from_cached(cached: &Self::Cached, stream: bool) -> Self;

    /// Approximately how many bytes `cached` takes, for the cache's byte bound.
    fn cached_size(cached: &Self::Cached) -> usize;
}
