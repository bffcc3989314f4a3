//! The errors that cross layer boundaries.
//!
//! Each layer that refuses or gives up on a call returns one of these inside a
//! [`BoxError`], as tower's `Elapsed` is returned by its timeout. They live here, in the
//! shared vocabulary, so that any classifier can recognise them whatever order the layers
//! are stacked in; each layer crate re-exports its own.
//!
//! Test for them with `err.is::<CircuitOpen>()` or `err.downcast_ref::<RetriesExhausted>()`,
//! or with [`find`] to look through wrapping errors.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;
use crate::classify::FailureClass;

/// Finds the first error of type `E` in `err`'s chain of sources, `err` included, looking
/// into every provider's error of an [`AllProvidersFailed`] (in the order of its trail).
///
/// ```
/// use brace_core::error::{find, GiveUpReason, RetriesExhausted};
/// use brace_core::CircuitOpen;
///
/// let open = CircuitOpen::new("openai", None);
/// let err = RetriesExhausted::new(2, GiveUpReason::MaxRetries, Box::new(open));
/// assert_eq!(find::<CircuitOpen>(&err).unwrap().name(), "openai");
/// ```
pub fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut found = None;
    visit(err, &mut |err| {
        found = err.downcast_ref::<E>();
        found.is_some()
    });
    found
}

/// Every error of type `E` in `err`'s chain of sources and in every provider's error of an
/// [`AllProvidersFailed`], in order.
///
/// ```
/// use brace_core::error::{find_all, AllProvidersFailed, ProviderFailure};
/// use brace_core::CircuitOpen;
///
/// let all = AllProvidersFailed::new(vec![
///     ProviderFailure::skipped("a", Box::new(CircuitOpen::new("a", None))),
///     ProviderFailure::new("b", "503".into()),
///     ProviderFailure::skipped("c", Box::new(CircuitOpen::new("c", None))),
/// ]);
/// let names: Vec<_> = find_all::<CircuitOpen>(&all).iter().map(|open| open.name()).collect();
/// assert_eq!(names, ["a", "c"]);
/// ```
pub fn find_all<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Vec<&'a E> {
    let mut found = Vec::new();
    visit(err, &mut |err| {
        found.extend(err.downcast_ref::<E>());
        false
    });
    found
}

/// Calls `f` on `err`, its sources, and the errors of every failure of an
/// [`AllProvidersFailed`] met on the way, depth first, until `f` returns `true`. Returns
/// whether it did.
fn visit<'a>(
    err: &'a (dyn Error + 'static),
    f: &mut dyn FnMut(&'a (dyn Error + 'static)) -> bool,
) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if f(err) {
            return true;
        }
        if let Some(all) = err.downcast_ref::<AllProvidersFailed>() {
            return all
                .failures()
                .iter()
                .any(|failure| visit(&*failure.error, f));
        }
        next = err.source();
    }
    false
}

/// Writes `err` and its chain of sources, joined by `: `, skipping a source whose message
/// its parent's already contains (errors that print their cause and also return it as
/// their source are printed once).
///
/// ```
/// use brace_core::error::{report, GiveUpReason, RetriesExhausted};
///
/// let err = RetriesExhausted::new(3, GiveUpReason::MaxRetries, "503 service unavailable".into());
/// assert_eq!(
///     report(&err),
///     "gave up after 3 attempts (maximum retries reached): 503 service unavailable"
/// );
/// ```
pub fn report(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        let message = source.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = source.source();
    }
    text
}

// ===== CircuitOpen =====

/// A circuit breaker refused the call because its circuit is open.
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
    cause: Option<FailureClass>,
}

impl CircuitOpen {
    /// A refusal by the breaker named `name`, which may admit calls again after
    /// `retry_after` (if it knows when).
    pub fn new(name: impl Into<Arc<str>>, retry_after: Option<Duration>) -> Self {
        Self {
            name: name.into(),
            retry_after,
            cause: None,
        }
    }

    /// Records what kind of failure opened the circuit.
    #[must_use]
    pub fn with_cause(mut self, cause: Option<FailureClass>) -> Self {
        self.cause = cause;
        self
    }

    /// What kind of failure opened the circuit, if the breaker knows (`None` when it was
    /// forced open by hand): a circuit opened by rate limits answers like a rate limit.
    pub fn cause(&self) -> Option<FailureClass> {
        self.cause
    }

    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker may admit a call again, if known (`None` while the
    /// breaker is forced open).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}` open", self.name)?;
        match self.cause {
            Some(FailureClass::Other) | None => {}
            Some(cause) => write!(f, " ({})", cause_text(cause))?,
        }
        if let Some(wait) = self.retry_after {
            write!(f, "; may retry in {}", DisplayWait(wait))?;
        }
        Ok(())
    }
}

