//! Any order, proven: brace's four layers — circuit breaker, retry, degradation ladder,
//! failover — with the per-attempt timeout and the stream guard, stacked in the orders a user
//! meets, over scripted simulated providers on paused time.
//!
//! Each test is one order (outermost first in its name) and asserts what that order means:
//! who retries what, what each breaker counts, what the degradation layer sees. Every layer's
//! classifier is a [`Spy`] around `LlmClassifier`, which records each outcome the layer was
//! asked to judge, so "what X sees" is checked, not assumed. The README's "Stacking" section
//! states the same meanings.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brace::circuit::{CircuitBreakerLayer, CircuitHandle, CircuitState};
use brace::deadline::{DeadlineLayer, TimeoutLayer};
use brace::degrade::{DegradeLayer, Ladder, Origin};
use brace::failover::{FailoverService, Provider};
use brace::llm::commit::FirstContent;
use brace::llm::degrade::Shape;
use brace::llm::guard::StreamGuardLayer;
use brace::llm::{ChatRequest, ChatResponse, LlmClassifier, LlmError, LlmErrorKind, Message};
use brace::retry::{Backoff, RetryLayer};
use brace::sim::{Behavior, Reply, SimConfig, SimProvider, StreamFault};
use brace::{
    AllProvidersFailed, BoxError, CircuitOpen, Classify, DeadlineExceeded, Outcome,
    RetriesExhausted,
};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};

// ===== scripted providers and spied layers =====

type Boxed = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

fn request() -> ChatRequest {
    ChatRequest::new("m", vec![Message::user("hi")])
}

fn sim(name: &str, behavior: Behavior) -> SimProvider {
    SimProvider::new(SimConfig::new(name).with_behavior(behavior))
}

fn calls(sim: &SimProvider) -> u64 {
    sim.handle().calls()
}

/// `LlmClassifier`, recording what it was asked to judge: `ok`, an `LlmError`'s kind, or
/// brace's own errors by name with what they carry.
///
/// It judges one input, `Result<&T, &BoxError>`, and serves every layer in every order: a
/// breaker right over a provider, a retry layer, a degradation layer, a failover service —
/// the one classification seam.
#[derive(Clone, Default)]
struct Spy {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Spy {
    fn new() -> Self {
        Self::default()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// What it saw since the last call, each run of one outcome judged several times in a
    /// row (a layer may judge an error again to decide something else) counted once.
    fn take_distinct(&self) -> Vec<String> {
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap());
        seen.dedup();
        seen
    }

