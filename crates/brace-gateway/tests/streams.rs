//! Streams that end whole or honestly, through the gateway over simulated providers served
//! on loopback HTTP (`SimServer`): a break finished by a verified restart on a fallback
//! that rejects prefill (or ended with the original break when the fallback diverges), a
//! hold-back commit that restarts cleanly, content-policy refusals answered as they are
//! (or routed where the operator says), truthful per-provider accounting, and the
//! gateway's own limits on a stream (shutdown grace, `max_stream_duration`).
//!
//! The Prometheus recorder is process-wide: every test uses provider names of its own.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::{ChatRequest, LlmErrorKind, Message};
use brace_sim::{Behavior, Reply, SimConfig, SimHandle, SimProvider, SimServer, StreamFault};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The question every test asks; the simulated answer is derived from it.
const QUESTION: &str = "count to a hundred";

/// Words in every simulated answer (one per streamed delta, one token each).
const WORDS: usize = 100;

/// The prompt tokens of [`QUESTION`], as the simulator counts them and as brace estimates
/// them (a quarter of its bytes, rounded up).
const PROMPT_TOKENS: u64 = QUESTION.len().div_ceil(4) as u64;

fn answer() -> Reply {
    Reply::new().with_chunks(WORDS)
}

/// The OpenAI role chunk, then `words` content chunks: where a cut after `words` tokens is.
fn after_words(words: usize) -> usize {
    1 + words
}

/// The whole answer any deterministic simulated provider gives to [`QUESTION`].
async fn whole_answer() -> String {
    first_words(WORDS).await
}

/// The first `n` streamed deltas of that answer.
async fn first_words(n: usize) -> String {
    let sim = SimProvider::with_behavior("reference", Behavior::reply(answer()));
    let request = ChatRequest::new("m", vec![Message::user(QUESTION)]).with_stream(true);
    let brace_llm::ResponseBody::Stream(stream) = sim.oneshot(request).await.unwrap().body else {
        unreachable!("a streamed request gets a stream")
    };
    stream
        .filter_map(|chunk| async move { chunk.unwrap().choices[0].delta.content.clone() })
        .filter(|text| std::future::ready(!text.is_empty()))
        .take(n)
        .collect::<Vec<_>>()
        .await
        .concat()
}

struct Sims(Vec<SimServer>);

impl Sims {
    async fn start(providers: &[(&str, Behavior)]) -> Self {
        brace_providers::provider::install_crypto_provider();
        let mut servers = Vec::new();
        for (name, behavior) in providers {
            let handle = SimHandle::new(
                SimConfig::new(*name)
                    .with_model(format!("{name}-model"))
                    .with_behavior(behavior.clone()),
            );
            servers.push(SimServer::start(handle).await.unwrap());
        }
        Self(servers)
    }

    fn handle(&self, name: &str) -> &SimHandle {
        self.0
            .iter()
            .map(SimServer::handle)
            .find(|handle| &**handle.name() == name)
            .unwrap()
    }

    /// The `providers:` section: each simulated provider over HTTP, priced.
    fn providers_yaml(&self) -> String {
        let mut yaml = String::from("providers:\n");
        for (index, server) in self.0.iter().enumerate() {
            let name = server.handle().name();
            let _ = writeln!(
                yaml,
                "  - name: {name}\n    kind: simulated\n    model: {name}-model\n    \
                 base_url: {url}/v1\n    priority: {priority}\n    timeout: 60s\n    \
                 price: {{input: {input}, output: {output}}}",
                url = server.base_url(),
                priority = index + 1,
                input = 1 + 2 * index,
                output = 2 + 2 * index,
            );
        }
        yaml
    }
}

/// A gateway over `sims` with `rest` (routes, server limits) after the shared settings.
fn gateway(sims: &Sims, rest: &str) -> Arc<Gateway> {
    let yaml = format!(
        "{providers}fallback:\n  max_retries: 0\ndegradation:\n  auto:\n    enabled: false\n{rest}",
        providers = sims.providers_yaml(),
    );
    Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap()
}

fn chat(stream: bool) -> Value {
    let mut body = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": QUESTION}],
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn post(body: &Value) -> http::Request<Body> {
    http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// What came back: status, headers, the SSE `data:` payloads (or the JSON body), trailers.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: String,
    trailers: Option<http::HeaderMap>,
}

impl Answer {
    fn events(&self) -> Vec<&str> {
        self.body
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect()
    }

    fn chunks(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| *event != "[DONE]")
            .map(|event| serde_json::from_str(event).unwrap())
            .collect()
    }

    fn text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |value| value.to_str().unwrap())
    }
}