fn cause_text(cause: FailureClass) -> &'static str {
    match cause {
        FailureClass::RateLimited => "rate limited",
        FailureClass::Overloaded => "overloaded",
        FailureClass::Timeout => "timing out",
        FailureClass::Connect => "unreachable",
        FailureClass::Server => "failing",
        FailureClass::Other => "failing",
    }
}

/// A wait as people read it: `850ms`, `3.2s`, `45s`.
struct DisplayWait(Duration);

impl fmt::Display for DisplayWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms}ms")
        } else if ms < 10_000 {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        } else {
            write!(f, "{}s", self.0.as_secs())
        }
    }
}

impl Error for CircuitOpen {}

// ===== RetriesExhausted =====

/// Why a retry layer stopped retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The maximum number of retries was reached.
    MaxRetries,
    /// The retry budget had no retries left.
    BudgetExhausted,
    /// The server asked to wait longer than the configured maximum.
    RetryAfterTooLong(Duration),
    /// The next attempt could not start before the overall deadline.
    Deadline,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxRetries => f.write_str("maximum retries reached"),
            Self::BudgetExhausted => f.write_str("retry budget exhausted"),
            Self::RetryAfterTooLong(wait) => {
                write!(
                    f,
                    "server asked to wait {}ms, over the maximum",
                    wait.as_millis()
                )
            }
            Self::Deadline => f.write_str("no time left before the deadline"),
        }
    }
}

/// A retry layer gave up: it says how many attempts were made, why it stopped, and keeps the
/// last attempt's error (its [`source`](Error::source)).
#[derive(Debug)]
pub struct RetriesExhausted {
    attempts: u32,
    reason: GiveUpReason,
    last: BoxError,
}

impl RetriesExhausted {
    /// `attempts` calls were made (the first included) and the last failed with `last`.
    pub fn new(attempts: u32, reason: GiveUpReason, last: BoxError) -> Self {
        Self {
            attempts,
            reason,
            last,
        }
    }

    /// How many attempts were made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why retrying stopped.
    pub fn reason(&self) -> GiveUpReason {
        self.reason
    }

    /// The error of the last attempt.
    pub fn last_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last
    }

    /// Takes the error of the last attempt.
    pub fn into_last_error(self) -> BoxError {
        self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt{} ({}): {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.reason,
            self.last
        )
    }
}

impl Error for RetriesExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last)
    }
}

// ===== AllProvidersFailed =====

/// One provider's entry in the trail of [`AllProvidersFailed`]: it was tried and failed, or
/// it was skipped (its circuit open, excluded for the pass) and the error says why.
#[derive(Debug)]
pub struct ProviderFailure {
    /// The provider's name.
    pub name: Arc<str>,
    /// What went wrong there, or why it was skipped.
    pub error: BoxError,
    skipped: bool,
    pass: Option<Arc<str>>,
}

impl ProviderFailure {
    /// The provider named `name` was tried and failed with `error`.
    pub fn new(name: impl Into<Arc<str>>, error: BoxError) -> Self {
        Self {
            name: name.into(),
            error,
            skipped: false,
            pass: None,
        }
    }

    /// The provider named `name` was not tried; `reason` says why (a [`CircuitOpen`], an
    /// exclusion).
    pub fn skipped(name: impl Into<Arc<str>>, reason: BoxError) -> Self {
        Self {
            skipped: true,
            ..Self::new(name, reason)
        }
    }

    /// Labels the entry with the pass it belongs to (a degradation level's name), when a
    /// request went through several.
    #[must_use]
    pub fn in_pass(mut self, pass: impl Into<Arc<str>>) -> Self {
        self.pass = Some(pass.into());
        self
    }

    /// `true` if the provider was not tried.
    pub fn is_skipped(&self) -> bool {
        self.skipped
    }

    /// The pass the entry belongs to, if the request went through several.
    pub fn pass(&self) -> Option<&str> {
        self.pass.as_deref()
    }
}

impl fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(pass) = &self.pass {
            write!(f, " @{pass}")?;
        }
        f.write_str(if self.skipped { " (skipped): " } else { ": " })?;
        // Errors that name their provider themselves are not prefixed with it twice.
        let text = report(&*self.error);
        let text = text
            .strip_prefix(&*self.name)
            .and_then(|rest| rest.strip_prefix(": "))
            .unwrap_or(&text);
        f.write_str(text)
    }
}

/// Every provider a failover service could use failed or was skipped: the whole trail, in
/// order — each provider tried (with its last error) or skipped (with why), across every
/// pass a request made (a degradation layer adds its passes' trails together).
///
/// Its [`Display`](fmt::Display) lists every entry; it has no single
/// [`source`](Error::source) (use [`find`] / [`find_all`], which look into every entry).
#[derive(Debug)]
pub struct AllProvidersFailed {
    failures: Vec<ProviderFailure>,
}

