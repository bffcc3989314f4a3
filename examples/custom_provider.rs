//! Run with: `cargo run --example custom_provider`
//!
//! Wrap your own provider: an in-house model server (here a stand-in that answers from a
//! function) becomes a `tower::Service<ChatRequest>`, gets brace's circuit breaker, retry and
//! stream guard, and sits in a `FailoverService` in front of a simulated fallback. When the
//! in-house model goes down the fallback answers, the breaker opens and stops calling it;
//! when it comes back, one trial call closes the breaker again.
//!
//! The whole run takes a few tens of milliseconds: every wait is short and bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brace::BoxError;
use brace::circuit::{CircuitBreakerLayer, CircuitHandle};
use brace::failover::{FailoverService, Provider};
use brace::llm::guard::StreamGuardLayer;
use brace::llm::{
    ChatCompletion, ChatRequest, ChatResponse, ChatStream, FinishReason, LlmClassifier, LlmError,
    LlmErrorKind, Message,
};
use brace::retry::{Backoff, RetryLayer};
use brace::sim::{Behavior, SimConfig, SimProvider};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

// ===== the provider you already have =====

/// A stand-in for an in-house model server: it answers from a function, and `down` makes
/// every call fail the way an overloaded server does (503).
#[derive(Debug, Clone)]
struct InHouseModel {
    name: Arc<str>,
    answer: fn(&str) -> String,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl InHouseModel {
    fn new(name: &str, answer: fn(&str) -> String) -> Self {
        Self {
            name: name.into(),
            answer,
            down: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn answer(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            // Say what kind of failure it is: brace's classifier decides from the kind
            // whether to retry, count it against the circuit and fail over.
            return Err(
                LlmError::new(LlmErrorKind::Overloaded, "model server is down")
                    .with_status(503)
                    .with_provider(self.name.clone()),
            );
        }
        let question = request
            .messages
            .last()
            .map(Message::text)
            .unwrap_or_default();
        let completion = ChatCompletion::new(
            "inhouse-1",
            request.model.clone(),
            (self.answer)(&question),
            FinishReason::Stop,
        );
        Ok(if request.is_stream() {
            // A streamed request gets the same answer as chunks; the stream guard holds the
            // response back until the first content chunk (the commit point).
            let chunks = completion.to_chunks(false).into_iter().map(Ok).collect();
            ChatResponse::stream(
                self.name.clone(),
                completion.model,
                ChatStream::from_items(chunks),
            )
        } else {
            ChatResponse::complete(self.name.clone(), completion)
        })
    }
}

impl Service<ChatRequest> for InHouseModel {
    type Response = ChatResponse;
    type Error = LlmError;
    // It answers at once, so a ready future is enough: no boxing.
    type Future = std::future::Ready<Result<ChatResponse, LlmError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        std::future::ready(self.answer(&request))
    }
}

// ===== brace around it =====

type Protected = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

/// breaker → retry → stream guard → provider, the same order the gateway uses.
fn protect<S>(name: &str, provider: S) -> Result<(Protected, CircuitHandle), BoxError>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let breaker = CircuitBreakerLayer::builder(name)
        .consecutive_failures(2)
        .wait_in_open(Duration::from_millis(30))
        .classifier(LlmClassifier::new())
        .build()?;
    let circuit = breaker.handle();
    let retry = RetryLayer::builder()
        .classifier(LlmClassifier::new())
        .max_retries(1)
        .backoff(Backoff::constant(Duration::from_millis(2)))
        .no_budget()
        .build();
    let guard = StreamGuardLayer::new()
        .first_token_timeout(Duration::from_millis(200))
        .total_timeout(Duration::from_secs(1));
    let stack = ServiceBuilder::new()
        .layer(breaker)
        .layer(retry)
        .layer(guard)
        .service(provider);
    Ok((BoxCloneSyncService::new(stack), circuit))
}

async fn ask(llm: &FailoverService<Protected, LlmClassifier>, question: &str, stream: bool) {
    let request = ChatRequest::new("inhouse-7b", vec![Message::user(question)]).with_stream(stream);
    let call = async {
        let response = llm.clone().oneshot(request).await?;
        let provider = response.meta.provider.clone();
        let completion = response.into_completion().await?;
        Ok::<_, BoxError>((provider, completion.text()))
    };
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(Ok((provider, text))) => println!("  {provider:>12} answered: {text}"),
        Ok(Err(err)) => println!("  failed: {err}"),
        Err(_) => println!("  failed: no answer within 1s"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let inhouse = InHouseModel::new("inhouse", |question| {
        format!(
            "(in-house) you asked {} characters",
            question.chars().count()
        )
    });
    let fallback = SimProvider::new(
        SimConfig::new("sim-fallback").with_behavior(Behavior::text("(fallback) still here")),
    );

    let (primary, circuit) = protect("inhouse", inhouse.clone())?;
    let (secondary, fallback_circuit) = protect("sim-fallback", fallback.clone())?;
    // Each provider's circuit breaker alone decides when to stop calling it.
    let llm = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(
            Provider::new("inhouse", primary)
                .priority(0)
                .circuit(circuit.clone()),
        )
        .provider(
            Provider::new("sim-fallback", secondary)
                .priority(1)
                .circuit(fallback_circuit),
        )
        .build()?;

    println!("in-house model up:");
    ask(&llm, "What is brace?", false).await;
    ask(&llm, "And streamed?", true).await;
    println!("  circuit: {:?}", circuit.state());

    println!("in-house model down:");
    inhouse.down.store(true, Ordering::Relaxed);
    for i in 1..=3 {
        let before = inhouse.calls.load(Ordering::Relaxed);
        ask(&llm, &format!("Question {i}"), false).await;
        println!(
            "  circuit: {:?}, calls to the in-house model: {}",
            circuit.state(),
            inhouse.calls.load(Ordering::Relaxed) - before
        );
    }

    println!("in-house model back; after the open wait one trial call closes the circuit:");
    inhouse.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(40)).await;
    ask(&llm, "Are you back?", false).await;
    println!("  circuit: {:?}", circuit.state());
    println!(
        "calls: in-house {}, fallback {}",
        inhouse.calls.load(Ordering::Relaxed),
        fallback.handle().calls()
    );
    Ok(())
}
