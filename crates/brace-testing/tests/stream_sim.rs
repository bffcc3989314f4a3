//! Streaming resilience through the whole library stack (stream guard + retry per provider,
//! failover across providers, continuation on top), over the in-process simulated provider
//! with paused time: every case ends in the complete answer or a clear error, never a
//! truncated success, and nothing waits past its configured limit.

// Shared with the root package's `tests/stream_http.rs`.
#[path = "../../../tests/stream_support/mod.rs"]
mod stream_support;

use std::time::Duration;

use brace::llm::continuation::{
    Continuation, ContinuationLayer, ContinuationTarget, How, continued_by, continued_how,
};
use brace::llm::{ChatChunk, ChatRequest, ChatResponse, Delta, FinishReason, LlmErrorKind};
use brace::sim::{Behavior, Condition, Failure, Reply, SimProvider, StreamFault, ToolCallReply};
use stream_support::{
    BACKOFF, Chat, Failover, LIMITS, TEXT, assert_whole_or_error, failover, items, request, split,
    stack,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn sim(name: &str, behavior: Behavior) -> SimProvider {
    SimProvider::new(
        brace::sim::SimConfig::new(name)
            .with_model(format!("{name}-model"))
            .with_behavior(behavior),
    )
}

fn text_reply() -> Reply {
    Reply::new().with_text(TEXT)
}

/// Events of an OpenAI stream before `words` content chunks are out: the role chunk, then
/// one chunk per word.
fn after_words(words: usize) -> usize {
    1 + words
}

struct Setup {
    primary: SimProvider,
    backup: SimProvider,
    failover: Failover,
    stacks: Vec<(&'static str, Chat)>,
}

fn setup(primary: Behavior, backup: Behavior) -> Setup {
    let primary = sim("primary", primary);
    let backup = sim("backup", backup);
    let stacks = vec![
        ("primary", stack(primary.clone(), LIMITS)),
        ("backup", stack(backup.clone(), LIMITS)),
    ];
    Setup {
        failover: failover(&stacks),
        primary,
        backup,
        stacks,
    }
}

impl Setup {
    /// Continuation over the failover service; every provider accepts a prefill.
    fn continued(&self) -> Continuation<Failover, Chat> {
        ContinuationLayer::new(self.stacks.iter().map(|(name, stack)| {
            ContinuationTarget::new(*name, stack.clone()).accepts_prefill(true)
        }))
        .layer(self.failover.clone())
    }
}

async fn call<S>(service: S, request: ChatRequest) -> ChatResponse
where
    S: tower::Service<ChatRequest, Response = ChatResponse>,
    S::Error: std::fmt::Debug,
{
    service.oneshot(request).await.expect("the call commits")
}

// ===== cut after N of M =====

#[tokio::test(start_paused = true)]
async fn cut_after_n_of_m_chunks_without_continuation_ends_with_the_break() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reply(text_reply()),
    );
    let response = call(s.failover.clone(), request()).await;
    assert_eq!(&*response.meta.provider, "primary");
    let (answer, error) = split(items(response).await);
    assert_whole_or_error(&answer, error.as_ref());
    let error = error.expect("the cut is an error item");
    assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(error.provider(), Some("primary"));
    assert_eq!(answer.text(), "one two three four five ");
    assert_eq!(
        s.backup.handle().calls(),
        0,
        "nothing restarts after text reached the caller"
    );
}