/// Sends `body` through the gateway's router (the providers are still reached over HTTP),
/// and reads the whole answer with its trailers.
async fn send(gateway: &Arc<Gateway>, body: &Value) -> Answer {
    let response = brace_gateway::app::router(gateway.clone())
        .oneshot(post(body))
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status,
        headers,
        body: String::from_utf8(collected.to_bytes().to_vec()).unwrap(),
        trailers,
    }
}

/// The value of the series `series` (`name{labels}`) in `/metrics`, if present.
fn metric(gateway: &Gateway, series: &str) -> Option<f64> {
    let rendered = gateway.metrics.render();
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
}

fn tokens(gateway: &Gateway, provider: &str, direction: &str) -> Option<f64> {
    metric(
        gateway,
        &format!("brace_tokens_total{{provider=\"{provider}\",direction=\"{direction}\"}}"),
    )
}

fn streams(gateway: &Gateway, provider: &str, outcome: &str) -> Option<f64> {
    metric(
        gateway,
        &format!("brace_streams_total{{provider=\"{provider}\",outcome=\"{outcome}\"}}"),
    )
}

fn cost(gateway: &Gateway, provider: &str) -> Option<f64> {
    metric(
        gateway,
        &format!("brace_cost_microdollars_total{{provider=\"{provider}\"}}"),
    )
}

/// `true` when the process-wide recorder is the gateway's: nothing else in this test binary
/// installs one.
fn recording(gateway: &Gateway) -> bool {
    let ours = !gateway.metrics.render().is_empty();
    assert!(ours, "the gateway's Prometheus recorder renders /metrics");
    ours
}

const CONTINUED_ROUTE: &str = "routes:\n  - match: chat\n    providers: [{name: PRIMARY}, {name: BACKUP}]\n    continuation: true\n";

fn route(template: &str, primary: &str, backup: &str) -> String {
    template
        .replace("PRIMARY", primary)
        .replace("BACKUP", backup)
}

// ===== verified restart =====

#[tokio::test]
async fn a_cut_after_40_tokens_is_finished_by_a_verified_restart_on_a_fallback_that_rejects_prefill()
 {
    let sims = Sims::start(&[
        (
            "vr-primary",
            Behavior::reply(answer().with_fault(StreamFault::Break {
                after: after_words(40),
            })),
        ),
        (
            "vr-backup",
            Behavior::reject_prefill(Behavior::reply(answer())),
        ),
    ])
    .await;
    let gateway = gateway(&sims, &route(CONTINUED_ROUTE, "vr-primary", "vr-backup"));
    let reply = send(&gateway, &chat(true)).await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-brace-provider"),
        "vr-primary",
        "committed there"
    );
    let events = reply.events();
    assert_eq!(events.last(), Some(&"[DONE]"), "a whole answer");
    assert_eq!(
        reply.text(),
        whole_answer().await,
        "every word once, in order"
    );

    let chunks = reply.chunks();
    let ids: Vec<&str> = chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one answer: {ids:?}");
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"].is_string())
        .unwrap();
    assert_eq!(finish["x_brace_continued_by"], "vr-backup");
    assert_eq!(finish["x_brace_continued_how"], "verified_restart");
    assert_eq!(finish["model"], "vr-backup-model");

    // The usage sums what reached the caller: both prompts, 40 + 60 completion tokens.
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 2 * PROMPT_TOKENS);
    assert_eq!(usage["completion_tokens"], WORDS as u64);
    assert_eq!(usage["total_tokens"], 2 * PROMPT_TOKENS + WORDS as u64);
    let segments = usage["x_brace_segments"].as_array().unwrap();
    assert_eq!(
        segments,
        &[
            json!({"provider": "vr-primary", "how": "original", "prompt_tokens": PROMPT_TOKENS,
                   "completion_tokens": 40, "estimated": true}),
            json!({"provider": "vr-backup", "how": "verified_restart",
                   "prompt_tokens": PROMPT_TOKENS, "completion_tokens": 60, "estimated": false}),
        ]
    );
    let trailers = reply.trailers.expect("trailers say who continued");
    assert_eq!(trailers["x-brace-continued-by"], "vr-backup");
    assert_eq!(trailers["x-brace-continued-how"], "verified_restart");

    // The fallback got the original request, not a prefill, once.
    let backup = sims.handle("vr-backup");
    assert_eq!(backup.calls(), 1);
    let asked = backup.last_request().unwrap();
    assert_eq!(asked.messages.len(), 1, "no assistant prefill: {asked:?}");

    if recording(&gateway) {
        // Each provider is credited with its own tokens and cost, and its own outcome.
        assert_eq!(
            tokens(&gateway, "vr-primary", "input"),
            Some(PROMPT_TOKENS as f64)
        );
        assert_eq!(tokens(&gateway, "vr-primary", "output"), Some(40.0));
        assert_eq!(
            tokens(&gateway, "vr-backup", "input"),
            Some(PROMPT_TOKENS as f64)
        );
        assert_eq!(tokens(&gateway, "vr-backup", "output"), Some(WORDS as f64));
        // Prices per million: primary 1 in / 2 out, backup 3 in / 4 out (micro-dollars).
        assert_eq!(
            cost(&gateway, "vr-primary"),
            Some((PROMPT_TOKENS + 80) as f64)
        );
        assert_eq!(
            cost(&gateway, "vr-backup"),
            Some((3 * PROMPT_TOKENS + 400) as f64)
        );
        assert_eq!(
            streams(&gateway, "vr-primary", "stream_interrupted"),
            Some(1.0)
        );
        assert_eq!(streams(&gateway, "vr-primary", "complete"), None);
        assert_eq!(streams(&gateway, "vr-backup", "complete"), Some(1.0));
        let continuations = metric(
            &gateway,
            "brace_stream_continuations_total{broken=\"vr-primary\",target=\"vr-backup\",\
             how=\"verified_restart\",outcome=\"started\"}",
        );
        assert_eq!(continuations, Some(1.0));
    }
}