    fn record(&self, what: String) {
        self.seen.lock().unwrap().push(what);
    }
}

fn describe(err: &(dyn Error + 'static)) -> String {
    if let Some(err) = err.downcast_ref::<LlmError>() {
        err.kind().as_str().to_owned()
    } else if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        format!("circuit {} open", open.name())
    } else if let Some(exhausted) = err.downcast_ref::<RetriesExhausted>() {
        format!(
            "{} attempts: {}",
            exhausted.attempts(),
            describe(exhausted.last_error())
        )
    } else if let Some(all) = err.downcast_ref::<AllProvidersFailed>() {
        let each: Vec<String> = all
            .failures()
            .iter()
            .map(|failure| format!("{} {}", failure.name, describe(&*failure.error)))
            .collect();
        format!("all failed [{}]", each.join(", "))
    } else if err.is::<tower::timeout::error::Elapsed>() {
        "elapsed".to_owned()
    } else if err.is::<DeadlineExceeded>() {
        "deadline".to_owned()
    } else {
        format!("other: {err}")
    }
}

impl<T> Classify<T, BoxError> for Spy {
    fn classify(&self, result: Result<&T, &BoxError>) -> Outcome {
        self.record(result.map_or_else(|err| describe(&**err), |_| "ok".to_owned()));
        LlmClassifier::new().classify(result)
    }
}

fn breaker(name: &str, failures: u32, spy: &Spy) -> CircuitBreakerLayer<Spy> {
    CircuitBreakerLayer::builder(name)
        .consecutive_failures(failures)
        .wait_in_open(Duration::from_secs(30))
        .classifier(spy.clone())
        .build()
        .unwrap()
}

fn retry(max_retries: u32, spy: &Spy) -> RetryLayer<Spy> {
    RetryLayer::builder()
        .classifier(spy.clone())
        .max_retries(max_retries)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .no_budget()
        .build()
}

/// The gateway's default ladder for chat requests: `full`, `reduced` (`max_tokens` 1024),
/// `minimal` (256), `cached`, `offline`.
fn llm_ladder() -> Ladder<Shape> {
    Ladder::with_live_levels(Shape::standard_levels()).unwrap()
}

fn failed_calls(handle: &CircuitHandle) -> u64 {
    handle.metrics().failed_calls
}

/// A provider service with its errors boxed, as failover takes it.
fn plain(provider: &SimProvider) -> Boxed {
    Boxed::new(provider.clone().map_err(BoxError::from))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

// ===== 1. retry → breaker → provider =====

/// Retry outside the breaker: the breaker counts every attempt; once it opens, the retry
/// layer gets `CircuitOpen`, which it does not retry (the same breaker would refuse again).
#[tokio::test(start_paused = true)]
async fn retry_over_breaker_counts_every_attempt_and_stops_at_the_open_circuit() {
    let provider = sim("p", Behavior::fail(LlmErrorKind::Overloaded));
    let (breaker_spy, retry_spy) = (Spy::new(), Spy::new());
    let breaker = breaker("p", 2, &breaker_spy);
    let handle = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(retry(3, &retry_spy))
        .layer(breaker)
        .service(provider.clone());

    let start = Instant::now();
    let err = service.clone().oneshot(request()).await.unwrap_err();
    // Two attempts failed and opened the circuit; the third was refused and returned as is.
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(calls(&provider), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(breaker_spy.seen(), strings(&["overloaded", "overloaded"]));
    assert_eq!(
        retry_spy.seen(),
        strings(&["overloaded", "overloaded", "circuit p open"])
    );
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(failed_calls(&handle), 2);

    // While open: refused at once, nothing retried, nothing called.
    let start = Instant::now();
    let err = service.oneshot(request()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls(&provider), 2);
    assert_eq!(handle.metrics().not_permitted_calls, 2);
}

// ===== 2. breaker → retry → provider =====

/// Breaker outside retry: the breaker sees one outcome per call. Failures retried away are
/// invisible to it (a call that succeeded on its retry is a success); a call whose retries
/// ran out is one failure.
#[tokio::test(start_paused = true)]
async fn breaker_over_retry_counts_one_outcome_per_call() {
    let provider = sim(
        "p",
        Behavior::sequence(
            [Behavior::fail(LlmErrorKind::Overloaded)],
            Behavior::succeed(),
        ),
    );
    let (breaker_spy, retry_spy) = (Spy::new(), Spy::new());
    let breaker = breaker("p", 3, &breaker_spy);
    let handle = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(breaker)
        .layer(retry(2, &retry_spy))
        .service(provider.clone());

    service.clone().oneshot(request()).await.unwrap();
    assert_eq!(retry_spy.seen(), strings(&["overloaded", "ok"]));
    assert_eq!(breaker_spy.seen(), strings(&["ok"]));
    assert_eq!(
        (handle.metrics().buffered_calls, failed_calls(&handle)),
        (1, 0)
    );

    provider
        .handle()
        .set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
    for call in 1..=3 {
        let err = service.clone().oneshot(request()).await.unwrap_err();
        assert!(err.is::<RetriesExhausted>(), "{err}");
        assert_eq!(calls(&provider), 2 + call * 3);
        assert_eq!(failed_calls(&handle), call);
    }
    assert_eq!(
        breaker_spy.seen()[1..],
        strings(&["3 attempts: overloaded"; 3])
    );
    assert_eq!(handle.state(), CircuitState::Open);

    // Open: the retry layer inside is not even reached.
    let err = service.oneshot(request()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(calls(&provider), 11);
    assert_eq!(retry_spy.seen().len(), 2 + 9);

    // The provider's own error is still inside the retry layer's.
    let last = err_last_llm(
        &ServiceBuilder::new()
            .layer(retry(2, &Spy::new()))
            .service(sim("q", Behavior::fail(LlmErrorKind::Overloaded)))
            .oneshot(request())
            .await
            .unwrap_err(),
    );
    assert_eq!(last, LlmErrorKind::Overloaded);
}

fn err_last_llm(err: &BoxError) -> LlmErrorKind {
    err.downcast_ref::<RetriesExhausted>()
        .unwrap()
        .last_error()
        .downcast_ref::<LlmError>()
        .unwrap()
        .kind()
}

// ===== 3. failover → [breaker → retry → timeout → stream guard → provider] =====

/// The gateway's order. Each attempt is cut by the per-attempt timeout (a retryable
/// `Elapsed`); the retry layer retries it; the breaker counts the exhausted call once; the
/// failover service moves on, and skips the provider without a call once its circuit opens.
#[tokio::test(start_paused = true)]
async fn failover_over_per_provider_stacks_skips_an_open_circuit_without_a_call() {
    let primary = sim("primary", Behavior::hang());
    let secondary = sim("secondary", Behavior::text("from the secondary"));
    let spies: [Spy; 5] = Default::default();
    let [
        primary_breaker_spy,
        primary_retry_spy,
        secondary_spy,
        secondary_retry_spy,
        failover_spy,
    ] = spies;
    let protect = |name: &str, provider: &SimProvider, breaker_spy: &Spy, retry_spy: &Spy| {
        let breaker = breaker(name, 2, breaker_spy);
        let handle = breaker.handle();
        let stack = ServiceBuilder::new()
            .layer(breaker)
            .layer(retry(1, retry_spy))
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            // The guard's own limit is longer: here the attempt timeout cuts first.
            .layer(StreamGuardLayer::new().first_token_timeout(Duration::from_secs(2)))
            .service(provider.clone());
        (
            Provider::new(name, Boxed::new(stack)).circuit(handle.clone()),
            handle,
        )
    };
    let (first, circuit) = protect(
        "primary",
        &primary,
        &primary_breaker_spy,
        &primary_retry_spy,
    );
    let (second, _) = protect(
        "secondary",
        &secondary,
        &secondary_spy,
        &secondary_retry_spy,
    );
    let failover = FailoverService::builder()
        .classifier(failover_spy.clone())
        .provider(first)
        .provider(second.priority(1))
        .build()
        .unwrap();

    for round in 1..=2 {
        let start = Instant::now();
        let response = failover.clone().oneshot(request()).await.unwrap();
        assert_eq!(&*response.meta.provider, "secondary");
        // Two attempts of 1 s and one backoff of 100 ms, then the secondary at once.
        assert_eq!(start.elapsed(), Duration::from_millis(2100));
        assert_eq!(calls(&primary), 2 * round);
        assert_eq!(failed_calls(&circuit), round);
    }
    assert_eq!(primary_retry_spy.seen(), strings(&["elapsed"; 4]));
    assert_eq!(
        primary_breaker_spy.seen(),
        strings(&["2 attempts: elapsed"; 2])
    );
    assert_eq!(circuit.state(), CircuitState::Open);

    // Open: skipped without a call, and the failover classifier is not even asked about it.
    let start = Instant::now();
    let response = failover.clone().oneshot(request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "secondary");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls(&primary), 4);
    assert_eq!(
        failover_spy.seen(),
        strings(&[
            "2 attempts: elapsed",
            "ok",
            "2 attempts: elapsed",
            "ok",
            "ok"
        ])
    );

    // Everyone down: the trail names the skipped primary and the secondary's last error.
    secondary
        .handle()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    let err = failover.oneshot(request()).await.unwrap_err();
    assert_eq!(
        describe(&*err),
        "all failed [secondary 2 attempts: server_error, primary circuit primary open]"
    );
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(all.skipped().count(), 1);
    assert_eq!(calls(&primary), 4);
    assert_eq!(calls(&secondary), 3 + 2);
}

// ===== 4. retry → failover → providers =====

/// Retry outside failover repeats the whole pass over the providers, and only when every
/// provider's failure was retryable, after the shortest Retry-After among them.
#[tokio::test(start_paused = true)]
async fn retry_over_failover_repeats_the_pass_after_the_shortest_retry_after() {
    let a = sim(
        "a",
        Behavior::sequence(
            [Behavior::rate_limited(Duration::from_secs(4))],
            Behavior::text("from a"),
        ),
    );
    let b = sim("b", Behavior::rate_limited(Duration::from_secs(2)));
    let retry_spy = Spy::new();
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("a", plain(&a)))
        .provider(Provider::new("b", plain(&b)).priority(1))
        .build()
        .unwrap();
    let service = retry(2, &retry_spy).layer(failover);

    let start = Instant::now();
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "a");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!((calls(&a), calls(&b)), (2, 1));
    assert_eq!(
        retry_spy.seen(),
        strings(&["all failed [a rate_limited, b rate_limited]", "ok"])
    );

    // One failure that a retry cannot fix (a refused key) makes the pass final.
    let a = sim("a", Behavior::fail(LlmErrorKind::Auth));
    let b = sim("b", Behavior::fail(LlmErrorKind::Overloaded));
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("a", plain(&a)))
        .provider(Provider::new("b", plain(&b)).priority(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry(2, &Spy::new())
        .layer(failover)
        .oneshot(request())
        .await
        .unwrap_err();
    assert!(err.is::<AllProvidersFailed>(), "{err}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!((calls(&a), calls(&b)), (1, 1));
}

// ===== 5. degrade → failover → providers =====

/// The degradation layer over failover sees the whole trail of a failed pass. The next level
/// re-asks only the providers whose failure a reshaped request can change (an overloaded
/// one, not a rate-limited one); with nobody left it answers from its static level.
#[tokio::test(start_paused = true)]
async fn degrade_over_failover_reasks_only_providers_a_smaller_request_can_help() {
    let limited = sim("limited", Behavior::rate_limited(Duration::from_secs(10)));
    let busy = sim(
        "busy",
        Behavior::sequence(
            [Behavior::fail(LlmErrorKind::Overloaded)],
            Behavior::text("smaller answer"),
        ),
    );
    let degrade_spy = Spy::new();
    let stack = |limited: &SimProvider, busy: &SimProvider| {
        let failover = FailoverService::builder()
            .classifier(LlmClassifier::new())
            .provider(Provider::new("limited", plain(limited)))
            .provider(Provider::new("busy", plain(busy)).priority(1))
            .build()
            .unwrap();
        let layer = DegradeLayer::<ChatRequest>::builder()
            .ladder(llm_ladder())
            .classifier(degrade_spy.clone())
            .build()
            .unwrap();
        (layer.handle(), layer.layer(failover))
    };
    let (_, service) = stack(&limited, &busy);

    let response = service.oneshot(request()).await.unwrap();
    let degradation = response.meta.degradation.clone().unwrap();
    assert_eq!(&*degradation.level, "reduced");
    assert_eq!(degradation.origin, Origin::Live);
    assert_eq!(degradation.reshaped.max_tokens, Some(1024));
    assert_eq!(&*response.meta.provider, "busy");
    // The rate-limited provider was not asked again; the overloaded one got the smaller request.
    assert_eq!((calls(&limited), calls(&busy)), (1, 2));
    assert_eq!(busy.handle().last_request().unwrap().max_tokens, Some(1024));
    // It judged the pass's trail, then each provider's entry to choose whom the next pass
    // asks, then the answer.
    assert_eq!(
        degrade_spy.take_distinct(),
        strings(&[
            "all failed [limited rate_limited, busy overloaded]",
            "rate_limited",
            "overloaded",
            "ok"
        ])
    );

    // Failures no reshape changes: no later live pass, the static level answers.
    let limited = sim("limited", Behavior::rate_limited(Duration::from_secs(10)));
    let refused = sim("busy", Behavior::fail(LlmErrorKind::Auth));
    let (_, service) = stack(&limited, &refused);
    let response = service.oneshot(request()).await.unwrap();
    let degradation = response.meta.degradation.clone().unwrap();
    assert_eq!(
        (&*degradation.level, degradation.origin),
        ("offline", Origin::Static)
    );
    assert_eq!((calls(&limited), calls(&refused)), (1, 1));
}

// ===== 6. breaker → failover → [breaker → provider] =====

/// One breaker over the whole failover group counts a request whose every provider failed
/// as one failure, and does not count again a refusal made of the providers' open circuits
/// (their own breakers counted those failures already).
#[tokio::test(start_paused = true)]
async fn breaker_over_failover_counts_the_group_once_and_not_open_circuits() {
    let a = sim("a", Behavior::fail(LlmErrorKind::Overloaded));
    let b = sim("b", Behavior::fail(LlmErrorKind::Server));
    let inner = |name: &str, provider: &SimProvider| {
        let breaker = breaker(name, 1, &Spy::new());
        let handle = breaker.handle();
        Provider::new(name, Boxed::new(breaker.layer(provider.clone()))).circuit(handle)
    };
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(inner("a", &a))
        .provider(inner("b", &b).priority(1))
        .build()
        .unwrap();
    let group_spy = Spy::new();
    let group = breaker("group", 2, &group_spy);
    let handle = group.handle();
    let service = group.layer(failover);

    let err = service.clone().oneshot(request()).await.unwrap_err();
    assert!(err.is::<AllProvidersFailed>());
    assert_eq!(failed_calls(&handle), 1);

    // Both inner circuits are open: refused without a call, ignored by the group's breaker.
    let err = service.clone().oneshot(request()).await.unwrap_err();
    assert!(
        err.downcast_ref::<AllProvidersFailed>()
            .unwrap()
            .none_tried()
    );
    assert_eq!((calls(&a), calls(&b)), (1, 1));
    assert_eq!(failed_calls(&handle), 1);
    assert_eq!(handle.state(), CircuitState::Closed);

    // After the inner waits, both trials fail: the group's second failure opens it.
    tokio::time::advance(Duration::from_secs(30)).await;
    service.clone().oneshot(request()).await.unwrap_err();
    assert_eq!((calls(&a), calls(&b)), (2, 2));
    assert_eq!(handle.state(), CircuitState::Open);
    let err = service.oneshot(request()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "group");
    assert_eq!((calls(&a), calls(&b)), (2, 2));
    assert_eq!(
        group_spy.seen(),
        strings(&[
            "all failed [a overloaded, b server_error]",
            "all failed [a circuit a open, b circuit b open]",
            "all failed [a overloaded, b server_error]",
        ])
    );
}

// ===== 7. degrade → retry → breaker → provider =====

/// One provider under a degradation ladder: the ladder sees what the retry layer gave up
/// with. A reshaped request is sent only when it may help (an overload, not a rate limit or
/// an open circuit); otherwise the ladder goes straight to its cached and static levels.
#[tokio::test(start_paused = true)]
async fn degrade_over_retry_over_breaker_reshapes_only_when_it_may_help() {
    let provider = sim(
        "p",
        Behavior::sequence(
            [
                Behavior::fail(LlmErrorKind::Overloaded),
                Behavior::fail(LlmErrorKind::Overloaded),
            ],
            Behavior::succeed(),
        ),
    );
    let (degrade_spy, breaker_spy) = (Spy::new(), Spy::new());
    let breaker = breaker("p", 3, &breaker_spy);
    let circuit = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(
            DegradeLayer::<ChatRequest>::builder()
                .ladder(llm_ladder())
                .classifier(degrade_spy.clone())
                .build()
                .unwrap(),
        )
        .layer(retry(1, &Spy::new()))
        .layer(breaker)
        .service(provider.clone());

    // Overloaded twice at `full`: the retries ran out, the reduced request succeeds.
    let response = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(&*response.meta.degradation.unwrap().level, "reduced");
    assert_eq!(calls(&provider), 3);
    assert_eq!(
        degrade_spy.take_distinct(),
        strings(&["2 attempts: overloaded", "ok"])
    );
    // The breaker below retry saw every attempt.
    assert_eq!(
        breaker_spy.seen(),
        strings(&["overloaded", "overloaded", "ok"])
    );

    // Rate limited: a smaller request would be refused too; static answer after the retry.
    provider
        .handle()
        .set_behavior(Behavior::rate_limited(Duration::from_secs(1)));
    let static_answer = |response: ChatResponse| {
        let degradation = response.meta.degradation.unwrap();
        (degradation.level.to_string(), degradation.origin)
    };
    let start = Instant::now();
    let response = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(
        static_answer(response),
        ("offline".to_owned(), Origin::Static)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(calls(&provider), 5);
    assert_eq!(circuit.state(), CircuitState::Closed);
    assert_eq!(
        degrade_spy.take_distinct(),
        strings(&["2 attempts: rate_limited"])
    );

    // Again: the first attempt is the third failure in a row and opens the circuit; the
    // retry is refused, and the ladder sees the refusal.
    let response = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(static_answer(response).1, Origin::Static);
    assert_eq!(calls(&provider), 6);
    assert_eq!(circuit.state(), CircuitState::Open);
    assert_eq!(degrade_spy.take_distinct(), strings(&["circuit p open"]));

    // Open: a static answer at once, without a call.
    let start = Instant::now();
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(static_answer(response).1, Origin::Static);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls(&provider), 6);
    assert_eq!(degrade_spy.take_distinct(), strings(&["circuit p open"]));
}

// ===== 8. where the timeout goes =====

/// Under retry, the timeout bounds each attempt and a cut attempt is retried; over retry, it
/// bounds the whole call, retries included; under a deadline, each attempt is cut at its own
/// limit or at the deadline, whichever comes first, and the deadline is final.
#[tokio::test(start_paused = true)]
async fn timeout_under_retry_bounds_attempts_and_over_it_bounds_the_call() {
    let hung = sim("p", Behavior::hang());
    let per_attempt = ServiceBuilder::new()
        .layer(retry(2, &Spy::new()))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(hung.clone());
    let start = Instant::now();
    let err = per_attempt.oneshot(request()).await.unwrap_err();
    assert_eq!(describe(&*err), "3 attempts: elapsed");
    assert_eq!(start.elapsed(), Duration::from_millis(3200));
    assert_eq!(calls(&hung), 3);

    let hung = sim("p", Behavior::hang());
    let whole_call = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(retry(2, &Spy::new()))
        .service(hung.clone());
    let start = Instant::now();
    let err = whole_call.oneshot(request()).await.unwrap_err();
    assert_eq!(describe(&*err), "elapsed");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(calls(&hung), 1);

    let hung = sim("p", Behavior::hang());
    let within_deadline = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_millis(2500)))
        .layer(retry(5, &Spy::new()))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(hung.clone());
    let start = Instant::now();
    let err = within_deadline.oneshot(request()).await.unwrap_err();
    // Attempts at 0–1 s and 1.1–2.1 s; the third, from 2.2 s, is cut by the deadline.
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
    assert_eq!(calls(&hung), 3);
}

// ===== 9. where the stream guard goes =====

fn broken_stream() -> Behavior {
    // The role chunk, then the connection breaks: before any content.
    Behavior::reply(Reply::new().with_fault(StreamFault::Break { after: 1 }))
}

fn stream_request() -> ChatRequest {
    request().with_stream(true)
}

/// Under retry and failover, the guard turns a stream that breaks before its first content
/// into an ordinary error: retried, then failed over. Without it, a failover service that
/// commits at once has chosen the provider when the stream starts: the break reaches the
/// caller and nobody else is asked. A failover service that commits at the first content
/// (`FirstContent`) fails over by itself. (The guard speaks `LlmError`: its place is right
/// above a provider client.)
#[tokio::test(start_paused = true)]
async fn stream_guard_below_failover_makes_a_pre_content_break_fail_over() {
    let primary = sim("primary", broken_stream());
    let secondary = sim("secondary", Behavior::text("streamed by the secondary"));
    let guarded = |provider: &SimProvider| {
        Boxed::new(
            ServiceBuilder::new()
                .layer(retry(1, &Spy::new()))
                .layer(StreamGuardLayer::new())
                .service(provider.clone()),
        )
    };
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("primary", guarded(&primary)))
        .provider(Provider::new("secondary", guarded(&secondary)).priority(1))
        .build()
        .unwrap();
    let response = failover.oneshot(stream_request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "secondary");
    assert_eq!(
        response.into_completion().await.unwrap().text(),
        "streamed by the secondary"
    );
    assert_eq!((calls(&primary), calls(&secondary)), (2, 1));

    // No guard below a failover that commits at once: the primary's stream is chosen as soon
    // as it starts, and its break reaches the caller as the stream's error.
    let primary = sim("primary", broken_stream());
    let secondary = sim("secondary", Behavior::succeed());
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("primary", plain(&primary)))
        .provider(Provider::new("secondary", plain(&secondary)).priority(1))
        .build()
        .unwrap();
    let response = failover.oneshot(stream_request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "primary");
    let err = response.into_completion().await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!((calls(&primary), calls(&secondary)), (1, 0));

    // The same failover committing at the first content fails over without a guard.
    let primary = sim("primary", broken_stream());
    let secondary = sim("secondary", Behavior::succeed());
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .commit(FirstContent)
        .provider(Provider::new("primary", plain(&primary)))
        .provider(Provider::new("secondary", plain(&secondary)).priority(1))
        .build()
        .unwrap();
    let response = failover.oneshot(stream_request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "secondary");
    assert_eq!((calls(&primary), calls(&secondary)), (1, 1));
}
