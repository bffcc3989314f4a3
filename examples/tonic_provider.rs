//! Run with: `cargo run --example tonic_provider`
//!
//! A gRPC-backed provider behind brace's circuit breaker and retry. A small model server
//! speaking `brace.example.Complete` (tonic + prost; see `examples/support/complete_grpc.rs`)
//! runs in-process on a loopback port with scripted answers, and a tonic client to it is
//! wrapped in a `CircuitBreakerLayer` and a `RetryLayer` judged by `brace::GrpcClassifier`,
//! reading `tonic::Status` codes:
//!
//! - `UNAVAILABLE` is retried;
//! - `RESOURCE_EXHAUSTED` is retried after the server's `grpc-retry-pushback-ms`;
//! - `INVALID_ARGUMENT` is neither retried nor counted against the circuit (the caller's
//!   mistake);
//! - sustained failures open the circuit, and calls then fail at once.
//!
//! A second breaker sits on the channel itself and judges raw HTTP responses with
//! `GrpcClassifier::over_http()`: a failed gRPC call is an HTTP `200` whose status is in the
//! `grpc-status` header (a trailers-only answer), and it counts it as the failure it is.
//!
//! The run prints each call, checks what each breaker counted, and stops.

#[path = "support/complete_grpc.rs"]
#[allow(dead_code)] // each gRPC example uses part of it
mod complete_grpc;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tower::{Service, ServiceBuilder, ServiceExt};

use brace::circuit::{CircuitBreakerLayer, CircuitHandle, CircuitState};
use brace::retry::{Backoff, RetryLayer};
use brace::{BoxError, CircuitOpen, ServiceBuilderExt};

use complete_grpc::{
    CompleteClient, CompleteReply, CompleteRequest, CompleteServer, grpc_classifier, http_channel,
};

// ===== the model server =====

/// A scripted failure: its code and, if any, the pushback in milliseconds.
type Scripted = (Code, Option<u64>);

/// A model server whose next answers are scripted: a failure code (with a pushback) per call,
/// then an echo of the prompt.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelServer {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    calls: Arc<AtomicUsize>,
}

impl ModelServer {
    /// The next calls fail with these codes (and pushbacks in milliseconds), in order.
    pub(crate) fn fail_next(&self, failures: impl IntoIterator<Item = Scripted>) {
        self.script.lock().unwrap().extend(failures);
    }

    /// Calls served so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn answer(&self, request: &CompleteRequest) -> Result<Response<CompleteReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some((code, pushback)) = self.script.lock().unwrap().pop_front() {
            let mut status = Status::new(code, "scripted failure");
            if let Some(ms) = pushback {
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", ms.into());
            }
            return Err(status);
        }
        Ok(Response::new(CompleteReply {
            text: format!("echo: {}", request.prompt),
            provider: "model-server".to_owned(),
            model: request.model.clone(),
        }))
    }

    fn handler(
        &self,
    ) -> impl Service<
        Request<CompleteRequest>,
        Response = Response<CompleteReply>,
        Error = Status,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        let server = self.clone();
        tower::service_fn(move |request: Request<CompleteRequest>| {
            std::future::ready(server.answer(request.get_ref()))
        })
    }
}

// ===== the scripted run =====

