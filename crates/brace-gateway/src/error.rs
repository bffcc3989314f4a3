//! Errors as the OpenAI API shapes them: `{"error": {"message", "type", "code"}}`.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use brace_core::BoxError;

/// The longest `Retry-After` the gateway ever sends, whatever an upstream said.
pub const MAX_RETRY_AFTER: Duration = Duration::from_hours(24);

/// The `Retry-After` of a request shed because the gateway or a provider is at its limit.
pub const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How a gateway answers a failed request: the status, and the `Retry-After` to send.
///
/// - A [`LlmError`](brace_llm::LlmError) (also inside a `RetriesExhausted`) answers with its kind's status
///   (a content-policy refusal: 400, code `content_policy_violation`).
/// - `AllProvidersFailed` is judged by its whole trail, every pass included: 429 when every
///   provider was rate-limited — tried and answered 429, or skipped because a rate limit
///   opened its circuit, or left out of a later pass for one — with the shortest Retry-After
///   (a circuit's remaining wait counts); the status of the caller's own mistake when a
///   provider refused the request itself; 503 otherwise.
/// - A circuit that is open answers 503 (429 if rate limits opened it) with its remaining
///   wait; a deadline or timeout, 504.
/// - A full bulkhead or load shedder (`tower::load_shed::error::Overloaded`) answers 503 with
///   `Retry-After` [`SHED_RETRY_AFTER`].
pub fn gateway_status(err: &(dyn Error + 'static)) -> (StatusCode, Option<Duration>) {
    use brace_core::exclude::Excluded;
    use brace_core::{
        AllProvidersFailed, CircuitOpen, DeadlineExceeded, FailureClass, RetriesExhausted,
    };

    if let Some(err) = err.downcast_ref::<brace_llm::LlmError>() {
        return (err.gateway_status(), err.retry_after());
    }
    if let Some(exhausted) = err.downcast_ref::<RetriesExhausted>() {
        return gateway_status(exhausted.last_error());
    }
    if let Some(all) = err.downcast_ref::<AllProvidersFailed>() {
        // The whole trail decides: every entry (tried, or skipped for a circuit a rate limit
        // opened, or left out of a later pass for one) rate-limited → 429.
        let statuses: Vec<_> = all
            .failures()
            .iter()
            .map(|failure| gateway_status(&*failure.error))
            .collect();
        let shortest = statuses.iter().filter_map(|(_, wait)| *wait).min();
        if !statuses.is_empty()
            && statuses
                .iter()
                .all(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        {
            return (StatusCode::TOO_MANY_REQUESTS, shortest);
        }
        if let Some((status, _)) = statuses.iter().find(|(status, _)| {
            *status == StatusCode::BAD_REQUEST || *status == StatusCode::NOT_FOUND
        }) && statuses
            .iter()
            .all(|(s, _)| s.is_client_error() || *s == StatusCode::SERVICE_UNAVAILABLE)
        {
            return (*status, None);
        }
        return (StatusCode::SERVICE_UNAVAILABLE, shortest);
    }
    if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        let status = if open.cause() == Some(FailureClass::RateLimited) {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (status, open.retry_after());
    }
    if let Some(excluded) = err.downcast_ref::<Excluded>() {
        let status = if excluded.class() == FailureClass::RateLimited {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (status, None);
    }
    if err.is::<DeadlineExceeded>() || err.is::<tower::timeout::error::Elapsed>() {
        return (StatusCode::GATEWAY_TIMEOUT, None);
    }
    if err.is::<tower::load_shed::error::Overloaded>() {
        return (StatusCode::SERVICE_UNAVAILABLE, Some(SHED_RETRY_AFTER));
    }
    (StatusCode::BAD_GATEWAY, None)
}

/// An error answer: a status, an OpenAI-shaped body, and an optional `Retry-After`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<String>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a status and a message; the type follows the status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: error_type(status),
            code: None,
            retry_after: None,
        }
    }

    /// A 400: the request is malformed or invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Sets the error code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the `Retry-After` to send.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// A 503 for a request shed at a limit: `Retry-After` one second, code `overloaded`.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
            .with_code("overloaded")
            .with_retry_after(Some(SHED_RETRY_AFTER))
    }

    /// Caps the `Retry-After` at `max` (it is always capped at [`MAX_RETRY_AFTER`]).
    #[must_use]
    pub fn clamp_retry_after(mut self, max: Duration) -> Self {
        self.retry_after = self.retry_after.map(|wait| wait.min(max));
        self
    }

    /// The `Retry-After` to send, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after.map(|wait| wait.min(MAX_RETRY_AFTER))
    }

    /// Maps a failure of the stack to its answer (see [`gateway_status`]).
    pub fn from_stack_error(err: &BoxError) -> Self {
        let err: &(dyn Error + 'static) = &**err;
        let (status, retry_after) = gateway_status(err);
        let code = code_for(err);
        let mut api = Self::new(
            status,
            brace_llm::error::redact_secrets(&brace_core::error::report(err)),
        )
        .with_retry_after(retry_after);
        api.code = code;
        api
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
            }
        })
    }
}

