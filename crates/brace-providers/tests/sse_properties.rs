//! Property tests of the SSE decoder: whatever bytes an upstream sends, and however they are
//! split across reads, the parser never panics, finds the same events, and the chunk stream
//! ends with at most one error, last. (`PROPTEST_CASES` sets how many cases run; CI runs the
//! default.)

use futures::StreamExt;
use proptest::prelude::*;

use brace_providers::openai::OpenAiDecoder;
use brace_providers::sse::{ChunkStream, SseEvent, SseParser};

/// Every event `bytes` holds, pushed in pieces cut at `cuts`, then finished; or the error.
fn parse(bytes: &[u8], cuts: &[usize]) -> Result<Vec<SseEvent>, String> {
    let mut parser = SseParser::with_max_event_bytes(4096);
    let mut events = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parser.push(&bytes[start..cut.max(start)]);
        start = cut.max(start);
        while let Some(event) = parser.next_event().map_err(|err| err.to_string())? {
            events.push(event);
        }
    }
    while let Some(event) = parser.finish().map_err(|err| err.to_string())? {
        events.push(event);
    }
    Ok(events)
}

/// One generated event: its name (possibly none), its data lines, a comment before it.
#[derive(Debug, Clone)]
struct Generated {
    name: Option<String>,
    data: Vec<String>,
    comment: Option<String>,
}

fn generated() -> impl Strategy<Value = Generated> {
    let text = "[^\r\n\u{0}]{0,24}";
    (
        proptest::option::of("[a-z_]{1,12}"),
        prop::collection::vec(text, 1..4),
        proptest::option::of(text),
    )
        .prop_map(|(name, data, comment)| Generated {
            name,
            data,
            comment,
        })
}

/// The wire text of `events`, lines ended by `ends` in turn (`\n`, `\r\n` or `\r`; a `\n`
/// right after a `\r` end would make one `\r\n` of the two, so it is sent as `\r`).
fn wire(events: &[Generated], ends: &[&str]) -> String {
    let mut ends = ends.iter().cycle();
    let mut text = String::new();
    let mut line = |text: &mut String, content: &str| {
        let mut end = *ends.next().expect("cycled");
        if end == "\n" && content.is_empty() && text.ends_with('\r') {
            end = "\r";
        }
        text.push_str(content);
        text.push_str(end);
    };
    for event in events {
        if let Some(comment) = &event.comment {
            line(&mut text, &format!(":{comment}"));
        }
        if let Some(name) = &event.name {
            line(&mut text, &format!("event: {name}"));
        }
        for data in &event.data {
            line(&mut text, &format!("data: {data}"));
        }
        line(&mut text, "");
    }
    text
}

proptest! {
    #[test]
    fn any_bytes_in_any_pieces_parse_without_panicking_and_alike(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = parse(&bytes, &[]);
        let pieces = parse(&bytes, &cuts);
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn generated_events_come_back_whatever_the_line_ends_and_the_pieces(
        events in prop::collection::vec(generated(), 0..6),
        ends in prop::collection::vec(prop_oneof![Just("\n"), Just("\r\n"), Just("\r")], 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let text = wire(&events, &ends);
        let parsed = parse(text.as_bytes(), &cuts).map_err(TestCaseError::fail)?;
        let got: Vec<(String, String)> =
            parsed.into_iter().map(|event| (event.event, event.data)).collect();
        let expected: Vec<(String, String)> = events
            .iter()
            .map(|event| (event.name.clone().unwrap_or_default(), event.data.join("\n")))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn the_openai_chunk_stream_ends_with_at_most_one_error_and_never_panics(
        events in prop::collection::vec(
            prop_oneof![
                "[^\u{0}]{0,64}".prop_map(SseEvent::data),
                Just(SseEvent::data("[DONE]")),
                "[a-z ]{0,12}".prop_map(|text| SseEvent::data(format!(
                    r#"{{"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
                ))),
                Just(SseEvent::data(
                    r#"{"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
                )),
                "[^\u{0}]{0,32}".prop_map(|message| SseEvent::data(
                    serde_json::json!({"error": {"message": message}}).to_string()
                )),
            ],
            0..8,
        ),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let items = runtime.block_on(
            ChunkStream::new(futures::stream::iter(events.into_iter().map(Ok)), OpenAiDecoder::new())
                .collect::<Vec<_>>(),
        );
        let errors = items.iter().filter(|item| item.is_err()).count();
        prop_assert!(errors <= 1, "{items:?}");
        if errors == 1 {
            prop_assert!(items.last().is_some_and(Result::is_err), "{items:?}");
        }
    }
}
