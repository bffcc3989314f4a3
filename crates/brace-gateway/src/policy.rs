//! Per-route policies for failures that are not the provider's fault: what a content-policy
//! refusal and a context-length error do, and when a stream commits (a thin wrapper over
//! [`brace_llm::commit::CommitPolicy`]).

use std::fmt;

use brace_core::commit::{Commit, Commitment};
use brace_llm::commit::{CommitFuture, CommitPolicy};
use brace_llm::continuation::{ContinuationLayer, ContinuationTarget};
use brace_llm::fallback::FallbackLayer;
use brace_llm::{ChatResponse, LlmClassifier, LlmError, LlmErrorKind};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use tower::Layer;
use tower::util::BoxCloneSyncService;

use crate::config::{RouteConfig, RouteTarget};
use crate::metrics::Metrics;
use crate::stack::{ChatService, GatewayBuildError};

/// Builds a failover service over the given providers, in order, with a classifier and a
/// commit policy; also returns each provider as a continuation target.
pub(crate) type BuildFailover<'a> = dyn Fn(
        &[RouteTarget],
        LlmClassifier,
        RouteCommit,
    ) -> Result<(ChatService, Vec<ContinuationTarget<ChatService>>), GatewayBuildError>
    + 'a;

/// One route's service: failover over its providers with its commit policy and its
/// classifier, then the fallbacks it names for refusals and prompts too long, then
/// continuation if it is on:
///
/// continuation → fallback on context length → fallback on content filter → failover
pub(crate) fn route_service(
    route: &RouteConfig,
    build: &BuildFailover<'_>,
    metrics: &Metrics,
) -> Result<ChatService, GatewayBuildError> {
    let commit = RouteCommit(route.commit);
    let classifier = route
        .on_content_filter
        .classifier(route.on_context_length.is_some());
    let (failover, continuation_targets) = build(&route.providers, classifier, commit)?;
    let mut service = failover;
    let named = |names: &[String]| -> Vec<RouteTarget> {
        names
            .iter()
            .map(|name| RouteTarget {
                name: name.clone(),
                model: None,
                passthrough: false,
            })
            .collect()
    };
    if let OnContentFilter::Providers(names) = &route.on_content_filter {
        // Asked in order: one refusing moves on to the next.
        let classifier = LlmClassifier::new().failover_on(LlmErrorKind::ContentFiltered, true);
        let (fallback, _) = build(&named(names), classifier, commit)?;
        service = BoxCloneSyncService::new(
            FallbackLayer::new(fallback)
                .on(LlmErrorKind::ContentFiltered)
                .layer(service),
        );
    }
    if let Some(names) = &route.on_context_length {
        let (fallback, _) = build(&named(names), LlmClassifier::new(), commit)?;
        service = BoxCloneSyncService::new(
            FallbackLayer::new(fallback)
                .on(LlmErrorKind::ContextLengthExceeded)
                .layer(service),
        );
    }
    if route.continuation {
        let counter = metrics.clone();
        service = BoxCloneSyncService::new(
            ContinuationLayer::new(continuation_targets)
                .on_attempt(move |attempt| {
                    counter.continuation(
                        attempt.broken,
                        attempt.target,
                        attempt.how.as_str(),
                        attempt.started,
                    );
                })
                .layer(service),
        );
    }
    Ok(service)
}

/// What a route does with a content-policy refusal (`on_content_filter`).
///
/// ```yaml
/// on_content_filter: return          # the default: a 400 `content_policy_violation`
/// on_content_filter: failover        # the route's next provider answers instead
/// on_content_filter: [lenient-a, b]  # these providers are asked instead, in order
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OnContentFilter {
    /// Answer the caller with the refusal: a 400 in OpenAI's shape with code
    /// `content_policy_violation`; not retried, not failed over, not counted against the
    /// provider.
    #[default]
    Return,
    /// Fail over to the route's next provider, as for any failure another provider may
    /// fix (still not counted against the provider that refused).
    Failover,
    /// Ask these providers instead, in order (LiteLLM's `content_policy_fallbacks`). If
    /// they fail too, the caller gets the original refusal.
    Providers(Vec<String>),
}

