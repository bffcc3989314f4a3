//! Later passes down the ladder cost nothing they cannot win, the trail of every pass is
//! kept, and a deadline about to pass is met with a cached or static answer.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brace_core::exclude::Excluded;
use brace_core::{AllProvidersFailed, BoxError, Classify, DeadlineExceeded, FailureClass, Outcome};
use brace_degrade::{DegradeConfig, DegradeLayer, Ladder, Level};
use brace_failover::{FailoverService, Provider};
use support::{Req, Resp, Shape};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

/// A provider error of a given class.
#[derive(Debug)]
struct Upstream(FailureClass);

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream {}", self.0)
    }
}

impl std::error::Error for Upstream {}

/// Classifies `Upstream` errors by their class, and brace's own errors by brace-core.
#[derive(Debug, Clone, Copy)]
struct ByClass;

impl<T> Classify<T, BoxError> for ByClass {
    fn classify(&self, result: Result<&T, &BoxError>) -> Outcome {
        let Err(err) = result else {
            return Outcome::success();
        };
        brace_core::classify::classify_error_with(&**err, &|err| {
            let upstream = err.downcast_ref::<Upstream>()?;
            Some(Outcome::transient().with_class(upstream.0))
        })
        .unwrap_or_else(Outcome::transient)
    }
}

/// full (unchanged) → reduced (`max_tokens` capped at 1024, same model) → cached → offline.
fn ladder() -> Ladder<Shape> {
    Ladder::new(vec![
        Level::live("full", Shape::unchanged()),
        Level::live(
            "reduced",
            Shape {
                max_tokens: Some(1024),
                ..Shape::unchanged()
            },
        ),
        Level::cached("cached"),
        Level::fixed("offline", "limited service"),
    ])
    .unwrap()
}

fn layer(fallback_to_static: bool) -> DegradeLayer<Req, ByClass> {
    DegradeLayer::<Req>::builder()
        .config(DegradeConfig {
            levels: Some(ladder().levels().to_vec()),
            fallback_to_static,
            ..DegradeConfig::default()
        })
        .classifier(ByClass)
        .build()
        .unwrap()
}

/// A provider that fails every call with `class`, counting calls.
fn failing(
    class: FailureClass,
    calls: &Arc<AtomicUsize>,
) -> tower::util::BoxCloneSyncService<Req, Resp, BoxError> {
    let calls = calls.clone();
    tower::util::BoxCloneSyncService::new(service_fn(move |_: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Err::<Resp, BoxError>(Box::new(Upstream(class))) }
    }))
}

