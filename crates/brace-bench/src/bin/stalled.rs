//! Stalled request bodies against a gateway, and what they cost it in memory.
//!
//! Opens `--connections` connections to `--url` (loopback only), each sending a
//! `POST /v1/chat/completions` head that announces one byte more than the `--body-bytes` it
//! then sends, and stalls. It samples the resident memory of `--pid` (the gateway) before,
//! while the bodies are held, and after the gateway has given them up (at its
//! `server.body_timeout`), and records how each connection ended. The result is one JSON
//! object on stdout; nothing in it is a pass or fail.
//!
//! `stalled --url http://127.0.0.1:8080 --pid 1234 --connections 300 --body-bytes 1048576`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brace_bench::procfs;
use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Stalled request bodies against a gateway on loopback.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The gateway, e.g. `http://127.0.0.1:8080` (loopback only).
    #[arg(long)]
    url: String,
    /// The gateway's process id, for its resident memory.
    #[arg(long)]
    pid: u32,
    /// How many connections stall.
    #[arg(long, default_value_t = 300)]
    connections: usize,
    /// Body bytes each sends before it stalls.
    #[arg(long, default_value_t = 1024 * 1024)]
    body_bytes: usize,
    /// Seconds to wait for the gateway to close every connection.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Seconds to wait after the last close before the last memory sample.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
}

/// How one connection ended.
#[derive(Debug)]
struct Ended {
    status: Option<u16>,
    after: Duration,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let addr = args
        .url
        .strip_prefix("http://")
        .unwrap_or(&args.url)
        .trim_end_matches('/')
        .to_owned();
    assert!(
        addr.starts_with("127.") || addr.starts_with("localhost") || addr.starts_with("[::1]"),
        "loopback only: {addr}"
    );
    let rss = || procfs::rss_kib(args.pid);
    let idle = rss();

    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        args.body_bytes + 1
    );
    let body: Arc<[u8]> = vec![b' '; args.body_bytes].into();
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let (head, body, sent) = (head.clone(), body.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let written = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await?;
                std::io::Result::Ok(())
            }
            .await;
            sent.fetch_add(1, Ordering::Relaxed);
            let stalled_at = Instant::now();
            let mut answer = Vec::new();
            if written.is_ok() {
                let _ = stream.read_to_end(&mut answer).await;
            }
            let status = std::str::from_utf8(&answer)
                .ok()
                .and_then(|text| text.strip_prefix("HTTP/1.1 "))
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok());
            Ended {
                status,
                after: stalled_at.elapsed(),
            }
        }));
    }
    // Every body sent: the gateway holds them all.
    while sent.load(Ordering::Relaxed) < args.connections
        && started.elapsed() < Duration::from_secs_f64(args.timeout)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_sent = started.elapsed();
    let mut held_peak = rss();
    let mut ended = Vec::with_capacity(tasks.len());
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut tasks = tasks.into_iter();
    let mut next = tasks.next();
    while let Some(task) = next.as_mut() {
        tokio::select! {
            result = task => {
                ended.push(result.expect("a connection task"));
                next = tasks.next();
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                held_peak = held_peak.max(rss());
                if Instant::now() > deadline {
                    break;
                }
            }
        }
    }
    let after_close = rss();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let settled = rss();

    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for end in &ended {
        *statuses
            .entry(
                end.status
                    .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            )
            .or_default() += 1;
    }
    let afters: Vec<f64> = ended.iter().map(|end| end.after.as_secs_f64()).collect();
    let min = afters.iter().copied().fold(f64::INFINITY, f64::min);
    let max = afters.iter().copied().fold(0.0, f64::max);
    println!(
        "{}",
        json!({
            "label": "stalled bodies",
            "connections": args.connections,
            "body_bytes": args.body_bytes,
            "sent_in_s": all_sent.as_secs_f64(),
            "closed": ended.len(),
            "statuses": statuses,
            "closed_after_stall_s": {"min": min, "max": max},
            "gateway_rss_kib": {
                "idle": idle,
                "held_peak": held_peak,
                "after_close": after_close,
                "settled": settled,
            },
        })
    );
}
