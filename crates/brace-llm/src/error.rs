//! [`LlmError`]: what went wrong with a provider, in terms every layer can act on.
//!
//! [`LlmError::from_response`] reads a provider's error response — status, headers and body,
//! in OpenAI's, Anthropic's or Gemini's shape — into a kind, a message and a retry-after
//! delay. [`LlmClassifier`](crate::LlmClassifier) turns the kind into a brace
//! [`Outcome`](brace_core::Outcome).

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use brace_core::BoxError;

/// What kind of failure an [`LlmError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LlmErrorKind {
    /// Too many requests (429, Gemini's `RESOURCE_EXHAUSTED`); may carry a retry-after.
    RateLimited,
    /// The account's quota or credit is used up (OpenAI's `insufficient_quota`): waiting
    /// will not help, another provider may.
    QuotaExhausted,
    /// The provider is overloaded (503, Anthropic's 529 `overloaded_error`).
    Overloaded,
    /// The provider failed (other 5xx).
    Server,
    /// No answer in time.
    Timeout,
    /// No connection (refused, reset, DNS, TLS).
    Connect,
    /// The provider refused our credentials (401, 403).
    Auth,
    /// The request is malformed or invalid (400, 413, 422): the caller's fault.
    BadRequest,
    /// The conversation is longer than the model's context window.
    ContextLengthExceeded,
    /// The provider's content filter blocked the prompt or the answer.
    ContentFiltered,
    /// The model does not exist at this provider (404).
    ModelNotFound,
    /// The provider's answer could not be understood.
    MalformedResponse,
    /// A stream that had started broke before its end.
    StreamInterrupted,
    /// The call was cancelled.
    Cancelled,
    /// The provider answered with a status no API answers or errors with: 1xx, 3xx
    /// (redirects are never followed — usually a wrong `base_url`, such as `http://` for an
    /// `https://` API) or a non-standard code. It counts against the provider and fails
    /// over, but is not retried (the same request gets the same redirect).
    UnexpectedStatus,
}

impl LlmErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [LlmErrorKind; 15] = [
        Self::RateLimited,
        Self::QuotaExhausted,
        Self::Overloaded,
        Self::Server,
        Self::Timeout,
        Self::Connect,
        Self::Auth,
        Self::BadRequest,
        Self::ContextLengthExceeded,
        Self::ContentFiltered,
        Self::ModelNotFound,
        Self::MalformedResponse,
        Self::StreamInterrupted,
        Self::Cancelled,
        Self::UnexpectedStatus,
    ];

    /// A short snake_case name, as used in metrics and OpenAI-style error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::Overloaded => "overloaded",
            Self::Server => "server_error",
            Self::Timeout => "timeout",
            Self::Connect => "connect_error",
            Self::Auth => "auth_error",
            Self::BadRequest => "bad_request",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::ContentFiltered => "content_filter",
            Self::ModelNotFound => "model_not_found",
            Self::MalformedResponse => "malformed_response",
            Self::StreamInterrupted => "stream_interrupted",
            Self::Cancelled => "cancelled",
            Self::UnexpectedStatus => "unexpected_status",
        }
    }

    /// `true` if sending the same request to the same provider again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Overloaded
                | Self::Server
                | Self::Timeout
                | Self::Connect
                | Self::MalformedResponse
                | Self::StreamInterrupted
        )
    }

    /// `true` if the failure says the provider is unhealthy, so it counts against its
    /// circuit. The caller's mistakes (bad request, context length, content filter, an
    /// unknown model) and cancellations do not.
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::QuotaExhausted
                | Self::Overloaded
                | Self::Server
                | Self::Timeout
                | Self::Connect
                | Self::Auth
                | Self::MalformedResponse
                | Self::StreamInterrupted
                | Self::UnexpectedStatus
        )
    }

    /// `true` if another provider may answer where this one failed. A malformed request
    /// (which every provider would refuse), a cancellation and a content-policy refusal stop
    /// failover: routing a refusal to another provider would bypass a safety decision, so it
    /// is the caller's answer unless the operator opts in
    /// ([`LlmClassifier::failover_on`](crate::LlmClassifier::failover_on), or a
    /// [`FallbackLayer`](crate::fallback::FallbackLayer) naming the providers to ask).
    pub fn should_failover(self) -> bool {
        !matches!(
            self,
            Self::BadRequest | Self::Cancelled | Self::ContentFiltered
        )
    }

    /// The HTTP status a gateway answers with for this kind.
    pub fn gateway_status(self) -> StatusCode {
        match self {
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest | Self::ContextLengthExceeded | Self::ContentFiltered => {
                StatusCode::BAD_REQUEST
            }
            Self::ModelNotFound => StatusCode::NOT_FOUND,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::QuotaExhausted
            | Self::Server
            | Self::Connect
            | Self::Auth
            | Self::MalformedResponse
            | Self::StreamInterrupted
            | Self::UnexpectedStatus => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for LlmErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RateLimited => "rate limited",
            Self::QuotaExhausted => "quota exhausted",
            Self::Overloaded => "overloaded",
            Self::Server => "server error",
            Self::Timeout => "timed out",
            Self::Connect => "connection failed",
            Self::Auth => "authentication failed",
            Self::BadRequest => "bad request",
            Self::ContextLengthExceeded => "context length exceeded",
            Self::ContentFiltered => "content filtered",
            Self::ModelNotFound => "model not found",
            Self::MalformedResponse => "malformed response",
            Self::StreamInterrupted => "stream interrupted",
            Self::Cancelled => "cancelled",
            Self::UnexpectedStatus => "unexpected status",
        })
    }
}