#[tokio::test]
async fn a_diverging_fallback_ends_the_stream_with_the_original_break_and_no_refusal_text() {
    let sims = Sims::start(&[
        (
            "dv-primary",
            Behavior::reply(answer().with_fault(StreamFault::Break {
                after: after_words(40),
            })),
        ),
        (
            "dv-backup",
            Behavior::reject_prefill(Behavior::reply(answer().with_divergence_after(10))),
        ),
    ])
    .await;
    let gateway = gateway(&sims, &route(CONTINUED_ROUTE, "dv-primary", "dv-backup"));
    let reply = send(&gateway, &chat(true)).await;

    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert!(
        !events.contains(&"[DONE]"),
        "a cut answer never looks whole"
    );
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("dv-primary:"),
        "the original break: {last}"
    );
    assert_eq!(
        reply.text(),
        first_words(40).await,
        "nothing of the divergent restart"
    );
    assert!(!reply.body.contains("sampled"), "no divergent text");
    assert!(!reply.body.contains("prefill"), "no refusal text");
    assert_eq!(sims.handle("dv-backup").calls(), 1);

    if recording(&gateway) {
        assert_eq!(
            streams(&gateway, "dv-primary", "stream_interrupted"),
            Some(1.0)
        );
        assert_eq!(
            streams(&gateway, "dv-backup", "cancelled"),
            Some(1.0),
            "the restart was abandoned"
        );
        let failed = metric(
            &gateway,
            "brace_stream_continuations_total{broken=\"dv-primary\",target=\"dv-backup\",\
             how=\"verified_restart\",outcome=\"failed\"}",
        );
        assert_eq!(failed, Some(1.0));
    }
}

#[tokio::test]
async fn a_fallback_that_accepts_prefill_continues_from_the_delivered_text() {
    let sims = Sims::start(&[
        (
            "pf-primary",
            Behavior::reply(answer().with_fault(StreamFault::Break {
                after: after_words(40),
            })),
        ),
        ("pf-backup", Behavior::reply(answer())),
    ])
    .await;
    let mut yaml = sims.providers_yaml();
    yaml = yaml.replace(
        "name: pf-backup\n",
        "name: pf-backup\n    accepts_prefill: true\n",
    );
    let config = format!(
        "{yaml}fallback:\n  max_retries: 0\ndegradation:\n  auto:\n    enabled: false\n{}",
        route(CONTINUED_ROUTE, "pf-primary", "pf-backup")
    );
    let gateway = Gateway::build(GatewayConfig::from_yaml(&config).unwrap()).unwrap();
    let reply = send(&gateway, &chat(true)).await;
    assert_eq!(reply.text(), whole_answer().await);
    let trailers = reply.trailers.as_ref().unwrap();
    assert_eq!(trailers["x-brace-continued-how"], "prefill");
    let asked = sims.handle("pf-backup").last_request().unwrap();
    assert_eq!(asked.messages.len(), 2, "the delivered text as a prefill");
    // The prefill continuation sent the 60 words left, and its prompt held the 40 before.
    let chunks = reply.chunks();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], WORDS as u64);
}

