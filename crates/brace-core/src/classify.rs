//! Judging outcomes: the [`Classify`] trait, the [`Outcome`] it returns, and classifiers for
//! plain errors, brace's own errors and HTTP status codes.

use std::error::Error;
use std::time::Duration;

use crate::BoxError;
use crate::error::{AllProvidersFailed, CircuitOpen, DeadlineExceeded, RetriesExhausted};

/// What kind of failure an outcome is, in terms every layer can act on without knowing the
/// service: retry policies per class, `on_error` lists, the status a gateway answers with,
/// and why a circuit opened.
///
/// A classifier sets it ([`Outcome::with_class`]); the classifiers in this crate derive it
/// from HTTP statuses and brace's own errors, `brace_llm::LlmClassifier` from its error
/// kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FailureClass {
    /// The service refused because the caller sent too much (HTTP 429): waiting helps,
    /// a smaller request does not.
    RateLimited,
    /// The service said it is too busy right now (HTTP 503, 529).
    Overloaded,
    /// The call took too long (HTTP 408, 504, a timeout layer).
    Timeout,
    /// The connection could not be made or broke (refused, reset, a stream cut short).
    Connect,
    /// The service failed (other 5xx, a malformed answer).
    Server,
    /// Anything else.
    #[default]
    Other,
}

impl FailureClass {
    /// Every class, in a fixed order.
    pub const ALL: [FailureClass; 6] = [
        Self::RateLimited,
        Self::Overloaded,
        Self::Timeout,
        Self::Connect,
        Self::Server,
        Self::Other,
    ];

    /// The class's name in snake case (`rate_limited`, `overloaded`, `timeout`, `connect`,
    /// `server`, `other`), as configuration spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Server => "server",
            Self::Other => "other",
        }
    }

    /// Parses a class name (see [`as_str`](Self::as_str)); `rate_limit` and `rate-limited`
    /// are accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        match name.as_str() {
            "rate_limited" | "rate_limit" => Some(Self::RateLimited),
            "overloaded" => Some(Self::Overloaded),
            "timeout" => Some(Self::Timeout),
            "connect" => Some(Self::Connect),
            "server" => Some(Self::Server),
            "other" => Some(Self::Other),
            _ => None,
        }
    }

    /// The class an HTTP status code falls in: 429 rate limited; 503 and 529 overloaded;
    /// 408 and 504 timeout; any other 5xx server; anything else other.
    pub const fn of_status(status: u16) -> Self {
        match status {
            429 => Self::RateLimited,
            503 | 529 => Self::Overloaded,
            408 | 504 => Self::Timeout,
            500..=599 => Self::Server,
            _ => Self::Other,
        }
    }

    /// `true` if a smaller or simpler request may succeed where this failure happened (a
    /// timeout, an overloaded server): what a degradation ladder's lower level can change.
    /// A rate limit, a refused connection, a server error or anything else is not changed
    /// by reshaping the request (a classifier may say otherwise for failures it knows, with
    /// [`Outcome::with_reshaping_may_help`]).
    pub const fn reshaping_may_help(self) -> bool {
        matches!(self, Self::Timeout | Self::Overloaded)
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call's outcome means for the circuit it went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The call succeeded.
    Success,
    /// The call failed in a way that says something about the service's health.
    Failure,
    /// The call failed, but not because of the service (a bad request, a cancelled call):
    /// it neither counts as a success nor as a failure.
    Ignored,
}

/// How one call went, as judged by a [`Classify`] implementation.
///
/// An outcome answers the questions each layer asks:
///
/// - [`verdict`](Outcome::verdict): does it count as a success or failure (circuit breakers,
///   health tracking), or is it ignored?
/// - [`is_retryable`](Outcome::is_retryable): may the same request be sent again to the same
///   service (retry)?
/// - [`should_failover`](Outcome::should_failover): may the request be sent to another service
///   instead (failover)?
/// - [`retry_after`](Outcome::retry_after): did the service say how long to wait?
/// - [`class`](Outcome::class) and [`status`](Outcome::status): what kind of failure it
///   was, for policies per class and `on_error` lists.
/// - [`reshaping_may_help`](Outcome::reshaping_may_help): may a reshaped (smaller, simpler)
///   request succeed where this one failed (a degradation ladder's lower level)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    verdict: Verdict,
    retryable: bool,
    failover: bool,
    reshapable: bool,
    class: FailureClass,
    status: Option<u16>,
    retry_after: Option<Duration>,
}

