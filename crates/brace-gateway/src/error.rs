//! Errors as the OpenAI API shapes them: `{"error": {"message", "type", "code"}}`.

use std::error::Error;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use brace_core::BoxError;

/// How a gateway answers a failed request: the status, and the `Retry-After` to send.
///
/// - A [`LlmError`](brace_llm::LlmError) (also inside a `RetriesExhausted`) answers with its kind's status
///   (a content-policy refusal: 400, code `content_policy_violation`).
/// - `AllProvidersFailed` answers 429 when every provider was rate-limited (with the shortest
///   Retry-After among them), the status of the caller's own mistake when a provider refused
///   the request itself, and 503 otherwise.
/// - A circuit that is open answers 503 with its remaining wait; a deadline or timeout, 504.
pub fn gateway_status(err: &(dyn Error + 'static)) -> (StatusCode, Option<Duration>) {
    use brace_core::{AllProvidersFailed, CircuitOpen, DeadlineExceeded, RetriesExhausted};

    if let Some(err) = err.downcast_ref::<brace_llm::LlmError>() {
        return (err.gateway_status(), err.retry_after());
    }
    if let Some(exhausted) = err.downcast_ref::<RetriesExhausted>() {
        return gateway_status(exhausted.last_error());
    }
    if let Some(all) = err.downcast_ref::<AllProvidersFailed>() {
        let statuses: Vec<_> = all
            .failures()
            .iter()
            .map(|failure| gateway_status(&*failure.error))
            .collect();
        if !statuses.is_empty()
            && statuses
                .iter()
                .all(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        {
            let shortest = statuses.iter().filter_map(|(_, wait)| *wait).min();
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
        let shortest = statuses.iter().filter_map(|(_, wait)| *wait).min();
        return (StatusCode::SERVICE_UNAVAILABLE, shortest);
    }
    if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        return (StatusCode::SERVICE_UNAVAILABLE, open.retry_after());
    }
    if err.is::<DeadlineExceeded>() || err.is::<tower::timeout::error::Elapsed>() {
        return (StatusCode::GATEWAY_TIMEOUT, None);
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

    /// Maps a failure of the stack to its answer (see [`gateway_status`]).
    pub fn from_stack_error(err: &BoxError) -> Self {
        let err: &(dyn Error + 'static) = &**err;
        let (status, retry_after) = gateway_status(err);
        let code = code_for(err);
        let mut api = Self::new(status, brace_llm::error::redact_secrets(&err.to_string()))
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
    None
}

fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
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
