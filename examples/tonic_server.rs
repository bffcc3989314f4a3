//! Run with: `cargo run --example tonic_server`
//!
//! Serve brace's stack over gRPC: a `brace.example.Complete` service (tonic + prost; the
//! messages and the route are in `examples/support/complete_grpc.rs`) whose handler sends each
//! prompt through failover over two simulated providers, each behind its circuit breaker,
//! retry and attempt timeout.
//!
//! - The caller's `grpc-timeout` is the call's one deadline inside the stack
//!   (`brace::deadline`): retries, failover and each attempt's timeout keep to it.
//! - A failure of the stack becomes a gRPC status by the gateway's rules
//!   (`brace_gateway::gateway_status`): every provider rate-limited → `RESOURCE_EXHAUSTED`
//!   with `grpc-retry-pushback-ms`, the deadline → `DEADLINE_EXCEEDED`, a request the
//!   providers refuse → `INVALID_ARGUMENT`, anything else → `UNAVAILABLE` naming each
//!   provider's failure.
//!
//! It starts the server on a free loopback port, calls it with a tonic client in each of
//! those situations (the providers scripted for each), prints what happened, checks it, and
//! stops. The whole run takes well under a second.

#[path = "support/complete_grpc.rs"]
#[allow(dead_code)] // each gRPC example uses part of it
mod complete_grpc;

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use brace::BoxError;
use brace::ServiceBuilderExt;
use brace::circuit::CircuitBreakerLayer;
use brace::deadline::TimeoutLayer;
use brace::failover::{FailoverService, Provider};
use brace::llm::{ChatRequest, ChatResponse, LlmClassifier, LlmErrorKind, Message};
use brace::retry::{Backoff, RetryLayer};
use brace::sim::{Behavior, SimConfig, SimProvider};

use complete_grpc::{CompleteClient, CompleteReply, CompleteRequest, CompleteServer};

/// The whole stack, boxed.
pub(crate) type Llm = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

/// How long before the caller's `grpc-timeout` the stack gives up, so that its answer goes
/// out before tonic's own timer cancels the call.
const DEADLINE_RESERVE: Duration = Duration::from_millis(10);

/// Failover over `primary` then `fallback`, each behind a breaker, a retry and an attempt
/// timeout.
pub(crate) fn stack(primary: &SimProvider, fallback: &SimProvider) -> Result<Llm, BoxError> {
    let protect = |name: &str, provider: &SimProvider| -> Result<Provider<Llm>, BoxError> {
        let breaker = CircuitBreakerLayer::builder(name)
            .consecutive_failures(5)
            .classifier(LlmClassifier::new())
            .build()?;
        let circuit = breaker.handle();
        let retry = RetryLayer::builder()
            .classifier(LlmClassifier::new())
            .max_retries(1)
            .backoff(Backoff::constant(Duration::from_millis(5)))
            .max_retry_after(Duration::from_secs(1))
            .build();
        let service = ServiceBuilder::new()
            .circuit_breaker(breaker)
            .retries(retry)
            .layer(TimeoutLayer::new(Duration::from_secs(10)))
            .service(provider.clone());
        Ok(Provider::new(name, Llm::new(service)).circuit(circuit))
    };
    let failover = ServiceBuilder::new().failover(
        FailoverService::builder()
            .classifier(LlmClassifier::new())
            .provider(protect("primary", primary)?)
            .provider(protect("fallback", fallback)?.priority(1)),
    )?;
    Ok(Llm::new(failover))
}

/// The gRPC handler: a tower service from `tonic::Request<CompleteRequest>`, calling `llm`.
pub(crate) fn handler(
    llm: Llm,
) -> impl Service<
    Request<CompleteRequest>,
    Response = Response<CompleteReply>,
    Error = Status,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<CompleteRequest>| complete(llm.clone(), request))
}

async fn complete(
    llm: Llm,
    request: Request<CompleteRequest>,
) -> Result<Response<CompleteReply>, Status> {
    let timeout = grpc_timeout(request.metadata());
    let CompleteRequest { prompt, model } = request.into_inner();
    let model = if model.is_empty() {
        "sim-small".to_owned()
    } else {
        model
    };
    let chat = ChatRequest::new(model, vec![Message::user(prompt)]);
    let call = async {
        let response = llm.oneshot(chat).await?;
        let provider = response.meta.provider.to_string();
        let completion = response.into_completion().await?;
        Ok::<_, BoxError>(CompleteReply {
            text: completion.text(),
            provider,
            model: completion.model,
        })
    };
    let result = match timeout {
        Some(timeout) => {
            let at = Instant::now() + timeout.saturating_sub(DEADLINE_RESERVE);
            brace::deadline::within(at, call).await
        }
        None => call.await,
    };
    result.map(Response::new).map_err(|err| status_of(&err))
}

