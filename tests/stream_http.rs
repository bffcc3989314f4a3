//! Streaming resilience over real SSE on loopback: the simulated provider served by
//! `SimServer`, read by the real `OpenAiClient` and `AnthropicClient`, through the same stack
//! as in production (stream guard + retry per provider, failover, continuation). Every case
//! ends in the complete answer or a clear error, never a truncated success; each test is
//! bounded so that nothing can hang.

mod stream_support;

use std::future::Future;
use std::time::Duration;

use brace::llm::continuation::{ContinuationLayer, ContinuationTarget, continued_by};
use brace::llm::{ChatResponse, LlmErrorKind};
use brace::providers::anthropic::AnthropicClient;
use brace::providers::openai::{OpenAiClient, OpenAiConfig};
use brace::providers::provider::{ApiKey, ClientConfig};
use brace::providers::sse::MalformedEvents;
use brace::sim::{
    Behavior, Condition, Failure, Reply, SimConfig, SimHandle, SimServer, StreamFault,
};
use stream_support::{
    Chat, Limits, TEXT, assert_whole_or_error, failover, items, request, split, stack,
};
use tower::{Layer, ServiceExt};

/// A short idle limit in real time, for the provider whose stall is tested.
const SHORT_IDLE: Limits = Limits {
    idle: Duration::from_millis(400),
    ..GENEROUS
};

/// A short first-token limit in real time, for the provider whose slow start is tested.
const SHORT_FIRST_TOKEN: Limits = Limits {
    first_token: Duration::from_millis(400),
    ..GENEROUS
};

/// Generous limits for providers that are meant to answer, so a loaded machine cannot make
/// them miss a limit.
const GENEROUS: Limits = Limits {
    first_token: Duration::from_secs(10),
    idle: Duration::from_secs(10),
    total: Duration::from_secs(20),
};

/// A bound on each whole test: past it, something hung.
async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the test finished within its bound")
}

async fn server(name: &str, behavior: Behavior) -> SimServer {
    brace::providers::install_crypto_provider();
    SimServer::start(SimHandle::new(
        SimConfig::new(name)
            .with_model(format!("{name}-model"))
            .with_behavior(behavior),
    ))
    .await
    .unwrap()
}

fn openai(name: &str, server: &SimServer, malformed: MalformedEvents) -> OpenAiClient {
    let config = OpenAiConfig::compatible(name.to_owned(), format!("{}/v1", server.base_url()))
        .map_client(|provider| {
            provider
                .with_api_key(ApiKey::new("sk-test-stream"))
                .with_timeout(Duration::from_secs(20))
                .with_malformed_events(malformed)
        });
    OpenAiClient::new(config).unwrap()
}

fn anthropic(name: &str, server: &SimServer) -> AnthropicClient {
    AnthropicClient::new(
        ClientConfig::new(name.to_owned(), server.base_url())
            .with_api_key(ApiKey::new("sk-ant-test-stream"))
            .with_timeout(Duration::from_secs(20)),
    )
    .unwrap()
}

fn text_reply() -> Reply {
    Reply::new().with_text(TEXT)
}

/// The OpenAI role chunk, then one event per word.
fn after_words(words: usize) -> usize {
    1 + words
}

async fn call<S>(service: S) -> ChatResponse
where
    S: tower::Service<brace::llm::ChatRequest, Response = ChatResponse>,
    S::Error: std::fmt::Debug,
{
    service.oneshot(request()).await.expect("the call commits")
}

struct Pair {
    primary: SimServer,
    backup: SimServer,
    stacks: Vec<(&'static str, Chat)>,
}

/// An OpenAI-compatible primary and an Anthropic backup (which accepts a prefill).
async fn pair(primary: Behavior, backup: Behavior, malformed: MalformedEvents) -> Pair {
    pair_with(GENEROUS, primary, backup, malformed).await
}

/// As [`pair`], with the primary's stream guard limits.
async fn pair_with(
    limits: Limits,
    primary: Behavior,
    backup: Behavior,
    malformed: MalformedEvents,
) -> Pair {
    let primary_server = server("primary", primary).await;
    let backup_server = server("backup", backup).await;
    let stacks = vec![
        (
            "primary",
            stack(openai("primary", &primary_server, malformed), limits),
        ),
        (
            "backup",
            stack(anthropic("backup", &backup_server), GENEROUS),
        ),
    ];
    Pair {
        primary: primary_server,
        backup: backup_server,
        stacks,
    }
}

impl Pair {
    fn failover(&self) -> stream_support::Failover {
        failover(&self.stacks)
    }

