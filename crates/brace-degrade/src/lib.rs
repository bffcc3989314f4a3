//! A degradation ladder for tower services: when the full service cannot answer, answer with
//! less rather than not at all — and come back up by itself.
//!
//! [`DegradeLayer`] wraps a service in [`Degrade`], which answers every request at the
//! *current level* of an ordered [`Ladder`]:
//!
//! - **live** levels call the inner service with the request reshaped to the level's shape
//!   (for chat requests: another model, a `max_tokens` cap, features such as tools, streaming,
//!   images or a response format removed — what a shape is and does is the request type's
//!   business, [`Degradable::Shape`]);
//! - **cached** levels answer from a bounded response cache, marked as cached; a miss falls
//!   to the next level;
//! - **static** levels answer with a configured message, never calling the inner service.
//!
//! The default ladder ([`Ladder::standard`]) is `full`, `cached`, `offline`;
//! [`Ladder::with_live_levels`] puts more live levels above the cached and static ones (the
//! gateway's default for chat requests adds `reduced` and `minimal`, from
//! `brace_llm::degrade::Shape::standard_levels`). A request whose level fails is retried once at the next level down; the current
//! level drops after sustained failure and climbs back one level at a time when a probe at the
//! level above succeeds ([`AutoConfig`]). A [`DegradeHandle`] reads, sets, pins and releases
//! the level and reports every change.
//!
//! The layer is generic and knows nothing of LLMs: the request type tells it what a level's
//! shape is, how to reshape itself, write its cache key and make a static answer through
//! [`brace_core::degrade::Degradable`]; `brace_llm` implements it for chat requests.
//!
//! # Caching
//!
//! Successful live responses fill the cache, keyed by the blake3 hash of the canonical form
//! of the request as the caller sent it, before any reshaping (so field order, whitespace,
//! and fields that do not change the answer do not change the key). An answer from a lower
//! level is stored under the caller's request too: served later from the cache, it is
//! marked as cached, and its metadata still names the model that produced it. By default only *deterministic* requests are stored
//! ([`Admit::Deterministic`]: for chat requests, temperature 0 and one choice), since caching
//! a sampled answer would hand every later caller the same draw. A streamed response is
//! stored once it completes, collected while it passes through, and replayed as a stream to
//! callers who ask for one.
//!
//! # Replicas
//!
//! Replicas of a service can share two things through a store (brace-redis keeps them in
//! Redis): a second cache tier behind the in-process one ([`CacheTier`],
//! [`DegradeLayerBuilder::cache_tier`]: same key, same admission rule, same TTL; an answer
//! stored by one replica serves the others at the cached level), and the pinned level
//! ([`DegradeHandle::subscribe_pins`], [`DegradeHandle::apply_remote_pin`]). The automatic
//! level stays each replica's own: it follows the failures that replica sees.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::io;
//!
//! use brace_core::degrade::{Degradable, Degradation, DegradeResponse};
//! use brace_degrade::{DegradeLayer, Ladder, NoShape};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! #[derive(Clone)]
//! struct Ask(String);
//!
//! #[derive(Debug)]
//! struct Answer { text: String, level: String }
//!
//! impl Degradable for Ask {
//!     type Response = Answer;
//!     type Shape = NoShape; // levels do not reshape an `Ask`
//!     type Reshaped = ();
//!     fn reshape(&mut self, _: &NoShape) {}
//!     fn write_cache_key(&self, out: &mut dyn io::Write) -> io::Result<()> {
//!         out.write_all(self.0.as_bytes())
//!     }
//!     fn is_deterministic(&self) -> bool { true }
//!     fn wants_stream(&self) -> bool { false }
//!     fn static_response(&self, message: &str) -> Answer {
//!         Answer { text: message.into(), level: String::new() }
//!     }
//! }
//!
//! impl DegradeResponse<()> for Answer {
//!     type Cached = String;
//!     fn annotate(&mut self, d: &Degradation<()>) { self.level = d.level.to_string(); }
//!     fn tee<F: FnOnce(String) + Send + 'static>(self, fill: F) -> Self {
//!         fill(self.text.clone());
//!         self
//!     }
//!     fn from_cached(text: &String, _stream: bool) -> Self {
//!         Answer { text: text.clone(), level: String::new() }
//!     }
//!     fn cached_size(text: &String) -> usize { text.len() }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = DegradeLayer::<Ask>::new(Ladder::standard());
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new().layer(layer).service_fn(|ask: Ask| async move {
//!     Ok::<_, Infallible>(Answer { text: format!("echo {}", ask.0), level: String::new() })
//! });
//!
//! let answer = svc.ready().await.unwrap().call(Ask("hi".into())).await.unwrap();
//! assert_eq!((answer.text.as_str(), answer.level.as_str()), ("echo hi", "full"));
//!
//! handle.pin("offline").unwrap();
//! let answer = svc.ready().await.unwrap().call(Ask("hi".into())).await.unwrap();
//! assert_eq!(answer.text, "Service temporarily limited");
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod cache;
pub mod config;
pub mod error;
pub mod future;
pub mod handle;
pub mod layer;
pub mod level;
pub mod service;
mod state;

pub use self::cache::{CacheKey, CacheTier, ResponseCache, TierFuture};
pub use self::config::{Admit, AutoConfig, CacheConfig, DegradeConfig};
pub use self::error::{DegradeConfigError, NoLevelAnswered, UnknownLevel};
pub use self::handle::{Cause, DegradeHandle, LevelChange, PinChange};
pub use self::layer::{CachedOf, DegradeLayer, DegradeLayerBuilder};
pub use self::level::{DEFAULT_STATIC_MESSAGE, Ladder, Level, LevelKind, LevelRef, NoShape};
pub use self::service::Degrade;
pub use brace_core::degrade::{Degradable, Degradation, DegradeResponse, Origin, Reshape};
