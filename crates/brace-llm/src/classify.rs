//! [`LlmClassifier`]: what an LLM provider's outcome means for each layer.

use std::error::Error;

use brace_core::classify::classify_error_with;
use brace_core::{BoxError, Classify, FailureClass, Outcome, Verdict};

use crate::error::{LlmError, LlmErrorKind};

const ALL_KINDS: [LlmErrorKind; 15] = LlmErrorKind::ALL;

fn bit(kind: LlmErrorKind) -> u32 {
    1 << ALL_KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

fn set_of(predicate: fn(LlmErrorKind) -> bool) -> u32 {
    ALL_KINDS
        .iter()
        .filter(|kind| predicate(**kind))
        .fold(0, |set, kind| set | bit(*kind))
}

/// Classifies the outcomes of LLM provider services for every brace layer.
///
/// By default, per [`LlmErrorKind`]:
///
/// | kind | counts against a circuit | retried | fails over |
/// |---|---|---|---|
/// | rate limited, overloaded, server, timeout, connect, malformed response, stream interrupted | yes | yes (after Retry-After) | yes |
/// | quota exhausted, auth | yes | no | yes |
/// | context length exceeded, model not found | no | no | yes |
/// | content filtered | no | no | no |
/// | bad request, cancelled | no | no | no |
///
/// A content-policy refusal is returned to the caller as it is: another provider answering
/// it would bypass a safety decision. An operator who wants content-policy fallbacks opts in
/// with `.failover_on(LlmErrorKind::ContentFiltered, true)` (any provider next in line), or
/// names the providers to ask with a [`FallbackLayer`](crate::fallback::FallbackLayer).
///
/// Each column can be changed per kind. Errors that are not [`LlmError`]s are judged by
/// [`brace_core::classify::classify_error`] (circuit open, retries exhausted, all providers
/// failed, timeouts), looking inside wrapping errors for the `LlmError`.
///
/// ```
/// use brace_core::{BoxError, Classify};
/// use brace_llm::{ChatResponse, LlmClassifier, LlmError, LlmErrorKind};
///
/// let classifier = LlmClassifier::new();
/// let err: BoxError = Box::new(LlmError::new(LlmErrorKind::ContextLengthExceeded, "too long"));
/// let outcome = Classify::<ChatResponse, _>::classify(&classifier, Err(&err));
/// assert!(outcome.is_ignored() && !outcome.is_retryable() && outcome.should_failover());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LlmClassifier {
    failures: u32,
    retryable: u32,
    failover: u32,
}

impl Default for LlmClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl LlmClassifier {
    /// The default classification (see the table above).
    pub fn new() -> Self {
        Self {
            failures: set_of(LlmErrorKind::counts_as_failure),
            retryable: set_of(LlmErrorKind::is_retryable),
            failover: set_of(LlmErrorKind::should_failover),
        }
    }

    /// Whether errors of `kind` count against a circuit.
    #[must_use]
    pub fn count_as_failure(mut self, kind: LlmErrorKind, yes: bool) -> Self {
        set(&mut self.failures, kind, yes);
        self
    }

    /// Whether errors of `kind` are retried.
    #[must_use]
    pub fn retry_on(mut self, kind: LlmErrorKind, yes: bool) -> Self {
        set(&mut self.retryable, kind, yes);
        self
    }

    /// Whether errors of `kind` move on to another provider.
    #[must_use]
    pub fn failover_on(mut self, kind: LlmErrorKind, yes: bool) -> Self {
        set(&mut self.failover, kind, yes);
        self
    }

    /// The outcome of one provider error.
    pub fn classify_llm_error(&self, err: &LlmError) -> Outcome {
        let kind = bit(err.kind());
        let verdict = if self.failures & kind != 0 {
            Verdict::Failure
        } else {
            Verdict::Ignored
        };
        let (class, status) = match err.kind() {
            LlmErrorKind::RateLimited => (FailureClass::RateLimited, err.status()),
            LlmErrorKind::Overloaded => (FailureClass::Overloaded, err.status()),
            LlmErrorKind::Server => (FailureClass::Server, err.status()),
            // Read as a bad gateway, whatever status the body came with.
            LlmErrorKind::MalformedResponse => (FailureClass::Server, Some(502)),
            LlmErrorKind::Timeout => (FailureClass::Timeout, err.status()),
            LlmErrorKind::Connect | LlmErrorKind::StreamInterrupted => {
                (FailureClass::Connect, err.status())
            }
            _ => (FailureClass::Other, err.status()),
        };
        Outcome::failure()
            .with_class(class)
            // A prompt that does not fit may fit with a smaller `max_tokens`.
            .with_reshaping_may_help(
                class.reshaping_may_help() || err.kind() == LlmErrorKind::ContextLengthExceeded,
            )
            .with_status(status)
            .with_verdict(verdict)
            .with_retryable(self.retryable & kind != 0)
            .with_failover(self.failover & kind != 0)
            .with_retry_after(err.retry_after())
    }

    /// The outcome of any error: an [`LlmError`] by kind, brace's own errors by
    /// [`classify_error_with`], anything else as a transient failure.
    pub fn classify_dyn_error(&self, err: &(dyn Error + 'static)) -> Outcome {
        classify_error_with(err, &|err| {
            err.downcast_ref::<LlmError>()
                .map(|err| self.classify_llm_error(err))
        })
        .unwrap_or_else(Outcome::transient)
    }
}

fn set(bits: &mut u32, kind: LlmErrorKind, yes: bool) {
    if yes {
        *bits |= bit(kind);
    } else {
        *bits &= !bit(kind);
    }
}

impl<T> Classify<T, LlmError> for LlmClassifier {
    fn classify(&self, result: Result<&T, &LlmError>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(err) => self.classify_llm_error(err),
        }
    }
}

impl<T> Classify<T, BoxError> for LlmClassifier {
    fn classify(&self, result: Result<&T, &BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(err) => self.classify_dyn_error(&**err),
        }
    }
}
