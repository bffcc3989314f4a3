//! Run with: `cargo run --example axum_compose`
//!
//! Compose brace into your own axum app: a `POST /ask` route (`{"question": "..."}` →
//! `{"answer", "provider", "model"}`) whose handler calls a boxed tower stack — failover over
//! two simulated providers, each behind its own circuit breaker and retry — and turns the
//! stack's errors into HTTP answers with `brace_gateway::gateway_status` (503 when every
//! provider failed, 429 with `Retry-After` when every provider is rate-limited, …).
//!
//! It listens on `127.0.0.1:3000`, or on the address in `BRACE_EXAMPLE_LISTEN`. With
//! `--check` (`cargo run --example axum_compose -- --check`, as CI runs it) it listens on a
//! free loopback port, asks itself one question over HTTP, prints the answer and stops.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use brace::BoxError;
use brace::circuit::CircuitBreakerLayer;
use brace::failover::{FailoverService, Provider};
use brace::llm::guard::StreamGuardLayer;
use brace::llm::{ChatRequest, ChatResponse, LlmClassifier, LlmError, LlmErrorKind, Message};
use brace::retry::{Backoff, RetryLayer};
use brace::sim::{Behavior, SimConfig, SimProvider};

/// The whole resilient stack, boxed: cheap to clone, `Send + Sync`, usable as axum state.
pub(crate) type Llm = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

/// The app with its default providers: a primary that fails one call in five (seeded, so
/// runs repeat) and a steady fallback.
pub(crate) fn app() -> Router {
    let primary = SimProvider::new(SimConfig::new("primary").with_seed(7).with_behavior(
        Behavior::flaky(0.2, Behavior::fail(LlmErrorKind::Overloaded)),
    ));
    let fallback = SimProvider::new(SimConfig::new("fallback"));
    router(stack(primary, fallback))
}

/// The routes, over any stack.
pub(crate) fn router(llm: Llm) -> Router {
    Router::new().route("/ask", post(ask)).with_state(llm)
}

/// Failover over `primary` then `fallback`, each behind a breaker, a retry and the stream
/// guard.
pub(crate) fn stack(primary: SimProvider, fallback: SimProvider) -> Llm {
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("primary", protect("primary", primary)).priority(0))
        .provider(Provider::new("fallback", protect("fallback", fallback)).priority(1))
        .build()
        .expect("two providers with distinct names");
    BoxCloneSyncService::new(failover)
}

fn protect<S>(name: &str, provider: S) -> Llm
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let breaker = CircuitBreakerLayer::builder(name)
        .consecutive_failures(5)
        .wait_in_open(Duration::from_secs(10))
        .classifier(LlmClassifier::new())
        .build()
        .expect("valid breaker settings");
    let retry = RetryLayer::builder()
        .classifier(LlmClassifier::new())
        .max_retries(1)
        .backoff(Backoff::full_jitter(
            Duration::from_millis(50),
            2.0,
            Duration::from_secs(1),
        ))
        .max_retry_after(Duration::from_secs(2))
        .build();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(breaker)
            .layer(retry)
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
            .layer(StreamGuardLayer::new().first_token_timeout(Duration::from_secs(10)))
            .service(provider),
    )
}

#[derive(Debug, Deserialize)]
struct AskRequest {
    question: String,
}

#[derive(Debug, Serialize)]
struct AskResponse {
    answer: String,
    provider: String,
    model: String,
}

async fn ask(
    State(llm): State<Llm>,
    Json(ask): Json<AskRequest>,
) -> Result<Json<AskResponse>, AskError> {
    let request = ChatRequest::new("sim-small", vec![Message::user(ask.question)]);
    let response = llm.oneshot(request).await.map_err(AskError)?;
    let provider = response.meta.provider.to_string();
    let model = response.meta.model.clone();
    let completion = response
        .into_completion()
        .await
        .map_err(|err| AskError(err.into()))?;
    Ok(Json(AskResponse {
        answer: completion.text(),
        provider,
        model,
    }))
}

/// A failure of the stack, answered with the status and `Retry-After` brace's gateway uses.
#[derive(Debug)]
struct AskError(BoxError);

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for AskError {
    fn into_response(self) -> Response {
        let (status, retry_after) = brace_gateway::gateway_status(&*self.0);
        let body = ErrorBody {
            error: self.0.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up: never tell a client to come back too early.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|arg| arg == "--check") {
        return check().await;
    }
    let listen =
        std::env::var("BRACE_EXAMPLE_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}; try:");
    println!(
        "  curl -s http://{addr}/ask -H 'content-type: application/json' -d '{{\"question\":\"What is brace?\"}}'"
    );
    axum::serve(listener, app()).await?;
    Ok(())
}

/// Serves on a free loopback port, asks one question over a real socket, and stops.
async fn check() -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app()).await });
    brace::providers::install_crypto_provider();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/ask"))
        .json(&serde_json::json!({"question": "What is brace?"}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    server.abort();
    println!("POST /ask → {status}: {body}");
    if status != reqwest::StatusCode::OK || body["answer"].as_str().is_none_or(str::is_empty) {
        return Err(format!("unexpected answer: {status} {body}").into());
    }
    println!("ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn ask_answers_with_the_provider_and_model_that_served_it() {
        let response = super::app()
            .oneshot(
                Request::post("/ask")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"question":"What is brace?"}"#))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["answer"].as_str().is_some_and(|a| !a.is_empty()),
            "{json}"
        );
        assert!(
            matches!(json["provider"].as_str(), Some("primary" | "fallback")),
            "{json}"
        );
        assert_eq!(json["model"], "sim-small");
    }
}
