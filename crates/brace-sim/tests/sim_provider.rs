//! The in-process simulated provider: each scripted behaviour, streaming faults, determinism
//! under a seed. All under paused time.

use std::time::Duration;

use brace_llm::{
    ChatChunk, ChatRequest, ChatResponse, LlmError, LlmErrorKind, Message, ResponseBody,
    StreamOptions,
};
use brace_sim::{
    ALL_KINDS, Behavior, Failure, Reply, SimConfig, SimHandle, SimProvider, StreamFault,
};
use futures::StreamExt;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

fn request(text: &str) -> ChatRequest {
    ChatRequest::new("gpt-4o", vec![Message::user(text)])
}

fn stream_request(text: &str) -> ChatRequest {
    request(text).with_stream(true)
}

fn sim(behavior: Behavior) -> SimProvider {
    SimProvider::new(SimConfig::new("sim-a").with_behavior(behavior))
}

async fn call(sim: &SimProvider, request: ChatRequest) -> Result<ChatResponse, LlmError> {
    sim.clone().oneshot(request).await
}

async fn items(response: ChatResponse) -> Vec<Result<ChatChunk, LlmError>> {
    match response.body {
        ResponseBody::Stream(stream) => {
            stream.map(|item| item.map(ChatChunk::from)).collect().await
        }
        ResponseBody::Complete(_) => panic!("expected a stream"),
    }
}

// ===== determinism =====

async fn flaky_outcomes(seed: u64, calls: usize) -> Vec<bool> {
    let sim = SimProvider::new(
        SimConfig::new("flaky")
            .with_seed(seed)
            .with_behavior(Behavior::flaky(0.5, Behavior::fail(LlmErrorKind::Server))),
    );
    let mut outcomes = Vec::with_capacity(calls);
    for _ in 0..calls {
        outcomes.push(call(&sim, request("x")).await.is_ok());
    }
    outcomes
}

#[tokio::test(start_paused = true)]
async fn same_seed_gives_the_same_sequence_of_outcomes() {
    let first = flaky_outcomes(42, 200).await;
    let second = flaky_outcomes(42, 200).await;
    assert_eq!(first, second);
    // Both outcomes occur, and another seed gives another sequence.
    assert!(first.iter().any(|ok| *ok) && first.iter().any(|ok| !*ok));
    assert_ne!(first, flaky_outcomes(43, 200).await);
}

#[tokio::test(start_paused = true)]
async fn reset_replays_the_same_outcomes_and_answers() {
    let sim = SimProvider::new(
        SimConfig::new("s")
            .with_seed(7)
            .with_behavior(Behavior::sequence(
                [Behavior::fail(LlmErrorKind::RateLimited)],
                Behavior::flaky(0.3, Behavior::fail(LlmErrorKind::Overloaded)),
            )),
    );
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut run = Vec::new();
        for _ in 0..50 {
            run.push(match call(&sim, request("same")).await {
                Ok(response) => Ok(response.completion().unwrap().clone()),
                Err(err) => Err(err.kind()),
            });
        }
        runs.push(run);
        sim.handle().reset();
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0][0], Err(LlmErrorKind::RateLimited));
}

#[test]
fn flaky_probability_bounds_are_exact() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let always = sim(Behavior::flaky(1.0, Behavior::fail(LlmErrorKind::Server)));
        let never = sim(Behavior::flaky(0.0, Behavior::fail(LlmErrorKind::Server)));
        for _ in 0..20 {
            assert!(call(&always, request("x")).await.is_err());
            assert!(call(&never, request("x")).await.is_ok());
        }
    });
}

// ===== succeed =====

#[tokio::test(start_paused = true)]
async fn success_is_derived_from_the_request_with_usage_and_provider() {
    let sim = sim(Behavior::succeed());
    let response = call(&sim, request("What is brace?")).await.unwrap();
    assert_eq!(&*response.meta.provider, "sim-a");
    assert_eq!(response.meta.model, "gpt-4o");
    let completion = response.completion().unwrap();
    assert_eq!(completion.text(), "simulated answer to: What is brace?");
    assert_eq!(completion.model, "gpt-4o");
    let usage = completion.usage.as_ref().unwrap();
    assert_eq!(usage.completion_tokens, 6); // one per word
    assert!(usage.prompt_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(brace_llm::FinishReason::Stop)
    );
}

