//! Classifying gRPC calls: a failed gRPC call is an HTTP `200`, with its status in a
//! `grpc-status` header (a trailers-only answer) or in the trailers after the body; a typed
//! client returns it as a status error (`tonic::Status`).
//!
//! - [`GrpcClassifier`] judges a typed client's results (any response type): every `Ok` is
//!   a success, an error is judged by its gRPC code, read by the function given to
//!   [`with_status_of`](GrpcClassifier::with_status_of) (brace-core does not depend on
//!   tonic, so it cannot name `tonic::Status` itself), and brace's own errors as
//!   [`classify_error`] judges them.
//! - [`GrpcHttpClassifier`] judges `http::Response`s from a gRPC channel: the
//!   `grpc-status` header of a trailers-only answer; [`classify_trailers`] judges the end
//!   of a body whose status came in the trailers.
//!
//! The semantics follow tower-http's `GrpcErrorsAsFailures`: the status decides, `OK` is a
//! success, [`with_success`](GrpcClassifier::with_success) makes other codes successes too,
//! a missing or unreadable `grpc-status` is not a failure. Where `GrpcErrorsAsFailures` (made
//! for logs and metrics) calls every other code a failure, a circuit breaker must not open on
//! a caller's mistake: codes that say the request was wrong are *ignored* (neither success
//! nor failure, not retried, not failed over), as [`StatusClassifier`]
//! ignores HTTP 4xx. The table is on [`GrpcClassifier::classify_status`].
//!
//! # Example
//!
//! ```
//! use std::error::Error;
//! use brace_core::{BoxError, Classify};
//! use brace_core::grpc::{GrpcClassifier, GrpcCode, GrpcStatus};
//!
//! // A stand-in for `tonic::Status`: what a typed gRPC client fails with.
//! #[derive(Debug)]
//! struct Status(i32);
//! impl std::fmt::Display for Status {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "grpc status {}", self.0)
//!     }
//! }
//! impl Error for Status {}
//!
//! let classifier = GrpcClassifier::new().with_status_of(|err: &(dyn Error + 'static)| {
//!     err.downcast_ref::<Status>().map(|status| GrpcStatus::new(GrpcCode::from_i32(status.0)))
//! });
//! let unavailable: BoxError = Box::new(Status(14));
//! let outcome = Classify::<(), _>::classify(&classifier, Err(&unavailable));
//! assert!(outcome.is_failure() && outcome.is_retryable());
//! let invalid: BoxError = Box::new(Status(3));
//! assert!(Classify::<(), _>::classify(&classifier, Err(&invalid)).is_ignored());
//! ```
//!
//! [`classify_error`]: crate::classify::classify_error
//! [`classify_trailers`]: GrpcHttpClassifier::classify_trailers

use std::error::Error;
use std::fmt;
use std::time::Duration;

use http::HeaderMap;

use crate::classify::{
    Classify, FailureClass, Outcome, StatusClassifier, as_dyn_error, classify_error_with,
};

/// The header (or trailer) that carries a gRPC call's status code.
pub const GRPC_STATUS: &str = "grpc-status";

/// The trailer by which a server asks a client to wait before retrying, in milliseconds
/// (gRPC's retry design, gRFC A6); a negative or unreadable value means "do not retry".
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// The gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// 0: success.
    Ok,
    /// 1: the caller cancelled the call.
    Cancelled,
    /// 2: an unknown error (also what any code outside 0–16 reads as).
    Unknown,
    /// 3: the caller sent an invalid argument.
    InvalidArgument,
    /// 4: the deadline passed before the call completed.
    DeadlineExceeded,
    /// 5: something the call names was not found.
    NotFound,
    /// 6: something the call would create already exists.
    AlreadyExists,
    /// 7: the caller is not allowed to do this.
    PermissionDenied,
    /// 8: a quota or a resource ran out (rate limits).
    ResourceExhausted,
    /// 9: the system is not in the state the call needs.
    FailedPrecondition,
    /// 10: the call was aborted (a concurrency conflict).
    Aborted,
    /// 11: the call went past a valid range.
    OutOfRange,
    /// 12: the method is not implemented.
    Unimplemented,
    /// 13: an internal error of the server.
    Internal,
    /// 14: the service is unavailable right now.
    Unavailable,
    /// 15: data was lost.
    DataLoss,
    /// 16: the caller is not authenticated.
    Unauthenticated,
}