/// A provider call failed.
///
/// Carries the kind, the provider's name, the HTTP status, the provider's own message (with
/// anything that looks like a credential masked), and the delay the provider asked for.
///
/// ```
/// use brace_llm::{LlmError, LlmErrorKind};
/// use http::{HeaderMap, StatusCode};
///
/// let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
/// let err = LlmError::from_response(StatusCode::from_u16(529).unwrap(), &HeaderMap::new(), body)
///     .with_provider("anthropic");
/// assert_eq!(err.kind(), LlmErrorKind::Overloaded);
/// assert_eq!(err.to_string(), "anthropic: overloaded (529): Overloaded");
/// ```
#[derive(Debug)]
pub struct LlmError {
    kind: LlmErrorKind,
    provider: Option<Arc<str>>,
    status: Option<u16>,
    message: String,
    code: Option<String>,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl LlmError {
    /// An error of `kind` with a message.
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            provider: None,
            status: None,
            message: redact_secrets(&message.into()),
            code: None,
            retry_after: None,
            source: None,
        }
    }

    /// Names the provider that failed.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<Arc<str>>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Sets the HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the provider's error code (`rate_limit_exceeded`, `overloaded_error`, …).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the delay the provider asked for.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Keeps the underlying error (its text must not carry secrets).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> LlmErrorKind {
        self.kind
    }

    /// The provider that failed, if known.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// The HTTP status the provider answered with, if any.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The provider's message (credentials masked).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The provider's error code, if it sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The delay the provider asked for before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Reads a provider's error response into an error. Understands OpenAI's
    /// (`{"error": {"message", "type", "code"}}`), Anthropic's (`{"type": "error", "error":
    /// {"type", "message"}}`) and Gemini's (`{"error": {"code", "status", "message",
    /// "details"}}`) shapes, and falls back on the status for anything else. The retry-after
    /// delay comes from `retry-after-ms`, `Retry-After` (seconds or HTTP date),
    /// `x-ratelimit-reset-requests`/`-tokens`, or Gemini's `RetryInfo`.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        Self::from_response_at(status, headers, body, SystemTime::now())
    }

    /// [`from_response`](Self::from_response) judged against a given `now` (for HTTP dates).
    pub fn from_response_at(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Self {
        let parsed = ProviderError::parse(body);
        let kind = classify_response(status, &parsed);
        let message = if kind == LlmErrorKind::UnexpectedStatus {
            unexpected_status_message(status, headers)
        } else {
            parsed.message.clone().unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    truncate(text, 500)
                }
            })
        };
        let retry_after = brace_core::retry_after::from_headers_at(headers, now)
            .or_else(|| rate_limit_reset(headers))
            .or(parsed.retry_delay);
        let mut err = Self::new(kind, message)
            .with_status(status.as_u16())
            .with_retry_after(retry_after);
        err.code = parsed.code;
        err
    }

    /// The HTTP status a gateway answers with.
    pub fn gateway_status(&self) -> StatusCode {
        self.kind.gateway_status()
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(provider) = &self.provider {
            write!(f, "{provider}: ")?;
        }
        write!(f, "{}", self.kind)?;
        if let Some(status) = self.status {
            write!(f, " ({status})")?;
        }
        if !self.message.is_empty() && self.message != self.kind.to_string() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl Error for LlmError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

// ===== reading error bodies =====

#[derive(Debug, Default)]
struct ProviderError {
    message: Option<String>,
    /// OpenAI `code`, Anthropic `error.type`, Gemini `status`.
    code: Option<String>,
    /// OpenAI `type`.
    kind: Option<String>,
    retry_delay: Option<Duration>,
}

impl ProviderError {
    fn parse(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        // Gemini sometimes wraps the error in a one-element array.
        let value = match value {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        };
        let Some(error) = value.get("error") else {
            return Self {
                message: value
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                ..Self::default()
            };
        };
        if let Some(text) = error.as_str() {
            return Self {
                message: Some(text.to_owned()),
                ..Self::default()
            };
        }
        let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
        let code = text("code")
            .or_else(|| text("status"))
            .or_else(|| text("type").filter(|_| value.get("type").is_some()));
        let retry_delay = error
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|detail| detail.get("retryDelay").and_then(Value::as_str))
            .find_map(|delay| brace_core::duration::parse(delay.trim_end_matches('s')).ok());
        let reason = error
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|detail| detail.get("reason").and_then(Value::as_str))
            .map(str::to_owned);
        Self {
            message: text("message"),
            code,
            kind: text("type").or(reason),
            retry_delay,
        }
    }

    fn mentions(&self, needles: &[&str]) -> bool {
        [&self.message, &self.code, &self.kind]
            .into_iter()
            .flatten()
            .any(|field| {
                let field = field.to_ascii_lowercase();
                needles.iter().any(|needle| field.contains(needle))
            })
    }
}