#[tokio::test(start_paused = true)]
async fn cut_after_n_of_m_chunks_with_continuation_delivers_the_whole_answer() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reply(text_reply()),
    );
    let response = call(s.continued(), request()).await;
    assert_eq!(
        &*response.meta.provider, "primary",
        "metadata is fixed at the commit"
    );
    let items = items(response).await;
    let ids: Vec<String> = items
        .iter()
        .map(|item| item.as_ref().unwrap().id.clone())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one answer, one id: {ids:?}"
    );
    let marked: Vec<&str> = items
        .iter()
        .filter_map(|item| continued_by(item.as_ref().unwrap()))
        .collect();
    assert_eq!(
        marked,
        ["backup", "backup"],
        "the finish chunk and the usage chunk say who continued"
    );
    let last_model = items.last().unwrap().as_ref().unwrap().model.clone();
    let (answer, error) = split(items);
    assert!(error.is_none());
    let completion = answer.finish().unwrap();
    assert_eq!(completion.text(), TEXT);
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::Stop)
    );
    // The usage sums the segments: the five words the primary delivered, the seven the
    // backup sent.
    assert_eq!(completion.usage.unwrap().completion_tokens, 12);
    assert_eq!(last_model, "backup-model", "the model that really answered");
    // The continuation was asked with the delivered text as an assistant prefill.
    assert_eq!(s.backup.handle().stats().count("success"), 1);
    assert_eq!(
        s.primary.handle().calls(),
        1,
        "the provider that broke is not asked again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_continuation_that_also_breaks_is_continued_again_within_the_attempt_bound() {
    let third = sim("third", Behavior::reply(text_reply()));
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(3),
        })),
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(2),
        })),
    );
    let targets = [
        ContinuationTarget::new("backup", s.stacks[1].1.clone()).accepts_prefill(true),
        ContinuationTarget::new("third", stack(third.clone(), LIMITS)).accepts_prefill(true),
    ];
    let service = ContinuationLayer::new(targets.clone()).layer(s.failover.clone());
    let (answer, error) = split(items(call(service, request()).await).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
    assert_eq!(
        third.handle().calls(),
        1,
        "the second break went to the third provider"
    );

    // With one attempt, the backup's own break is the stream's error.
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(3),
        })),
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(2),
        })),
    );
    let third = sim("third", Behavior::reply(text_reply()));
    let targets = [
        ContinuationTarget::new("backup", s.stacks[1].1.clone()).accepts_prefill(true),
        ContinuationTarget::new("third", stack(third.clone(), LIMITS)).accepts_prefill(true),
    ];
    let service = ContinuationLayer::new(targets)
        .max_attempts(1)
        .layer(s.failover.clone());
    let (answer, error) = split(items(call(service, request()).await).await);
    assert_whole_or_error(&answer, error.as_ref());
    assert_eq!(error.unwrap().provider(), Some("backup"));
    assert_eq!(answer.text(), "one two three four five ");
    assert_eq!(third.handle().calls(), 0);
}

// ===== stall =====

#[tokio::test(start_paused = true)]
async fn stall_after_n_chunks_ends_with_an_error_at_the_idle_limit() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Stall {
            after: after_words(4),
        })),
        Behavior::reply(text_reply()),
    );
    let start = Instant::now();
    let (answer, error) = split(items(call(s.failover.clone(), request()).await).await);
    assert_eq!(start.elapsed(), LIMITS.idle);
    assert_whole_or_error(&answer, error.as_ref());
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted);
    assert!(error.to_string().contains("stalled"), "{error}");
    assert_eq!(answer.text(), "one two three four ");
}

#[tokio::test(start_paused = true)]
async fn stall_with_continuation_finishes_the_answer_right_after_the_idle_limit() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Stall {
            after: after_words(4),
        })),
        Behavior::reply(text_reply()),
    );
    let start = Instant::now();
    let (answer, error) = split(items(call(s.continued(), request()).await).await);
    assert_eq!(start.elapsed(), LIMITS.idle);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
}

// ===== first token =====

