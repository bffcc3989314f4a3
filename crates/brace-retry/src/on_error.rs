//! The `on_error` list: retry only the failures a configuration names, such as
//! `on_error: [429, 500, 502, 503, timeout]`.
//!
//! A list entry is an [`ErrorClass`]: an HTTP status code or one of the words `timeout`,
//! `connect` and `overloaded`. [`OnError`] is a [`Classify`] implementation that asks a
//! [`Describe`] what class an outcome falls in, and retries it only if the list names that
//! class.
//!
//! # Describing outcomes
//!
//! The layer is generic, so it cannot know every response and error type. The mechanism is
//! one trait, [`Describe`], with three ready implementations:
//!
//! - [`DescribeErrors`] (the default): every `Ok` is a success; an error is recognised by
//!   walking its source chain — tower's `Elapsed` and `io::ErrorKind::TimedOut` are
//!   `timeout`, refused/reset/aborted connections are `connect`, brace's own errors
//!   (`CircuitOpen`, `RetriesExhausted`, `DeadlineExceeded`, `AllProvidersFailed`) are
//!   [`ErrorClass::Other`] and therefore never retried by a list.
//! - [`DescribeHttp`]: the same for errors, and an `http::Response` whose status is 400 or
//!   more is a failure of class `Status(code)` carrying its `Retry-After` hint.
//! - Any closure `Fn(Result<&T, &E>) -> Option<Failure>`.
//!
//! Error types this crate does not know — `brace_llm::LlmError`, which must not depend on
//! brace-retry — are plugged in with a plain function passed to
//! [`DescribeErrors::with`] / [`DescribeHttp::with`]: it is asked first about every error in
//! the chain and returns the class (and Retry-After hint) it recognises.
//!
//! ```
//! use std::error::Error;
//! use brace_core::{BoxError, Classify};
//! use brace_retry::on_error::{DescribeErrors, ErrorClass, Failure, OnError};
//!
//! #[derive(Debug)]
//! struct ApiError(u16);
//! impl std::fmt::Display for ApiError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "api error {}", self.0)
//!     }
//! }
//! impl Error for ApiError {}
//!
//! fn api_status(err: &(dyn Error + 'static)) -> Option<Failure> {
//!     let api = err.downcast_ref::<ApiError>()?;
//!     Some(Failure::new(ErrorClass::Status(api.0)))
//! }
//!
//! let classes: Vec<ErrorClass> = serde_json::from_str(r#"[429, 503, "timeout"]"#).unwrap();
//! let on_error = OnError::with_describe(classes, DescribeErrors::with(api_status));
//!
//! let limited: BoxError = Box::new(ApiError(429));
//! let bad: BoxError = Box::new(ApiError(400));
//! assert!(on_error.classify(Err::<&(), _>(&limited)).is_retryable());
//! assert!(!on_error.classify(Err::<&(), _>(&bad)).is_retryable());
//! ```

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use brace_core::classify::as_dyn_error;
use brace_core::{
    AllProvidersFailed, CircuitOpen, Classify, DeadlineExceeded, Outcome, RetriesExhausted,
};
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// One entry of an `on_error` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// An HTTP status code (100–599), written as a number: `503`.
    Status(u16),
    /// The attempt timed out: `timeout`.
    Timeout,
    /// The connection could not be made or was dropped: `connect`.
    Connect,
    /// The service said it is overloaded (only a custom describer reports this, e.g. for
    /// Anthropic's `overloaded_error`): `overloaded`.
    Overloaded,
    /// Any other failure. No list can name it, so it is never retried by [`OnError`].
    Other,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "{code}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Connect => f.write_str("connect"),
            Self::Overloaded => f.write_str("overloaded"),
            Self::Other => f.write_str("other"),
        }
    }
}

impl ErrorClass {
    /// Parses a list entry: a status code or `timeout`, `connect`, `overloaded`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "timeout" => Ok(Self::Timeout),
            "connect" => Ok(Self::Connect),
            "overloaded" => Ok(Self::Overloaded),
            _ => text.parse::<u64>().map_or_else(
                |_| {
                    Err(format!(
                        "unknown on_error entry `{text}` (expected a status code or one of \
                         `timeout`, `connect`, `overloaded`)"
                    ))
                },
                Self::status,
            ),
        }
    }

    fn status(code: u64) -> Result<Self, String> {
        match u16::try_from(code) {
            Ok(code @ 100..=599) => Ok(Self::Status(code)),
            _ => Err(format!(
                "invalid status code {code} in on_error (expected 100–599)"
            )),
        }
    }
}