fn failover(
    providers: &[(&'static str, FailureClass, &Arc<AtomicUsize>)],
) -> FailoverService<tower::util::BoxCloneSyncService<Req, Resp, BoxError>, ByClass> {
    let mut builder = FailoverService::builder().classifier(ByClass);
    for (priority, (name, class, calls)) in providers.iter().enumerate() {
        builder = builder
            .provider(Provider::new(*name, failing(*class, calls)).priority(priority as u32));
    }
    builder.build().unwrap()
}

fn trail(err: &BoxError) -> Vec<(String, Option<String>, bool)> {
    err.downcast_ref::<AllProvidersFailed>()
        .unwrap_or_else(|| panic!("a trail, not {err}"))
        .failures()
        .iter()
        .map(|f| {
            (
                f.name.to_string(),
                f.pass().map(str::to_owned),
                f.is_skipped(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_lower_level_re_asks_only_providers_whose_failure_it_can_change() {
    let (limited, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let inner = failover(&[
        ("limited", FailureClass::RateLimited, &limited),
        ("busy", FailureClass::Overloaded, &busy),
    ]);
    let err = layer(false)
        .layer(inner)
        .oneshot(Req::new("hi"))
        .await
        .unwrap_err();
    // The overloaded provider is asked again with the smaller request; the rate-limited one
    // is not (a smaller request does not lift a rate limit).
    assert_eq!(
        (limited.load(Ordering::SeqCst), busy.load(Ordering::SeqCst)),
        (1, 2)
    );
    let full = Some("full".to_owned());
    let reduced = Some("reduced".to_owned());
    assert_eq!(
        trail(&err),
        [
            ("limited".to_owned(), full.clone(), false),
            ("busy".to_owned(), full, false),
            // Each pass lists the providers it tried, then the ones it skipped.
            ("busy".to_owned(), reduced.clone(), false),
            ("limited".to_owned(), reduced, true),
        ]
    );
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    let why = all
        .skipped()
        .next()
        .unwrap()
        .error
        .downcast_ref::<Excluded>()
        .unwrap();
    assert_eq!(
        (why.pass(), why.class()),
        ("reduced", FailureClass::RateLimited)
    );
    assert!(
        err.to_string()
            .contains("limited @reduced (skipped): not asked again"),
        "{err}"
    );
}

#[tokio::test]
async fn when_no_failure_can_change_the_lower_level_calls_nobody() {
    let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let inner = failover(&[
        ("a", FailureClass::RateLimited, &a),
        ("b", FailureClass::RateLimited, &b),
    ]);
    let err = layer(false)
        .layer(inner)
        .oneshot(Req::new("hi"))
        .await
        .unwrap_err();
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(trail(&err).len(), 2, "only the first pass: {err}");
    // Every provider rate-limited: the whole error reads as a rate limit.
    let outcome = ByClass.classify(Err::<&(), _>(&err));
    assert_eq!(outcome.class(), FailureClass::RateLimited);
}

#[tokio::test]
async fn a_level_that_would_send_the_same_request_is_skipped() {
    let busy = Arc::new(AtomicUsize::new(0));
    let inner = failover(&[("busy", FailureClass::Overloaded, &busy)]);
    // The caller's max_tokens is already under the reduced level's cap: nothing to reshape.
    let request = Req {
        max_tokens: Some(100),
        ..Req::new("hi")
    };
    let err = layer(false)
        .layer(inner)
        .oneshot(request)
        .await
        .unwrap_err();
    assert_eq!(busy.load(Ordering::SeqCst), 1);
    assert_eq!(trail(&err).len(), 1);
}

/// A provider that answers after `delay`, counting calls.
fn slow(
    delay: Duration,
    calls: &Arc<AtomicUsize>,
) -> impl tower::Service<Req, Response = Resp, Error = BoxError, Future: Send> + Clone + Send {
    let calls = calls.clone();
    service_fn(move |req: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n > 0 {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, BoxError>(Resp::whole(&format!("answer to {}", req.prompt)))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_deadline_about_to_pass_is_met_from_the_cache() {
    let calls = Arc::new(AtomicUsize::new(0));
    // The first call answers at once and fills the cache; later ones take a minute.
    let service = layer(false).layer(slow(Duration::from_mins(1), &calls));
    service.clone().oneshot(Req::new("hi")).await.unwrap();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    let response = brace_core::deadline::within(deadline, service.clone().oneshot(Req::new("hi")))
        .await
        .unwrap();
    assert_eq!(response.level(), "cached");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(1950),
        "50 ms before the deadline"
    );

    // No cached answer for another prompt, and no static fallback: the deadline error.
    let err = brace_core::deadline::within(
        Instant::now() + Duration::from_secs(2),
        brace_core::deadline::DeadlineLayer::new(Duration::from_secs(2))
            .layer(service)
            .oneshot(Req::new("other")),
    )
    .await
    .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_about_to_pass_is_met_by_the_static_level_when_allowed() {
    let calls = Arc::new(AtomicUsize::new(0));
    calls.store(1, Ordering::SeqCst);
    let service = layer(true).layer(slow(Duration::from_mins(1), &calls));
    let started = Instant::now();
    let response = brace_core::deadline::within(
        started + Duration::from_secs(3),
        service.oneshot(Req::new("never cached")),
    )
    .await
    .unwrap();
    assert_eq!(response.level(), "offline");
    assert_eq!(response.origin(), brace_core::degrade::Origin::Static);
    assert_eq!(started.elapsed(), Duration::from_millis(2950));
}
