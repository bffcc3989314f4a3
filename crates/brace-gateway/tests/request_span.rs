//! What `serve` logs while a request's answer is made and while its body streams carries the
//! request's span (its id, path and fields), and a failed answer is logged as one.
//!
//! Alone in its own test binary: it captures logs with a thread-local subscriber (see
//! `log_escape.rs` for why).

mod support;

use brace_testing::Capture;
use serde_json::{Value, json};
use support::{behind_hostile_upstream, serve_on_loopback};

/// The captured log lines whose message starts with `message`.
fn lines_saying(capture: &Capture, message: &str) -> Vec<Value> {
    capture
        .events()
        .into_iter()
        .filter(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|said| said.starts_with(message))
        })
        .collect()
}

#[tokio::test]
async fn logs_written_while_a_served_answer_streams_carry_the_request_span() {
    let gateway = behind_hostile_upstream("  json_logs: true\n").await;
    let capture = Capture::default();
    let subscriber = brace_gateway::metrics::subscriber(true, false, false, capture.clone());
    let _logging = tracing::subscriber::set_default(subscriber);
    let (addr, _stop) = serve_on_loopback(gateway).await;
    let client = reqwest::Client::new();
    let ask = |model: &str, stream: bool| {
        client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({"model": model, "stream": stream,
                          "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
    };

    // A stream cut after its first chunk: the gateway ends it with an error event, and says
    // so in a log line written while the body is polled.
    let response = ask("cut-stream", true).await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert!(body.contains("\"error\""), "{body}");
    let lines = lines_saying(&capture, "stream ended with an error event");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].to_string().contains(&id),
        "not in the request's span: {}",
        lines[0]
    );

    // A 5xx answer is logged as a failed response, inside the request's span too.
    let response = ask("server-error", false).await.unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let lines = lines_saying(&capture, "response failed");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].to_string().contains(&id), "{}", lines[0]);
    assert_eq!(lines[0]["level"], "ERROR", "{}", lines[0]);
}