impl GrpcCode {
    const ALL: [GrpcCode; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code numbered `code`; a number outside 0–16 is [`Unknown`](Self::Unknown), as the
    /// gRPC specification says to read it.
    pub const fn from_i32(code: i32) -> Self {
        if code >= 0 && code <= Self::Unauthenticated as i32 {
            Self::ALL[code as usize]
        } else {
            Self::Unknown
        }
    }

    /// The code's number.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The HTTP status `google.rpc.Code` maps the code to (`UNAVAILABLE` 503,
    /// `RESOURCE_EXHAUSTED` 429, `DEADLINE_EXCEEDED` 504, …): what an `on_error` list
    /// names and what a gateway answers.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Cancelled => 499,
            Self::Unknown | Self::Internal | Self::DataLoss => 500,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => 400,
            Self::DeadlineExceeded => 504,
            Self::NotFound => 404,
            Self::AlreadyExists | Self::Aborted => 409,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::Unimplemented => 501,
            Self::Unavailable => 503,
            Self::Unauthenticated => 401,
        }
    }

    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", self.as_i32())
    }
}

/// A gRPC call's status, as a classifier needs it: the code and the server's retry pushback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcStatus {
    code: GrpcCode,
    pushback: Pushback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushback {
    None,
    Wait(Duration),
    DoNotRetry,
}

impl GrpcStatus {
    /// A status with `code` and no pushback.
    pub const fn new(code: GrpcCode) -> Self {
        Self {
            code,
            pushback: Pushback::None,
        }
    }

    /// The status a call's metadata (its headers or trailers, e.g. a `tonic::Status`'s
    /// metadata) gives with code number `code`: the `grpc-retry-pushback-ms` entry, when
    /// present, is the wait the server asked for (or, negative or unreadable, a request not
    /// to retry).
    pub fn from_metadata(code: i32, metadata: &HeaderMap) -> Self {
        let pushback = match metadata.get(GRPC_RETRY_PUSHBACK_MS) {
            None => Pushback::None,
            Some(value) => match value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(ms) => Pushback::Wait(Duration::from_millis(ms)),
                None => Pushback::DoNotRetry,
            },
        };
        Self {
            code: GrpcCode::from_i32(code),
            pushback,
        }
    }

    /// The status in `headers`' `grpc-status` entry, if there is a readable one.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = headers
            .get(GRPC_STATUS)?
            .to_str()
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()?;
        Some(Self::from_metadata(code, headers))
    }

    /// Returns this status with a server-asked wait before retrying.
    #[must_use]
    pub const fn with_retry_after(mut self, wait: Duration) -> Self {
        self.pushback = Pushback::Wait(wait);
        self
    }

    /// The code.
    pub const fn code(&self) -> GrpcCode {
        self.code
    }

    /// The wait the server asked for before a retry, if it did.
    pub const fn retry_after(&self) -> Option<Duration> {
        match self.pushback {
            Pushback::Wait(wait) => Some(wait),
            _ => None,
        }
    }
}

