//! CR/LF from an upstream cannot forge a text log line.
//!
//! Alone in its own test binary: it captures logs with a thread-local subscriber, and
//! tracing caches per-callsite interest across the threads of one process, so a test that
//! runs beside others without a subscriber can miss its events (it did, 1 run in 15).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use support::{behind_hostile_upstream, chat, send};

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn cr_lf_in_an_upstream_error_cannot_forge_a_text_log_line() {
    let gateway = behind_hostile_upstream("  json_logs: false\n").await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        brace_gateway::metrics::subscriber(false, false, false, move || writer.clone());
    let reply = {
        let _logging = tracing::subscriber::set_default(subscriber);
        send(&gateway, chat("anything-else", false)).await
    };
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // The client gets the message JSON-escaped.
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom\r\n")
    );

    let log = captured.text();
    assert!(log.contains("request failed"), "{log}");
    assert!(log.contains("boom\\r\\n2030-01-01"), "{log}");
    assert!(
        !log.lines().any(|line| line.starts_with("2030-01-01")),
        "a forged line: {log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape sequence: {log}");
    assert!(log.contains("\\u{1b}[2J"), "{log}");
}