impl Serialize for ErrorClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Status(code) => serializer.serialize_u16(*code),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ErrorClass;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code or one of `timeout`, `connect`, `overloaded`")
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<ErrorClass, E> {
                ErrorClass::status(code).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<ErrorClass, E> {
                let code = u64::try_from(code)
                    .map_err(|_| E::custom(format!("invalid status code {code} in on_error")))?;
                ErrorClass::status(code).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ErrorClass, E> {
                ErrorClass::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// What a [`Describe`] says about a failed outcome: its class and the server's retry-after
/// hint, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    class: ErrorClass,
    retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of `class` without a retry-after hint.
    pub const fn new(class: ErrorClass) -> Self {
        Self {
            class,
            retry_after: None,
        }
    }

    /// Adds the server's retry-after hint.
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The failure's class.
    pub const fn class(&self) -> ErrorClass {
        self.class
    }

    /// The server's retry-after hint.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Says whether an outcome failed and in which [`ErrorClass`]: `None` for a success.
pub trait Describe<T, E> {
    /// Describes one outcome.
    fn describe(&self, result: Result<&T, &E>) -> Option<Failure>;
}

impl<F, T, E> Describe<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Option<Failure>,
{
    fn describe(&self, result: Result<&T, &E>) -> Option<Failure> {
        self(result)
    }
}

/// A function that recognises errors of a type this crate does not know.
pub type DescribeErrorFn = fn(&(dyn Error + 'static)) -> Option<Failure>;

/// Describes errors by walking their source chain; every `Ok` is a success.
/// See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct DescribeErrors {
    custom: Option<DescribeErrorFn>,
}

impl DescribeErrors {
    /// Recognises tower's and std's timeout and connection errors.
    pub const fn new() -> Self {
        Self { custom: None }
    }

    /// Asks `custom` first about each error in the chain.
    pub const fn with(custom: DescribeErrorFn) -> Self {
        Self {
            custom: Some(custom),
        }
    }

    /// Describes one error (of any type, seen through a [`BoxError`](brace_core::BoxError)).
    pub fn describe_error<E: 'static>(&self, err: &E) -> Failure {
        match as_dyn_error(err) {
            Some(err) => describe_dyn_error(err, self.custom),
            None => {
                let any: &dyn std::any::Any = err;
                match any.downcast_ref::<io::Error>() {
                    Some(io) => describe_dyn_error(io, self.custom),
                    None => Failure::new(ErrorClass::Other),
                }
            }
        }
    }
}

impl<T, E: 'static> Describe<T, E> for DescribeErrors {
    fn describe(&self, result: Result<&T, &E>) -> Option<Failure> {
        result.err().map(|err| self.describe_error(err))
    }
}

/// Describes `http::Response`s by status (400 and up is a failure, with its `Retry-After`
/// hint) and errors as [`DescribeErrors`] does.
#[derive(Debug, Clone, Copy, Default)]
pub struct DescribeHttp {
    errors: DescribeErrors,
}

impl DescribeHttp {
    /// Statuses plus the errors [`DescribeErrors::new`] knows.
    pub const fn new() -> Self {
        Self {
            errors: DescribeErrors::new(),
        }
    }

    /// Statuses plus errors, asking `custom` first about each error.
    pub const fn with(custom: DescribeErrorFn) -> Self {
        Self {
            errors: DescribeErrors::with(custom),
        }
    }
}

impl<B, E: 'static> Describe<http::Response<B>, E> for DescribeHttp {
    fn describe(&self, result: Result<&http::Response<B>, &E>) -> Option<Failure> {
        match result {
            Ok(response) if response.status().as_u16() >= 400 => Some(
                Failure::new(ErrorClass::Status(response.status().as_u16()))
                    .with_retry_after(brace_core::retry_after::from_headers(response.headers())),
            ),
            Ok(_) => None,
            Err(err) => Some(self.errors.describe_error(err)),
        }
    }
}

fn describe_dyn_error(err: &(dyn Error + 'static), custom: Option<DescribeErrorFn>) -> Failure {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(failure) = custom.and_then(|custom| custom(err)) {
            return failure;
        }
        if err.is::<CircuitOpen>()
            || err.is::<RetriesExhausted>()
            || err.is::<DeadlineExceeded>()
            || err.is::<AllProvidersFailed>()
        {
            return Failure::new(ErrorClass::Other);
        }
        if err.is::<tower::timeout::error::Elapsed>() {
            return Failure::new(ErrorClass::Timeout);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::TimedOut => return Failure::new(ErrorClass::Timeout),
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::BrokenPipe => return Failure::new(ErrorClass::Connect),
                _ => {}
            }
        }
        next = err.source();
    }
    Failure::new(ErrorClass::Other)
}

/// Retries exactly the failures whose [`ErrorClass`] is in its list.
///
/// A failure in the list is [transient](Outcome::transient) (retryable, with the described
/// retry-after hint); a 4xx status not in the list is [ignored](Outcome::ignored); anything
/// else that failed is a non-retryable [failure](Outcome::failure). See the
/// [module docs](self) for how outcomes are described.
#[derive(Debug, Clone)]
pub struct OnError<D = DescribeErrors> {
    classes: Arc<[ErrorClass]>,
    describe: D,
}