#[tokio::test(start_paused = true)]
async fn first_token_later_than_the_limit_fails_over() {
    let s = setup(
        Behavior::reply(text_reply().with_first_token_delay(Duration::from_secs(30))),
        Behavior::reply(text_reply()),
    );
    let start = Instant::now();
    let response = call(s.failover.clone(), request()).await;
    // Two attempts on the primary (the retry), each cut at the limit, then the backup.
    assert_eq!(start.elapsed(), LIMITS.first_token * 2 + BACKOFF);
    assert_eq!(&*response.meta.provider, "backup");
    assert_eq!(response.meta.model, "backup-model");
    let (answer, error) = split(items(response).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
    assert_eq!(s.primary.handle().calls(), 2);
}

// ===== in-band error events =====

fn in_band(after: usize) -> Behavior {
    Behavior::reply(text_reply().with_fault(StreamFault::Error {
        after,
        error: Failure::new(LlmErrorKind::Overloaded).with_message("overloaded_error mid-stream"),
    }))
}

#[tokio::test(start_paused = true)]
async fn in_band_error_before_commit_fails_over() {
    let s = setup(in_band(1), Behavior::reply(text_reply()));
    let response = call(s.failover.clone(), request()).await;
    assert_eq!(&*response.meta.provider, "backup");
    let (answer, error) = split(items(response).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
}

#[tokio::test(start_paused = true)]
async fn in_band_error_after_commit_is_an_error_item() {
    let s = setup(in_band(after_words(6)), Behavior::reply(text_reply()));
    let (answer, error) = split(items(call(s.failover.clone(), request()).await).await);
    assert_whole_or_error(&answer, error.as_ref());
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::Overloaded);
    assert!(error.message().contains("mid-stream"));
    assert_eq!(answer.text(), "one two three four five six ");
}

#[tokio::test(start_paused = true)]
async fn in_band_error_after_commit_is_continued_when_continuation_is_on() {
    let s = setup(in_band(after_words(6)), Behavior::reply(text_reply()));
    let (answer, error) = split(items(call(s.continued(), request()).await).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
}

// ===== prefill rejected, targets failing =====

#[tokio::test(start_paused = true)]
async fn prefill_rejected_by_the_continuation_target_surfaces_the_original_break() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::when(
            Condition::Prefill,
            Behavior::failure(
                Failure::new(LlmErrorKind::BadRequest)
                    .with_message("assistant prefill is not supported"),
            ),
        ),
    );
    let (answer, error) = split(items(call(s.continued(), request()).await).await);
    assert_whole_or_error(&answer, error.as_ref());
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted, "{error}");
    assert_eq!(error.provider(), Some("primary"));
    assert!(!error.to_string().contains("prefill"), "{error}");
    assert_eq!(s.backup.handle().calls(), 1, "the backup was asked once");
}

#[tokio::test(start_paused = true)]
async fn continuation_that_does_not_start_within_the_deadline_surfaces_the_original_break() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::hang(),
    );
    let deadline = Duration::from_millis(1500);
    let targets = [ContinuationTarget::new("backup", s.stacks[1].1.clone()).accepts_prefill(true)];
    let service = ContinuationLayer::new(targets)
        .deadline(deadline)
        .layer(s.failover.clone());
    let response = call(service, request()).await;
    let start = Instant::now();
    let (answer, error) = split(items(response).await);
    assert_eq!(start.elapsed(), deadline);
    assert_whole_or_error(&answer, error.as_ref());
    assert_eq!(error.unwrap().provider(), Some("primary"));
}

