//! Hot reload: a changed configuration file is put in force under load without a failed
//! request, keeping each unchanged provider's state; a broken file leaves the running
//! configuration in force, with its error counted and shown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use brace_circuit::CircuitState;
use brace_gateway::reload::{Reloaded, WatchOptions};
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::{ChatRequest, Message};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;
use tower::ServiceExt;

/// `primary` and `secondary` answer; `dead` always fails, and the `to-dead` route tries it
/// first, so that its circuit can be opened on purpose.
fn config(primary_priority: u32, secondary_priority: u32) -> String {
    format!(
        r"
providers:
  - name: primary
    kind: simulated
    model: m-primary
    priority: {primary_priority}
  - name: secondary
    kind: simulated
    model: m-secondary
    priority: {secondary_priority}
  - name: dead
    kind: simulated
    model: m-dead
    priority: 3
    simulate: {{type: fail, kind: server}}
routes:
  - match: to-dead
    providers: [dead, primary]
fallback:
  max_retries: 0
health:
  consecutive_failures: 2
  recovery_time: 1h
degradation:
  auto:
    enabled: false
"
    )
}

/// A file of its own for each test.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("brace-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Self(dir.join(name));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        // As editors and config managers do: write aside, then rename over.
        let aside = self.0.with_extension("tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.0).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

fn request(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user("hello")])
}

fn watch_options() -> WatchOptions {
    WatchOptions {
        poll_interval: Some(Duration::from_millis(500)),
        debounce: Duration::from_millis(100),
        sighup: false,
    }
}

/// Opens `dead`'s circuit through the route that tries it first.
async fn open_dead(gateway: &Gateway) {
    for _ in 0..2 {
        let (response, _) = gateway.call(request("to-dead")).await.unwrap();
        assert_eq!(&*response.meta.provider, "primary");
    }
    assert_eq!(gateway.circuit_state("dead"), Some(CircuitState::Open));
}

/// Every answer of a steady load: when it was sent and who answered (or the error).
type Answers = Arc<Mutex<Vec<(Instant, Result<String, String>)>>>;

fn steady_load(
    gateway: Arc<Gateway>,
    every: Duration,
    until: Instant,
) -> (Answers, tokio::task::JoinHandle<()>) {
    let answers: Answers = Arc::default();
    let task = {
        let answers = answers.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while Instant::now() < until {
                tick.tick().await;
                let gateway = gateway.clone();
                let answers = answers.clone();
                // Each request on its own, as clients send them: a slow one does not hold
                // the next back.
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let result = gateway
                        .call(request("anything"))
                        .await
                        .map(|(response, _)| response.meta.provider.to_string())
                        .map_err(|err| err.message().to_owned());
                    answers.lock().push((sent, result));
                });
            }
        })
    };
    (answers, task)
}

