//! Simulated providers for the failover tests.
#![allow(dead_code, unreachable_pub)]

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brace_core::{BoxError, Classify, Outcome, Verdict};
use parking_lot::Mutex;
use tower::Service;

/// An error a simulated provider returns: an HTTP-like status and an optional Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub retry_after: Option<Duration>,
}

impl Status {
    pub fn new(code: u16) -> Self {
        Self {
            code,
            retry_after: None,
        }
    }

    pub fn rate_limited(secs: u64) -> Self {
        Self {
            code: 429,
            retry_after: Some(Duration::from_secs(secs)),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}", self.code)
    }
}

impl Error for Status {}

/// What an LLM classifier does with statuses: 400 is the caller's, everything else moves on.
pub fn judge_status(err: &(dyn Error + 'static)) -> Option<Outcome> {
    let status = err.downcast_ref::<Status>()?;
    Some(match status.code {
        400..=428 | 430..=499 => Outcome::ignored(),
        429 => Outcome::transient().with_retry_after(status.retry_after),
        _ => Outcome::transient(),
    })
}

/// Classifies simulated results: `Ok` succeeds, errors by [`judge_status`] and then by
/// brace-core's rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestClassifier;

impl<T> Classify<T, BoxError> for TestClassifier {
    fn classify(&self, result: Result<&T, &BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(err) => brace_core::classify::classify_error_with(&**err, &judge_status)
                .unwrap_or_else(|| Outcome::transient().with_verdict(Verdict::Failure)),
        }
    }
}

/// One call's script: wait `delay`, then answer.
#[derive(Debug, Clone)]
pub struct Step {
    pub delay: Duration,
    pub result: Result<(), Status>,
}

impl Step {
    pub fn ok() -> Self {
        Self {
            delay: Duration::ZERO,
            result: Ok(()),
        }
    }

    pub fn fail(status: Status) -> Self {
        Self {
            delay: Duration::ZERO,
            result: Err(status),
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Script = Arc<dyn Fn(usize) -> Step + Send + Sync>;

/// A simulated provider: answers each call by its script (given the call's number), logs
/// the calls it receives, and counts calls that were dropped before they finished.
#[derive(Clone)]
pub struct Sim {
    pub name: &'static str,
    script: Arc<Mutex<Script>>,
    pub calls: Arc<AtomicUsize>,
    pub cancelled: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Sim {
    pub fn new(
        name: &'static str,
        log: &Arc<Mutex<Vec<&'static str>>>,
        script: impl Fn(usize) -> Step + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            script: Arc::new(Mutex::new(Arc::new(script))),
            calls: Arc::new(AtomicUsize::new(0)),
            cancelled: Arc::new(AtomicUsize::new(0)),
            log: log.clone(),
        }
    }

    pub fn set_script(&self, script: impl Fn(usize) -> Step + Send + Sync + 'static) {
        *self.script.lock() = Arc::new(script);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

pub fn new_log() -> Arc<Mutex<Vec<&'static str>>> {
    Arc::new(Mutex::new(Vec::new()))
}

struct CancelGuard {
    cancelled: Arc<AtomicUsize>,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl<R> Service<R> for Sim {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log.lock().push(self.name);
        let step = (self.script.lock())(n);
        let name = self.name;
        let guard = CancelGuard {
            cancelled: self.cancelled.clone(),
            armed: true,
        };
        Box::pin(async move {
            let mut guard = guard;
            if !step.delay.is_zero() {
                tokio::time::sleep(step.delay).await;
            }
            guard.armed = false;
            step.result.map(|()| name).map_err(BoxError::from)
        })
    }
}