fn code_for(err: &(dyn Error + 'static)) -> Option<String> {
    use brace_core::error::find;
    if let Some(llm) = find::<brace_llm::LlmError>(err)
        && !err.is::<brace_core::AllProvidersFailed>()
    {
        // OpenAI's code for a refusal on content grounds, which its SDKs know.
        if llm.kind() == brace_llm::LlmErrorKind::ContentFiltered {
            return Some("content_policy_violation".to_owned());
        }
        return Some(llm.kind().as_str().to_owned());
    }
    if err.is::<brace_core::AllProvidersFailed>() {
        return Some("all_providers_failed".to_owned());
    }
    if find::<brace_core::CircuitOpen>(err).is_some() {
        return Some("circuit_open".to_owned());
    }
    if find::<brace_core::DeadlineExceeded>(err).is_some() {
        return Some("deadline_exceeded".to_owned());
    }
    if find::<tower::load_shed::error::Overloaded>(err).is_some() {
        return Some("overloaded".to_owned());
    }
    None
}

fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 405 | 408 | 413 | 415 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after() {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl Error for ApiError {}

/// Puts every error answer in OpenAI's shape, the framework's own included: a 405 for a
/// wrong method, a rejected query or body, anything answered as plain text. Answers that
/// are already JSON, and successes, pass as they are — without a boxed future or a clone
/// of the routes (a tower layer, not an `axum::middleware::from_fn`); only an answer to
/// reshape is read, in a boxed future of its own.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenAiShapeLayer;

impl<S> tower::Layer<S> for OpenAiShapeLayer {
    type Service = OpenAiShape<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenAiShape { inner }
    }
}

/// The service of [`OpenAiShapeLayer`].
#[derive(Debug, Clone)]
pub(crate) struct OpenAiShape<S> {
    inner: S,
}

impl<S> tower::Service<axum::extract::Request> for OpenAiShape<S>
where
    S: tower::Service<axum::extract::Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = OpenAiShapeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        // Not the URI: a clone shares the connection's read buffer, which the request's
        // future would then hold while it waits (the router's own 405 names the path).
        let method = request.method().clone();
        OpenAiShapeFuture::Inner {
            future: self.inner.call(request),
            asked: Some(method),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`OpenAiShape`].
    #[project = OpenAiShapeProj]
    pub(crate) enum OpenAiShapeFuture<F> {
        Inner {
            #[pin]
            future: F,
            asked: Option<http::Method>,
        },
        Reshaping {
            future: Pin<Box<dyn Future<Output = Response> + Send>>,
        },
    }
}

impl<F, E> Future for OpenAiShapeFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                OpenAiShapeProj::Inner { future, asked } => {
                    let response = ready!(future.poll(cx))?;
                    if !needs_shape(&response) {
                        return Poll::Ready(Ok(response));
                    }
                    let method = asked
                        .take()
                        .expect("OpenAiShapeFuture polled after completion");
                    let future = Box::pin(reshape(response, method));
                    self.set(OpenAiShapeFuture::Reshaping { future });
                }
                OpenAiShapeProj::Reshaping { future } => {
                    return future.as_mut().poll(cx).map(Ok);
                }
            }
        }
    }
}

/// An error answer that is not JSON yet.
fn needs_shape(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    !is_json
}

/// The error answer `response` in OpenAI's shape, its text (if short) as the message.
async fn reshape(response: Response, method: http::Method) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is not worth echoing.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        // The router's routes answer this themselves (with the path); another service's.
        format!("method {method} is not allowed here")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let api = ApiError::new(status, message);
    let mut shaped = api.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (name, value) in &parts.headers {
        shaped.headers_mut().entry(name).or_insert(value.clone());
    }
    shaped
}
