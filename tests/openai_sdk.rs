//! The official `openai` Python SDK as a real client of the gateway: plain and streamed
//! completions, a stream broken mid-answer and finished by a verified restart, model
//! listing, and the SDK's own typed errors for our 429, 503 and 400.
//!
//! The SDK lives in a virtual environment that `.ci/run` creates; its interpreter is given
//! in `BRACE_PYTHON`. Without it the test says so and passes only outside CI (`CI` unset),
//! so a developer without Python can still run the suite; in CI it must run.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use brace::llm::{ChatRequest, LlmErrorKind, Message};
use brace::sim::{Behavior, Failure, Reply, SimProvider, StreamFault};
use brace_gateway::{Gateway, GatewayConfig};
use tower::ServiceExt;

const CONFIG: &str = r"
providers:
  - name: primary
    kind: simulated
    model: sim-large
  - name: secondary
    kind: simulated
    model: sim-small
    priority: 2
fallback:
  max_retries: 0
degradation:
  auto:
    enabled: false
routes:
  - match: sdk-restart
    providers: [{name: primary}, {name: secondary}]
    continuation: true
";

fn python() -> Option<String> {
    match std::env::var("BRACE_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "BRACE_PYTHON must point at a Python with the openai SDK in CI"
            );
            eprintln!("BRACE_PYTHON is not set: skipping the openai SDK conformance test");
            None
        }
    }
}

async fn run(python: &str, url: &str, scenario: &str) {
    run_with(python, url, scenario, &[]).await;
}

async fn run_with(python: &str, url: &str, scenario: &str, args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_client.py");
    let python = python.to_owned();
    let url = url.to_owned();
    let scenario_name = scenario.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(url)
            .arg(scenario_name)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    assert!(
        output.status.success(),
        "scenario {scenario} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_talks_to_the_gateway() {
    let Some(python) = python() else { return };
    let gateway: Arc<Gateway> = Gateway::build(GatewayConfig::from_yaml(CONFIG).unwrap()).unwrap();
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
    let url = format!("http://{addr}");

    run(&python, &url, "plain").await;
    run(&python, &url, "stream").await;
    run(&python, &url, "models").await;
    run(&python, &url, "bad_request").await;

    // One stream cut after 40 words, finished by a verified restart on a provider that
    // rejects prefill and answers the same request with the same text.
    let answer = Reply::new().with_chunks(60);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::reply(
            answer
                .clone()
                .with_fault(StreamFault::Break { after: 1 + 40 }),
        ));
    gateway
        .sim("secondary")
        .unwrap()
        .set_behavior(Behavior::reject_prefill(Behavior::reply(answer.clone())));
    let expected = SimProvider::with_behavior("reference", Behavior::reply(answer))
        .oneshot(ChatRequest::new(
            "m",
            vec![Message::user("Hello from the SDK")],
        ))
        .await
        .unwrap()
        .completion()
        .unwrap()
        .text();
    run_with(&python, &url, "restarted_stream", &[&expected]).await;
    let asked = gateway.sim("secondary").unwrap().last_request().unwrap();
    assert_eq!(asked.messages.len(), 1, "restarted without a prefill");
    for name in ["primary", "secondary"] {
        gateway.sim(name).unwrap().set_behavior(Behavior::succeed());
    }

    for (name, secs) in [("primary", 30), ("secondary", 7)] {
        gateway.sim(name).unwrap().set_behavior(Behavior::failure(
            Failure::new(LlmErrorKind::RateLimited).with_retry_after(Duration::from_secs(secs)),
        ));
    }
    run(&python, &url, "rate_limited").await;

    for name in ["primary", "secondary"] {
        gateway
            .sim(name)
            .unwrap()
            .set_behavior(Behavior::fail(LlmErrorKind::Server));
    }
    for handle in gateway.circuits().handles() {
        handle.reset();
    }
    run(&python, &url, "unavailable").await;

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
