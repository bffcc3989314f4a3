//! What a hold-back commit costs in time to first token, over loopback: the gateway in front
//! of a simulated provider served over HTTP that streams one token every `CHUNK_MS`
//! milliseconds, one route per commit policy (`first_content`, `{after_tokens: 16}`,
//! `{after_tokens: 64}`, `complete`). Each request is streamed by a plain HTTP client; the
//! time to first token is from sending the request to receiving the first content delta,
//! and the total time to `[DONE]`.
//!
//! Run with: `cargo bench -p brace-bench --bench holdback_ttft` (about 40 s; `RUNS`,
//! `CHUNK_MS` and `WORDS` in the environment change the defaults of 20 requests per policy,
//! 5 ms per token and 200 tokens per answer).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use brace_gateway::{Gateway, GatewayConfig};
use brace_sim::{Behavior, Reply, SimConfig, SimHandle, SimServer};
use common::stats::{env_or, percentile};
use futures_util::StreamExt;
use tokio::time::Instant;

/// Streams one answer: (time to first content delta, time to `[DONE]`), in milliseconds.
async fn one(client: &reqwest::Client, url: &str, model: &str) -> (f64, f64) {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "count"}],
        "stream": true,
    });
    let start = Instant::now();
    let response = client.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let mut first = None;
    while let Some(bytes) = stream.next().await {
        seen.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
        // The role chunk carries `"content":""`; the first token is the first non-empty one.
        if first.is_none()
            && seen
                .split("\"content\":\"")
                .skip(1)
                .any(|rest| !rest.starts_with('"'))
        {
            first = Some(start.elapsed());
        }
    }
    assert!(seen.contains("[DONE]"), "a whole answer");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(first.expect("a token arrived")), ms(start.elapsed()))
}

fn main() {
    let runs = env_or("RUNS", 20).max(2);
    let chunk_ms = env_or("CHUNK_MS", 5);
    let words = env_or("WORDS", 200) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sim = SimServer::start(SimHandle::new(
            SimConfig::new("sim").with_behavior(Behavior::reply(
                Reply::new()
                    .with_chunks(words)
                    .with_chunk_delay(Duration::from_millis(chunk_ms)),
            )),
        ))
        .await
        .unwrap();
        let policies = [
            ("first_content", "first_content"),
            ("after_tokens: 16", "{after_tokens: 16}"),
            ("after_tokens: 64", "{after_tokens: 64}"),
            ("complete", "complete"),
        ];
        let mut yaml = format!(
            "providers:\n  - name: sim\n    kind: simulated\n    model: m\n    base_url: {}/v1\n\
             degradation:\n  auto:\n    enabled: false\nroutes:\n",
            sim.base_url()
        );
        for (index, (_, policy)) in policies.iter().enumerate() {
            let _ = writeln!(
                yaml,
                "  - match: p{index}\n    providers: [{{name: sim}}]\n    commit: {policy}"
            );
        }
        let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap();
        let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        tokio::spawn(brace_gateway::serve(
            gateway,
            listener,
            std::future::pending(),
        ));
        let url = format!("http://{addr}/v1/chat/completions");
        let client = reqwest::Client::new();
        // Warm the connections.
        for index in 0..policies.len() {
            one(&client, &url, &format!("p{index}")).await;
        }
        println!(
            "| commit | time to first token p50 / p90 (ms) | whole answer p50 (ms) |\n|---|---|---|"
        );
        for (index, (name, _)) in policies.iter().enumerate() {
            let mut first = Vec::new();
            let mut total = Vec::new();
            for _ in 0..runs {
                let (ttft, whole) = one(&client, &url, &format!("p{index}")).await;
                first.push(ttft);
                total.push(whole);
            }
            println!(
                "| `{name}` | {:.1} / {:.1} | {:.1} |",
                percentile(&mut first, 0.5),
                percentile(&mut first, 0.9),
                percentile(&mut total, 0.5),
            );
        }
        println!(
            "\n{runs} requests per policy; the provider streams {words} tokens, one every \
             {chunk_ms} ms."
        );
    });
}