impl OnContentFilter {
    /// The providers named, if any.
    pub fn providers(&self) -> &[String] {
        match self {
            Self::Providers(names) => names,
            Self::Return | Self::Failover => &[],
        }
    }

    /// The classifier of the route's failover service under this policy and
    /// `on_context_length`: a refusal fails over only with [`Failover`](Self::Failover); a
    /// context-length error fails over along the route unless providers are named for it.
    pub fn classifier(&self, context_length_providers: bool) -> LlmClassifier {
        LlmClassifier::new()
            .failover_on(LlmErrorKind::ContentFiltered, *self == Self::Failover)
            .failover_on(
                LlmErrorKind::ContextLengthExceeded,
                !context_length_providers,
            )
    }
}

impl serde::Serialize for OnContentFilter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Return => serializer.serialize_str("return"),
            Self::Failover => serializer.serialize_str("failover"),
            Self::Providers(names) => names.serialize(serializer),
        }
    }
}

impl<'de> serde::Deserialize<'de> for OnContentFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expected;

        impl<'de> Visitor<'de> for Expected {
            type Value = OnContentFilter;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`return`, `failover`, or a list of provider names")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<OnContentFilter, E> {
                match value {
                    "return" => Ok(OnContentFilter::Return),
                    "failover" => Ok(OnContentFilter::Failover),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OnContentFilter, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                if names.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one provider name"));
                }
                Ok(OnContentFilter::Providers(names))
            }
        }

        deserializer.deserialize_any(Expected)
    }
}

/// A route's commit policy as its failover service applies it.
///
/// Every provider's stack already holds a stream back until its first content delta (its
/// stream guard), so `first_content` commits at once here, costing a stream nothing; a
/// hold-back reads on to its commit point.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteCommit(pub CommitPolicy);

impl Commit<ChatResponse> for RouteCommit {
    type Error = LlmError;
    type Future = CommitFuture;

    fn commit(&self, response: ChatResponse) -> CommitFuture {
        self.0.commit(response)
    }

    fn commit_now(
        &self,
        response: ChatResponse,
    ) -> Commitment<ChatResponse, LlmError, CommitFuture> {
        if self.0 == CommitPolicy::FirstContent {
            Commitment::Now(Ok(response))
        } else {
            self.0.commit_now(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_keyword_or_a_list_and_says_what_it_expected() {
        let read = |text: &str| serde_json::from_str::<OnContentFilter>(text);
        assert_eq!(read(r#""return""#).unwrap(), OnContentFilter::Return);
        assert_eq!(read(r#""failover""#).unwrap(), OnContentFilter::Failover);
        assert_eq!(
            read(r#"["a","b"]"#).unwrap(),
            OnContentFilter::Providers(vec!["a".into(), "b".into()])
        );
        let err = read(r#""sometimes""#).unwrap_err().to_string();
        assert!(err.contains("`return`, `failover`, or a list"), "{err}");
        assert!(read("[]").is_err());
    }

    #[test]
    fn the_classifier_fails_over_on_refusals_only_when_asked() {
        use brace_core::Classify;
        let refusal = LlmError::new(LlmErrorKind::ContentFiltered, "no");
        let too_long = LlmError::new(LlmErrorKind::ContextLengthExceeded, "long");
        let outcome = |classifier: &LlmClassifier, err: &LlmError| {
            Classify::<ChatResponse, LlmError>::classify(classifier, Err(err))
        };
        let default = OnContentFilter::Return.classifier(false);
        assert!(!outcome(&default, &refusal).should_failover());
        assert!(outcome(&default, &too_long).should_failover());
        let failover = OnContentFilter::Failover.classifier(true);
        assert!(outcome(&failover, &refusal).should_failover());
        assert!(!outcome(&failover, &too_long).should_failover());
        assert!(outcome(&failover, &refusal).is_ignored(), "never counted");
    }
}