#[tokio::test(start_paused = true)]
async fn configured_and_reply_models_name_the_answer() {
    let configured = SimProvider::new(SimConfig::new("s").with_model("sim-large"));
    let response = call(&configured, request("x")).await.unwrap();
    assert_eq!(response.meta.model, "sim-large");

    let reply = sim(Behavior::reply(
        Reply::new().with_model("other").with_text("fixed"),
    ));
    let response = call(&reply, request("x")).await.unwrap();
    assert_eq!(response.meta.model, "other");
    assert_eq!(response.completion().unwrap().text(), "fixed");
}

// ===== fail =====

#[tokio::test(start_paused = true)]
async fn every_error_kind_can_be_scripted() {
    for kind in ALL_KINDS {
        let sim = sim(Behavior::fail(kind));
        let err = call(&sim, request("x")).await.unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(err.provider(), Some("sim-a"));
        assert!(!err.message().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn failures_carry_status_retry_after_and_message() {
    let sim = sim(Behavior::failure(
        Failure::new(LlmErrorKind::RateLimited)
            .with_retry_after(Duration::from_secs(3))
            .with_message("slow down"),
    ));
    let err = call(&sim, request("x")).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(err.message(), "slow down");

    let sim = self::sim(Behavior::failure(
        Failure::new(LlmErrorKind::Overloaded).with_status(529),
    ));
    assert_eq!(
        call(&sim, request("x")).await.unwrap_err().status(),
        Some(529)
    );
}

#[tokio::test(start_paused = true)]
async fn http_only_faults_map_to_their_kinds_in_process() {
    let cases = [
        (Behavior::drop_connection(0), LlmErrorKind::Connect),
        (
            Behavior::drop_connection(10),
            LlmErrorKind::StreamInterrupted,
        ),
        (Behavior::malformed(), LlmErrorKind::MalformedResponse),
        (Behavior::truncated(), LlmErrorKind::MalformedResponse),
    ];
    for (behavior, kind) in cases {
        assert_eq!(
            call(&sim(behavior), request("x")).await.unwrap_err().kind(),
            kind
        );
    }
}

// ===== delay, hang =====

#[tokio::test(start_paused = true)]
async fn delay_waits_then_acts() {
    let sim = sim(Behavior::delay(
        Duration::from_secs(5),
        Behavior::fail(LlmErrorKind::Timeout),
    ));
    let start = Instant::now();
    let err = call(&sim, request("x")).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn delayed_call_is_pending_until_its_delay_passes() {
    let mut sim = sim(Behavior::delay(Duration::from_secs(2), Behavior::succeed()));
    let mut future = tokio_test::task::spawn(sim.call(request("x")));
    assert!(future.poll().is_pending());
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert!(future.poll().is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(future.poll().is_ready());
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers() {
    let sim = sim(Behavior::hang());
    let outcome = tokio::time::timeout(Duration::from_hours(1), call(&sim, request("x"))).await;
    assert!(outcome.is_err(), "a hanging provider answered");
    assert_eq!(sim.handle().stats().count("hang"), 1);
}

#[tokio::test(start_paused = true)]
async fn tower_timeout_ends_a_hang() {
    let sim = sim(Behavior::hang());
    let mut service = tower::ServiceBuilder::new()
        .timeout(Duration::from_millis(250))
        .service(sim);
    let start = Instant::now();
    let err = service.ready().await.unwrap().call(request("x")).await;
    assert!(err.unwrap_err().is::<tower::timeout::error::Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

// ===== sequence, counts, run-time changes =====

#[tokio::test(start_paused = true)]
async fn sequence_plays_its_steps_then_the_fallback() {
    let sim = sim(Behavior::sequence(
        [
            Behavior::rate_limited(Duration::from_secs(1)),
            Behavior::fail(LlmErrorKind::Server),
        ],
        Behavior::text("healthy"),
    ));
    let first = call(&sim, request("x")).await.unwrap_err();
    assert_eq!(first.kind(), LlmErrorKind::RateLimited);
    assert_eq!(first.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(
        call(&sim, request("x")).await.unwrap_err().kind(),
        LlmErrorKind::Server
    );
    for _ in 0..3 {
        let response = call(&sim, request("x")).await.unwrap();
        assert_eq!(response.completion().unwrap().text(), "healthy");
    }
    let stats = sim.handle().stats();
    assert_eq!(stats.calls, 5);
    assert_eq!(stats.count("rate_limited"), 1);
    assert_eq!(stats.count("server_error"), 1);
    assert_eq!(stats.successes(), 3);
    assert_eq!(stats.failures(), 2);
}

#[tokio::test(start_paused = true)]
async fn nested_sequences_keep_their_own_positions() {
    // Each call: delay 0, then the inner sequence advances once per call.
    let sim = sim(Behavior::delay(
        Duration::ZERO,
        Behavior::sequence([Behavior::fail(LlmErrorKind::Server)], Behavior::succeed()),
    ));
    assert!(call(&sim, request("x")).await.is_err());
    assert!(call(&sim, request("x")).await.is_ok());
    assert!(call(&sim, request("x")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn behaviour_changes_at_run_time_for_every_clone() {
    let sim = sim(Behavior::succeed());
    let clone = sim.clone();
    let handle: SimHandle = sim.handle().clone();
    assert!(call(&clone, request("x")).await.is_ok());
    handle.set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
    assert_eq!(
        call(&clone, request("x")).await.unwrap_err().kind(),
        LlmErrorKind::Overloaded
    );
    assert_eq!(handle.behavior(), Behavior::fail(LlmErrorKind::Overloaded));
    handle.set_behavior(Behavior::succeed());
    assert!(call(&sim, request("x")).await.is_ok());
    assert_eq!(handle.calls(), 3);
}

// ===== streams =====

#[tokio::test(start_paused = true)]
async fn stream_sends_role_content_finish_and_usage_chunks() {
    let sim = sim(Behavior::reply(Reply::new().with_chunks(4)));
    let mut request = stream_request("tell me a story");
    request.options_mut().stream_options = Some(StreamOptions {
        include_usage: Some(true),
        ..StreamOptions::default()
    });
    let response = call(&sim, request).await.unwrap();
    assert!(response.is_stream());
    let chunks: Vec<ChatChunk> = items(response)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(chunks.len(), 1 + 4 + 1 + 1);
    assert_eq!(
        chunks[0].choices[0].delta.role,
        Some(brace_llm::Role::Assistant)
    );
    assert!(!chunks[0].has_content());
    assert!(chunks[1..5].iter().all(ChatChunk::has_content));
    assert_eq!(
        chunks[5].finish_reason(),
        Some(&brace_llm::FinishReason::Stop)
    );
    assert!(chunks[6].choices.is_empty());
    assert_eq!(chunks[6].usage.as_ref().unwrap().completion_tokens, 4);
}

#[tokio::test(start_paused = true)]
async fn streamed_and_whole_answers_agree() {
    let sim = sim(Behavior::succeed());
    let whole = call(&sim, request("same question")).await.unwrap();
    let streamed = call(&sim, stream_request("same question")).await.unwrap();
    let streamed = streamed.into_completion().await.unwrap();
    assert_eq!(streamed.text(), whole.completion().unwrap().text());
}

#[tokio::test(start_paused = true)]
async fn stream_breaks_after_n_chunks_with_an_error_item() {
    let sim = sim(Behavior::reply(
        Reply::new()
            .with_chunks(10)
            .with_fault(StreamFault::Break { after: 4 }),
    ));
    let items = items(call(&sim, stream_request("x")).await.unwrap()).await;
    assert_eq!(items.len(), 5);
    assert!(items[..4].iter().all(Result::is_ok));
    let err = items[4].as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(err.provider(), Some("sim-a"));
    assert_eq!(sim.handle().stats().count("stream_break"), 1);

    // Read as a whole, a broken stream is an error, never a truncated success.
    let response = call(&sim, stream_request("x")).await.unwrap();
    assert_eq!(
        response.into_completion().await.unwrap_err().kind(),
        LlmErrorKind::StreamInterrupted
    );
}

#[tokio::test(start_paused = true)]
async fn stream_stalls_after_n_chunks() {
    let sim = sim(Behavior::reply(
        Reply::new()
            .with_chunks(10)
            .with_fault(StreamFault::Stall { after: 3 }),
    ));
    let response = call(&sim, stream_request("x")).await.unwrap();
    let ResponseBody::Stream(mut stream) = response.body else {
        panic!("expected a stream")
    };
    for _ in 0..3 {
        assert!(stream.next().await.unwrap().is_ok());
    }
    let next = tokio::time::timeout(Duration::from_hours(1), stream.next()).await;
    assert!(next.is_err(), "a stalled stream sent something");
}

#[tokio::test(start_paused = true)]
async fn first_token_and_chunk_delays_follow_paused_time() {
    let sim = sim(Behavior::reply(
        Reply::new()
            .with_chunks(3)
            .with_first_token_delay(Duration::from_secs(2))
            .with_chunk_delay(Duration::from_millis(100)),
    ));
    let start = Instant::now();
    let response = call(&sim, stream_request("x")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "headers come at once");
    let ResponseBody::Stream(mut stream) = response.body else {
        panic!("expected a stream")
    };
    let mut arrivals = Vec::new();
    while let Some(item) = stream.next().await {
        item.unwrap();
        arrivals.push(start.elapsed());
    }
    let ms = Duration::from_millis;
    // role, 3 content chunks, finish
    assert_eq!(arrivals, [ms(0), ms(2000), ms(2100), ms(2200), ms(2300)]);
}

#[tokio::test(start_paused = true)]
async fn malformed_event_is_an_error_item_and_the_stream_goes_on() {
    let sim = sim(Behavior::reply(
        Reply::new()
            .with_chunks(5)
            .with_fault(StreamFault::Malformed { at: 3 }),
    ));
    let items = items(call(&sim, stream_request("x")).await.unwrap()).await;
    assert_eq!(items.len(), 1 + 5 + 1 + 1);
    assert_eq!(
        items[3].as_ref().unwrap_err().kind(),
        LlmErrorKind::MalformedResponse
    );
    let rest: Vec<&ChatChunk> = items.iter().filter_map(|item| item.as_ref().ok()).collect();
    assert_eq!(rest.len(), 7);
    assert!(rest.last().unwrap().finish_reason().is_some());
}

#[tokio::test(start_paused = true)]
async fn in_band_error_comes_before_the_first_content_chunk() {
    let sim = sim(Behavior::reply(Reply::new().with_fault(
        StreamFault::Error {
            after: 1,
            error: Failure::new(LlmErrorKind::Overloaded),
        },
    )));
    let items = items(call(&sim, stream_request("x")).await.unwrap()).await;
    assert_eq!(items.len(), 2);
    assert!(!items[0].as_ref().unwrap().has_content());
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
    assert_eq!(err.provider(), Some("sim-a"));
}

#[tokio::test(start_paused = true)]
async fn missing_done_is_a_complete_stream_in_process() {
    let sim = sim(Behavior::reply(
        Reply::new().with_fault(StreamFault::MissingDone),
    ));
    let response = call(&sim, stream_request("hello there")).await.unwrap();
    let completion = response.into_completion().await.unwrap();
    assert_eq!(completion.text(), "simulated answer to: hello there");
    assert_eq!(sim.handle().stats().successes(), 1);
}

// ===== serde =====

#[test]
fn behaviours_round_trip_through_json() {
    let behavior = Behavior::sequence(
        [
            Behavior::rate_limited(Duration::from_millis(1500)),
            Behavior::delay(Duration::from_secs(2), Behavior::hang()),
            Behavior::flaky(0.25, Behavior::drop_connection(12)),
            Behavior::malformed(),
            Behavior::truncated(),
        ],
        Behavior::reply(
            Reply::new()
                .with_chunks(8)
                .with_first_token_delay(Duration::from_millis(300))
                .with_fault(StreamFault::Error {
                    after: 4,
                    error: Failure::new(LlmErrorKind::Server).with_status(502),
                }),
        ),
    );
    let json = serde_json::to_string(&behavior).unwrap();
    let back: Behavior = serde_json::from_str(&json).unwrap();
    assert_eq!(back, behavior);
}

#[test]
fn behaviour_config_reads_short_forms_and_defaults() {
    let behavior: Behavior = serde_json::from_str(
        r#"{"type": "succeed", "chunks": 3, "fault": {"type": "error", "error": {"kind": "overloaded"}}}"#,
    )
    .unwrap();
    let Behavior::Succeed(reply) = behavior else {
        panic!("expected succeed")
    };
    assert_eq!(reply.chunks, Some(3));
    assert_eq!(
        reply.fault,
        Some(StreamFault::Error {
            after: 1,
            error: Failure::new(LlmErrorKind::Overloaded)
        })
    );
    let config: SimConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config.name, "sim");
    assert_eq!(config.behavior, Behavior::succeed());
}

#[test]
fn unknown_error_kind_is_refused_with_the_known_names() {
    let err = serde_json::from_str::<Behavior>(r#"{"type": "fail", "kind": "exploded"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exploded") && err.contains("rate_limited"),
        "{err}"
    );
    let err = serde_json::from_str::<Behavior>(r#"{"type": "explode"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("explode"), "{err}");
}

// ===== conditions, prefill, tool calls =====

#[tokio::test(start_paused = true)]
async fn when_picks_the_behaviour_by_the_request() {
    use brace_sim::Condition;

    let sim = sim(Behavior::when(
        Condition::Prefill,
        Behavior::failure(
            Failure::new(LlmErrorKind::BadRequest).with_message("prefill is not supported"),
        ),
    ));
    assert!(call(&sim, request("x")).await.is_ok());
    let prefill = ChatRequest::new("m", vec![Message::user("x"), Message::assistant("partial")]);
    assert_eq!(
        call(&sim, prefill).await.unwrap_err().kind(),
        LlmErrorKind::BadRequest
    );

    let by_model = self::sim(Behavior::when(
        Condition::Model("bad-model".into()),
        Behavior::fail(LlmErrorKind::ModelNotFound),
    ));
    assert!(call(&by_model, request("x")).await.is_ok());
    let mut bad = request("x");
    bad.model = "bad-model".into();
    assert_eq!(
        call(&by_model, bad).await.unwrap_err().kind(),
        LlmErrorKind::ModelNotFound
    );

    let streams_fail = self::sim(Behavior::when(
        Condition::Stream,
        Behavior::fail(LlmErrorKind::Server),
    ));
    assert!(call(&streams_fail, request("x")).await.is_ok());
    assert!(call(&streams_fail, stream_request("x")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn prefilled_continuation_adds_up_to_the_whole_answer() {
    let broken = sim(Behavior::reply(
        Reply::new()
            .with_chunks(6)
            .with_fault(StreamFault::Break { after: 4 }),
    ));
    let question = "explain circuit breakers";
    let mut delivered = String::new();
    for item in items(call(&broken, stream_request(question)).await.unwrap()).await {
        match item {
            Ok(chunk) => delivered.push_str(
                chunk.choices[0]
                    .delta
                    .content
                    .as_deref()
                    .unwrap_or_default(),
            ),
            Err(_) => break,
        }
    }
    assert!(!delivered.is_empty());

    let other = sim(Behavior::succeed());
    let continuation = ChatRequest::new(
        "m",
        vec![
            Message::user(question),
            Message::assistant(delivered.clone()),
        ],
    )
    .with_stream(true);
    let rest = call(&other, continuation)
        .await
        .unwrap()
        .into_completion()
        .await
        .unwrap()
        .text();
    let whole = call(&other, request(question)).await.unwrap();
    assert_eq!(delivered + &rest, whole.completion().unwrap().text());
}

#[tokio::test(start_paused = true)]
async fn tool_call_replies_whole_and_streamed() {
    use brace_sim::ToolCallReply;

    let sim = sim(Behavior::reply(Reply::new().with_chunks(3).with_tool_call(
        ToolCallReply::new("get_weather", r#"{"city":"Paris"}"#),
    )));
    let whole = call(&sim, request("weather?")).await.unwrap();
    let streamed = call(&sim, stream_request("weather?"))
        .await
        .unwrap()
        .into_completion()
        .await
        .unwrap();
    for completion in [whole.completion().unwrap(), &streamed] {
        let choice = &completion.choices[0];
        assert_eq!(
            choice.finish_reason,
            Some(brace_llm::FinishReason::ToolCalls)
        );
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
    }
}

#[tokio::test(start_paused = true)]
async fn recent_requests_are_kept_as_received() {
    let sim = sim(Behavior::succeed());
    for i in 0..40 {
        call(&sim, request(&format!("question {i}")).with_max_tokens(64))
            .await
            .unwrap();
    }
    let requests = sim.handle().requests();
    assert_eq!(requests.len(), 32);
    assert_eq!(requests[0].messages[0].text(), "question 8");
    let last = sim.handle().last_request().unwrap();
    assert_eq!(last.messages[0].text(), "question 39");
    assert_eq!(last.max_tokens, Some(64));
    sim.handle().reset();
    assert!(sim.handle().last_request().is_none());
}