impl Outcome {
    /// A success.
    pub const SUCCESS: Outcome = Outcome {
        verdict: Verdict::Success,
        retryable: false,
        failover: false,
        reshapable: false,
        class: FailureClass::Other,
        status: None,
        retry_after: None,
    };

    /// A success.
    pub const fn success() -> Self {
        Self::SUCCESS
    }

    /// A transient failure: it counts against the service, is worth retrying, and another
    /// service may be tried.
    pub const fn transient() -> Self {
        Outcome {
            verdict: Verdict::Failure,
            retryable: true,
            failover: true,
            reshapable: false,
            class: FailureClass::Other,
            status: None,
            retry_after: None,
        }
    }

    /// A failure that counts against the service and may fail over, but that repeating the
    /// same request on the same service will not fix.
    pub const fn failure() -> Self {
        Outcome {
            verdict: Verdict::Failure,
            retryable: false,
            failover: true,
            reshapable: false,
            class: FailureClass::Other,
            status: None,
            retry_after: None,
        }
    }

    /// A failure that is the caller's, not the service's: not counted, not retried, not
    /// failed over (e.g. a malformed request).
    pub const fn ignored() -> Self {
        Outcome {
            verdict: Verdict::Ignored,
            retryable: false,
            failover: false,
            reshapable: false,
            class: FailureClass::Other,
            status: None,
            retry_after: None,
        }
    }

    /// Returns this outcome with its verdict replaced.
    #[must_use]
    pub const fn with_verdict(mut self, verdict: Verdict) -> Self {
        self.verdict = verdict;
        self
    }

    /// Returns this outcome with `retryable` replaced.
    #[must_use]
    pub const fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Returns this outcome with `failover` replaced.
    #[must_use]
    pub const fn with_failover(mut self, failover: bool) -> Self {
        self.failover = failover;
        self
    }

    /// Returns this outcome with its failure class replaced; unless set with
    /// [`with_reshaping_may_help`](Self::with_reshaping_may_help), whether a reshaped request
    /// may help follows the class ([`FailureClass::reshaping_may_help`]).
    #[must_use]
    pub const fn with_class(mut self, class: FailureClass) -> Self {
        self.class = class;
        self.reshapable = class.reshaping_may_help();
        self
    }

    /// Returns this outcome with the HTTP status it carried (for `on_error` lists that name
    /// status codes).
    #[must_use]
    pub const fn with_status(mut self, status: Option<u16>) -> Self {
        self.status = status;
        self
    }

    /// Returns this outcome saying whether a reshaped request may succeed where this one
    /// failed (set it after [`with_class`](Self::with_class), which resets it).
    #[must_use]
    pub const fn with_reshaping_may_help(mut self, yes: bool) -> Self {
        self.reshapable = yes;
        self
    }

    /// Returns this outcome with the server's retry-after hint replaced.
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The verdict for circuit breakers and health tracking.
    pub const fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// `true` for a success.
    pub const fn is_success(&self) -> bool {
        matches!(self.verdict, Verdict::Success)
    }

    /// `true` for a failure that counts against the service.
    pub const fn is_failure(&self) -> bool {
        matches!(self.verdict, Verdict::Failure)
    }

    /// `true` for an outcome that counts neither way.
    pub const fn is_ignored(&self) -> bool {
        matches!(self.verdict, Verdict::Ignored)
    }

    /// `true` if the same request may be sent to the same service again.
    pub const fn is_retryable(&self) -> bool {
        self.retryable && !self.is_success()
    }

    /// `true` if the request may be sent to another service instead.
    pub const fn should_failover(&self) -> bool {
        self.failover && !self.is_success()
    }

    /// How long the service asked the caller to wait before trying again, if it said.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// What kind of failure this was ([`FailureClass::Other`] for a success or an unknown
    /// failure).
    pub const fn class(&self) -> FailureClass {
        self.class
    }

    /// The HTTP status the failure carried, if any.
    pub const fn status(&self) -> Option<u16> {
        self.status
    }

    /// `true` if a reshaped request (a smaller, simpler one, as a degradation ladder's lower
    /// level sends) may succeed where this one failed.
    pub const fn reshaping_may_help(&self) -> bool {
        self.reshapable && !self.is_success()
    }
}