// ===== hold-back commit =====

#[tokio::test]
async fn a_hold_back_of_64_tokens_turns_a_cut_at_40_into_a_clean_restart() {
    let sims = Sims::start(&[
        (
            // A different answer from the backup's, so that any of it would show.
            "hb-primary",
            Behavior::reply(
                answer()
                    .with_divergence_after(0)
                    .with_fault(StreamFault::Break {
                        after: after_words(40),
                    }),
            ),
        ),
        ("hb-backup", Behavior::reply(answer())),
    ])
    .await;
    let gateway = gateway(
        &sims,
        "routes:\n  - match: chat\n    providers: [{name: hb-primary}, {name: hb-backup}]\n    \
         commit: {after_tokens: 64}\n",
    );
    let reply = send(&gateway, &chat(true)).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-brace-provider"), "hb-backup");
    assert_eq!(reply.header("x-brace-attempts"), "2");
    assert_eq!(reply.events().last(), Some(&"[DONE]"));
    assert_eq!(reply.text(), whole_answer().await);
    assert!(
        !reply.body.contains("sampled"),
        "nothing of the broken attempt reached the caller"
    );
    let chunks = reply.chunks();
    assert!(chunks.iter().all(|c| c["model"] == "hb-backup-model"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens"], WORDS as u64,
        "the backup's own usage"
    );
    assert!(
        usage.get("x_brace_segments").is_none(),
        "not a continued stream"
    );
    assert!(reply.trailers.is_none());
    if recording(&gateway) {
        assert_eq!(
            streams(&gateway, "hb-primary", "stream_interrupted"),
            Some(1.0)
        );
        assert_eq!(tokens(&gateway, "hb-primary", "output"), Some(40.0));
        assert_eq!(streams(&gateway, "hb-backup", "complete"), Some(1.0));
    }
}

#[tokio::test]
async fn the_complete_commit_holds_the_whole_answer_and_a_late_cut_still_fails_over() {
    let sims = Sims::start(&[
        (
            "hc-primary",
            Behavior::reply(
                answer()
                    .with_divergence_after(0)
                    .with_fault(StreamFault::Break {
                        after: after_words(99),
                    }),
            ),
        ),
        ("hc-backup", Behavior::reply(answer())),
    ])
    .await;
    let gateway = gateway(
        &sims,
        "routes:\n  - match: chat\n    providers: [{name: hc-primary}, {name: hc-backup}]\n    \
         commit: complete\n",
    );
    let reply = send(&gateway, &chat(true)).await;
    assert_eq!(reply.header("x-brace-provider"), "hc-backup");
    assert_eq!(reply.text(), whole_answer().await);
    assert!(!reply.body.contains("sampled"));
}

// ===== content-policy refusals =====

#[tokio::test]
async fn a_content_policy_refusal_is_a_clean_400_not_failed_over_and_not_counted() {
    let sims = Sims::start(&[
        ("cf-primary", Behavior::fail(LlmErrorKind::ContentFiltered)),
        ("cf-backup", Behavior::reply(answer())),
    ])
    .await;
    let gateway = gateway(
        &sims,
        "circuit_breaker:\n  failure_threshold: 2\n\
         routes:\n  - match: chat\n    providers: [{name: cf-primary}, {name: cf-backup}]\n",
    );
    for stream in [false, true, false, true, false] {
        let reply = send(&gateway, &chat(stream)).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "content_policy_violation", "{error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("blocked by the safety system"),
            "{error}"
        );
    }
    assert_eq!(sims.handle("cf-primary").calls(), 5, "not retried");
    assert_eq!(sims.handle("cf-backup").calls(), 0, "not failed over");
    let circuit = gateway.circuits().get("cf-primary").unwrap();
    assert_eq!(circuit.state().as_str(), "closed");
    assert_eq!(
        circuit.metrics().failed_calls,
        0,
        "the breaker does not count it"
    );
}