#[tokio::test(start_paused = true)]
async fn targets_not_accepting_prefill_get_a_verified_restart() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reject_prefill(Behavior::reply(text_reply())),
    );
    let targets = [ContinuationTarget::new("backup", s.stacks[1].1.clone())];
    let service = ContinuationLayer::new(targets).layer(s.failover.clone());
    let all = items(call(service, request()).await).await;
    let how = all
        .iter()
        .find_map(|item| item.as_ref().ok().and_then(continued_how));
    assert_eq!(how, Some(How::VerifiedRestart));
    let (answer, error) = split(all);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(answer.finish().unwrap().text(), TEXT);
    let asked = s.backup.handle().last_request().unwrap();
    assert_eq!(asked.messages.len(), 1, "the original request, no prefill");

    // Turned off, such targets are never asked.
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reply(text_reply()),
    );
    let targets = [ContinuationTarget::new("backup", s.stacks[1].1.clone())];
    let service = ContinuationLayer::new(targets)
        .verified_restarts(false)
        .layer(s.failover.clone());
    let (answer, error) = split(items(call(service, request()).await).await);
    assert_whole_or_error(&answer, error.as_ref());
    assert_eq!(error.unwrap().kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(s.backup.handle().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_verified_restart_that_diverges_surfaces_the_original_break() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reject_prefill(Behavior::reply(text_reply().with_divergence_after(3))),
    );
    let targets = [ContinuationTarget::new("backup", s.stacks[1].1.clone())];
    let service = ContinuationLayer::new(targets).layer(s.failover.clone());
    let (answer, error) = split(items(call(service, request()).await).await);
    assert_whole_or_error(&answer, error.as_ref());
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(error.provider(), Some("primary"), "the original break");
    assert_eq!(answer.text(), "one two three four five ");
    assert_eq!(s.backup.handle().calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn tool_call_streams_are_never_continued() {
    let s = setup(
        Behavior::reply(
            Reply::new()
                .with_tool_call(ToolCallReply::new("lookup", r#"{"city":"Paris","days":3}"#))
                .with_chunks(6)
                .with_fault(StreamFault::Break { after: 4 }),
        ),
        Behavior::reply(text_reply()),
    );
    let (answer, error) = split(items(call(s.continued(), request()).await).await);
    assert!(answer.has_tool_calls());
    assert_whole_or_error(&answer, error.as_ref());
    assert_eq!(error.unwrap().kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(s.backup.handle().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_content_filter_stop_is_not_worked_around() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Error {
            after: after_words(3),
            error: Failure::new(LlmErrorKind::ContentFiltered),
        })),
        Behavior::reply(text_reply()),
    );
    let (_, error) = split(items(call(s.continued(), request()).await).await);
    assert_eq!(error.unwrap().kind(), LlmErrorKind::ContentFiltered);
    assert_eq!(s.backup.handle().calls(), 0);
}

// ===== splicing =====

/// A provider that ignores the prefill and restarts the whole answer.
fn restarting(name: &'static str) -> Chat {
    tower::util::BoxCloneSyncService::new(tower::service_fn(
        move |_request: ChatRequest| async move {
            let mut chunks = vec![ChatChunk::new(
                "other-id",
                "restart-model",
                Delta {
                    role: Some(brace::llm::Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                },
            )];
            for word in TEXT.split_inclusive(' ') {
                chunks.push(ChatChunk::new(
                    "other-id",
                    "restart-model",
                    Delta::text(word),
                ));
            }
            let mut last = ChatChunk::new("other-id", "restart-model", Delta::default());
            last.choices[0].finish_reason = Some(FinishReason::Stop);
            chunks.push(last);
            Ok::<_, brace::BoxError>(ChatResponse::stream(
                name,
                "restart-model",
                brace::llm::ChatStream::from_items(chunks.into_iter().map(Ok).collect()),
            ))
        },
    ))
}

#[tokio::test(start_paused = true)]
async fn a_continuation_that_repeats_the_delivered_text_has_the_repeat_stripped() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reply(text_reply()),
    );
    let service =
        ContinuationLayer::new([
            ContinuationTarget::new("restart", restarting("restart")).accepts_prefill(true)
        ])
        .layer(s.failover.clone());
    let items = items(call(service, request()).await).await;
    assert!(
        items.iter().skip(6).all(|item| item
            .as_ref()
            .unwrap()
            .choices
            .iter()
            .all(|c| c.delta.role.is_none())),
        "the continuation's role chunk is dropped"
    );
    let (answer, error) = split(items);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
}

#[tokio::test(start_paused = true)]
async fn whole_answers_and_unbroken_streams_pass_through_untouched() {
    let s = setup(Behavior::reply(text_reply()), Behavior::reply(text_reply()));
    let plain = split(items(call(s.failover.clone(), request()).await).await);
    let continued = split(items(call(s.continued(), request()).await).await);
    assert_eq!(
        plain.0.clone().finish().unwrap().text(),
        continued.0.clone().finish().unwrap().text()
    );
    assert!(continued.1.is_none());

    let whole = call(s.continued(), request().with_stream(false)).await;
    assert_eq!(whole.completion().unwrap().text(), TEXT);
    assert_eq!(s.backup.handle().calls(), 0);
}

// ===== before the first chunk =====

#[tokio::test(start_paused = true)]
async fn rate_limit_with_retry_after_before_the_first_chunk_is_retried_after_the_wait() {
    let wait = Duration::from_secs(3);
    let s = setup(
        Behavior::sequence(
            [Behavior::rate_limited(wait)],
            Behavior::reply(text_reply()),
        ),
        Behavior::reply(text_reply()),
    );
    let start = Instant::now();
    let response = call(s.continued(), request()).await;
    assert_eq!(
        start.elapsed(),
        wait,
        "the retry waited exactly the Retry-After"
    );
    assert_eq!(&*response.meta.provider, "primary");
    let (answer, error) = split(items(response).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
    assert_eq!(s.primary.handle().calls(), 2);
    assert_eq!(s.backup.handle().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn server_error_once_then_healthy_is_retried_on_the_same_provider() {
    let s = setup(
        Behavior::sequence(
            [Behavior::fail(LlmErrorKind::Server)],
            Behavior::reply(text_reply()),
        ),
        Behavior::reply(text_reply()),
    );
    let start = Instant::now();
    let response = call(s.continued(), request()).await;
    assert_eq!(start.elapsed(), BACKOFF);
    assert_eq!(&*response.meta.provider, "primary");
    let (answer, error) = split(items(response).await);
    assert!(error.is_none());
    let completion = answer.finish().unwrap();
    assert_eq!(completion.text(), TEXT);
    assert_eq!(completion.model, "primary-model");
    assert_eq!(s.primary.handle().calls(), 2);
    assert_eq!(s.backup.handle().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_provider_failing_before_the_first_chunk_is_a_call_error() {
    let s = setup(
        Behavior::fail(LlmErrorKind::Server),
        Behavior::fail(LlmErrorKind::Overloaded),
    );
    let err = s.continued().oneshot(request()).await.unwrap_err();
    assert!(err.is::<brace::AllProvidersFailed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_clean_end_without_finish_reason_is_a_break_even_without_a_guard() {
    // A bare provider (no stream guard) whose stream just stops after some text.
    let cut = sim(
        "primary",
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(3),
        })),
    );
    let bare = tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .map_err(brace::BoxError::from)
            .service(cut)
            .map_response(|response: ChatResponse| {
                use futures_util::StreamExt;
                let brace::llm::ResponseBody::Stream(stream) = response.body else {
                    return response;
                };
                // Drop the error item: the stream ends cleanly, mid-answer.
                let clean = stream.take_while(|item| std::future::ready(item.is_ok()));
                ChatResponse {
                    meta: response.meta,
                    body: brace::llm::ResponseBody::Stream(brace::llm::ChatStream::new(clean)),
                }
            }),
    );
    let backup = sim("backup", Behavior::reply(text_reply()));
    let layer =
        ContinuationLayer::new([
            ContinuationTarget::new("backup", stack(backup.clone(), LIMITS)).accepts_prefill(true),
        ]);
    let (answer, error) =
        split(items(call(layer.clone().layer(bare.clone()), request()).await).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);

    // When the continuation fails too, the cut surfaces as an error, not a clean end.
    backup
        .handle()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    let (answer, error) = split(items(call(layer.layer(bare), request()).await).await);
    assert_whole_or_error(&answer, error.as_ref());
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(error.provider(), Some("primary"));
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_reported_whether_it_started_or_not() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::when(Condition::Prefill, Behavior::fail(LlmErrorKind::BadRequest)),
    );
    let third = sim("third", Behavior::reply(text_reply()));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let service = ContinuationLayer::new([
        ContinuationTarget::new("backup", s.stacks[1].1.clone()).accepts_prefill(true),
        ContinuationTarget::new("third", stack(third, LIMITS)).accepts_prefill(true),
    ])
    .on_attempt(move |attempt| {
        record.lock().unwrap().push((
            attempt.broken.to_owned(),
            attempt.target.to_owned(),
            attempt.delivered,
            attempt.started,
        ));
    })
    .layer(s.failover.clone());
    let (answer, error) = split(items(call(service, request()).await).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
    let delivered = "one two three four five ".len();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("primary".to_owned(), "backup".to_owned(), delivered, false),
            ("primary".to_owned(), "third".to_owned(), delivered, true),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn continuation_over_failover_boxes_like_any_gateway_route() {
    let s = setup(
        Behavior::reply(text_reply().with_fault(StreamFault::Break {
            after: after_words(5),
        })),
        Behavior::reply(text_reply()),
    );
    let route: Chat = tower::util::BoxCloneSyncService::new(s.continued());
    let (answer, error) = split(items(call(route, request()).await).await);
    assert!(error.is_none());
    assert_eq!(answer.finish().unwrap().text(), TEXT);
}