    fn continued(&self) -> brace::llm::continuation::Continuation<stream_support::Failover, Chat> {
        ContinuationLayer::new([
            ContinuationTarget::new("primary", self.stacks[0].1.clone()),
            ContinuationTarget::new("backup", self.stacks[1].1.clone()).accepts_prefill(true),
        ])
        .layer(self.failover())
    }
}

#[tokio::test]
async fn cut_after_n_of_m_over_http_is_an_error_without_continuation() {
    bounded(async {
        let p = pair(
            Behavior::reply(text_reply().with_fault(StreamFault::Break {
                after: after_words(4),
            })),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let (answer, error) = split(items(call(p.failover()).await).await);
        assert_whole_or_error(&answer, error.as_ref());
        let error = error.expect("the dropped connection is an error item");
        assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted, "{error}");
        assert_eq!(error.provider(), Some("primary"));
        assert_eq!(answer.text(), "one two three four ");
        assert_eq!(p.backup.handle().calls(), 0);
    })
    .await;
}

#[tokio::test]
async fn cut_after_n_of_m_over_http_is_continued_on_the_prefill_accepting_provider() {
    bounded(async {
        let p = pair(
            Behavior::reply(text_reply().with_fault(StreamFault::Break {
                after: after_words(4),
            })),
            Behavior::when(Condition::Prefill, Behavior::reply(text_reply())),
            MalformedEvents::Skip,
        )
        .await;
        let items = items(call(p.continued()).await).await;
        let marked = items
            .iter()
            .filter_map(|item| item.as_ref().ok().and_then(continued_by))
            .count();
        assert!(marked >= 1, "the final chunk names the continuation");
        let (answer, error) = split(items);
        assert!(error.is_none(), "{error:?}");
        let completion = answer.finish().unwrap();
        assert_eq!(completion.text(), TEXT);
        assert_eq!(
            completion.model, "backup-model",
            "the model that really answered"
        );
        let usage = completion.usage.expect("the summed usage");
        assert_eq!(
            usage.completion_tokens, 12,
            "the four words the primary delivered and the eight the backup sent"
        );
        let segments = usage.extra["x_brace_segments"].as_array().unwrap();
        assert_eq!(segments[0]["completion_tokens"], 4);
        assert_eq!(
            segments[0]["estimated"], true,
            "the primary broke before its usage"
        );
        assert_eq!(segments[1]["completion_tokens"], 8);
        assert_eq!(segments[1]["how"], "prefill");
        assert_eq!(p.backup.handle().stats().count("success"), 1);
    })
    .await;
}

#[tokio::test]
async fn prefill_rejected_over_http_surfaces_the_original_break() {
    bounded(async {
        let p = pair(
            Behavior::reply(text_reply().with_fault(StreamFault::Break {
                after: after_words(4),
            })),
            Behavior::when(
                Condition::Prefill,
                Behavior::failure(
                    Failure::new(LlmErrorKind::BadRequest)
                        .with_message("This model does not support assistant message prefill."),
                ),
            ),
            MalformedEvents::Skip,
        )
        .await;
        let (answer, error) = split(items(call(p.continued()).await).await);
        assert_whole_or_error(&answer, error.as_ref());
        let error = error.unwrap();
        assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted, "{error}");
        assert_eq!(error.provider(), Some("primary"));
        assert_eq!(p.backup.handle().calls(), 1);
    })
    .await;
}