fn classify_response(status: StatusCode, parsed: &ProviderError) -> LlmErrorKind {
    use LlmErrorKind as K;

    let code = parsed.code.as_deref().unwrap_or_default();
    let callers_fault = status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS;
    if callers_fault
        && parsed.mentions(&[
            "context_length_exceeded",
            "context length",
            "context window",
            "prompt is too long",
            "maximum context",
            "too many tokens",
            "exceeds the maximum number of tokens",
        ])
    {
        return K::ContextLengthExceeded;
    }
    if callers_fault
        && parsed.mentions(&[
            "content_filter",
            "content_policy",
            "responsibleaipolicy",
            "safety",
        ])
    {
        return K::ContentFiltered;
    }
    if callers_fault
        && parsed.mentions(&["api_key_invalid", "api key not valid", "invalid_api_key"])
    {
        return K::Auth;
    }
    if code == "insufficient_quota"
        || code == "billing_error"
        || parsed.kind.as_deref() == Some("insufficient_quota")
    {
        return K::QuotaExhausted;
    }
    match code {
        "overloaded_error" => return K::Overloaded,
        "rate_limit_error" | "rate_limit_exceeded" | "RESOURCE_EXHAUSTED" => return K::RateLimited,
        "authentication_error"
        | "permission_error"
        | "invalid_api_key"
        | "UNAUTHENTICATED"
        | "PERMISSION_DENIED" => return K::Auth,
        "model_not_found" | "not_found_error" | "NOT_FOUND" => return K::ModelNotFound,
        "UNAVAILABLE" => return K::Overloaded,
        "DEADLINE_EXCEEDED" => return K::Timeout,
        _ => {}
    }
    match status.as_u16() {
        429 => K::RateLimited,
        401 | 403 => K::Auth,
        404 => K::ModelNotFound,
        402 => K::QuotaExhausted,
        408 => K::Timeout,
        499 => K::Cancelled,
        503 | 529 => K::Overloaded,
        504 => K::Timeout,
        500..=599 => K::Server,
        // A success status with an error body: the provider's answer makes no sense.
        200..=299 => K::MalformedResponse,
        400..=499 => K::BadRequest,
        // 1xx, 3xx (never followed) and codes outside the standard ranges.
        _ => K::UnexpectedStatus,
    }
}

