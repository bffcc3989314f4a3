//! `on_error` lists: retry only the failures a configuration names, such as
//! `on_error: [429, 500, 502, 503, timeout]`.
//!
//! [`OnError`] is a [`Classify`] combinator: it asks the classifier it wraps what an outcome
//! is, then keeps it retryable only when the list names its HTTP status or its
//! [`FailureClass`]. Everything else the inner classifier said — whether the outcome counts
//! against a circuit, whether it fails over, the retry-after hint — is kept, so one
//! classifier judges a stack and the list only narrows what is retried: a failure the inner
//! classifier will not retry (a deadline that passed, retries already exhausted below, an
//! authentication error) is not made retryable by naming its class.
//!
//! ```
//! use brace_core::{BoxError, Classify, StatusClassifier};
//! use brace_core::on_error::{ErrorMatch, OnError};
//!
//! let list: Vec<ErrorMatch> = serde_json::from_str(r#"[429, 503, "timeout"]"#).unwrap();
//! let classifier = OnError::new(list, StatusClassifier::new());
//! let response = |code: u16| http::Response::builder().status(code).body(()).unwrap();
//!
//! let classify = |code| Classify::<_, BoxError>::classify(&classifier, Ok(&response(code)));
//! assert!(classify(429).is_retryable());
//! // 502 is a failure that fails over, but the list does not retry it.
//! assert!(!classify(502).is_retryable() && classify(502).should_failover());
//! ```

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::classify::{Classify, FailureClass, Outcome};

/// One entry of an `on_error` list: an HTTP status code or a [`FailureClass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorMatch {
    /// An HTTP status code (100–599), written as a number: `503`.
    Status(u16),
    /// A class of failure, written as its name: `timeout`, `connect`, `overloaded`,
    /// `rate_limited`, `server`.
    Class(FailureClass),
}

impl ErrorMatch {
    /// Parses a list entry: a status code or a class name.
    ///
    /// # Errors
    ///
    /// A message saying what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(code) = text.parse::<u64>() {
            return Self::status(code);
        }
        match FailureClass::parse(text) {
            Some(FailureClass::Other) | None => Err(format!(
                "unknown on_error entry `{text}` (expected a status code or one of `timeout`, \
                 `connect`, `overloaded`, `rate_limited`, `server`)"
            )),
            Some(class) => Ok(Self::Class(class)),
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

    /// `true` if `outcome` is a failure this entry names.
    pub fn matches(&self, outcome: &Outcome) -> bool {
        match *self {
            Self::Status(code) => outcome.status() == Some(code),
            Self::Class(class) => outcome.class() == class,
        }
    }
}

impl fmt::Display for ErrorMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "{code}"),
            Self::Class(class) => f.write_str(class.as_str()),
        }
    }
}