/// What the run saw.
#[derive(Debug)]
pub(crate) struct Report {
    /// Each call: its name, and the reply's text or the error.
    pub(crate) calls: Vec<(&'static str, Result<String, String>)>,
    /// Calls the model server served.
    pub(crate) served: usize,
    /// The provider's breaker (one outcome per call, after retries).
    pub(crate) circuit: CircuitHandle,
    /// The channel's breaker (every HTTP exchange).
    pub(crate) channel_circuit: CircuitHandle,
}

/// Starts the model server, runs the scripted calls through the protected client, stops.
pub(crate) async fn run() -> Result<Report, BoxError> {
    let model = ModelServer::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(CompleteServer::new(model.handler()))
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

    let classifier = grpc_classifier();
    // Judges HTTP exchanges: set high enough that it only counts in this run.
    let channel_breaker = CircuitBreakerLayer::builder("model-server/channel")
        .consecutive_failures(100)
        .classifier(classifier.over_http())
        .build()?;
    let channel_circuit = channel_breaker.handle();
    let client = CompleteClient::over(http_channel(
        ServiceBuilder::new()
            .circuit_breaker(channel_breaker)
            .service(channel),
    ));

    let breaker = CircuitBreakerLayer::builder("model-server")
        .consecutive_failures(2)
        .wait_in_open(Duration::from_secs(30))
        .classifier(classifier)
        .build()?;
    let circuit = breaker.handle();
    let provider = ServiceBuilder::new()
        .circuit_breaker(breaker)
        .retries(
            RetryLayer::builder()
                .classifier(classifier)
                .max_retries(1)
                .backoff(Backoff::constant(Duration::from_millis(5)))
                .no_budget()
                .build(),
        )
        .service(client);

    let ask = |prompt: &str| {
        let request = CompleteRequest {
            prompt: prompt.to_owned(),
            model: "grpc-model".to_owned(),
        };
        let provider = provider.clone();
        async move {
            provider
                .oneshot(request)
                .await
                .map(|reply| reply.text)
                .map_err(|err| describe(&err))
        }
    };

    let mut calls = Vec::new();
    model.fail_next([(Code::Unavailable, None)]);
    calls.push(("UNAVAILABLE once", ask("one").await));
    model.fail_next([(Code::ResourceExhausted, Some(20))]);
    calls.push(("RESOURCE_EXHAUSTED, pushback 20ms", ask("two").await));
    model.fail_next([(Code::InvalidArgument, None)]);
    calls.push(("INVALID_ARGUMENT", ask("three").await));
    model.fail_next([(Code::Unavailable, None); 4]);
    calls.push(("UNAVAILABLE, twice", ask("four").await));
    calls.push(("UNAVAILABLE, twice again", ask("five").await));
    calls.push(("circuit open", ask("six").await));

    let _ = stop.send(());
    server.await??;
    Ok(Report {
        calls,
        served: model.calls(),
        circuit,
        channel_circuit,
    })
}

fn describe(err: &BoxError) -> String {
    if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        return format!("circuit {} open", open.name());
    }
    match brace::error::find::<Status>(&**err) {
        Some(status) => format!("{:?} ({})", status.code(), brace::error::report(&**err)),
        None => brace::error::report(&**err),
    }
}

/// What the run must show.
pub(crate) fn check(report: &Report) -> Result<(), String> {
    let results: Vec<bool> = report
        .calls
        .iter()
        .map(|(_, result)| result.is_ok())
        .collect();
    if results != [true, true, false, false, false, false] {
        return Err(format!("unexpected results: {:?}", report.calls));
    }
    let error = |i: usize| {
        report.calls[i]
            .1
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_default()
    };
    if !error(2).starts_with("InvalidArgument") {
        return Err(format!("INVALID_ARGUMENT came back as {}", error(2)));
    }
    if error(5) != "circuit model-server open" {
        return Err(format!("the open circuit came back as {}", error(5)));
    }
    // 2 + 2 + 1 (not retried) + 2 + 2 (exhausted twice) + 0 (circuit open).
    if report.served != 9 {
        return Err(format!(
            "the server served {} calls, expected 9",
            report.served
        ));
    }
    let metrics = report.circuit.metrics();
    if report.circuit.state() != CircuitState::Open || metrics.failed_calls != 2 {
        return Err(format!("provider breaker: {metrics:?}"));
    }
    // Every failed exchange was an HTTP 200 with `grpc-status`; INVALID_ARGUMENT is ignored.
    let channel = report.channel_circuit.metrics();
    if (channel.failed_calls, channel.buffered_calls) != (6, 8) {
        return Err(format!("channel breaker: {channel:?}"));
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let report = run().await?;
    for (name, result) in &report.calls {
        match result {
            Ok(text) => println!("{name:>34}: answered: {text}"),
            Err(err) => println!("{name:>34}: failed: {err}"),
        }
    }
    let metrics = report.circuit.metrics();
    let channel = report.channel_circuit.metrics();
    println!(
        "served {} calls; provider circuit {:?} ({} failures); channel breaker: {} exchanges, {} failed",
        report.served,
        report.circuit.state(),
        metrics.failed_calls,
        channel.buffered_calls,
        channel.failed_calls,
    );
    check(&report)?;
    println!("ok");
    Ok(())
}
