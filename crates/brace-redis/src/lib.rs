//! A Redis [`StateStore`](brace_failover::StateStore) for brace: replicas of an application
//! behind a load balancer share, through one Redis,
//!
//! - **circuit transitions**: when one replica opens a provider's circuit, the others open
//!   theirs for the remaining wait (pub/sub: milliseconds on a local network); forced
//!   states (an admin's `force_open`, `disable`, …) and closes are shared the same way.
//!   Failure counts stay per replica; only transitions travel.
//! - **one probe lease per provider**: when the wait is over, a replica takes the lease
//!   (`SET NX PX`) before its breaker goes half-open; the others keep the circuit open until
//!   the holder's outcome arrives (closed, or open with a new wait) or the lease lapses
//!   ([`RedisConfig::probe_lease`]), so N replicas send one trial, not N.
//! - **the pinned degradation level**: a pin or release on one replica applies to all
//!   (the automatic level stays each replica's own).
//! - **a response-cache tier**: entries under the same key and TTL as the in-process cache,
//!   so an answer cached by one replica serves the others at the cached level.
//! - **outbound rate limits**: the providers' RPM/TPM windows, reserved atomically by a Lua
//!   script on Redis's clock (see [`brace_failover::quota`] for the batching and what it
//!   costs in accuracy).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use brace_failover::ProviderRegistry;
//! use brace_redis::{RedisConfig, RedisStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379").key_prefix("myapp:"))?;
//! // Every circuit attached to this registry is shared with the other replicas.
//! let registry = ProviderRegistry::new().with_store(Arc::new(store));
//! # let _ = registry;
//! # Ok(())
//! # }
//! ```
//!
//! # The hot path never waits on Redis
//!
//! A call's admission reads the local breaker, which a background task keeps in step with
//! the channel; every write (a transition, a pin, a cache entry, a charge) goes through a
//! bounded queue to a writer task. Only two reads are awaited, both bounded by
//! [`RedisConfig::timeout`] (50 ms by default): a cache lookup after a local miss at a
//! cached level, and a rate limit's refill when its local allowance is empty.
//!
//! # Fail open
//!
//! When Redis is down or hangs (a health `PING` every [`RedisConfig::health_interval`]
//! bounds how long that goes unnoticed), the store says so
//! ([`StateStore::is_up`](brace_failover::StateStore::is_up) is `false`; a gateway exports
//! it as `brace_state_store_up`), logs one line for the outage, and every replica runs on
//! local state: breakers decide alone (no lease is asked for), the cache is the in-process
//! one, and each replica counts the rate limits alone. No request fails because of Redis.
//! It reconnects with a growing delay (up to 2 s) and then resynchronises: it reads the
//! shared circuit states and pin (an open keeps its remaining wait as its key's time to
//! live) and shares what it decided alone meanwhile (an open circuit with its remaining
//! wait, a forced state, a pin made during the outage).
//!
//! # Keys
//!
//! Under [`RedisConfig::key_prefix`] (`brace:` by default): `circuit:{provider}`,
//! `lease:{provider}`, `pin:level`, `cache:{blake3 hex}`,
//! `quota:{provider}:{requests_per_minute|tokens_per_minute}`, and the pub/sub channel
//! `events`. One Redis (or a primary with replicas) is assumed; Redis Cluster is not
//! supported (the keys are not hash-tagged).
//!
//! # Why the `redis` crate
//!
//! `redis` (redis-rs, 1.x) is the most used Redis client in Rust, maintained by the Redis
//! company's client team with a stable 1.x line; its `ConnectionManager` reconnects by
//! itself, its `Script` loads Lua by hash, and its `aio::PubSub` gives a plain stream of
//! messages. `fred` is also good (built-in reconnection and pub/sub), but it is one
//! maintainer's project and larger than what this store needs.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod circuit;
mod config;
mod error;
mod store;

pub use self::config::{RedisConfig, RedisUrl};
pub use self::error::ConnectError;
pub use self::store::RedisStore;
