//! The contract between a degradation layer and the requests it reshapes.
//!
//! brace's degradation layer (`brace-degrade`) is generic: it knows a ladder of levels, a
//! response cache and when to move between levels, but not what an LLM request looks like.
//! What it needs from a request it asks through [`Degradable`], and from a response through
//! [`DegradeResponse`]:
//!
//! - [`Degradable::reshape`]: make the request fit a level's [`Shape`] (override the model,
//!   cap `max_tokens`, remove features the level does not allow) and say what changed.
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

use std::io;
use std::sync::Arc;

/// Request features a level may allow or remove.
///
/// In configuration every field defaults to allowed: `{ tools: false }` removes tools only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Features {
    /// Tool (function) definitions and tool choice.
    pub tools: bool,
    /// A streamed response.
    pub stream: bool,
    /// Image (vision) inputs.
    pub images: bool,
    /// A requested response format (JSON mode, a JSON schema).
    pub response_format: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self::ALL
    }
}

impl Features {
    /// Every feature.
    pub const ALL: Features = Features {
        tools: true,
        stream: true,
        images: true,
        response_format: true,
    };

    /// No feature.
    pub const NONE: Features = Features {
        tools: false,
        stream: false,
        images: false,
        response_format: false,
    };

    /// `true` if no feature is set.
    pub const fn is_empty(&self) -> bool {
        !(self.tools || self.stream || self.images || self.response_format)
    }

    /// The names of the features that are set, in a fixed order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.tools, "tools"),
            (self.stream, "stream"),
            (self.images, "images"),
            (self.response_format, "response_format"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
    }
}

/// How a live level reshapes a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    /// The model to use instead of the caller's, if any.
    pub model: Option<Arc<str>>,
    /// A cap on the response length: the request gets the smaller of the caller's
    /// `max_tokens` and this (this when the caller set none).
    pub max_tokens: Option<u32>,
    /// The features the level allows; the others are removed from the request.
    pub allow: Features,
}

impl Shape {
    /// A shape that changes nothing.
    pub fn unchanged() -> Self {
        Self::default()
    }

    /// `true` if this shape changes nothing.
    pub fn is_unchanged(&self) -> bool {
        self.model.is_none() && self.max_tokens.is_none() && self.allow == Features::ALL
    }
}

/// What [`Degradable::reshape`] changed in a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reshaped {
    /// The features that the request used and that were removed.
    pub removed: Features,
    /// The model the request was switched to, if it was.
    pub model: Option<Arc<str>>,
    /// The `max_tokens` the request was capped to, if it was lowered or set.
    pub max_tokens: Option<u32>,
}

impl Default for Reshaped {
    fn default() -> Self {
        Self::nothing()
    }
}

impl Reshaped {
    /// Nothing changed.
    pub fn nothing() -> Self {
        Self {
            removed: Features::NONE,
            model: None,
            max_tokens: None,
        }
    }

    /// `true` if nothing changed.
    pub fn is_nothing(&self) -> bool {
        self.removed.is_empty() && self.model.is_none() && self.max_tokens.is_none()
    }

    /// What changed, by name: the removed features (`tools`, `stream`, `images`,
    /// `response_format`), then `model` and `max_tokens` if they were changed.
    pub fn changes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.removed.names().chain(
            [
                (self.model.is_some(), "model"),
                (self.max_tokens.is_some(), "max_tokens"),
            ]
            .into_iter()
            .filter_map(|(changed, name)| changed.then_some(name)),
        )
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
/// response it returns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Degradation {
    /// The name of the level that answered.
    pub level: Arc<str>,
    /// Its position in the ladder, `0` being the top (full capability).
    pub index: usize,
    /// Where the answer came from.
    pub origin: Origin,
    /// What the level changed in the request (nothing for cache and static answers).
    pub reshaped: Reshaped,
}

impl Degradation {
    /// `true` if the answer is not what the caller's request would have got at full
    /// capability: a lower level, a reshaped request, a cached or a static answer.
    pub fn is_degraded(&self) -> bool {
        self.index > 0 || self.origin != Origin::Live || !self.reshaped.is_nothing()
    }
}

/// A request that a degradation layer can reshape, cache and answer statically.
pub trait Degradable {
    /// The response the service returns for this request.
    type Response: DegradeResponse;

    /// Makes the request fit `shape` and says what changed. A feature the shape does not
    /// allow is removed only if the request used it, and only then listed in
    /// [`Reshaped::removed`].
    fn reshape(&mut self, shape: &Shape) -> Reshaped;

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

/// A response that a degradation layer can annotate, cache and replay.
pub trait DegradeResponse: Sized {
    /// What the cache keeps: the whole response, streams collected.
    type Cached: Send + Sync + 'static;

    /// Records which level answered and how.
    fn annotate(&mut self, degradation: &Degradation);

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
