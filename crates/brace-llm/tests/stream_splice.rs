//! Properties of the continuation splice over arbitrary text and chunking: the caller gets
//! exactly the whole answer whether the continuation resumes or restarts (its repeat is
//! stripped), a verified restart that diverges ends with the original break, and no input
//! makes it panic.

use brace_core::BoxError;
use brace_llm::continuation::{ContinuationLayer, ContinuationTarget};
use brace_llm::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, Delta, FinishReason, LlmError, LlmErrorKind,
    Message, ResponseBody, Role, StreamAccumulator,
};
use futures::StreamExt;
use proptest::prelude::*;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

/// `text` cut into pieces of the given sizes (in chars), the rest in the last piece.
fn pieces(text: &str, sizes: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes {
        if at >= chars.len() {
            break;
        }
        let end = (at + size.max(&1)).min(chars.len());
        out.push(chars[at..end].iter().collect());
        at = end;
    }
    if at < chars.len() {
        out.push(chars[at..].iter().collect());
    }
    out
}

fn chunks(
    id: &str,
    model: &str,
    pieces: &[String],
    finish: bool,
) -> Vec<Result<ChatChunk, LlmError>> {
    let mut out = vec![Ok(ChatChunk::new(
        id,
        model,
        Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Delta::default()
        },
    ))];
    out.extend(
        pieces
            .iter()
            .map(|piece| Ok(ChatChunk::new(id, model, Delta::text(piece.clone())))),
    );
    if finish {
        let mut last = ChatChunk::new(id, model, Delta::default());
        last.choices[0].finish_reason = Some(FinishReason::Stop);
        out.push(Ok(last));
    }
    out
}

fn run(delivered: Vec<String>, continuation: Vec<String>) -> (StreamAccumulator, Option<LlmError>) {
    run_with(true, delivered, continuation)
}

/// The primary streams `delivered` and breaks; the target answers `continuation`, asked with
/// a prefill (`prefill`) or for a verified restart.
fn run_with(
    prefill: bool,
    delivered: Vec<String>,
    continuation: Vec<String>,
) -> (StreamAccumulator, Option<LlmError>) {
    let primary = service_fn(move |_request: ChatRequest| {
        let mut items = chunks("a", "m1", &delivered, false);
        items.push(Err(
            LlmError::new(LlmErrorKind::StreamInterrupted, "cut").with_provider("primary")
        ));
        async move {
            Ok::<_, LlmError>(ChatResponse::stream(
                "primary",
                "m1",
                ChatStream::from_items(items),
            ))
        }
    });
    let target = BoxCloneSyncService::new(service_fn(move |request: ChatRequest| {
        let items = chunks("b", "m2", &continuation, true);
        async move {
            let last = request.messages.last().unwrap().role;
            assert_eq!(
                last == Role::Assistant,
                prefill,
                "a restart gets the original request"
            );
            Ok::<_, BoxError>(ChatResponse::stream(
                "backup",
                "m2",
                ChatStream::from_items(items),
            ))
        }
    }));
    let service =
        ContinuationLayer::new(
            [ContinuationTarget::new("backup", target).accepts_prefill(prefill)],
        )
        .layer(primary);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let request = ChatRequest::new("m", vec![Message::user("hi")]).with_stream(true);
        let response = service.oneshot(request).await.unwrap();
        let ResponseBody::Stream(stream) = response.body else {
            panic!("a stream")
        };
        let mut accumulator = StreamAccumulator::new();
        let mut error = None;
        for item in stream.collect::<Vec<_>>().await {
            match item {
                Ok(chunk) => accumulator.push(&chunk),
                Err(err) => error = Some(err),
            }
        }
        (accumulator, error)
    })
}

