//! A scripted HTTP/1.1 server on 127.0.0.1 for the Anthropic and Gemini client tests: each
//! connection reads one request, records it, and plays the next scripted reply.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The samples of each provider's wire format (requests, answers, streams, errors) are
/// brace-llm's test fixtures, where the chat types and `LlmError::from_response` are tested
/// on them directly; here the clients are tested on the same files.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../brace-llm/tests/fixtures")
}

pub fn fixture(path: &str) -> String {
    let full = fixtures().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

/// What the server does with one connection.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// A chunked response: one HTTP chunk per piece, then `end`.
    Chunked {
        content_type: &'static str,
        pieces: Vec<String>,
        end: End,
    },
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and closes the connection.
    Drop,
}

/// How a chunked response ends.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// The terminating chunk: a clean end of body.
    Clean,
    /// The connection closes mid-body.
    Cut,
    /// The server stops sending and keeps the connection open.
    Stall,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Full { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// An event stream, one HTTP chunk per SSE event.
    pub fn sse(text: &str, end: End) -> Self {
        let pieces = text.split_inclusive("\n\n").map(str::to_owned).collect();
        Self::Chunked {
            content_type: "text/event-stream",
            pieces,
            end,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

pub struct Server {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts a server that plays `replies` in order, the last one for every later
    /// connection.
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let reply = replies[index.min(replies.len() - 1)].clone();
                index += 1;
                tokio::spawn(serve(socket, reply, record.clone()));
            }
        });
        Self { base, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = socket.read(&mut piece).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut piece).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&piece[..n]);
    }
    Some(Seen {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn serve(mut socket: TcpStream, reply: Reply, seen: Arc<Mutex<Vec<Seen>>>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    seen.lock().push(request);
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} Status\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                let _ = write!(out, "{name}: {value}\r\n");
            }
            out.push_str("\r\n");
            out.push_str(&body);
            let _ = socket.write_all(out.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Chunked {
            content_type,
            pieces,
            end,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            );
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for piece in pieces {
                let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                let _ = socket.flush().await;
            }
            match end {
                End::Clean => {
                    let _ = socket.write_all(b"0\r\n\r\n").await;
                    let _ = socket.shutdown().await;
                }
                End::Cut => drop(socket),
                End::Stall => {
                    std::future::pending::<()>().await;
                }
            }
        }
        Reply::Hang => std::future::pending::<()>().await,
        Reply::Drop => drop(socket),
    }
}

/// An error fixture: status, headers, body and the expected kind.
pub struct ErrorCase {
    pub name: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub kind: String,
    pub retry_after_ms: Option<u64>,
}

/// The provider's error answers (`error_*.json`: status, headers, body, expected kind).
pub fn error_cases(provider: &str) -> Vec<ErrorCase> {
    let dir = fixtures().join(provider);
    let mut cases = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with("error_")
                        && Path::new(name).extension().is_some_and(|ext| ext == "json")
                })
        })
        .collect();
    entries.sort();
    for path in entries {
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cases.push(ErrorCase {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            status: value["status"].as_u64().unwrap() as u16,
            headers: value["headers"]
                .as_object()
                .map(|map| {
                    map.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            body: value["body"].to_string(),
            kind: value["expect"]["kind"].as_str().unwrap().to_owned(),
            retry_after_ms: value["expect"]["retry_after_ms"].as_u64(),
        });
    }
    cases
}

impl ErrorCase {
    pub fn reply(&self) -> Reply {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        headers.extend(self.headers.iter().cloned());
        Reply::Full {
            status: self.status,
            headers,
            body: self.body.clone(),
        }
    }
}

pub mod sim;
