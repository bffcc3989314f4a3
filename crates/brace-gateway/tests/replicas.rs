//! Three gateway replicas sharing one Redis, each on its own tokio runtime (as three
//! processes would be), over simulated providers reached by HTTP: circuits, the probe
//! lease, the pin, the cache tier and rate limits are shared; Redis going away fails no
//! request, and sharing resumes when it is back.
//!
//! Needs a Redis: `BRACE_REDIS_URL` (set by `.ci/run`, which starts `redis-server` on a
//! loopback port). Without it every test here prints why and passes without running. The
//! test that kills Redis starts its own `redis-server` (from `PATH`, or
//! `BRACE_REDIS_SERVER`) on a free port, so it never stops the shared one.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use brace_circuit::CircuitState;
use brace_gateway::{ApiError, Gateway, GatewayConfig};
use brace_llm::{ChatRequest, ChatResponse, LlmErrorKind, Message, Origin};
use brace_sim::{Behavior, SimConfig, SimHandle, SimServer};
use tokio::runtime::Runtime;

fn redis_url() -> Option<String> {
    match std::env::var("BRACE_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: BRACE_REDIS_URL is not set (.ci/run starts a redis-server and sets it; \
                 locally: redis-server --port 6390 --save '' --appendonly no --daemonize yes \
                 && export BRACE_REDIS_URL=redis://127.0.0.1:6390)"
            );
            None
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Polls `check` every 5 ms until it holds; panics after 10 s (a liveness bound, not a
/// timing assertion: everything here happens in milliseconds on loopback).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{what}: not within 10 s");
}

/// The providers, each a `SimServer` on its own runtime.
struct Upstreams {
    rt: Runtime,
    primary: Option<SimServer>,
    primary_addr: SocketAddr,
    primary_sim: SimHandle,
    secondary: SimServer,
}

impl Upstreams {
    fn start() -> Self {
        let rt = runtime();
        let primary_sim = SimHandle::new(SimConfig::new("primary"));
        let secondary_sim = SimHandle::new(SimConfig::new("secondary"));
        let (primary, secondary) = rt.block_on(async {
            (
                SimServer::start(primary_sim.clone()).await.unwrap(),
                SimServer::start(secondary_sim).await.unwrap(),
            )
        });
        Self {
            primary_addr: primary.local_addr(),
            primary: Some(primary),
            primary_sim,
            secondary,
            rt,
        }
    }

    fn primary_calls(&self) -> u64 {
        self.primary_sim.calls()
    }

    fn secondary_calls(&self) -> u64 {
        self.secondary.handle().calls()
    }

    /// Stops the primary's server (ending calls that hang there) and starts it again on the
    /// same address.
    fn restart_primary(&mut self) {
        let handle = self.primary_sim.clone();
        let addr = self.primary_addr;
        let old = self.primary.take();
        let new = self.rt.block_on(async move {
            if let Some(old) = old {
                old.shutdown().await;
            }
            SimServer::bind(addr, handle).await.unwrap()
        });
        self.primary = Some(new);
    }
}

struct Options {
    /// Extra YAML for the primary's entry (`, key: value`).
    primary_extra: &'static str,
    wait_in_open: &'static str,
    primary_timeout: &'static str,
}

const DEFAULTS: Options = Options {
    primary_extra: "",
    wait_in_open: "60s",
    primary_timeout: "20s",
};

fn config(upstreams: &Upstreams, prefix: &str, options: &Options) -> GatewayConfig {
    let yaml = format!(
        r"
providers:
  - {{ name: primary, kind: simulated, model: m1, priority: 1, base_url: 'http://{primary}',
      timeout: {timeout} {extra} }}
  - {{ name: secondary, kind: simulated, model: m2, priority: 2, base_url: '{secondary}',
      timeout: 20s }}
fallback: {{ max_retries: 0 }}
circuit_breaker:
  failure_threshold: 2
  wait_in_open: {wait}
  permitted_calls_in_half_open: 1
degradation:
  auto: {{ enabled: false }}
state: {{ redis_url_env: BRACE_REDIS_URL, key_prefix: '{prefix}' }}
",
        primary = upstreams.primary_addr,
        secondary = upstreams.secondary.base_url(),
        timeout = options.primary_timeout,
        extra = options.primary_extra,
        wait = options.wait_in_open,
    );
    GatewayConfig::from_yaml(&yaml).unwrap()
}

/// One replica: a gateway on its own runtime.
struct Replica {
    rt: Runtime,
    gateway: Arc<Gateway>,
}

impl Replica {
    fn start(config: GatewayConfig, redis_url: &str) -> Self {
        let rt = runtime();
        let url = redis_url.to_owned();
        let gateway = rt.block_on(async move {
            Gateway::build_with_env(config, move |var| {
                (var == "BRACE_REDIS_URL").then(|| url.clone())
            })
            .unwrap()
        });
        Self { rt, gateway }
    }

    fn ask(&self, request: ChatRequest) -> Result<ChatResponse, ApiError> {
        let gateway = self.gateway.clone();
        self.rt
            .block_on(async move { gateway.call(request).await.map(|(response, _)| response) })
    }

    fn circuit(&self) -> CircuitState {
        self.gateway.circuit_state("primary").unwrap()
    }

    fn store_up(&self) -> bool {
        self.gateway.state_store().is_up()
    }
}

fn request(prompt: &str) -> ChatRequest {
    ChatRequest::new("m1", vec![Message::user(prompt)])
}

fn unique_prefix(test: &str) -> String {
    format!("test:{test}:{:08x}:", fastrand::u32(..))
}

fn replicas(upstreams: &Upstreams, url: &str, prefix: &str, options: &Options) -> Vec<Replica> {
    let replicas: Vec<_> = (0..3)
        .map(|_| Replica::start(config(upstreams, prefix, options), url))
        .collect();
    for (i, replica) in replicas.iter().enumerate() {
        eventually(&format!("replica {i} connects to redis"), || {
            replica.store_up()
        });
    }
    replicas
}

/// One request to each replica at once; every one must be answered.
fn round(replicas: &[Replica], prompt: &str) -> Vec<ChatResponse> {
    let pending: Vec<_> = replicas
        .iter()
        .map(|replica| {
            let gateway = replica.gateway.clone();
            let request = request(prompt);
            replica
                .rt
                .spawn(async move { gateway.call(request).await.map(|(response, _)| response) })
        })
        .collect();
    pending
        .into_iter()
        .zip(replicas)
        .map(|(task, replica)| {
            replica
                .rt
                .block_on(task)
                .unwrap()
                .unwrap_or_else(|err| panic!("a request failed: {}", err.message()))
        })
        .collect()
}

#[test]
fn once_one_replica_opens_the_primarys_circuit_the_others_stop_calling_it() {
    let Some(url) = redis_url() else { return };
    let upstreams = Upstreams::start();
    upstreams
        .primary_sim
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    let replicas = replicas(&upstreams, &url, &unique_prefix("open"), &DEFAULTS);
    let [a, b, c] = &replicas[..] else {
        unreachable!()
    };

    // Two failures on A open A's circuit (both requests are answered by the secondary).
    for _ in 0..2 {
        assert_eq!(&*a.ask(request("hi")).unwrap().meta.provider, "secondary");
    }
    assert_eq!(a.circuit(), CircuitState::Open);
    let started = tokio::time::Instant::now();
    eventually("B and C see the primary's circuit open", || {
        b.circuit() == CircuitState::Open && c.circuit() == CircuitState::Open
    });
    eprintln!(
        "the open reached the other replicas within {:?} (polled every 5 ms)",
        started.elapsed()
    );
    let calls = upstreams.primary_calls();
    assert_eq!(calls, 2);

    // B and C hold the primary out for the rest of A's wait, without one call of their own.
    let health = b.gateway.providers().get("primary").unwrap().health();
    assert!(health.unhealthy_for.unwrap() <= Duration::from_mins(1));
    for _ in 0..10 {
        for replica in [b, c] {
            let response = replica.ask(request("hi")).unwrap();
            assert_eq!(&*response.meta.provider, "secondary");
        }
    }
    assert_eq!(upstreams.primary_calls(), calls);
    assert_eq!(upstreams.secondary_calls(), 22);
}

#[test]
fn when_the_primary_heals_one_replica_holds_the_probe_lease_and_trials() {
    let Some(url) = redis_url() else { return };
    let mut upstreams = Upstreams::start();
    upstreams
        .primary_sim
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    let options = Options {
        wait_in_open: "300ms",
        ..DEFAULTS
    };
    let replicas = replicas(&upstreams, &url, &unique_prefix("lease"), &options);
    for _ in 0..2 {
        replicas[0].ask(request("hi")).unwrap();
    }
    eventually("every replica sees the primary's circuit open", || {
        replicas.iter().all(|r| r.circuit() == CircuitState::Open)
    });
    let opened = upstreams.primary_calls();

    // The trial hangs until we say: while it is in flight, no other replica sends one.
    // Requests are sent without waiting for them (the trial would not return).
    upstreams.primary_sim.set_behavior(Behavior::hang());
    let mut pending = Vec::new();
    eventually("a replica starts the trial once the wait is over", || {
        for replica in &replicas {
            let gateway = replica.gateway.clone();
            let task = replica
                .rt
                .spawn(async move { gateway.call(request("hi")).await.map(|_| ()) });
            pending.push((task, replica));
        }
        upstreams.primary_calls() > opened
    });
    let sent = pending.len();
    let half_open = replicas
        .iter()
        .filter(|r| r.circuit() == CircuitState::HalfOpen)
        .count();
    assert_eq!(half_open, 1, "exactly one replica is half-open");
    for _ in 0..20 {
        for response in round(&replicas, "hi") {
            assert_eq!(&*response.meta.provider, "secondary");
        }
    }
    assert_eq!(
        upstreams.primary_calls(),
        opened + 1,
        "one trial in flight, not one per replica"
    );
    eprintln!("{sent} requests until the trial, then 60 during it: one probe");

    // The hung trial fails (its connection is dropped) and the circuit re-opens everywhere;
    // the next trial (one replica again) succeeds and closes every replica's circuit.
    upstreams.primary_sim.set_behavior(Behavior::succeed());
    upstreams.restart_primary();
    for (task, replica) in pending {
        let answered = replica.rt.block_on(task).unwrap();
        assert!(answered.is_ok(), "every request was answered");
    }
    eventually("the next trial closes every replica's circuit", || {
        round(&replicas, "hi");
        replicas.iter().all(|r| r.circuit() == CircuitState::Closed)
    });
    for response in round(&replicas, "hi") {
        assert_eq!(&*response.meta.provider, "primary");
    }
}

#[test]
fn a_pin_on_one_replica_is_seen_by_the_others() {
    let Some(url) = redis_url() else { return };
    let upstreams = Upstreams::start();
    let replicas = replicas(&upstreams, &url, &unique_prefix("pin"), &DEFAULTS);

    replicas[0].gateway.set_level("minimal").unwrap();
    eventually("B and C are pinned at minimal", || {
        replicas[1..].iter().all(|r| {
            let degradation = r.gateway.degradation();
            degradation.is_pinned() && degradation.level().name() == "minimal"
        })
    });
    let response = replicas[2].ask(request("hi")).unwrap();
    assert_eq!(
        response.meta.degradation.as_ref().map(|d| &*d.level),
        Some("minimal")
    );

    replicas[1].gateway.set_level("auto").unwrap();
    eventually("A and C are released", || {
        [&replicas[0], &replicas[2]]
            .iter()
            .all(|r| !r.gateway.degradation().is_pinned())
    });
    // The automatic level stays each replica's own: releasing leaves it where it was.
    assert_eq!(replicas[0].gateway.degradation().level().name(), "minimal");
}

#[test]
fn an_answer_cached_by_one_replica_is_served_by_another_at_the_cached_level() {
    let Some(url) = redis_url() else { return };
    let upstreams = Upstreams::start();
    let replicas = replicas(&upstreams, &url, &unique_prefix("cache"), &DEFAULTS);
    let deterministic = || {
        let mut request = request("what is the capital of France?");
        request.temperature = Some(0.0);
        request
    };

    let live = replicas[0].ask(deterministic()).unwrap();
    assert_eq!(live.meta.origin(), Origin::Live);
    let calls = upstreams.primary_calls() + upstreams.secondary_calls();

    // Pinned at the cached level (on every replica: the pin is shared), B has nothing in
    // its own cache; the Redis tier has A's answer (written in the background).
    replicas[1].gateway.set_level("cached").unwrap();
    eventually("B serves A's answer from the shared cache", || {
        replicas[1].ask(deterministic()).unwrap().meta.origin() == Origin::Cache
    });
    // The pin reaches C through Redis too, in its own time: wait for it (asking C before
    // it is pinned would be served live, which is right, not what this test is about).
    eventually("C is pinned at cached", || {
        let degradation = replicas[2].gateway.degradation();
        degradation.is_pinned() && degradation.level().name() == "cached"
    });
    let cached = replicas[2].ask(deterministic()).unwrap();
    assert_eq!(cached.meta.origin(), Origin::Cache);
    assert_eq!(
        cached.meta.degradation.as_ref().map(|d| &*d.level),
        Some("cached")
    );
    assert_eq!(
        cached.completion().unwrap().text(),
        live.completion().unwrap().text()
    );
    assert_eq!(
        upstreams.primary_calls() + upstreams.secondary_calls(),
        calls,
        "served without calling a provider"
    );
    // A sampled request is not cached: at the cached level it finds nothing.
    let sampled = replicas[2]
        .ask(request("what is the capital of France?"))
        .unwrap();
    assert_ne!(sampled.meta.origin(), Origin::Cache);
}

#[test]
fn three_replicas_together_stay_under_the_primarys_rpm_and_overflow_to_the_next() {
    let Some(url) = redis_url() else { return };
    let upstreams = Upstreams::start();
    let options = Options {
        primary_extra: ", rate_limit: { requests_per_minute: 10 }",
        ..DEFAULTS
    };
    let replicas = replicas(&upstreams, &url, &unique_prefix("rpm"), &options);
    let mut by_primary = 0;
    for i in 0..30 {
        let response = replicas[i % 3].ask(request("hi")).unwrap();
        if &*response.meta.provider == "primary" {
            by_primary += 1;
        }
    }
    assert!(
        upstreams.primary_calls() <= 10,
        "{} calls",
        upstreams.primary_calls()
    );
    assert!(by_primary > 0, "the primary served some");
    assert_eq!(by_primary, upstreams.primary_calls());
    assert_eq!(upstreams.secondary_calls(), 30 - by_primary);
    // A refusal is not the primary's fault: its circuit stays closed.
    assert!(replicas.iter().all(|r| r.circuit() == CircuitState::Closed));
    eprintln!("primary {by_primary} of 30 under a 10 rpm limit");
}

// ===== Redis goes away =====

/// A `redis-server` of the test's own, on a fixed loopback port.
struct RedisProcess {
    port: u16,
    child: Option<Child>,
}

impl RedisProcess {
    fn start(port: u16) -> Self {
        let binary = std::env::var("BRACE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install Debian's redis-server or set BRACE_REDIS_SERVER)");
        eventually("redis-server accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            port,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn redis_going_away_fails_no_request_and_sharing_resumes_when_it_is_back() {
    if redis_url().is_none() {
        return;
    }
    let port = free_port();
    let mut redis = RedisProcess::start(port);
    let upstreams = Upstreams::start();
    let replicas = replicas(
        &upstreams,
        &redis.url(),
        &unique_prefix("outage"),
        &DEFAULTS,
    );
    let ask_all = |replicas: &[Replica], n: usize| -> usize {
        (0..n).map(|_| round(replicas, "hi").len()).sum()
    };
    let mut answered = ask_all(&replicas, 3);

    redis.kill();
    // Requests go on while the replicas notice, and after.
    answered += ask_all(&replicas, 5);
    eventually("every replica sees the store down", || {
        replicas.iter().all(|r| !r.store_up())
    });
    let health = replicas[0].gateway.health_json();
    assert_eq!(health["state_store"]["up"], false);
    // With Redis down, A opens the primary's circuit alone; the others do not know.
    upstreams
        .primary_sim
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    for _ in 0..2 {
        answered += usize::from(replicas[0].ask(request("hi")).is_ok());
    }
    assert_eq!(replicas[0].circuit(), CircuitState::Open);
    assert_eq!(replicas[1].circuit(), CircuitState::Closed);
    answered += ask_all(&replicas, 5);

    // Redis comes back (empty) on the same port: the replicas reconnect, and A shares the
    // open it decided alone, with its remaining wait.
    let _redis = RedisProcess::start(port);
    eventually("every replica reconnects", || {
        replicas.iter().all(Replica::store_up)
    });
    eventually("B and C learn A's open circuit", || {
        replicas[1].circuit() == CircuitState::Open && replicas[2].circuit() == CircuitState::Open
    });
    // Sharing works again both ways: a pin on C reaches A.
    replicas[2].gateway.set_level("reduced").unwrap();
    eventually("A is pinned", || {
        replicas[0].gateway.degradation().is_pinned()
    });
    answered += ask_all(&replicas, 3);
    assert_eq!(
        answered,
        3 * 3 + 5 * 3 + 2 + 5 * 3 + 3 * 3,
        "no request failed"
    );
}

#[test]
fn a_provider_rebuilt_by_a_reload_shares_its_new_circuit() {
    let Some(url) = redis_url() else { return };
    let upstreams = Upstreams::start();
    let prefix = unique_prefix("reload");
    let replicas = replicas(&upstreams, &url, &prefix, &DEFAULTS);
    let [a, b, _] = &replicas[..] else {
        unreachable!()
    };
    // A's primary changes (its timeout): A builds it a new breaker, and shares that one.
    let changed = Options {
        primary_timeout: "15s",
        ..DEFAULTS
    };
    let reloaded = a
        .gateway
        .reload(config(&upstreams, &prefix, &changed))
        .unwrap();
    let brace_gateway::reload::Reloaded::Applied(rebuilt) = reloaded else {
        panic!("the configuration changed");
    };
    assert_eq!(rebuilt.changed, ["primary"]);
    assert_eq!(rebuilt.kept, ["secondary"]);

    upstreams
        .primary_sim
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    for _ in 0..2 {
        assert_eq!(&*a.ask(request("hi")).unwrap().meta.provider, "secondary");
    }
    assert_eq!(a.circuit(), CircuitState::Open);
    eventually("B sees the rebuilt circuit open", || {
        b.circuit() == CircuitState::Open
    });
}