fn split_at_char(text: &str, fraction: f64) -> (String, String) {
    let count = text.chars().count();
    let at = ((count as f64 * fraction) as usize).clamp(1, count.saturating_sub(1).max(1));
    let byte = text.char_indices().nth(at).map_or(text.len(), |(i, _)| i);
    (text[..byte].to_owned(), text[byte..].to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_resumed_continuation_completes_the_answer_exactly(
        text in "[a-zé日 ]{2,60}",
        fraction in 0.0f64..1.0,
        sizes_a in proptest::collection::vec(1usize..8, 0..10),
        sizes_b in proptest::collection::vec(1usize..8, 0..10),
    ) {
        let (head, tail) = split_at_char(&text, fraction);
        prop_assume!(!head.is_empty() && !tail.is_empty());
        // A tail that itself starts like the head would be taken for a repeat only if it
        // repeats all of it; skip tails that do, they are the next property.
        prop_assume!(!tail.starts_with(&head));
        let (answer, error) = run(pieces(&head, &sizes_a), pieces(&tail, &sizes_b));
        prop_assert!(error.is_none());
        prop_assert_eq!(answer.finish().unwrap().text(), text);
    }

    #[test]
    fn a_restarted_continuation_has_its_repeat_stripped(
        text in "[a-zé日 ]{2,60}",
        fraction in 0.0f64..1.0,
        sizes_a in proptest::collection::vec(1usize..8, 0..10),
        sizes_b in proptest::collection::vec(1usize..8, 0..10),
    ) {
        let (head, _) = split_at_char(&text, fraction);
        prop_assume!(!head.is_empty());
        let (answer, error) = run(pieces(&head, &sizes_a), pieces(&text, &sizes_b));
        prop_assert!(error.is_none());
        prop_assert_eq!(answer.finish().unwrap().text(), text);
    }

    #[test]
    fn any_continuation_text_never_panics_and_ends_finished(
        head in "\\PC{1,30}",
        tail in "\\PC{0,30}",
        sizes_a in proptest::collection::vec(1usize..8, 0..10),
        sizes_b in proptest::collection::vec(1usize..8, 0..10),
    ) {
        let (answer, error) = run(pieces(&head, &sizes_a), pieces(&tail, &sizes_b));
        prop_assert!(error.is_none());
        let whole = answer.finish().unwrap().text();
        prop_assert!(whole.starts_with(&head));
        let rest = &whole[head.len()..];
        prop_assert!(rest == tail || Some(rest) == tail.strip_prefix(head.as_str()));
    }

    #[test]
    fn a_verified_restart_that_repeats_the_delivered_text_completes_the_answer(
        text in "[a-zé日 ]{2,60}",
        fraction in 0.0f64..1.0,
        sizes_a in proptest::collection::vec(1usize..8, 0..10),
        sizes_b in proptest::collection::vec(1usize..8, 0..10),
    ) {
        let (head, _) = split_at_char(&text, fraction);
        prop_assume!(!head.is_empty());
        let (answer, error) = run_with(false, pieces(&head, &sizes_a), pieces(&text, &sizes_b));
        prop_assert!(error.is_none());
        prop_assert_eq!(answer.finish().unwrap().text(), text);
    }

    #[test]
    fn a_verified_restart_that_diverges_ends_with_the_original_break(
        text in "[a-z ]{2,60}",
        other in "[A-Z]{1,60}",
        fraction in 0.0f64..1.0,
        sizes_a in proptest::collection::vec(1usize..8, 0..10),
        sizes_b in proptest::collection::vec(1usize..8, 0..10),
    ) {
        let (head, _) = split_at_char(&text, fraction);
        prop_assume!(!head.is_empty());
        // The same start, then something else (or only the start, then the end).
        let common = head.len() / 2;
        let restart = format!("{}{other}", &head[..common]);
        let (answer, error) = run_with(false, pieces(&head, &sizes_a), pieces(&restart, &sizes_b));
        let error = error.expect("the original break");
        prop_assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted);
        prop_assert_eq!(error.provider(), Some("primary"));
        prop_assert_eq!(answer.text(), head.as_str());
        prop_assert!(!answer.is_finished());
    }
}