#[tokio::test(start_paused = true)]
async fn a_priority_change_takes_effect_under_load_without_a_failed_request() {
    let file = TempFile::new("priority.yaml", &config(1, 2));
    let gateway = Gateway::build(GatewayConfig::from_file(file.path()).unwrap()).unwrap();
    open_dead(&gateway).await;
    let dead_breaker = gateway.circuits().get("dead").unwrap();
    let primary_breaker = gateway.circuits().get("primary").unwrap();
    let watcher = tokio::spawn(brace_gateway::reload::watch(
        gateway.clone(),
        file.path().to_owned(),
        watch_options(),
    ));

    let start = Instant::now();
    let (answers, load) = steady_load(
        gateway.clone(),
        Duration::from_millis(10),
        start + Duration::from_secs(5),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The secondary goes first from now on.
    file.write(&config(2, 1));
    let written = Instant::now();
    load.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    watcher.abort();

    let answers = answers.lock();
    assert!(answers.len() > 400, "{} requests", answers.len());
    let failed: Vec<_> = answers.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    fn by(who: &'static str) -> impl Fn(&&(Instant, Result<String, String>)) -> bool {
        move |(_, r)| r.as_deref() == Ok(who)
    }
    assert!(
        answers
            .iter()
            .filter(|(sent, _)| *sent < written)
            .all(|a| by("primary")(&a)),
        "before the change, the primary answers"
    );
    let switched = answers
        .iter()
        .find(by("secondary"))
        .map(|(sent, _)| *sent)
        .expect("the secondary answered after the change");
    assert!(
        switched.duration_since(written) <= Duration::from_secs(2),
        "in effect {:?} after the file changed",
        switched.duration_since(written)
    );
    assert!(
        answers
            .iter()
            .filter(|(sent, _)| *sent >= switched)
            .all(|a| by("secondary")(&a)),
        "after the change, the secondary answers every request"
    );

    // A priority says nothing about a provider's state: every record carried over, the dead
    // provider's open circuit included.
    assert_eq!(gateway.circuit_state("dead"), Some(CircuitState::Open));
    assert!(
        gateway
            .circuits()
            .get("dead")
            .unwrap()
            .same_breaker(&dead_breaker)
    );
    assert!(
        gateway
            .circuits()
            .get("primary")
            .unwrap()
            .same_breaker(&primary_breaker)
    );
    let shown = gateway.config_json();
    assert_eq!(shown["generation"], 1);
    assert_eq!(shown["reloads"]["applied"], 1);
    assert_eq!(gateway.config().providers[1].priority, 1);
}

#[tokio::test(start_paused = true)]
async fn a_broken_file_leaves_the_running_configuration_serving() {
    let file = TempFile::new("broken.yaml", &config(1, 2));
    let gateway = Gateway::build(GatewayConfig::from_file(file.path()).unwrap()).unwrap();
    let hash = gateway.config_json()["hash"].clone();
    let watcher = tokio::spawn(brace_gateway::reload::watch(
        gateway.clone(),
        file.path().to_owned(),
        watch_options(),
    ));
    // Line 6 has a typo.
    let broken = config(2, 1).replacen("    priority: 2\n", "    prority: 1\n", 1);
    assert_eq!(broken.lines().nth(5), Some("    prority: 1"));
    file.write(&broken);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (response, _) = gateway.call(request("anything")).await.unwrap();
    assert_eq!(
        &*response.meta.provider, "primary",
        "the old configuration serves"
    );
    let shown = gateway.config_json();
    assert_eq!(shown["hash"], hash);
    assert_eq!(shown["generation"], 0);
    assert_eq!(shown["reloads"]["invalid"], 1);
    assert_eq!(shown["reloads"]["applied"], 0);
    let error = shown["last_error"]["message"].as_str().unwrap();
    assert!(
        error.contains("prority") && error.contains("line 6"),
        "{error}"
    );

    // Counted in the metrics too.
    let metrics = brace_gateway::app::router(gateway.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let metrics = String::from_utf8(
        metrics
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains("brace_config_reload_total{outcome=\"invalid\"}"),
        "{metrics}"
    );

    // Fixed: the next change is put in force.
    file.write(&config(2, 1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (response, _) = gateway.call(request("anything")).await.unwrap();
    assert_eq!(&*response.meta.provider, "secondary");
    assert_eq!(gateway.config_json()["reloads"]["applied"], 1);
    watcher.abort();
}

#[tokio::test(start_paused = true)]
async fn unchanged_providers_keep_their_state_and_changed_ones_start_afresh() {
    let yaml = config(1, 2);
    let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap();
    open_dead(&gateway).await;
    gateway.call(request("anything")).await.unwrap();
    gateway.degradation().pin("reduced").unwrap();
    let primary = gateway.circuits().get("primary").unwrap();
    let primary_calls = gateway.providers().get("primary").unwrap().health().calls;
    assert_eq!(primary_calls, 3);

    // The same meaning: nothing rebuilt.
    let same = GatewayConfig::from_yaml(&format!("# a comment\n{yaml}")).unwrap();
    assert_eq!(gateway.reload(same).unwrap(), Reloaded::Unchanged);

    // The dead provider heals (its settings change), a new provider comes, the secondary
    // goes.
    let next = yaml
        .replace(
            "    simulate: {type: fail, kind: server}\n",
            "    timeout: 30s\n",
        )
        .replace(
            "  - name: secondary\n    kind: simulated\n    model: m-secondary\n    priority: 2\n",
            "  - name: spare\n    kind: simulated\n    model: m-spare\n    priority: 2\n",
        );
    let Reloaded::Applied(rebuilt) = gateway
        .reload(GatewayConfig::from_yaml(&next).unwrap())
        .unwrap()
    else {
        panic!("the configuration changed");
    };
    assert_eq!(rebuilt.kept, ["primary"]);
    assert_eq!(rebuilt.changed, ["dead"]);
    assert_eq!(rebuilt.added, ["spare"]);
    assert_eq!(rebuilt.removed, ["secondary"]);
    assert!(rebuilt.degradation_kept);

    assert!(
        gateway
            .circuits()
            .get("primary")
            .unwrap()
            .same_breaker(&primary)
    );
    assert_eq!(
        gateway.providers().get("primary").unwrap().health().calls,
        primary_calls
    );
    assert_eq!(gateway.circuit_state("dead"), Some(CircuitState::Closed));
    assert_eq!(gateway.providers().get("dead").unwrap().health().calls, 0);
    assert!(gateway.circuits().get("secondary").is_none());
    assert!(gateway.providers().get("secondary").is_none());
    let circuits: Vec<_> = gateway
        .circuits()
        .handles()
        .iter()
        .map(|h| h.name().to_owned())
        .collect();
    assert_eq!(circuits, ["dead", "primary", "spare"]);
    // The level (and the cache) carried over.
    assert_eq!(gateway.degradation().level().name(), "reduced");
    assert!(gateway.degradation().is_pinned());
    let (response, _) = gateway.call(request("to-dead")).await.unwrap();
    assert_eq!(
        &*response.meta.provider, "dead",
        "the healed provider answers"
    );

    // A changed degradation section starts the level afresh.
    let ladder = next.replace(
        "  auto:\n    enabled: false\n",
        "  auto:\n    enabled: false\n  levels: [full, offline]\n",
    );
    let Reloaded::Applied(rebuilt) = gateway
        .reload(GatewayConfig::from_yaml(&ladder).unwrap())
        .unwrap()
    else {
        panic!("the configuration changed");
    };
    assert!(!rebuilt.degradation_kept);
    assert_eq!(rebuilt.kept.len(), 3);
    assert_eq!(gateway.degradation().level().name(), "full");
    assert!(!gateway.degradation().is_pinned());
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_finishes_on_the_stack_it_started_on() {
    let slow = r"
providers:
  - name: slow
    kind: simulated
    model: m-slow
    simulate: {type: delay, delay: 5s, then: {type: succeed}}
degradation:
  auto:
    enabled: false
";
    let gateway = Gateway::build(GatewayConfig::from_yaml(slow).unwrap()).unwrap();
    let in_flight = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.call(request("anything")).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The slow provider is replaced while its call runs.
    let replaced = slow.replace("name: slow", "name: quick").replace(
        "    simulate: {type: delay, delay: 5s, then: {type: succeed}}\n",
        "",
    );
    gateway
        .reload(GatewayConfig::from_yaml(&replaced).unwrap())
        .unwrap();
    let (response, _) = gateway.call(request("anything")).await.unwrap();
    assert_eq!(&*response.meta.provider, "quick");
    let (response, _) = in_flight.await.unwrap().unwrap();
    assert_eq!(
        &*response.meta.provider, "slow",
        "finished on the old stack"
    );
}

#[tokio::test]
async fn get_config_shows_the_configuration_in_force_without_secrets() {
    let yaml = r"
providers:
  - name: upstream
    kind: openai-compatible
    model: m
    base_url: https://user:hunter2@llm.internal/v1
    api_key_env: UPSTREAM_KEY
health:
  recovery_time: 10s
";
    let gateway =
        Gateway::build_with_env(GatewayConfig::from_yaml(yaml).unwrap(), |_| None).unwrap();
    gateway.set_config_source("test.yaml");
    let response = brace_gateway::app::router(gateway.clone())
        .oneshot(Request::get("/v1/config").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let text = body.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(
        body["config"]["providers"][0]["base_url"],
        "https://user:REDACTED@llm.internal/v1"
    );
    assert_eq!(
        body["config"]["providers"][0]["api_key_env"],
        "UPSTREAM_KEY"
    );
    // What it means: the health shorthand folded into the breaker, defaults filled in.
    assert_eq!(body["config"]["circuit_breaker"]["wait_in_open"], "10s");
    assert_eq!(body["config"]["circuit_breaker"]["failure_threshold"], 3);
    assert_eq!(body["source"], "test.yaml");
    assert_eq!(body["hash"].as_str().unwrap().len(), 16);
    assert_eq!(
        body["hash"],
        brace_gateway::reload::config_hash(&gateway.config())
    );
}

/// SIGHUP reloads (real time: the signal is real).
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_file() {
    let file = TempFile::new("sighup.yaml", &config(1, 2));
    let gateway = Gateway::build(GatewayConfig::from_file(file.path()).unwrap()).unwrap();
    let watcher = tokio::spawn(brace_gateway::reload::watch(
        gateway.clone(),
        file.path().to_owned(),
        WatchOptions {
            poll_interval: None,
            sighup: true,
            ..WatchOptions::default()
        },
    ));
    // The watcher listens from its first poll on.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    file.write(&config(2, 1));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), async {
        while gateway.config_json()["generation"] != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("reloaded on SIGHUP");
    let (response, _) = gateway.call(request("anything")).await.unwrap();
    assert_eq!(&*response.meta.provider, "secondary");
    watcher.abort();
}