#[tokio::test]
async fn on_content_filter_failover_lets_the_next_provider_answer() {
    let sims = Sims::start(&[
        ("cff-primary", Behavior::fail(LlmErrorKind::ContentFiltered)),
        ("cff-backup", Behavior::reply(answer())),
    ])
    .await;
    let gateway = gateway(
        &sims,
        "routes:\n  - match: chat\n    providers: [{name: cff-primary}, {name: cff-backup}]\n    \
         on_content_filter: failover\n",
    );
    let reply = send(&gateway, &chat(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-brace-provider"), "cff-backup");
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        whole_answer().await
    );
    let circuit = gateway.circuits().get("cff-primary").unwrap();
    assert_eq!(circuit.metrics().failed_calls, 0);
}

#[tokio::test]
async fn on_content_filter_with_provider_names_asks_them_instead() {
    let sims = Sims::start(&[
        ("cfl-primary", Behavior::fail(LlmErrorKind::ContentFiltered)),
        ("cfl-backup", Behavior::reply(answer())),
        ("cfl-lenient", Behavior::reply(answer())),
    ])
    .await;
    let gateway = gateway(
        &sims,
        "routes:\n  - match: chat\n    providers: [{name: cfl-primary}, {name: cfl-backup}]\n    \
         on_content_filter: [cfl-lenient]\n",
    );
    let reply = send(&gateway, &chat(true)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-brace-provider"), "cfl-lenient");
    assert_eq!(reply.text(), whole_answer().await);
    assert_eq!(
        sims.handle("cfl-backup").calls(),
        0,
        "the route's next is not asked"
    );

    // When the named providers refuse too, the caller gets the original refusal.
    sims.handle("cfl-lenient")
        .set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
    let reply = send(&gateway, &chat(false)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "content_policy_violation");
}

#[tokio::test]
async fn on_context_length_names_the_providers_to_try_for_a_prompt_too_long() {
    let sims = Sims::start(&[
        (
            "cl-primary",
            Behavior::fail(LlmErrorKind::ContextLengthExceeded),
        ),
        ("cl-backup", Behavior::reply(answer())),
        ("cl-long", Behavior::reply(answer())),
    ])
    .await;
    let gateway = gateway(
        &sims,
        "routes:\n  - match: chat\n    providers: [{name: cl-primary}, {name: cl-backup}]\n    \
         on_context_length: [cl-long]\n  \
         - match: other\n    providers: [{name: cl-primary}, {name: cl-backup}]\n",
    );
    let reply = send(&gateway, &chat(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-brace-provider"), "cl-long");
    assert_eq!(sims.handle("cl-backup").calls(), 0);

    // Without the key, a context-length error fails over along the route as before.
    let mut body = chat(false);
    body["model"] = json!("other");
    let reply = send(&gateway, &body).await;
    assert_eq!(reply.header("x-brace-provider"), "cl-backup");
}

// ===== the gateway's own limits =====

#[tokio::test(start_paused = true)]
async fn max_stream_duration_ends_a_stalled_stream_with_the_error_event() {
    let sims = Sims::start(&[(
        "md-primary",
        Behavior::reply(answer().with_fault(StreamFault::Stall {
            after: after_words(5),
        })),
    )])
    .await;
    let gateway = gateway(&sims, "server:\n  max_stream_duration: 5s\n");
    let start = tokio::time::Instant::now();
    let reply = send(&gateway, &chat(true)).await;
    assert!(start.elapsed() >= Duration::from_secs(5));
    let events = reply.events();
    assert!(!events.contains(&"[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_deadline", "{last}");
    assert_eq!(last["error"]["type"], "timeout_error");
    assert_eq!(reply.text(), first_words(5).await);
}

#[tokio::test(start_paused = true)]
async fn when_the_shutdown_grace_runs_out_open_streams_end_with_the_error_event() {
    let sims = Sims::start(&[(
        "sg-primary",
        Behavior::reply(answer().with_fault(StreamFault::Stall {
            after: after_words(3),
        })),
    )])
    .await;
    let gateway = gateway(&sims, "server:\n  shutdown_grace: 2s\n");
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brace_gateway::serve(
        gateway.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    // The role chunk and three words arrive; then the provider goes silent.
    while text.matches("data: ").count() < 4 {
        text.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    assert_eq!(gateway.streams().open_streams(), 1);
    let _ = stop.send(());
    while let Some(bytes) = body.next().await {
        text.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
    }
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert!(!events.contains(&"[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{last}");
    server.await.unwrap().unwrap();
}
