//! A raw-TCP loopback server for the OpenAI client tests: each connection gets a scripted
//! sequence of writes, waits, hangs and closes, so every fault is real HTTP (or real
//! broken HTTP).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use brace_providers::openai::{OpenAiClient, OpenAiConfig};
use brace_providers::provider::ApiKey;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The key every test client uses; no output may contain it.
pub const SECRET: &str = "sk-test-SECRETabcdef0123456789";

/// One step of a scripted answer.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Wait until notified.
    Wait(Arc<Notify>),
    /// Pause (server side only; keep it short).
    Pause(Duration),
    /// Never answer again (the connection stays open).
    Hang,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves every connection with `script(n)` (n counts connections from 0).
    pub async fn start(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let seen_by_server = seen.clone();
        tokio::spawn(async move {
            let mut count = 0;
            while let Ok((socket, _)) = listener.accept().await {
                let steps = script(count);
                count += 1;
                let seen = seen_by_server.clone();
                tokio::spawn(async move { serve(socket, steps, seen).await });
            }
        });
        Self { addr, seen }
    }

    /// Serves the same steps on every connection.
    pub async fn always(steps: Vec<Step>) -> Self {
        Self::start(move |_| steps.clone()).await
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    /// An OpenAI-flavoured client for this server with short timeouts.
    pub fn client(&self) -> OpenAiClient {
        OpenAiClient::new(self.config()).unwrap()
    }

    pub fn config(&self) -> OpenAiConfig {
        let mut config = OpenAiConfig::openai(ApiKey::new(SECRET));
        config.client = config
            .client
            .with_timeout(Duration::from_millis(400))
            .with_stream_idle_timeout(Duration::from_millis(200))
            .with_connect_timeout(Duration::from_millis(200));
        config.client.name = "openai-test".into();
        config.client.base_url = self.base_url();
        config
    }
}

async fn serve(mut socket: TcpStream, steps: Vec<Step>, seen: Arc<Mutex<Vec<Seen>>>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    seen.lock().push(request);
    for step in steps {
        match step {
            Step::Write(bytes) => {
                if socket.write_all(&bytes).await.is_err() {
                    return;
                }
                let _ = socket.flush().await;
            }
            Step::Wait(notify) => notify.notified().await,
            Step::Pause(duration) => tokio::time::sleep(duration).await,
            Step::Hang => std::future::pending::<()>().await,
        }
    }
    let _ = socket.shutdown().await;
}

async fn read_request(socket: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut piece = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut piece).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut piece).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&piece[..n]);
    }
    Some(Seen {
        head,
        body: buf[head_end..].to_vec(),
    })
}

// ===== answers =====

/// A whole HTTP answer with a JSON (or any) body.
pub fn http(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// The head of an SSE answer whose body ends when the connection closes.
pub fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_vec()
}

/// The head of a chunked SSE answer (a connection that drops mid-way is a broken body).
pub fn sse_chunked_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec()
}

/// One piece of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The end of a chunked body.
pub fn last_chunk() -> Vec<u8> {
    b"0\r\n\r\n".to_vec()
}

/// A `data:` event holding a text-delta chunk.
pub fn text_event(text: &str) -> Vec<u8> {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
        serde_json::to_string(text).unwrap()
    )
    .into_bytes()
}

/// A `data:` event with the role delta (first chunk).
pub fn role_event() -> Vec<u8> {
    b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n".to_vec()
}

/// A `data:` event with a finish reason.
pub fn finish_event() -> Vec<u8> {
    b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_vec()
}

pub fn done_event() -> Vec<u8> {
    b"data: [DONE]\n\n".to_vec()
}

/// A realistic whole completion.
pub const COMPLETION: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

/// A short request.
pub fn request(stream: bool) -> brace_llm::ChatRequest {
    brace_llm::ChatRequest::new("gpt-4o", vec![brace_llm::Message::user("Hello!")])
        .with_stream(stream)
}

/// Runs `future` with a guard far above any configured timeout: a hang fails the test
/// instead of blocking it.
pub async fn guard<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the client hung past every timeout")
}