impl AllProvidersFailed {
    /// The trail, in the order the providers were tried or skipped.
    pub fn new(failures: Vec<ProviderFailure>) -> Self {
        Self { failures }
    }

    /// Every entry of the trail, in order.
    pub fn failures(&self) -> &[ProviderFailure] {
        &self.failures
    }

    /// The entries of the providers that were tried.
    pub fn tried(&self) -> impl Iterator<Item = &ProviderFailure> {
        self.failures.iter().filter(|failure| !failure.skipped)
    }

    /// The entries of the providers that were skipped.
    pub fn skipped(&self) -> impl Iterator<Item = &ProviderFailure> {
        self.failures.iter().filter(|failure| failure.skipped)
    }

    /// `true` if no provider was tried (every one was skipped, or there was none).
    pub fn none_tried(&self) -> bool {
        self.tried().next().is_none()
    }

    /// Labels every entry that has no pass yet with `pass`.
    #[must_use]
    pub fn in_pass(mut self, pass: &Arc<str>) -> Self {
        for failure in &mut self.failures {
            if failure.pass.is_none() {
                failure.pass = Some(pass.clone());
            }
        }
        self
    }

    /// Appends another trail (a later pass) to this one.
    pub fn extend(&mut self, later: AllProvidersFailed) {
        self.failures.extend(later.failures);
    }

    /// Takes the failures.
    pub fn into_failures(self) -> Vec<ProviderFailure> {
        self.failures
    }
}

impl fmt::Display for AllProvidersFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failures.is_empty() {
            return f.write_str("all providers failed: no provider was available");
        }
        f.write_str(if self.none_tried() {
            "no provider could be tried: ["
        } else {
            "all providers failed: ["
        })?;
        for (i, failure) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{failure}")?;
        }
        f.write_str("]")
    }
}

impl Error for AllProvidersFailed {}

// ===== DeadlineExceeded =====

/// The overall deadline for a call passed before it finished.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineExceeded {
    after: Duration,
}

impl DeadlineExceeded {
    /// The deadline of `after` passed.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The deadline that passed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after.is_zero() {
            f.write_str("the request's deadline had passed")
        } else {
            write!(f, "deadline of {}ms exceeded", self.after.as_millis())
        }
    }
}

impl Error for DeadlineExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_providers_failed_lists_each_in_order() {
        let err = AllProvidersFailed::new(vec![
            ProviderFailure::new("anthropic", "overloaded".into()),
            ProviderFailure::skipped(
                "openai",
                Box::new(
                    CircuitOpen::new("openai", Some(Duration::from_millis(2500)))
                        .with_cause(Some(FailureClass::RateLimited)),
                ),
            ),
        ]);
        assert_eq!(
            err.to_string(),
            "all providers failed: [anthropic: overloaded, openai (skipped): circuit `openai` \
             open (rate limited); may retry in 2.5s]"
        );
    }

    #[test]
    fn a_cause_is_printed_once() {
        #[derive(Debug)]
        struct Named;
        impl fmt::Display for Named {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("openai: server error (500)")
            }
        }
        impl Error for Named {}
        let exhausted = RetriesExhausted::new(2, GiveUpReason::MaxRetries, Box::new(Named));
        let err = AllProvidersFailed::new(vec![
            ProviderFailure::new("openai", Box::new(exhausted)).in_pass("full"),
        ]);
        assert_eq!(
            err.to_string(),
            "all providers failed: [openai @full: gave up after 2 attempts (maximum retries \
             reached): openai: server error (500)]"
        );
        let text = err.to_string();
        assert_eq!(text.matches("server error").count(), 1);
    }

    #[test]
    fn find_looks_into_every_entry_of_the_trail() {
        let err = AllProvidersFailed::new(vec![
            ProviderFailure::new("a", "boom".into()),
            ProviderFailure::skipped("b", Box::new(CircuitOpen::new("b", None))),
        ]);
        assert_eq!(find::<CircuitOpen>(&err).unwrap().name(), "b");
        let wrapped = RetriesExhausted::new(1, GiveUpReason::MaxRetries, Box::new(err));
        assert_eq!(find_all::<CircuitOpen>(&wrapped).len(), 1);
        assert!(find::<DeadlineExceeded>(&wrapped).is_none());
    }

    #[test]
    fn retries_exhausted_says_why_and_keeps_last_error() {
        let err = RetriesExhausted::new(3, GiveUpReason::BudgetExhausted, "503".into());
        assert_eq!(
            err.to_string(),
            "gave up after 3 attempts (retry budget exhausted): 503"
        );
        assert_eq!(err.source().unwrap().to_string(), "503");
        let boxed: BoxError = Box::new(err);
        let inner = boxed.downcast_ref::<RetriesExhausted>().unwrap();
        assert_eq!(inner.attempts(), 3);
    }
}