#[tokio::test]
async fn stall_over_http_ends_with_an_error_item_after_the_idle_limit() {
    bounded(async {
        let p = pair_with(
            SHORT_IDLE,
            Behavior::reply(text_reply().with_fault(StreamFault::Stall {
                after: after_words(3),
            })),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let response = call(p.failover()).await;
        let start = tokio::time::Instant::now();
        let (answer, error) = split(items(response).await);
        assert!(start.elapsed() >= SHORT_IDLE.idle);
        assert_whole_or_error(&answer, error.as_ref());
        let error = error.unwrap();
        assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted);
        assert!(error.to_string().contains("stalled"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn first_token_beyond_the_limit_over_http_fails_over() {
    bounded(async {
        let p = pair_with(
            SHORT_FIRST_TOKEN,
            Behavior::reply(text_reply().with_first_token_delay(Duration::from_secs(30))),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let start = tokio::time::Instant::now();
        let response = call(p.failover()).await;
        assert!(
            start.elapsed() >= SHORT_FIRST_TOKEN.first_token * 2,
            "both attempts waited the limit"
        );
        assert_eq!(&*response.meta.provider, "backup");
        let (answer, error) = split(items(response).await);
        assert!(error.is_none());
        assert_eq!(answer.finish().unwrap().text(), TEXT);
        assert_eq!(
            p.primary.handle().calls(),
            2,
            "tried, retried, then abandoned"
        );
    })
    .await;
}

#[tokio::test]
async fn malformed_event_at_chunk_ten_is_skipped_and_counted_by_default() {
    bounded(async {
        let server = server(
            "primary",
            Behavior::reply(text_reply().with_fault(StreamFault::Malformed { at: 10 })),
        )
        .await;
        let client = openai("primary", &server, MalformedEvents::default());
        let stats = client.stats().clone();
        let service = failover(&[("primary", stack(client, GENEROUS))]);
        let (answer, error) = split(items(call(service).await).await);
        assert!(error.is_none(), "{error:?}");
        let completion = answer.finish().unwrap();
        assert_eq!(completion.text(), TEXT);
        assert!(completion.usage.is_some());
        assert_eq!(stats.malformed_events_skipped(), 1);
    })
    .await;
}

#[tokio::test]
async fn malformed_event_at_chunk_ten_fails_the_stream_under_the_strict_policy() {
    bounded(async {
        let server = server(
            "primary",
            Behavior::reply(text_reply().with_fault(StreamFault::Malformed { at: 10 })),
        )
        .await;
        let client = openai("primary", &server, MalformedEvents::Fail);
        let stats = client.stats().clone();
        let service = failover(&[("primary", stack(client, GENEROUS))]);
        let (answer, error) = split(items(call(service).await).await);
        assert_whole_or_error(&answer, error.as_ref());
        assert_eq!(error.unwrap().kind(), LlmErrorKind::MalformedResponse);
        assert_eq!(
            answer.text(),
            "one two three four five six seven eight nine "
        );
        assert_eq!(stats.malformed_events_skipped(), 0);
    })
    .await;
}

#[tokio::test]
async fn missing_done_with_a_finish_reason_is_a_complete_answer() {
    bounded(async {
        let p = pair(
            Behavior::reply(text_reply().with_fault(StreamFault::MissingDone)),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let (answer, error) = split(items(call(p.continued()).await).await);
        assert!(error.is_none(), "{error:?}");
        let completion = answer.finish().unwrap();
        assert_eq!(completion.text(), TEXT);
        assert_eq!(completion.usage.unwrap().completion_tokens, 12);
        assert_eq!(p.backup.handle().calls(), 0);
    })
    .await;
}

fn in_band(after: usize) -> Behavior {
    Behavior::reply(text_reply().with_fault(StreamFault::Error {
        after,
        error: Failure::new(LlmErrorKind::Overloaded),
    }))
}

#[tokio::test]
async fn in_band_error_event_before_commit_over_http_fails_over() {
    bounded(async {
        let p = pair(
            in_band(1),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let response = call(p.failover()).await;
        assert_eq!(&*response.meta.provider, "backup");
        let (answer, error) = split(items(response).await);
        assert!(error.is_none());
        assert_eq!(answer.finish().unwrap().text(), TEXT);
    })
    .await;
}

#[tokio::test]
async fn in_band_error_event_after_commit_over_http_is_an_error_item_or_a_continuation() {
    bounded(async {
        let p = pair(
            in_band(after_words(5)),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let (answer, error) = split(items(call(p.failover()).await).await);
        assert_whole_or_error(&answer, error.as_ref());
        assert_eq!(error.unwrap().kind(), LlmErrorKind::Overloaded);
        assert_eq!(answer.text(), "one two three four five ");

        let (answer, error) = split(items(call(p.continued()).await).await);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(answer.finish().unwrap().text(), TEXT);
    })
    .await;
}

#[tokio::test]
async fn rate_limit_with_retry_after_over_http_is_retried_after_the_wait() {
    bounded(async {
        let wait = Duration::from_millis(300);
        let p = pair(
            Behavior::sequence(
                [Behavior::rate_limited(wait)],
                Behavior::reply(text_reply()),
            ),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let start = tokio::time::Instant::now();
        let response = call(p.continued()).await;
        assert!(
            start.elapsed() >= wait,
            "the retry waited for the Retry-After"
        );
        assert_eq!(&*response.meta.provider, "primary");
        let (answer, error) = split(items(response).await);
        assert!(error.is_none());
        assert_eq!(answer.finish().unwrap().text(), TEXT);
        assert_eq!(p.primary.handle().calls(), 2);
        assert_eq!(p.backup.handle().calls(), 0);
    })
    .await;
}

#[tokio::test]
async fn server_error_once_then_healthy_over_http_is_retried() {
    bounded(async {
        let p = pair(
            Behavior::sequence(
                [Behavior::fail(LlmErrorKind::Server)],
                Behavior::reply(text_reply()),
            ),
            Behavior::reply(text_reply()),
            MalformedEvents::Skip,
        )
        .await;
        let response = call(p.continued()).await;
        assert_eq!(&*response.meta.provider, "primary");
        assert_eq!(response.meta.model, "primary-model");
        let (answer, error) = split(items(response).await);
        assert!(error.is_none());
        assert_eq!(answer.finish().unwrap().text(), TEXT);
        assert_eq!(p.primary.handle().calls(), 2);
        assert_eq!(p.backup.handle().calls(), 0);
    })
    .await;
}