impl OnError {
    /// A list over any response type (every `Ok` is a success), describing errors with
    /// [`DescribeErrors`].
    pub fn new(classes: impl IntoIterator<Item = ErrorClass>) -> Self {
        Self::with_describe(classes, DescribeErrors::new())
    }

    /// A list over `http::Response`s, describing them with [`DescribeHttp`].
    pub fn http(classes: impl IntoIterator<Item = ErrorClass>) -> OnError<DescribeHttp> {
        OnError::with_describe(classes, DescribeHttp::new())
    }
}

impl<D> OnError<D> {
    /// A list with a describer of your own.
    pub fn with_describe(classes: impl IntoIterator<Item = ErrorClass>, describe: D) -> Self {
        Self {
            classes: classes.into_iter().collect(),
            describe,
        }
    }

    /// The classes that are retried.
    pub fn classes(&self) -> &[ErrorClass] {
        &self.classes
    }

    /// Whether `class` is retried.
    pub fn retries(&self, class: ErrorClass) -> bool {
        class != ErrorClass::Other && self.classes.contains(&class)
    }
}

impl<T, E, D: Describe<T, E>> Classify<T, E> for OnError<D> {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        let Some(failure) = self.describe.describe(result) else {
            return Outcome::success();
        };
        let outcome = if self.retries(failure.class) {
            Outcome::transient()
        } else if matches!(failure.class, ErrorClass::Status(400..=499)) {
            Outcome::ignored()
        } else {
            Outcome::failure()
        };
        outcome.with_retry_after(failure.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brace_core::{BoxError, GiveUpReason};

    fn seed_list() -> Vec<ErrorClass> {
        serde_json::from_str(r#"[429, 500, 502, 503, "timeout"]"#).unwrap()
    }

    #[test]
    fn list_entries_parse_from_numbers_and_words() {
        assert_eq!(
            seed_list(),
            [
                ErrorClass::Status(429),
                ErrorClass::Status(500),
                ErrorClass::Status(502),
                ErrorClass::Status(503),
                ErrorClass::Timeout
            ]
        );
        let words: Vec<ErrorClass> =
            serde_json::from_str(r#"["connect", "Overloaded", "504"]"#).unwrap();
        assert_eq!(
            words,
            [
                ErrorClass::Connect,
                ErrorClass::Overloaded,
                ErrorClass::Status(504)
            ]
        );
        for bad in [
            r"[99]",
            r"[600]",
            r"[-1]",
            r#"["other"]"#,
            r#"["soon"]"#,
            r"[1.5]",
        ] {
            assert!(
                serde_json::from_str::<Vec<ErrorClass>>(bad).is_err(),
                "{bad}"
            );
        }
        let text = serde_json::to_string(&seed_list()).unwrap();
        assert_eq!(text, r#"[429,500,502,503,"timeout"]"#);
    }

    #[test]
    fn http_statuses_in_the_list_are_retried_with_their_hint() {
        let on_error = OnError::http(seed_list());
        let response = |code: u16| {
            http::Response::builder()
                .status(code)
                .header("retry-after", "3")
                .body(())
                .unwrap()
        };
        let classify = |code| Classify::<_, BoxError>::classify(&on_error, Ok(&response(code)));
        let limited = classify(429);
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert!(classify(503).is_retryable());
        assert!(!classify(504).is_retryable() && classify(504).is_failure());
        assert!(!classify(400).is_retryable() && classify(400).is_ignored());
        assert!(classify(200).is_success());
    }

    #[test]
    fn errors_are_recognised_through_their_source_chain() {
        let on_error = OnError::new(seed_list());
        let classify = |err: BoxError| on_error.classify(Err::<&(), _>(&err));
        assert!(classify(Box::new(tower::timeout::error::Elapsed::new())).is_retryable());
        assert!(classify(Box::new(io::Error::from(io::ErrorKind::TimedOut))).is_retryable());
        // Not in the list.
        assert!(
            !classify(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))).is_retryable()
        );
        assert!(!classify("boom".into()).is_retryable());
        assert!(!classify(Box::new(CircuitOpen::new("a", None))).is_retryable());
        // A timeout wrapped in RetriesExhausted is not retried again.
        let exhausted = RetriesExhausted::new(
            3,
            GiveUpReason::MaxRetries,
            Box::new(tower::timeout::error::Elapsed::new()),
        );
        assert!(!classify(Box::new(exhausted)).is_retryable());
        // A plain io::Error (not boxed) is understood too.
        let connect = OnError::new([ErrorClass::Connect]);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(connect.classify(Err::<&(), _>(&refused)).is_retryable());
    }
}