impl Serialize for ErrorMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Status(code) => serializer.serialize_u16(*code),
            Self::Class(class) => serializer.serialize_str(class.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ErrorMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a status code or one of `timeout`, `connect`, `overloaded`, \
                     `rate_limited`, `server`",
                )
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<ErrorMatch, E> {
                ErrorMatch::status(code).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<ErrorMatch, E> {
                let code = u64::try_from(code)
                    .map_err(|_| E::custom(format!("invalid status code {code} in on_error")))?;
                ErrorMatch::status(code).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ErrorMatch, E> {
                ErrorMatch::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Retries only the failures its list names; see the [module docs](self).
///
/// # Clone
///
/// Clones share the list.
#[derive(Debug, Clone)]
pub struct OnError<C> {
    list: Arc<[ErrorMatch]>,
    inner: C,
}

impl<C> OnError<C> {
    /// Retries the retryable failures `inner` finds whose status or class `list` names, and
    /// no other.
    pub fn new(list: impl IntoIterator<Item = ErrorMatch>, inner: C) -> Self {
        Self {
            list: list.into_iter().collect(),
            inner,
        }
    }

    /// The entries that are retried.
    pub fn list(&self) -> &[ErrorMatch] {
        &self.list
    }

    /// The classifier asked first.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// `true` if the list names `outcome`'s status or class.
    pub fn retries(&self, outcome: &Outcome) -> bool {
        self.list.iter().any(|entry| entry.matches(outcome))
    }
}

impl<T, E, C: Classify<T, E>> Classify<T, E> for OnError<C> {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        let outcome = self.inner.classify(result);
        if outcome.is_success() {
            return outcome;
        }
        outcome.with_retryable(outcome.is_retryable() && self.retries(&outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, CircuitOpen, DefaultClassifier, GiveUpReason, RetriesExhausted};

    fn seed_list() -> Vec<ErrorMatch> {
        serde_json::from_str(r#"[429, 500, 502, 503, "timeout"]"#).unwrap()
    }

    #[test]
    fn entries_parse_from_numbers_and_words() {
        assert_eq!(
            seed_list(),
            [
                ErrorMatch::Status(429),
                ErrorMatch::Status(500),
                ErrorMatch::Status(502),
                ErrorMatch::Status(503),
                ErrorMatch::Class(FailureClass::Timeout)
            ]
        );
        let words: Vec<ErrorMatch> =
            serde_json::from_str(r#"["connect", "Overloaded", "504", "rate-limited"]"#).unwrap();
        assert_eq!(
            words,
            [
                ErrorMatch::Class(FailureClass::Connect),
                ErrorMatch::Class(FailureClass::Overloaded),
                ErrorMatch::Status(504),
                ErrorMatch::Class(FailureClass::RateLimited),
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
                serde_json::from_str::<Vec<ErrorMatch>>(bad).is_err(),
                "{bad}"
            );
        }
        let text = serde_json::to_string(&seed_list()).unwrap();
        assert_eq!(text, r#"[429,500,502,503,"timeout"]"#);
    }

    #[test]
    fn listed_statuses_are_retried_and_the_rest_keep_their_verdict() {
        let on_error = OnError::new(seed_list(), crate::StatusClassifier::new());
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
        assert_eq!(
            limited.retry_after(),
            Some(std::time::Duration::from_secs(3))
        );
        assert!(classify(503).is_retryable());
        // 504 is a timeout: `timeout` names it.
        assert!(classify(504).is_retryable());
        let on_error = OnError::new([ErrorMatch::Status(429)], crate::StatusClassifier::new());
        let bad_gateway = Classify::<_, BoxError>::classify(&on_error, Ok(&response(502)));
        assert!(
            !bad_gateway.is_retryable()
                && bad_gateway.is_failure()
                && bad_gateway.should_failover()
        );
        assert!(classify(400).is_ignored() && !classify(400).is_retryable());
        assert!(classify(200).is_success());
    }

    #[test]
    fn errors_are_matched_by_class() {
        let on_error = OnError::new(seed_list(), DefaultClassifier);
        let classify = |err: BoxError| on_error.classify(Err::<&(), _>(&err));
        assert!(classify(Box::new(tower::timeout::error::Elapsed::new())).is_retryable());
        assert!(
            classify(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut))).is_retryable()
        );
        // Not in the list: still a failure that fails over, but not retried.
        let refused = classify(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(!refused.is_retryable() && refused.is_failure() && refused.should_failover());
        assert!(!classify("boom".into()).is_retryable());
        assert!(!classify(Box::new(CircuitOpen::new("a", None))).is_retryable());
        // A timeout inside RetriesExhausted is a timeout, but naming the class does not
        // make retries that were given up on retryable again; nor a passed deadline.
        let exhausted = RetriesExhausted::new(
            3,
            GiveUpReason::MaxRetries,
            Box::new(tower::timeout::error::Elapsed::new()),
        );
        let outcome = classify(Box::new(exhausted));
        assert_eq!(outcome.class(), FailureClass::Timeout);
        assert!(!outcome.is_retryable());
        let deadline = classify(Box::new(crate::DeadlineExceeded::new(
            std::time::Duration::from_secs(1),
        )));
        assert!(!deadline.is_retryable());
    }
}
