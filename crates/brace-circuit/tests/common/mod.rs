//! A test service whose every call says how it should end.
#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brace_circuit::{CircuitBreakerBuilder, CircuitBreakerLayer, CircuitHandle};
use brace_core::{BoxError, FailureClass, Outcome};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

/// How a call ends.
#[derive(Debug)]
pub enum Call {
    Ok,
    Fail,
    /// A failure the classifier ignores.
    BadRequest,
    /// Succeeds after the delay.
    Slow(Duration),
    /// Fails after the delay.
    SlowFail(Duration),
    /// A failure of class rate-limited.
    RateLimited,
    /// Ends when the sender says: `true` succeeds, `false` fails.
    Wait(oneshot::Receiver<bool>),
}

#[derive(Debug)]
pub struct TestError(pub &'static str);

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TestError {}

/// Server errors count, bad requests are ignored. Layers judge errors boxed, as they
/// return them.
pub fn classify(result: Result<&(), &BoxError>) -> Outcome {
    match result.map_err(|err| err.downcast_ref::<TestError>()) {
        Ok(()) => Outcome::success(),
        Err(Some(TestError("bad request"))) => Outcome::ignored(),
        Err(Some(TestError("rate limited"))) => {
            Outcome::transient().with_class(FailureClass::RateLimited)
        }
        Err(_) => Outcome::transient().with_class(FailureClass::Server),
    }
}

/// The test classifier's type.
pub type TestClassify = fn(Result<&(), &BoxError>) -> Outcome;

/// `builder`'s layer, judging with [`classify`].
pub fn judged(builder: CircuitBreakerBuilder) -> CircuitBreakerLayer<TestClassify> {
    builder
        .classifier(classify as TestClassify)
        .build()
        .unwrap()
}

pub type Svc = BoxCloneSyncService<Call, (), BoxError>;

/// A breaker from `layer` around the test service, counting calls that reach it.
pub struct Harness {
    pub service: Svc,
    pub handle: CircuitHandle,
    pub inner_calls: Arc<AtomicUsize>,
}

impl Harness {
    /// A breaker from `layer`, built with [`classify`] (see [`judged`]).
    pub fn new(layer: &CircuitBreakerLayer<TestClassify>) -> Self {
        let handle = layer.handle();
        let inner_calls = Arc::new(AtomicUsize::new(0));
        let counter = inner_calls.clone();
        let inner = tower::service_fn(move |call: Call| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match call {
                    Call::Ok => Ok(()),
                    Call::Fail => Err(TestError("server error")),
                    Call::BadRequest => Err(TestError("bad request")),
                    Call::RateLimited => Err(TestError("rate limited")),
                    Call::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        Ok(())
                    }
                    Call::SlowFail(delay) => {
                        tokio::time::sleep(delay).await;
                        Err(TestError("server error"))
                    }
                    Call::Wait(rx) => match rx.await {
                        Ok(true) => Ok(()),
                        _ => Err(TestError("server error")),
                    },
                }
            }
        });
        let service = layer.layer(inner);
        Self {
            service: BoxCloneSyncService::new(service),
            handle,
            inner_calls,
        }
    }

    pub async fn call(&mut self, call: Call) -> Result<(), BoxError> {
        self.service.ready().await?.call(call).await
    }

    /// Sends `n` calls made by `make`.
    pub async fn calls(&mut self, n: usize, make: impl Fn() -> Call) {
        for _ in 0..n {
            let _ = self.call(make()).await;
        }
    }

    pub fn inner_calls(&self) -> usize {
        self.inner_calls.load(Ordering::SeqCst)
    }
}