/// Reads the gRPC status out of an error (for tonic: `err.downcast_ref::<tonic::Status>()`).
pub type StatusOf = fn(&(dyn Error + 'static)) -> Option<GrpcStatus>;

// ===== GrpcClassifier =====

/// Judges the results of gRPC calls by status code; see the [module docs](self).
///
/// Every `Ok` is a success (a typed client returns a message only when the status was `OK`).
/// An error that is a [`BoxError`](crate::BoxError) — what brace's layers pass on — is read
/// for a gRPC status with the [`with_status_of`](Self::with_status_of) function, inside
/// brace's own wrapping errors too (`RetriesExhausted`, `AllProvidersFailed`), and judged by
/// [`classify_code`](Self::classify_code); brace's own errors are judged as
/// [`classify_error`](crate::classify::classify_error) says; anything else is a transient
/// failure.
///
/// # Clone
///
/// A copy: a bit set and a function pointer.
#[derive(Clone, Copy)]
pub struct GrpcClassifier {
    success: u32,
    status_of: Option<StatusOf>,
}

impl fmt::Debug for GrpcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let success: Vec<GrpcCode> = GrpcCode::ALL
            .into_iter()
            .filter(|code| self.success & code.bit() != 0)
            .collect();
        f.debug_struct("GrpcClassifier")
            .field("success", &success)
            .field("status_of", &self.status_of.is_some())
            .finish()
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// `OK` is the only success; errors are read for a status only once
    /// [`with_status_of`](Self::with_status_of) says how.
    pub const fn new() -> Self {
        Self {
            success: GrpcCode::Ok.bit(),
            status_of: None,
        }
    }

    /// Counts `code` as a success too (as tower-http's `GrpcErrorsAsFailures::with_success`
    /// does): a service for which `NOT_FOUND` is an ordinary answer, say.
    #[must_use]
    pub const fn with_success(mut self, code: GrpcCode) -> Self {
        self.success |= code.bit();
        self
    }

    /// How to read a gRPC status out of an error. For tonic:
    ///
    /// ```ignore
    /// GrpcClassifier::new().with_status_of(|err| {
    ///     let status = err.downcast_ref::<tonic::Status>()?;
    ///     Some(GrpcStatus::from_metadata(status.code() as i32, status.metadata().as_ref()))
    /// })
    /// ```
    #[must_use]
    pub const fn with_status_of(mut self, status_of: StatusOf) -> Self {
        self.status_of = Some(status_of);
        self
    }

    /// The same codes, judging `http::Response`s from a gRPC channel.
    pub const fn over_http(self) -> GrpcHttpClassifier {
        GrpcHttpClassifier { codes: self }
    }

    /// Judges a status:
    ///
    /// | code | verdict | retried | fails over | class (HTTP status) |
    /// |---|---|---|---|---|
    /// | `OK` (and codes set with [`with_success`](Self::with_success)) | success | | | |
    /// | `UNAVAILABLE` | failure | yes | yes | overloaded (503) |
    /// | `RESOURCE_EXHAUSTED` | failure | yes, after the pushback | yes | rate limited (429) |
    /// | `DEADLINE_EXCEEDED` | failure | yes | yes | timeout (504) |
    /// | `INTERNAL` | failure | yes | yes | server (500) |
    /// | `ABORTED` | failure | yes | yes | other (409) |
    /// | `UNKNOWN`, `DATA_LOSS`, `UNIMPLEMENTED` | failure | no | yes | server (500, 500, 501) |
    /// | `UNAUTHENTICATED`, `PERMISSION_DENIED` | failure | no | yes | other (401, 403) |
    /// | `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `NOT_FOUND`, `ALREADY_EXISTS`, `CANCELLED` | ignored | no | no | other |
    ///
    /// A pushback of "do not retry" makes a retryable code not retried.
    pub fn classify_status(&self, status: GrpcStatus) -> Outcome {
        let code = status.code();
        if self.success & code.bit() != 0 {
            return Outcome::success();
        }
        let outcome = match code {
            GrpcCode::Ok => return Outcome::success(),
            GrpcCode::Unavailable => Outcome::transient().with_class(FailureClass::Overloaded),
            GrpcCode::ResourceExhausted => {
                Outcome::transient().with_class(FailureClass::RateLimited)
            }
            GrpcCode::DeadlineExceeded => Outcome::transient().with_class(FailureClass::Timeout),
            GrpcCode::Internal => Outcome::transient().with_class(FailureClass::Server),
            GrpcCode::Aborted => Outcome::transient(),
            GrpcCode::Unknown | GrpcCode::DataLoss | GrpcCode::Unimplemented => {
                Outcome::failure().with_class(FailureClass::Server)
            }
            GrpcCode::Unauthenticated | GrpcCode::PermissionDenied => Outcome::failure(),
            GrpcCode::InvalidArgument
            | GrpcCode::FailedPrecondition
            | GrpcCode::OutOfRange
            | GrpcCode::NotFound
            | GrpcCode::AlreadyExists
            | GrpcCode::Cancelled => Outcome::ignored(),
        };
        let outcome = outcome
            .with_status(Some(code.http_status()))
            .with_retry_after(status.retry_after());
        if status.pushback == Pushback::DoNotRetry {
            outcome.with_retryable(false)
        } else {
            outcome
        }
    }

    /// Judges a bare code (see [`classify_status`](Self::classify_status)).
    pub fn classify_code(&self, code: GrpcCode) -> Outcome {
        self.classify_status(GrpcStatus::new(code))
    }

    /// Judges an error: a gRPC status read by [`with_status_of`](Self::with_status_of) (also
    /// inside brace's wrapping errors), brace's own errors, else a transient failure.
    pub fn classify_error(&self, err: &(dyn Error + 'static)) -> Outcome {
        let status_of = self.status_of;
        classify_error_with(err, &|err| {
            status_of
                .and_then(|read| read(err))
                .map(|status| self.classify_status(status))
        })
        .unwrap_or_else(Outcome::transient)
    }

    fn classify_any_error<E: 'static>(&self, err: &E) -> Outcome {
        as_dyn_error(err).map_or_else(Outcome::transient, |err| self.classify_error(err))
    }
}

impl<T, E: 'static> Classify<T, E> for GrpcClassifier {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(err) => self.classify_any_error(err),
        }
    }
}

