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

    /// Commits `response` at once when there is nothing to wait for (a whole response),
    /// and otherwise starts waiting as [`commit`](Commit::commit) does.
    ///
    /// A caller on the hot path uses this to skip creating and polling a future for the
    /// common case. The default always waits; a policy that can decide without waiting
    /// overrides it, with the same outcome as awaiting [`commit`](Commit::commit).
    fn commit_now(&self, response: T) -> Commitment<T, Self::Error, Self::Future> {
        Commitment::Later(self.commit(response))
    }
}

/// What [`Commit::commit_now`] decided.
#[derive(Debug)]
pub enum Commitment<T, E, F> {
    /// Decided at once: the committed response, or the error that broke it.
    Now(Result<T, E>),
    /// Not yet: the future resolves once the response commits.
    Later(F),
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

    fn commit_now(&self, response: T) -> Commitment<T, Infallible, Self::Future> {
        Commitment::Now(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for every response, deciding nothing at once (the trait's default).
    struct Waits;

    impl Commit<u32> for Waits {
        type Error = Infallible;
        type Future = Ready<Result<u32, Infallible>>;

        fn commit(&self, response: u32) -> Self::Future {
            ready(Ok(response))
        }
    }

    #[test]
    fn immediate_commits_now_and_the_default_waits() {
        assert!(matches!(
            Commit::<u32>::commit_now(&Immediate, 7),
            Commitment::Now(Ok(7))
        ));
        assert!(matches!(Waits.commit_now(7), Commitment::Later(_)));
    }
}
