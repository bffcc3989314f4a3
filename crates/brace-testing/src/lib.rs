//! Test support shared by brace's crates (not published).
//!
//! [`Capture`] collects `tracing` events as JSON lines, for assertions on what a layer logs:
//!
//! ```
//! use brace_testing::Capture;
//!
//! let capture = Capture::default();
//! tracing::subscriber::with_default(capture.subscriber(), || {
//!     tracing::info!(provider = "primary", "circuit opened");
//! });
//! let opened = capture.named("circuit opened");
//! assert_eq!(opened[0]["fields"]["provider"], "primary");
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

/// Everything written by the subscriber of [`Capture::subscriber`].
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

/// One write into the capture.
#[derive(Debug)]
pub struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Writer;

    fn make_writer(&'a self) -> Self::Writer {
        Writer(self.0.clone())
    }
}

impl Capture {
    /// A subscriber writing every event from debug up as a JSON line into this capture.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(self.clone())
            .finish()
    }

    /// As [`subscriber`](Self::subscriber), and a line (message `close`, the span's fields
    /// under `span`) each time a span closes.
    pub fn subscriber_with_span_closes(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(self.clone())
            .finish()
    }

    /// The events logged so far, each a JSON object (`level`, `target`, `fields`, …).
    pub fn events(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The events whose message is `message`.
    pub fn named(&self, message: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["fields"]["message"] == message)
            .collect()
    }
}