// ===== GrpcHttpClassifier =====

/// Judges the `http::Response`s of a gRPC channel (a breaker around a `tonic` channel, say);
/// made by [`GrpcClassifier::over_http`].
///
/// - A `grpc-status` in the response's headers (a trailers-only answer, which is how a server
///   answers a call that failed before any message) is judged by
///   [`GrpcClassifier::classify_status`], whatever the HTTP status (usually `200`).
/// - Without one, a non-2xx HTTP status came from something in front of the gRPC server (a
///   proxy, a load balancer): it is judged as [`StatusClassifier`] judges it.
/// - Otherwise the status comes in the trailers, after the body: the head is a success, and
///   whoever reads the body judges its end with [`classify_trailers`](Self::classify_trailers)
///   (as tower-http's `ClassifyEos`).
///
/// Errors are judged as [`GrpcClassifier`] judges them.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcHttpClassifier {
    codes: GrpcClassifier,
}

impl GrpcHttpClassifier {
    /// Judges a response head.
    pub fn classify_response<B>(&self, response: &http::Response<B>) -> Outcome {
        if let Some(status) = GrpcStatus::from_headers(response.headers()) {
            return self.codes.classify_status(status);
        }
        if response.headers().contains_key(GRPC_STATUS) {
            // Present but unreadable: not a failure (as `GrpcErrorsAsFailures`).
            return Outcome::success();
        }
        if !response.status().is_success() {
            return StatusClassifier::new().classify_status(response.status(), response.headers());
        }
        Outcome::success()
    }

    /// Judges the end of a response body by its trailers: their `grpc-status`, a success when
    /// there is none (or no trailers at all).
    pub fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Outcome {
        trailers
            .and_then(GrpcStatus::from_headers)
            .map_or_else(Outcome::success, |status| {
                self.codes.classify_status(status)
            })
    }
}

