//! Deciding when a response belongs to the service that produced it.
//!
//! A failover service may move a request to another provider while the response is not
//! yet committed. A whole response commits as soon as it arrives; a streamed response commits
//! once its first real piece of content arrives — an error before that is as good as an
//! error from the call itself and can fail over, an error after it reaches the caller
//! inside the stream. [`Commit`] lets a generic layer wait for that point without knowing
//! what a stream is.
//!
//! # Example
//!
//! ```
//! use brace_core::commit::{Commit, Immediate};
//!
//! # futures_executor(async {
//! let committed = Commit::<u32>::commit(&Immediate, 7).await;
//! assert_eq!(committed.unwrap(), 7);
//! # });
//! # fn futures_executor<F: std::future::Future>(f: F) {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     assert!(f.as_mut().poll(&mut cx).is_ready());
//! # }
//! ```

use std::convert::Infallible;
use std::future::{Future, Ready, ready};

/// Waits until a response is committed to the service that produced it.
///
/// The future resolves to the response, ready to hand to the caller (for a stream: with the
/// chunks read so far put back in front), or to the error that broke it before it
/// committed.
///
/// # Cancel safety
///
/// Dropping the future drops the response it holds.
pub trait Commit<T> {
    /// The error that broke a response before it committed.
    type Error;
    /// Resolves once the response is committed.
    type Future: Future<Output = Result<T, Self::Error>>;

    /// Starts waiting for `response` to commit.
    fn commit(&self, response: T) -> Self::Future;
}

/// Every response commits the moment it arrives: what non-streaming services want.
#[derive(Debug, Clone, Copy, Default)]
pub struct Immediate;

impl<T> Commit<T> for Immediate {
    type Error = Infallible;
    type Future = Ready<Result<T, Infallible>>;

    fn commit(&self, response: T) -> Self::Future {
        ready(Ok(response))
    }
}