/// The `grpc-timeout` the caller sent (`<digits><unit>`, unit one of `H M S m u n`).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A failure of the stack as a gRPC status, by the gateway's rules for HTTP statuses.
fn status_of(err: &BoxError) -> Status {
    let (status, retry_after) = brace_gateway::gateway_status(&**err);
    let message = brace::error::report(&**err);
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let mut status = Status::resource_exhausted(message);
            if let Some(wait) = retry_after {
                let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", millis.into());
            }
            status
        }
        StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(message),
        status if status.is_client_error() => Status::invalid_argument(message),
        _ => Status::unavailable(message),
    }
}

/// What one scripted call gave: `Ok((provider, text))` or the status code.
type Outcome = Result<(String, String), (Code, Option<String>)>;

/// Starts the server, runs the scripted calls, stops the server; returns each call's name
/// and outcome.
pub(crate) async fn run() -> Result<Vec<(&'static str, Outcome)>, BoxError> {
    let primary = SimProvider::new(SimConfig::new("primary"));
    let fallback = SimProvider::new(SimConfig::new("fallback"));
    let llm = stack(&primary, &fallback)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(CompleteServer::new(handler(llm)))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = CompleteClient::new(channel);
    let mut ask = async |prompt: &str, timeout: Option<Duration>| -> Outcome {
        let mut request = Request::new(CompleteRequest {
            prompt: prompt.to_owned(),
            model: String::new(),
        });
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        match client.complete(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                Ok((reply.provider, reply.text))
            }
            Err(status) => Err((
                status.code(),
                status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            )),
        }
    };

    let mut results = Vec::new();
    results.push(("both up", ask("What is brace?", None).await));

    primary
        .handle()
        .set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
    results.push(("primary overloaded", ask("Still there?", None).await));

    primary
        .handle()
        .set_behavior(Behavior::rate_limited(Duration::from_secs(20)));
    fallback
        .handle()
        .set_behavior(Behavior::rate_limited(Duration::from_secs(7)));
    results.push(("both rate-limited", ask("Hello?", None).await));

    primary.handle().set_behavior(Behavior::hang());
    fallback.handle().set_behavior(Behavior::hang());
    results.push((
        "both hang, grpc-timeout 200ms",
        ask("Anyone?", Some(Duration::from_millis(200))).await,
    ));

    primary
        .handle()
        .set_behavior(Behavior::fail(LlmErrorKind::BadRequest));
    fallback.handle().set_behavior(Behavior::succeed());
    results.push(("request refused", ask("Malformed?", None).await));

    let _ = stop.send(());
    server.await??;
    Ok(results)
}

/// What each scripted call must give.
pub(crate) fn check(results: &[(&'static str, Outcome)]) -> Result<(), String> {
    type Expect = (&'static str, fn(&Outcome) -> bool);
    let expected: [Expect; 5] = [
        ("both up", |o| matches!(o, Ok((p, _)) if p == "primary")),
        (
            "primary overloaded",
            |o| matches!(o, Ok((p, _)) if p == "fallback"),
        ),
        ("both rate-limited", |o| {
            *o == Err((Code::ResourceExhausted, Some("7000".to_owned())))
        }),
        ("both hang, grpc-timeout 200ms", |o| {
            matches!(o, Err((Code::DeadlineExceeded, _)))
        }),
        ("request refused", |o| {
            matches!(o, Err((Code::InvalidArgument, _)))
        }),
    ];
    for ((name, outcome), (want, ok)) in results.iter().zip(expected) {
        if *name != want || !ok(outcome) {
            return Err(format!("{name}: unexpected {outcome:?}"));
        }
    }
    if results.len() != expected.len() {
        return Err(format!(
            "{} calls, expected {}",
            results.len(),
            expected.len()
        ));
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let results = run().await?;
    for (name, outcome) in &results {
        match outcome {
            Ok((provider, text)) => println!("{name:>30}: {provider} answered: {text}"),
            Err((code, None)) => println!("{name:>30}: {code:?}"),
            Err((code, Some(pushback))) => {
                println!("{name:>30}: {code:?}, grpc-retry-pushback-ms {pushback}");
            }
        }
    }
    check(&results)?;
    println!("ok");
    Ok(())
}