impl<B, E: 'static> Classify<http::Response<B>, E> for GrpcHttpClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(err) => self.codes.classify_any_error(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, CircuitOpen, GiveUpReason, RetriesExhausted};
    use http::{HeaderValue, Response, StatusCode};

    #[derive(Debug)]
    struct Status(i32, HeaderMap);

    impl fmt::Display for Status {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "status {}", self.0)
        }
    }

    impl Error for Status {}

    fn classifier() -> GrpcClassifier {
        GrpcClassifier::new().with_status_of(|err| {
            let status = err.downcast_ref::<Status>()?;
            Some(GrpcStatus::from_metadata(status.0, &status.1))
        })
    }

    fn error(code: i32) -> Outcome {
        let err: BoxError = Box::new(Status(code, HeaderMap::new()));
        Classify::<(), _>::classify(&classifier(), Err(&err))
    }

    fn trailers_only(code: &'static str) -> Response<()> {
        Response::builder()
            .status(200)
            .header(GRPC_STATUS, code)
            .body(())
            .unwrap()
    }

    #[test]
    fn codes_map_to_the_documented_outcomes() {
        for code in [14, 8, 4, 13, 10] {
            let outcome = error(code);
            assert!(
                outcome.is_failure() && outcome.is_retryable() && outcome.should_failover(),
                "{code}"
            );
        }
        for code in [2, 15, 12, 16, 7] {
            let outcome = error(code);
            assert!(
                outcome.is_failure() && !outcome.is_retryable() && outcome.should_failover(),
                "{code}"
            );
        }
        for code in [3, 9, 11, 5, 6, 1] {
            let outcome = error(code);
            assert!(
                outcome.is_ignored() && !outcome.is_retryable() && !outcome.should_failover(),
                "{code}"
            );
        }
        assert_eq!(error(14).class(), FailureClass::Overloaded);
        assert_eq!(error(14).status(), Some(503));
        assert_eq!(error(8).class(), FailureClass::RateLimited);
        assert_eq!(error(8).status(), Some(429));
        assert_eq!(error(4).class(), FailureClass::Timeout);
        // Outside 0–16: unknown.
        assert_eq!(error(99), error(2));
        assert_eq!(GrpcCode::from_i32(-1), GrpcCode::Unknown);
        assert!(Classify::<(), BoxError>::classify(&classifier(), Ok(&())).is_success());
    }

    #[test]
    fn pushback_is_the_retry_after_and_a_negative_one_stops_retries() {
        let mut metadata = HeaderMap::new();
        metadata.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from_static("1500"));
        let err: BoxError = Box::new(Status(8, metadata));
        let outcome = Classify::<(), _>::classify(&classifier(), Err(&err));
        assert_eq!(outcome.retry_after(), Some(Duration::from_millis(1500)));
        assert!(outcome.is_retryable());

        let mut metadata = HeaderMap::new();
        metadata.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from_static("-1"));
        let err: BoxError = Box::new(Status(14, metadata));
        let outcome = Classify::<(), _>::classify(&classifier(), Err(&err));
        assert!(outcome.is_failure() && !outcome.is_retryable());
    }

    #[test]
    fn success_codes_can_be_added() {
        let classifier = classifier().with_success(GrpcCode::NotFound);
        let err: BoxError = Box::new(Status(5, HeaderMap::new()));
        assert!(Classify::<(), _>::classify(&classifier, Err(&err)).is_success());
        let http = classifier.over_http();
        assert!(http.classify_response(&trailers_only("5")).is_success());
    }

    #[test]
    fn brace_errors_and_wrapped_statuses_are_understood() {
        let open: BoxError = Box::new(CircuitOpen::new("grpc", Some(Duration::from_secs(2))));
        let outcome = Classify::<(), _>::classify(&classifier(), Err(&open));
        assert!(outcome.is_ignored() && outcome.should_failover());
        let exhausted: BoxError = Box::new(RetriesExhausted::new(
            3,
            GiveUpReason::MaxRetries,
            Box::new(Status(14, HeaderMap::new())),
        ));
        let outcome = Classify::<(), _>::classify(&classifier(), Err(&exhausted));
        assert_eq!(outcome.class(), FailureClass::Overloaded);
        assert!(outcome.is_failure() && !outcome.is_retryable());
        // Without a way to read statuses, an unknown error is a transient failure.
        let err: BoxError = Box::new(Status(3, HeaderMap::new()));
        assert_eq!(
            Classify::<(), _>::classify(&GrpcClassifier::new(), Err(&err)),
            Outcome::transient()
        );
    }

    #[test]
    fn a_trailers_only_answer_is_judged_by_its_header_despite_http_200() {
        let http = classifier().over_http();
        let unavailable = trailers_only("14");
        assert_eq!(unavailable.status(), StatusCode::OK);
        let outcome = Classify::<_, BoxError>::classify(&http, Ok(&unavailable));
        assert!(outcome.is_failure() && outcome.is_retryable());
        assert!(http.classify_response(&trailers_only("0")).is_success());
        // Unreadable: not a failure (tower-http's rule).
        assert!(
            http.classify_response(&trailers_only("fourteen"))
                .is_success()
        );
        // No status in the head: it is in the trailers.
        let head = Response::builder().status(200).body(()).unwrap();
        assert!(http.classify_response(&head).is_success());
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("13"));
        assert!(http.classify_trailers(Some(&trailers)).is_failure());
        assert!(http.classify_trailers(None).is_success());
        assert!(http.classify_trailers(Some(&HeaderMap::new())).is_success());
        // A proxy's 503 in front of the server, with no gRPC status.
        let proxy = Response::builder().status(503).body(()).unwrap();
        assert!(http.classify_response(&proxy).is_retryable());
    }
}