/// Decides what the result of a call means.
///
/// Every brace layer takes a classifier, and every layer asks it about the same input:
/// `Result<&Response, &BoxError>`, the inner service's response or its error boxed (as the
/// layers return errors). So one classifier judges an outcome the same way in the circuit
/// breaker, the retry layer, the degradation layer and the failover service, in any order:
/// a breaker right over a provider sees the provider's error boxed, one over a retry layer
/// sees its [`RetriesExhausted`], one over failover its [`AllProvidersFailed`] — each
/// downcasts to what it knows. Implement `Classify<Response, BoxError>` for a stack (the
/// classifiers here and `brace_llm::LlmClassifier` do), or pass a closure; outside the
/// layers any error type can be judged:
///
/// ```
/// use brace_core::{Classify, Outcome};
///
/// let classify = |result: Result<&u16, &std::io::Error>| match result {
///     Ok(status) if *status >= 500 => Outcome::transient(),
///     Ok(_) => Outcome::success(),
///     Err(_) => Outcome::transient(),
/// };
/// assert!(classify.classify(Ok(&503)).is_retryable());
/// ```
pub trait Classify<T, E> {
    /// Judges one result.
    fn classify(&self, result: Result<&T, &E>) -> Outcome;
}

impl<F, T, E> Classify<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self(result)
    }
}

// ===== ErrorsAsFailures =====

/// Every `Ok` is a success and every `Err` a transient failure, whatever the types.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAsFailures;

impl<T, E> Classify<T, E> for ErrorsAsFailures {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(_) => Outcome::transient(),
        }
    }
}

// ===== DefaultClassifier =====

/// The classifier the layers use unless told otherwise: every `Ok` is a success; an error
/// that is a [`BoxError`] (what tower middleware returns) is judged by [`classify_error`],
/// which knows brace's own errors and tower's timeout; any other error is a transient
/// failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<T, E: 'static> Classify<T, E> for DefaultClassifier {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(err) => classify_any_error(err),
        }
    }
}

/// Judges an error of any type: a [`BoxError`] by [`classify_error`], anything else as a
/// transient failure.
fn classify_any_error<E: 'static>(err: &E) -> Outcome {
    as_dyn_error(err)
        .and_then(classify_error)
        .unwrap_or_else(Outcome::transient)
}

