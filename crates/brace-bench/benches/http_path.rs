//! The gateway's per-request path over HTTP, request in → response out, counted in
//! instructions (valgrind's callgrind): a measure that shows a regression on a busy shared
//! machine, where wall-clock load numbers do not.
//!
//! Everything runs in one process on one current-thread tokio runtime: three simulated
//! providers (`SimServer`, instant), the gateway served by `brace_gateway::serve` exactly as
//! the `gateway` example serves it (the same configuration as `bench/load.sh`: three
//! OpenAI-compatible providers with retry, circuit breaker, failover, health, metrics and
//! request ids; tracing at the example's level), and a keep-alive HTTP/1.1 client sending one
//! request after another over loopback TCP. The system calls are not counted (callgrind
//! counts user space), so what is counted is what the gateway's code costs: parsing,
//! routing, the layers, the upstream client, serialising, and the runtime's bookkeeping.
//!
//! Each path runs in a child process under valgrind twice, with a small and a large number
//! of requests, counting only while requests are sent (not the set-up); the difference
//! divided by the difference in requests is the cost of one, with the first requests'
//! extra work (connections opened) cancelled out. "Added" is a gateway path minus the direct path (the same
//! client calling the simulated provider itself).
//!
//! - `cargo bench -p brace-bench --bench http_path` — the table (about a minute; needs
//!   `valgrind`, prints a note and exits when it is missing);
//! - `... -- gateway` — only the paths whose name contains `gateway` (and the baselines);
//! - `... -- --profile DIR` — also writes callgrind profiles of the large runs into DIR
//!   (`callgrind_annotate --inclusive=yes DIR/gateway.out | head -60`);
//! - `... -- --time` — wall-clock instead: interleaved rounds of each path in one process,
//!   the median over rounds of the nanoseconds per request (read with the machine's load in
//!   mind).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use brace_gateway::{Gateway, GatewayConfig};
use brace_sim::{SimConfig, SimHandle, SimServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const FEW: u64 = 300;
const MANY: u64 = 2_300;

/// The paths measured: (name, what, through the gateway, streamed).
const PATHS: &[(&str, &str, bool, bool)] = &[
    (
        "direct",
        "direct to the simulated provider (baseline)",
        false,
        false,
    ),
    ("gateway", "through the gateway", true, false),
    (
        "direct_stream",
        "direct, streamed (baseline for streams)",
        false,
        true,
    ),
    (
        "gateway_stream",
        "through the gateway, streamed",
        true,
        true,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--child") {
        let path = &args[at + 1];
        let calls: u64 = args[at + 2].parse().expect("a number of requests");
        child(path, calls);
        return;
    }
    let profile = args
        .iter()
        .position(|arg| arg == "--profile")
        .map(|at| PathBuf::from(&args[at + 1]));
    let filter = args
        .iter()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .find(|arg| {
            profile
                .as_ref()
                .is_none_or(|dir| dir.as_os_str() != arg.as_str())
        })
        .cloned();
    if args.iter().any(|arg| arg == "--time") {
        time(filter.as_deref());
        return;
    }
    if !common::callgrind::available() {
        println!("http_path: valgrind is not installed; nothing measured");
        return;
    }
    if let Some(dir) = &profile {
        std::fs::create_dir_all(dir).expect("the profile directory");
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    println!("| path | instructions per request | added over direct |");
    println!("|---|---|---|");
    let mut baseline = [None, None];
    for &(name, what, through, stream) in PATHS {
        let is_baseline = !through;
        if !is_baseline
            && filter
                .as_deref()
                .is_some_and(|filter| !name.contains(filter))
        {
            continue;
        }
        let out = profile
            .as_ref()
            .filter(|_| through)
            .map(|dir| dir.join(format!("{name}.out")));
        let few = count(&exe, name, FEW, None);
        let many = count(&exe, name, MANY, out.as_deref());
        let per = many.saturating_sub(few) / (MANY - FEW);
        let base = *baseline[usize::from(stream)].get_or_insert(per);
        println!(
            "| {what} | {per} | {:+} |",
            i128::from(per) - i128::from(base)
        );
    }
}

/// Instructions in [`requests`] for `calls` requests along `path`.
fn count(exe: &std::path::Path, path: &str, calls: u64, profile: Option<&std::path::Path>) -> u64 {
    common::callgrind::count_with(
        exe,
        &["--toggle-collect=*http_path::requests*"],
        &["--child", path, &calls.to_string()],
        profile,
    )
}

/// Runs `calls` requests along `path` (on a fresh runtime and servers).
fn child(path: &str, calls: u64) {
    let &(_, _, through, stream) = PATHS
        .iter()
        .find(|(name, ..)| *name == path)
        .unwrap_or_else(|| panic!("unknown path {path}"));
    // The example's tracing: an info-level subscriber, so each request's span is real.
    brace_gateway::metrics::init_tracing(false, false);
    let rt = runtime();
    let (setup, mut client) = rt.block_on(async {
        let setup = Setup::start().await;
        let client = setup.client(through).await;
        (setup, client)
    });
    requests(&rt, &mut client, stream, calls);
    drop(setup);
}

/// The measured part: valgrind counts only while this function runs (`--toggle-collect`),
/// so set-up (building the gateway calibrates the metrics crate's clock, a loop whose
/// length varies from run to run) is not counted. Every task the runtime polls meanwhile —
/// the gateway's, the simulated providers' — runs inside it.
#[inline(never)]
fn requests(rt: &tokio::runtime::Runtime, client: &mut Client, stream: bool, calls: u64) {
    rt.block_on(async {
        for _ in 0..calls {
            client.request(stream).await;
        }
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The simulated providers and the gateway in front of them.
struct Setup {
    sims: Vec<SimServer>,
    gateway: SocketAddr,
}

impl Setup {
    async fn start() -> Self {
        let mut sims = Vec::new();
        for name in ["primary", "secondary", "tertiary"] {
            let server = SimServer::start(SimHandle::new(SimConfig::new(name)))
                .await
                .expect("a simulated provider");
            sims.push(server);
        }
        let url = |i: usize| sims[i].base_url();
        // bench/load.sh's gateway.yaml.
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
providers:
  - {{ name: primary, kind: openai-compatible, model: sim-model, priority: 1, base_url: "{}/v1", api_key_env: "", timeout: 5s }}
  - {{ name: secondary, kind: openai-compatible, model: sim-model, priority: 2, base_url: "{}/v1", api_key_env: "", timeout: 5s }}
  - {{ name: tertiary, kind: openai-compatible, model: sim-model, priority: 3, base_url: "{}/v1", api_key_env: "", timeout: 5s }}
fallback:
  on_error: [429, 500, 502, 503, timeout, connect]
  max_retries: 1
  backoff: exponential
  base_delay: 1ms
  max_delay: 5ms
circuit_breaker:
  sliding_window_size: 20
  minimum_calls: 10
  failure_rate_threshold: 50
  wait_in_open: 60s
  permitted_calls_in_half_open: 3
health:
  consecutive_failures: 3
  recovery_time: 60s
degradation:
  auto:
    enabled: false
cache:
  enabled: false
"#,
            url(0),
            url(1),
            url(2)
        );
        let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).expect("the config"))
            .expect("the gateway");
        let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("a port");
        tokio::spawn(brace_gateway::serve(
            gateway,
            listener,
            std::future::pending(),
        ));
        Self {
            sims,
            gateway: addr,
        }
    }

    /// A keep-alive client of the gateway (`through`) or of the primary.
    async fn client(&self, through: bool) -> Client {
        let addr = if through {
            self.gateway
        } else {
            self.sims[0].local_addr()
        };
        Client::connect(addr).await
    }
}

/// One HTTP/1.1 keep-alive connection, one request at a time (as each loadgen worker).
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

const BODY: &str =
    r#"{"model":"sim-model","stream":false,"messages":[{"role":"user","content":"Hello there"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"Hello there"}]}"#;

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("a connection");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("a handshake");
        tokio::spawn(connection);
        Self {
            sender,
            authority: addr.to_string(),
        }
    }

    async fn request(&mut self, stream: bool) {
        let body = if stream { STREAM_BODY } else { BODY };
        let request = http::Request::post("/v1/chat/completions")
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a request");
        self.sender.ready().await.expect("the connection is open");
        let response = self.sender.send_request(request).await.expect("an answer");
        assert_eq!(response.status(), 200, "the request failed");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        if stream {
            assert!(
                body.ends_with(b"data: [DONE]\n\n"),
                "a stream without [DONE]"
            );
        }
        black_box(body);
    }
}

/// Wall-clock: interleaved rounds of every path in one process.
fn time(filter: Option<&str>) {
    let rounds = 40;
    let batch = 200u64;
    let rt = runtime();
    rt.block_on(async {
        let setup = Setup::start().await;
        let mut clients = Vec::new();
        for &(name, what, through, stream) in PATHS {
            if through && filter.is_some_and(|filter| !name.contains(filter)) {
                continue;
            }
            clients.push((
                name,
                what,
                stream,
                through,
                setup.client(through).await,
                Vec::new(),
            ));
        }
        for round in 0..rounds {
            let n = clients.len();
            for i in 0..n {
                let (_, _, stream, _, client, times) = &mut clients[(i + round) % n];
                let start = tokio::time::Instant::now();
                for _ in 0..batch {
                    client.request(*stream).await;
                }
                times.push(start.elapsed().as_nanos() as f64 / batch as f64);
            }
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!("| path | median ns per request ({rounds} rounds of {batch}) |");
        println!("|---|---|");
        for (_, what, _, _, _, times) in &mut clients {
            println!("| {what} | {:.0} |", median(times));
        }
        drop(Arc::new(setup.sims));
    });
}