/// Says what an unexpected status was and, for a redirect, where it pointed (bounded, with
/// control characters dropped: it comes from the upstream).
fn unexpected_status_message(status: StatusCode, headers: &HeaderMap) -> String {
    if !status.is_redirection() {
        return "not a status an API answers with".to_owned();
    }
    let mut message = String::from("redirect not followed");
    if let Some(location) = headers
        .get(http::header::LOCATION)
        .and_then(|value| value.to_str().ok())
    {
        message.push_str(" (to ");
        message.extend(location.chars().filter(|c| !c.is_control()).take(200));
        message.push(')');
    }
    message.push_str(" — check the provider's base_url");
    message
}

/// OpenAI's `x-ratelimit-reset-requests` / `-tokens`: durations like `1s`, `6m0s`, `20ms`.
/// The shorter of the two limits that are exhausted is not known, so the longer is taken.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let exhausted = |kind: &str| {
        headers
            .get(format!("x-ratelimit-remaining-{kind}"))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .is_none_or(|remaining| remaining == 0)
    };
    ["requests", "tokens"]
        .into_iter()
        .filter(|kind| exhausted(kind))
        .filter_map(|kind| headers.get(format!("x-ratelimit-reset-{kind}")))
        .filter_map(|value| value.to_str().ok())
        .filter_map(parse_go_duration)
        .max()
}

/// Parses Go-style durations as OpenAI sends them (`1h2m3.5s`, `20ms`, `6m0s`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" | "" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Masks anything in `text` that looks like a credential: OpenAI and Anthropic keys
/// (`sk-…`), Google keys (`AIza…`), bearer tokens, and `key=` query parameters.
///
/// ```
/// use brace_llm::error::redact_secrets;
///
/// let text = "Incorrect API key provided: sk-proj-abc123def456. See https://x?key=AIzaSyD-secret";
/// let clean = redact_secrets(text);
/// assert!(!clean.contains("abc123def456"));
/// assert!(!clean.contains("AIzaSyD-secret"));
/// ```
pub fn redact_secrets(text: &str) -> String {
    const PREFIXES: [&str; 4] = ["sk-", "AIza", "Bearer ", "key="];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for prefix in PREFIXES {
            if rest.starts_with(prefix) {
                let after = &rest[prefix.len()..];
                let secret_len = after
                    .find(|c: char| {
                        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.'))
                    })
                    .unwrap_or(after.len());
                if secret_len >= 4 {
                    out.push_str(prefix);
                    out.push_str("[redacted]");
                    rest = &after[secret_len..];
                    continue 'outer;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_mins(6)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn redaction_keeps_the_rest_of_the_text() {
        assert_eq!(
            redact_secrets("key sk-ant-api03-XYZ_123 is wrong"),
            "key sk-[redacted] is wrong"
        );
        assert_eq!(redact_secrets("ask-me"), "ask-me");
        assert_eq!(redact_secrets("Bearer abcdefgh"), "Bearer [redacted]");
    }
}