/// Sees through a generic error parameter that is really a [`BoxError`].
pub fn as_dyn_error<E: 'static>(err: &E) -> Option<&(dyn Error + 'static)> {
    let any: &dyn std::any::Any = err;
    any.downcast_ref::<BoxError>()
        .map(|boxed| &**boxed as &(dyn Error + 'static))
}

/// Judges the errors every brace layer understands, or returns `None` for any other error.
///
/// - [`CircuitOpen`]: a failure that is not retried against the same breaker but may fail
///   over, carrying the breaker's remaining wait as its retry-after hint.
/// - [`RetriesExhausted`]: the outcome of the last attempt, no longer retryable.
/// - [`AllProvidersFailed`]: a failure if any provider's was, retryable only if every
///   provider's was, failing over (to whatever is above) if any provider's did, with the
///   shortest retry-after among them.
/// - [`DeadlineExceeded`]: a failure of class timeout that is not retried, not failed over
///   and not worth a reshaped request (there is no time left).
/// - `tower::timeout::error::Elapsed`: a transient failure.
/// - `tower::load_shed::error::Overloaded` (a full bulkhead or load shedder refused the
///   call before it was made): retryable and failing over, but ignored by circuit breakers
///   and health tracking — a local limit says nothing about the service's health.
///
/// Classifiers for richer error types (such as `brace_llm::LlmError`) call this for the
/// errors they do not know, passing `inner` to judge the errors wrapped inside.
pub fn classify_error(err: &(dyn Error + 'static)) -> Option<Outcome> {
    classify_error_with(err, &|_| None)
}

/// Like [`classify_error`], but first asks `inner` about each error it meets, including the
/// ones wrapped in [`RetriesExhausted`] and [`AllProvidersFailed`].
pub fn classify_error_with(
    err: &(dyn Error + 'static),
    inner: &dyn Fn(&(dyn Error + 'static)) -> Option<Outcome>,
) -> Option<Outcome> {
    if let Some(outcome) = inner(err) {
        return Some(outcome);
    }
    if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        return Some(
            Outcome::failure()
                .with_class(open.cause().unwrap_or_default())
                .with_verdict(Verdict::Ignored)
                .with_reshaping_may_help(false)
                .with_retry_after(open.retry_after()),
        );
    }
    if let Some(exhausted) = err.downcast_ref::<RetriesExhausted>() {
        let last =
            classify_error_with(exhausted.last_error(), inner).unwrap_or_else(Outcome::transient);
        return Some(last.with_retryable(false));
    }
    if let Some(all) = err.downcast_ref::<AllProvidersFailed>() {
        return Some(classify_all_failed(all, inner));
    }
    if err.is::<DeadlineExceeded>() {
        // No time is left: not worth another provider, a retry or a reshaped request (a
        // degradation ladder may still answer from its cache or static level).
        return Some(
            Outcome::failure()
                .with_class(FailureClass::Timeout)
                .with_reshaping_may_help(false)
                .with_failover(false),
        );
    }
    if err.is::<tower::timeout::error::Elapsed>() {
        return Some(Outcome::transient().with_class(FailureClass::Timeout));
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        let class = match io.kind() {
            ErrorKind::TimedOut => FailureClass::Timeout,
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::AddrNotAvailable
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => FailureClass::Connect,
            _ => FailureClass::Other,
        };
        return Some(Outcome::transient().with_class(class));
    }
    if err.is::<tower::load_shed::error::Overloaded>() {
        return Some(
            Outcome::transient()
                .with_verdict(Verdict::Ignored)
                .with_class(FailureClass::Overloaded),
        );
    }
    None
}

fn classify_all_failed(
    all: &AllProvidersFailed,
    inner: &dyn Fn(&(dyn Error + 'static)) -> Option<Outcome>,
) -> Outcome {
    let mut outcomes = all.failures().iter().map(|failure| {
        classify_error_with(&*failure.error, inner).unwrap_or_else(Outcome::transient)
    });
    let Some(first) = outcomes.next() else {
        return Outcome::failure();
    };
    outcomes.fold(first, |acc, next| {
        let retry_after = match (acc.retry_after(), next.retry_after()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let verdict = if acc.is_failure() || next.is_failure() {
            Verdict::Failure
        } else {
            acc.verdict()
        };
        let class = if acc.class() == next.class() {
            acc.class()
        } else {
            FailureClass::Other
        };
        let status = if acc.status() == next.status() {
            acc.status()
        } else {
            None
        };
        acc.with_verdict(verdict)
            .with_class(class)
            .with_status(status)
            .with_reshaping_may_help(acc.reshaping_may_help() || next.reshaping_may_help())
            .with_retryable(acc.is_retryable() && next.is_retryable())
            .with_failover(acc.should_failover() || next.should_failover())
            .with_retry_after(retry_after)
    })
}

// ===== StatusClassifier =====

/// Classifies `http::Response`s by status code.
///
/// | status | verdict | retryable | fails over |
/// |---|---|---|---|
/// | 1xx–3xx | success | | |
/// | 408, 500, 502, 503, 504, 529 | failure | yes | yes |
/// | 429 | failure (or ignored, see [`rate_limit_is_failure`](Self::rate_limit_is_failure)) | yes, after `Retry-After` | yes |
/// | other 5xx | failure | no | yes |
/// | other 4xx | ignored | no | no |
///
/// An `Err` (the request never got a response) is judged by [`classify_error`] when the error
/// is a [`BoxError`], and is otherwise a transient failure.
#[derive(Debug, Clone, Copy)]
pub struct StatusClassifier {
    rate_limit_is_failure: bool,
}

impl Default for StatusClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusClassifier {
    /// A classifier that counts 429 as a failure.
    pub const fn new() -> Self {
        Self {
            rate_limit_is_failure: true,
        }
    }

    /// Whether a 429 counts as a failure against the circuit (the default) or is ignored.
    /// Either way it is retryable and honours `Retry-After`.
    #[must_use]
    pub const fn rate_limit_is_failure(mut self, yes: bool) -> Self {
        self.rate_limit_is_failure = yes;
        self
    }

    /// Judges a status code and its headers.
    pub fn classify_status(&self, status: http::StatusCode, headers: &http::HeaderMap) -> Outcome {
        let code = status.as_u16();
        let outcome = match code {
            429 => {
                let verdict = if self.rate_limit_is_failure {
                    Verdict::Failure
                } else {
                    Verdict::Ignored
                };
                Outcome::transient()
                    .with_verdict(verdict)
                    .with_retry_after(crate::retry_after::from_headers(headers))
            }
            408 | 500 | 502 | 503 | 504 | 529 => {
                Outcome::transient().with_retry_after(crate::retry_after::from_headers(headers))
            }
            500..=599 => Outcome::failure(),
            400..=499 => Outcome::ignored(),
            _ => return Outcome::success(),
        };
        outcome
            .with_class(FailureClass::of_status(code))
            .with_status(Some(code))
    }
}

impl<B, E: 'static> Classify<http::Response<B>, E> for StatusClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => self.classify_status(response.status(), response.headers()),
            Err(err) => classify_any_error(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProviderFailure;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn status(code: u16) -> Outcome {
        StatusClassifier::new()
            .classify_status(StatusCode::from_u16(code).unwrap(), &HeaderMap::new())
    }

    #[test]
    fn statuses_map_to_documented_outcomes() {
        assert!(status(200).is_success());
        assert!(status(304).is_success());
        for code in [408, 500, 502, 503, 504] {
            let outcome = status(code);
            assert!(outcome.is_failure() && outcome.is_retryable(), "{code}");
        }
        let not_implemented = status(501);
        assert!(not_implemented.is_failure() && !not_implemented.is_retryable());
        for code in [400, 401, 403, 404, 422] {
            let outcome = status(code);
            assert!(outcome.is_ignored(), "{code}");
            assert!(
                !outcome.is_retryable() && !outcome.should_failover(),
                "{code}"
            );
        }
    }

    #[test]
    fn rate_limit_carries_retry_after_and_can_be_ignored_by_circuits() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("12"));
        let counted =
            StatusClassifier::new().classify_status(StatusCode::TOO_MANY_REQUESTS, &headers);
        assert!(counted.is_failure() && counted.is_retryable());
        assert_eq!(counted.retry_after(), Some(Duration::from_secs(12)));

        let ignored = StatusClassifier::new()
            .rate_limit_is_failure(false)
            .classify_status(StatusCode::TOO_MANY_REQUESTS, &headers);
        assert!(ignored.is_ignored() && ignored.is_retryable() && ignored.should_failover());
    }

    #[test]
    fn success_is_never_retryable_or_failed_over() {
        let outcome = Outcome::success().with_retryable(true).with_failover(true);
        assert!(!outcome.is_retryable() && !outcome.should_failover());
    }

    #[test]
    fn default_classifier_knows_brace_errors() {
        let classify = |err: BoxError| DefaultClassifier.classify(Err::<&(), _>(&err));
        let plain = DefaultClassifier.classify(Err::<&(), _>(&std::fmt::Error));
        assert!(plain.is_failure() && plain.is_retryable());

        let open = classify(Box::new(CircuitOpen::new(
            "a",
            Some(Duration::from_secs(3)),
        )));
        assert!(!open.is_retryable() && open.should_failover() && open.is_ignored());
        assert_eq!(open.retry_after(), Some(Duration::from_secs(3)));

        let elapsed = classify(Box::new(tower::timeout::error::Elapsed::new()));
        assert!(elapsed.is_failure() && elapsed.is_retryable());

        let exhausted = classify(Box::new(RetriesExhausted::new(
            3,
            crate::GiveUpReason::MaxRetries,
            Box::new(tower::timeout::error::Elapsed::new()),
        )));
        assert!(exhausted.is_failure() && !exhausted.is_retryable() && exhausted.should_failover());

        let shed = classify(Box::new(tower::load_shed::error::Overloaded::new()));
        assert!(shed.is_ignored() && shed.is_retryable() && shed.should_failover());

        let other = classify("boom".into());
        assert!(other.is_failure() && other.is_retryable());
    }

    #[test]
    fn all_failed_on_open_circuits_is_not_the_callers_fault() {
        let all = AllProvidersFailed::new(vec![ProviderFailure::new(
            "a",
            Box::new(CircuitOpen::new("a", None)),
        )]);
        let outcome = classify_error(&all).unwrap();
        // Not counted again by an outer breaker, but a layer above may still fall back.
        assert!(outcome.should_failover());
        assert!(!outcome.is_retryable());
    }

    #[test]
    fn all_failed_takes_shortest_retry_after_and_is_retryable_only_if_all_are() {
        let inner = |err: &(dyn Error + 'static)| {
            let text = err.to_string();
            let secs = text.strip_prefix("limited ")?.parse().ok()?;
            Some(Outcome::transient().with_retry_after(Some(Duration::from_secs(secs))))
        };
        let all = AllProvidersFailed::new(vec![
            ProviderFailure::new("a", "limited 9".into()),
            ProviderFailure::new("b", "limited 4".into()),
        ]);
        let outcome = classify_error_with(&all, &inner).unwrap();
        assert!(outcome.is_retryable() && outcome.should_failover());
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(4)));

        let mixed = AllProvidersFailed::new(vec![
            ProviderFailure::new("a", "limited 9".into()),
            ProviderFailure::new("b", Box::new(DeadlineExceeded::new(Duration::from_secs(1)))),
        ]);
        let outcome = classify_error_with(&mixed, &inner).unwrap();
        assert!(!outcome.is_retryable() && outcome.is_failure());
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(9)));
    }
}
