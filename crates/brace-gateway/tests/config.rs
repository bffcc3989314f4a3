//! The gateway's YAML configuration: the seed file loads as written, and every mistake is
//! rejected at start with where it is and what is wrong.

use std::time::Duration;

use brace_gateway::GatewayConfig;
use brace_gateway::config::ProviderKind;

const SEED: &str = r"
providers:
  - name: anthropic
    model: claude-sonnet-4-20250514
    priority: 1
  - name: openai
    model: gpt-4o
    priority: 2
  - name: google
    model: gemini-2.0-flash
    priority: 3
fallback:
  on_error: [429, 500, 502, 503, timeout]
  max_retries: 2
  backoff: exponential
";

fn error(yaml: &str) -> String {
    GatewayConfig::from_yaml(yaml).unwrap_err().to_string()
}

#[test]
fn the_seed_configuration_loads_as_written() {
    let config = GatewayConfig::from_yaml(SEED).unwrap();
    let kinds: Vec<_> = config
        .providers
        .iter()
        .map(brace_gateway::config::ProviderConfig::kind)
        .collect();
    assert_eq!(
        kinds,
        [
            ProviderKind::Anthropic,
            ProviderKind::Openai,
            ProviderKind::Gemini
        ]
    );
    assert_eq!(config.providers[1].key_env(), Some("OPENAI_API_KEY"));
    assert_eq!(config.fallback.max_retries, 2);
    assert_eq!(config.fallback.on_error.len(), 5);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    // And it builds: providers without keys start, failing their calls clearly.
    brace_gateway::Gateway::build(config).unwrap();
}

#[test]
fn the_seed_circuit_breaker_settings_load() {
    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}circuit_breaker:\n  failure_threshold: 5\n  reset_timeout: 60\n"
    ))
    .unwrap();
    assert_eq!(config.circuit_breaker.failure_threshold, Some(5));
    assert_eq!(
        config.circuit_breaker.wait_in_open,
        Some(Duration::from_mins(1))
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let message = error(&format!("{SEED}retries: 3\n"));
    assert!(message.contains("retries"), "{message}");
    assert!(message.contains("line"), "{message}");

    let message = error("providers:\n  - name: openai\n    model: gpt-4o\n    prority: 1\n");
    assert!(message.contains("prority"), "{message}");
    assert!(
        message.contains("line 4") || message.contains("4:"),
        "{message}"
    );
}

#[test]
fn wrong_types_and_impossible_values_are_explained() {
    let message = error("providers:\n  - name: openai\n    model: gpt-4o\n    priority: high\n");
    assert!(
        message.contains("priority") || message.contains("high"),
        "{message}"
    );

    let message = error("providers:\n  - name: openai\n    model: gpt-4o\n    timeout: -5s\n");
    assert!(message.contains("duration"), "{message}");

    let message = error("providers:\n  - name: openai\n    model: gpt-4o\n    weight: 0\n");
    assert!(message.contains("weight"), "{message}");

    let message = error("providers: []\n");
    assert!(message.contains("at least one provider"), "{message}");

    let message = error("providers:\n  - name: mystery\n    model: m\n");
    assert!(message.contains("cannot infer its kind"), "{message}");

    let message =
        error("providers:\n  - name: openai\n    model: m\n  - name: openai\n    model: n\n");
    assert!(message.contains("already used"), "{message}");

    let message = error(&format!(
        "{SEED}routes:\n  - match: fast-*\n    providers:\n      - name: nobody\n"
    ));
    assert!(message.contains("unknown provider `nobody`"), "{message}");
}

#[test]
fn a_bad_file_is_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("brace-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        "providers:\n  - name: openai\n    model: [unclosed\n",
    )
    .unwrap();
    let message = GatewayConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );

    let missing = dir.join("missing.yaml");
    let message = GatewayConfig::from_file(&missing).unwrap_err().to_string();
    assert!(message.contains("cannot read"), "{message}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_embedded_demo_configuration_is_valid() {
    let config = GatewayConfig::demo();
    assert_eq!(config.providers.len(), 3);
    assert!(
        config
            .providers
            .iter()
            .all(|p| p.kind() == ProviderKind::Simulated)
    );
}

#[test]
fn unknown_keys_inside_hedging_are_rejected_too() {
    let message = error(&format!(
        "{SEED}hedging:\n  delay: 200ms\n  percentle: 0.9\n"
    ));
    assert!(message.contains("percentle"), "{message}");
    let config = GatewayConfig::from_yaml(&format!("{SEED}hedging:\n  delay: 200ms\n")).unwrap();
    assert_eq!(
        config.hedging.unwrap().delay,
        Some(Duration::from_millis(200))
    );
}

#[test]
fn http2_prior_knowledge_is_a_provider_key_off_by_default() {
    let config = GatewayConfig::from_yaml(
        "providers:\n  - name: internal\n    kind: openai-compatible\n    model: m\n    \
         base_url: http://127.0.0.1:4000/v1\n    http2_prior_knowledge: true\n  - name: openai\n    \
         model: gpt-4o\n",
    )
    .unwrap();
    assert!(config.providers[0].http2_prior_knowledge);
    assert!(!config.providers[1].http2_prior_knowledge);
}

#[test]
fn http2_prior_knowledge_must_be_a_boolean_for_a_provider_reached_over_http() {
    let message = error(
        "providers:\n  - name: internal\n    kind: openai-compatible\n    model: m\n    \
         base_url: http://127.0.0.1:4000/v1\n    http2_prior_knowledge: always\n",
    );
    assert!(message.contains("boolean"), "{message}");
    assert!(message.contains("line 6"), "{message}");

    let message = error(
        "providers:\n  - name: sim\n    kind: simulated\n    model: m\n    http2_prior_knowledge: true\n",
    );
    assert!(message.contains("`http2_prior_knowledge`"), "{message}");
    assert!(message.contains("in-process"), "{message}");
}

#[test]
fn http_client_is_a_provider_key_auto_by_default() {
    use brace_providers::HttpClient;

    let config = GatewayConfig::from_yaml(
        "providers:\n  - name: internal\n    kind: openai-compatible\n    model: m\n    \
         base_url: http://127.0.0.1:4000/v1\n    http_client: reqwest\n  - name: openai\n    \
         model: gpt-4o\n",
    )
    .unwrap();
    assert_eq!(config.providers[0].http_client, HttpClient::Reqwest);
    assert_eq!(config.providers[1].http_client, HttpClient::Auto);
    // As `GET /v1/config` writes it, and back.
    let written = serde_json::to_value(&config).unwrap();
    assert_eq!(written["providers"][0]["http_client"], "reqwest");
    assert_eq!(written["providers"][1]["http_client"], "auto");
    let again = GatewayConfig::from_yaml(&written.to_string()).unwrap();
    assert_eq!(again, config);

    let message = error(
        "providers:\n  - name: internal\n    kind: openai-compatible\n    model: m\n    \
         base_url: http://127.0.0.1:4000/v1\n    http_client: curl\n",
    );
    assert!(message.contains("curl"), "{message}");
    assert!(message.contains("line 6"), "{message}");
}

#[tokio::test]
async fn http2_prior_knowledge_reaches_the_providers_client() {
    use brace_llm::{ChatRequest, Message};
    use brace_sim::{SimConfig, SimHandle, SimServer};

    brace_providers::provider::install_crypto_provider();
    let h2 = SimServer::start(SimHandle::new(SimConfig::new("h2")))
        .await
        .unwrap();
    let h1 = SimServer::start(SimHandle::new(SimConfig::new("h1")))
        .await
        .unwrap();
    let yaml = |server: &SimServer, prior_knowledge: bool| {
        format!(
            "providers:\n  - name: upstream\n    kind: openai-compatible\n    model: m\n    \
             api_key_env: ''\n    base_url: {}/v1\n    http2_prior_knowledge: {prior_knowledge}\n",
            server.base_url()
        )
    };
    for (server, prior_knowledge, version) in [(&h2, true, "HTTP/2.0"), (&h1, false, "HTTP/1.1")] {
        let gateway = brace_gateway::Gateway::build(
            GatewayConfig::from_yaml(&yaml(server, prior_knowledge)).unwrap(),
        )
        .unwrap();
        let request = ChatRequest::new("m", vec![Message::user("hi")]);
        tokio::time::timeout(Duration::from_secs(30), gateway.call(request))
            .await
            .expect("the gateway answered")
            .unwrap();
        let versions: Vec<_> = server.handle().stats().http_versions.into_iter().collect();
        assert_eq!(versions, [(version.to_owned(), 1)]);
    }
    h2.shutdown().await;
    h1.shutdown().await;
}

// ===== what a new user types =====

#[test]
fn a_route_lists_providers_by_name_or_as_mappings() {
    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}routes:\n  - match: smart\n    providers: [anthropic, openai]\n  - match: \
         cheap\n    providers:\n      - google\n      - {{name: openai, model: gpt-4o-mini}}\n"
    ))
    .unwrap();
    let names: Vec<_> = config.routes[0]
        .providers
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["anthropic", "openai"]);
    assert_eq!(config.routes[0].providers[0].model, None);
    assert!(!config.routes[0].providers[0].passthrough);
    assert_eq!(config.routes[1].providers[0].name, "google");
    assert_eq!(
        config.routes[1].providers[1].model.as_deref(),
        Some("gpt-4o-mini")
    );
    // A target that is neither a name nor a mapping is explained.
    let message = error(&format!(
        "{SEED}routes:\n  - match: x\n    providers: [[openai]]\n"
    ));
    assert!(
        message.contains("a provider's name, or a mapping"),
        "{message}"
    );
    assert!(message.contains("line 18 column 17"), "{message}");
}

#[tokio::test]
async fn a_provider_used_only_with_passthrough_needs_no_model() {
    let yaml = "providers:\n  - name: local-llama\n    base_url: http://127.0.0.1:9/v1\n  \
                - name: sim\n    kind: simulated\n    model: sim-model\nroutes:\n  - match: \
                \"llama*\"\n    providers: [{name: local-llama, passthrough: true}, sim]\n";
    let config = GatewayConfig::from_yaml(yaml).unwrap();
    assert_eq!(config.providers[0].model, None);
    let gateway = brace_gateway::Gateway::build(config).unwrap();
    // Not asked for a model of its own: the default model is the one provider that has one.
    assert_eq!(gateway.default_model(), "sim-model");
    let models: Vec<_> = gateway
        .model_names()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(models, ["sim-model"]);

    // Asked without passthrough and without a model, it is an error at that line.
    let err = GatewayConfig::from_yaml(
        "providers:\n  - name: local-llama\n    base_url: http://127.0.0.1:9/v1\nroutes:\n  - \
         match: x\n    providers: [local-llama]\n",
    )
    .unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(6), Some(17)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("has no `model`") && message.contains("passthrough: true"),
        "{message}"
    );
}

#[test]
fn degradation_levels_can_name_the_standard_ones() {
    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}degradation:\n  levels: [full, reduced, offline]\n"
    ))
    .unwrap();
    let ladder = config.degradation.ladder().unwrap();
    let names: Vec<_> = ladder
        .levels()
        .iter()
        .map(brace_degrade::Level::name)
        .collect();
    assert_eq!(names, ["full", "reduced", "offline"]);
    let err = GatewayConfig::from_yaml(&format!("{SEED}degradation:\n  levels: [full, tiny]\n"))
        .unwrap_err();
    assert!(
        err.to_string().contains("`tiny` is not a standard level"),
        "{err}"
    );
    assert_eq!((err.line(), err.column()), (Some(17), Some(18)), "{err}");
}

#[test]
fn a_continuation_route_with_nowhere_to_continue_is_warned_about() {
    let yaml = |continuation_targets: &str| {
        format!(
            "providers:\n  - name: a\n    kind: simulated\n    model: m\n  - name: b\n    kind: \
             simulated\n    model: m\n  - name: c\n    kind: simulated\n    model: m\n    \
             accepts_prefill: true\nroutes:\n  - match: x\n    providers: \
             {continuation_targets}\n    continuation: true\n"
        )
    };
    let warnings = GatewayConfig::from_yaml(&yaml("[a]")).unwrap().warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("nowhere to continue"), "{warnings:?}");
    let warnings = GatewayConfig::from_yaml(&yaml("[a, b]"))
        .unwrap()
        .warnings();
    assert!(
        warnings[0].contains("accepts_prefill"),
        "no provider after the first accepts a prefill: {warnings:?}"
    );
    // The first provider's prefill does not help: it is the one whose stream broke.
    let warnings = GatewayConfig::from_yaml(&yaml("[c, a]"))
        .unwrap()
        .warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        GatewayConfig::from_yaml(&yaml("[a, c]"))
            .unwrap()
            .warnings()
            .is_empty()
    );
}

/// Each mistake, the line and column it is reported at, and a phrase of its message.
#[test]
fn every_error_names_its_line_and_column() {
    const TWO: &str =
        "providers:\n  - name: openai\n    model: m\n  - name: anthropic\n    model: n\n";
    let cases: &[(&str, String, (u64, u64), &str)] = &[
        (
            "no provider",
            "providers: []\n".into(),
            (1, 1),
            "at least one provider",
        ),
        (
            "a duplicate name",
            "providers:\n  - name: openai\n    model: m\n  - name: openai\n    model: n\n".into(),
            (4, 5),
            "already used",
        ),
        (
            "weight 0",
            "providers:\n  - name: openai\n    model: m\n    weight: 0\n".into(),
            (4, 5),
            "`weight` must be at least 1",
        ),
        (
            "an empty model",
            "providers:\n  - name: openai\n    model: ''\n".into(),
            (3, 5),
            "`model` must not be empty",
        ),
        (
            "a kind that cannot be inferred",
            "providers:\n  - name: mystery\n    model: m\n".into(),
            (2, 5),
            "cannot infer its kind",
        ),
        (
            "an unknown key in a provider's breaker",
            "providers:\n  - name: openai\n    model: m\n    circuit_breaker:\n      bogus: 1\n"
                .into(),
            (4, 5),
            "unknown field `bogus`",
        ),
        (
            "a base URL that is not one",
            "providers:\n  - name: local\n    model: m\n    base_url: \"ftp://user:hunter2@x\"\n"
                .into(),
            (4, 5),
            "must use http or https",
        ),
        (
            "an unknown provider in a route",
            format!("{TWO}routes:\n  - match: x\n    providers: [openai, nobody]\n"),
            (8, 25),
            "unknown provider `nobody`",
        ),
        (
            "a route without providers",
            format!("{TWO}routes:\n  - match: x\n    providers: []\n"),
            (8, 5),
            "lists no provider",
        ),
        (
            "passthrough with a model",
            format!(
                "{TWO}routes:\n  - match: x\n    providers:\n      - {{name: openai, model: \
                 m2, passthrough: true}}\n"
            ),
            (9, 9),
            "`passthrough` forwards the requested model",
        ),
        (
            "health contradicting the breaker",
            format!(
                "{TWO}circuit_breaker:\n  failure_threshold: 5\nhealth:\n  \
                 consecutive_failures: 3\n"
            ),
            (9, 3),
            "contradicts circuit_breaker.failure_threshold",
        ),
        (
            "a recovery time contradicting the breaker",
            format!("{TWO}circuit_breaker:\n  reset_timeout: 60\nhealth:\n  recovery_time: 30s\n"),
            (9, 3),
            "health.recovery_time",
        ),
        (
            "a failure rate out of range",
            format!("{TWO}health:\n  failure_rate: 50\n"),
            (7, 17),
            "must be between 0 and 1",
        ),
        (
            "a global breaker that cannot be built",
            format!("{TWO}circuit_breaker:\n  sliding_window_size: 0\n"),
            (6, 1),
            "circuit_breaker",
        ),
        (
            "a provider's breaker that cannot be built over the global one",
            format!(
                "{TWO}  - name: google\n    model: g\n    circuit_breaker:\n      \
                 sliding_window_size: 0\n"
            ),
            (8, 5),
            "provider `google`",
        ),
        (
            "a global retry limit too high",
            format!("{TWO}fallback:\n  max_retries: 50\n"),
            (7, 3),
            "max_retries must be at most 20",
        ),
        (
            "a per-class retry limit too high",
            format!("{TWO}fallback:\n  rate_limited:\n    max_retries: 50\n"),
            (7, 3),
            "rate_limited.max_retries",
        ),
        (
            "a provider's retry section invalid over the global one",
            "providers:\n  - name: openai\n    model: m\n    fallback:\n      max_retries: 50\n"
                .into(),
            (4, 5),
            "provider `openai`: fallback",
        ),
        (
            "a model for an unknown level",
            "providers:\n  - name: openai\n    model: m\n    models:\n      tiny: m2\n".into(),
            (5, 7),
            "unknown degradation level `tiny`",
        ),
        (
            "an unknown start level",
            format!("{TWO}degradation:\n  start: nowhere\n"),
            (7, 3),
            "nowhere",
        ),
        (
            "a drill on an unknown provider",
            format!("{TWO}chaos:\n  - provider: nobody\n    stall: true\n    duration: 1m\n"),
            (7, 5),
            "unknown provider `nobody`",
        ),
        (
            "a drill too long",
            format!("{TWO}chaos:\n  - provider: openai\n    stall: true\n    duration: 2d\n"),
            (9, 5),
            "at most 24h",
        ),
        (
            "a drill with two faults",
            format!(
                "{TWO}chaos:\n  - provider: openai\n    stall: true\n    latency: 1s\n    \
                 duration: 1m\n"
            ),
            (7, 5),
            "exactly one fault",
        ),
        (
            "an unknown key",
            format!("{TWO}retries: 3\n"),
            (6, 1),
            "retries",
        ),
    ];
    for (what, yaml, (line, column), says) in cases {
        let err = GatewayConfig::from_yaml(yaml).expect_err(what);
        let message = err.to_string();
        assert_eq!(
            (err.line(), err.column()),
            (Some(*line), Some(*column)),
            "{what}: {message}"
        );
        assert!(
            message.contains(&format!("line {line} column {column}")),
            "{what}: {message}"
        );
        assert!(message.contains(says), "{what}: {message}");
        assert!(!message.contains("hunter2"), "{what}: {message}");
    }
}

#[test]
fn the_deployment_configuration_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/gateway.yaml");
    let config = GatewayConfig::from_file(&path).unwrap();
    let state = config.state.as_ref().unwrap();
    assert_eq!(state.redis_url_env.as_deref(), Some("BRACE_REDIS_URL"));
    assert!(config.providers[0].rate_limit.is_some());
}

#[test]
fn the_state_section_names_one_redis_and_never_shows_its_password() {
    let config = GatewayConfig::from_yaml(
        r"
providers: [{ name: sim, model: m }]
state: { redis_url: 'redis://:hunter2@10.0.0.5:6379/0', timeout: 20ms, probe_lease: 5s }
",
    )
    .unwrap();
    let state = config.state.as_ref().unwrap();
    assert_eq!(state.key_prefix, "brace:");
    assert_eq!(state.timeout, Duration::from_millis(20));
    assert_eq!(state.probe_lease, Duration::from_secs(5));
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://:***@10.0.0.5:6379/0"), "{shown}");

    let neither = error("providers: [{ name: sim, model: m }]\nstate: { key_prefix: x }\n");
    assert!(neither.contains("redis_url_env"), "{neither}");
    let both = error(
        "providers: [{ name: sim, model: m }]\nstate: { redis_url: 'redis://h', redis_url_env: X }\n",
    );
    assert!(both.contains("not both"), "{both}");
    let scheme =
        error("providers: [{ name: sim, model: m }]\nstate: { redis_url: 'http://:pw9@h' }\n");
    assert!(
        scheme.contains("redis://") && !scheme.contains("pw9"),
        "{scheme}"
    );
    let unknown = error(
        "providers: [{ name: sim, model: m }]\nstate: { redis_url: 'redis://h', cluster: true }\n",
    );
    assert!(unknown.contains("cluster"), "{unknown}");
}

#[test]
fn a_rate_limit_needs_a_positive_limit() {
    let zero =
        error("providers: [{ name: sim, model: m, rate_limit: { requests_per_minute: 0 } }]\n");
    assert!(
        zero.contains("requests_per_minute must be at least 1"),
        "{zero}"
    );
    let empty = error("providers: [{ name: sim, model: m, rate_limit: {} }]\n");
    assert!(empty.contains("rate_limit needs"), "{empty}");
    let typo = error("providers: [{ name: sim, model: m, rate_limit: { rpm: 5 } }]\n");
    assert!(typo.contains("rpm"), "{typo}");
}

#[tokio::test]
async fn a_missing_redis_url_variable_is_a_build_error_naming_it() {
    let config = GatewayConfig::from_yaml(
        "providers: [{ name: sim, model: m }]\nstate: { redis_url_env: NOT_SET_ANYWHERE }\n",
    )
    .unwrap();
    let err = brace_gateway::Gateway::build_with_env(config, |_| None).unwrap_err();
    assert!(err.to_string().contains("NOT_SET_ANYWHERE"), "{err}");
}

/// `(yaml, what the message must say, the line it must name)`: every impossible value, each
/// rejected where it is written.
const IMPOSSIBLE: &[(&str, &str, u32)] = &[
    ("server:\n  request_timeout: 0s\n", "more than zero", 6),
    ("server:\n  body_limit: 0\n", "at least 1", 6),
    ("server:\n  header_timeout: 0ms\n", "more than zero", 6),
    ("server:\n  body_timeout: 0s\n", "more than zero", 6),
    ("server:\n  idle_timeout: 0s\n", "more than zero", 6),
    ("server:\n  send_timeout: 0s\n", "more than zero", 6),
    (
        "server:\n  http2_keep_alive_interval: 0s\n",
        "more than zero",
        6,
    ),
    (
        "server:\n  http2_keep_alive_timeout: 0s\n",
        "more than zero",
        6,
    ),
    ("server:\n  max_connections: 0\n", "at least 1", 6),
    ("server:\n  max_in_flight: 0\n", "at least 1", 6),
    ("server:\n  max_retry_after: 0s\n", "more than zero", 6),
    ("server:\n  max_retry_after: 2d\n", "at most one day", 6),
    ("health:\n  failure_rate: 2.5\n", "between 0 and 1", 6),
    ("health:\n  failure_rate: -0.1\n", "between 0 and 1", 6),
    ("health:\n  recovery_time: 0s\n", "more than zero", 6),
    ("health:\n  probe_interval: 0s\n", "more than zero", 6),
    (
        "fallback:\n  max_retries: 4294967295\n  base_delay: 0ms\n",
        "max_retries must be at most 20",
        6,
    ),
    ("fallback:\n  max_retries: 21\n", "at most 20", 6),
    ("fallback:\n  factor: 0.5\n", "factor", 6),
    ("fallback:\n  attempt_timeout: 0s\n", "attempt_timeout", 6),
    (
        "circuit_breaker:\n  failure_rate_threshold: 250\n",
        "failure_rate_threshold",
        6,
    ),
    ("circuit_breaker:\n  wait_in_open: 0s\n", "wait_in_open", 6),
    ("degradation:\n  auto:\n    window: 0s\n", "auto.window", 6),
    ("cache:\n  ttl: 0s\n", "cache.ttl", 6),
    (
        "hedging:\n  percentile: 1.5\n",
        "percentile must be between 0 and 1",
        6,
    ),
    ("hedging:\n  delay: 0s\n", "delay must be more than zero", 6),
    ("hedging:\n  budget_ratio: -1\n", "budget_ratio", 6),
    ("admin:\n  token_env: ''\n", "must not be empty", 6),
    ("auth:\n  rate_per_minute: 5\n", "keys_env", 6),
    (
        "auth:\n  keys_env: KEYS\n  rate_per_minute: 0\n",
        "at least 1",
        7,
    ),
    (
        "auth:\n  keys_env: KEYS\n  reload_interval: 0s\n",
        "more than zero",
        7,
    ),
];

#[test]
fn every_impossible_value_is_rejected_with_its_line() {
    let base = "providers:\n  - name: sim\n    kind: simulated\n    model: m\n";
    for (section, expected, line) in IMPOSSIBLE {
        let message = error(&format!("{base}{section}"));
        assert!(message.contains(expected), "{section}: {message}");
        assert!(
            message.contains(&format!("line {line} ")),
            "{section}: {message}"
        );
    }
}

#[test]
fn impossible_provider_values_are_rejected_with_their_line() {
    for (key, expected) in [
        ("first_token_timeout: 0s", "more than zero"),
        ("stream_idle_timeout: 0s", "more than zero"),
        ("max_in_flight: 0", "at least 1"),
        (
            "simulate: {type: flaky, probability: 1.5, failure: {type: hang}}",
            "`probability` must be between 0 and 1",
        ),
    ] {
        let message = error(&format!(
            "providers:\n  - name: sim\n    kind: simulated\n    model: m\n    {key}\n"
        ));
        assert!(message.contains(expected), "{key}: {message}");
        assert!(message.contains("line "), "{key}: {message}");
    }
}

#[test]
fn the_server_defaults_bound_every_connection_and_request() {
    let server = GatewayConfig::from_yaml(SEED).unwrap().server;
    assert_eq!(server.header_timeout, Duration::from_secs(30));
    assert_eq!(server.body_timeout, Duration::from_secs(30));
    assert_eq!(server.send_timeout, Duration::from_mins(1));
    assert_eq!(server.idle_timeout, Duration::from_secs(75));
    assert_eq!(server.http2_keep_alive_interval, Duration::from_secs(30));
    assert_eq!(server.http2_keep_alive_timeout, Duration::from_secs(20));
    assert_eq!(server.max_connections, 10_000);
    assert_eq!(server.max_in_flight, 4_096);
    assert_eq!(server.max_retry_after, Duration::from_hours(24));
}

#[test]
fn an_unset_or_empty_admin_token_variable_refuses_to_start() {
    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}admin:\n  token_env: BRACE_TEST_NO_SUCH_VAR\n"
    ))
    .unwrap();
    let err = brace_gateway::Gateway::build_with_env(config.clone(), |_| None).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("BRACE_TEST_NO_SUCH_VAR"), "{message}");
    assert!(message.contains("not set"), "{message}");
    let err = brace_gateway::Gateway::build_with_env(config, |_| Some(String::new())).unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn unset_client_keys_or_an_unreadable_keys_file_refuse_to_start() {
    let config =
        GatewayConfig::from_yaml(&format!("{SEED}auth:\n  keys_env: MY_CLIENT_KEYS\n")).unwrap();
    let err = brace_gateway::Gateway::build_with_env(config, |_| None).unwrap_err();
    assert!(err.to_string().contains("MY_CLIENT_KEYS"), "{err}");

    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}auth:\n  keys_file: /nonexistent/brace-keys\n"
    ))
    .unwrap();
    let err = brace_gateway::Gateway::build_with_env(config, |_| None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/brace-keys"), "{err}");

    let config =
        GatewayConfig::from_yaml(&format!("{SEED}auth:\n  keys_env: MY_CLIENT_KEYS\n")).unwrap();
    let err =
        brace_gateway::Gateway::build_with_env(config, |_| Some(" , ,".to_owned())).unwrap_err();
    assert!(err.to_string().contains("no client key"), "{err}");
}

#[test]
fn route_stream_and_refusal_policies_load_and_are_checked() {
    use brace_gateway::policy::OnContentFilter;
    use brace_llm::commit::CommitPolicy;

    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}routes:
  - match: held
    providers: [{{name: openai}}, {{name: google}}]
    commit: {{after_tokens: 64}}
    on_content_filter: [anthropic]
    on_context_length: [google]
  - match: whole
    providers: [{{name: openai}}]
    commit: complete
    on_content_filter: failover
  - match: plain
    providers: [{{name: openai}}]
server:
  max_stream_duration: 10m
"
    ))
    .unwrap();
    let routes = &config.routes;
    assert_eq!(routes[0].commit, CommitPolicy::AfterTokens(64));
    assert_eq!(
        routes[0].on_content_filter,
        OnContentFilter::Providers(vec!["anthropic".into()])
    );
    assert_eq!(routes[0].on_context_length, Some(vec!["google".into()]));
    assert_eq!(routes[1].commit, CommitPolicy::Complete);
    assert_eq!(routes[1].on_content_filter, OnContentFilter::Failover);
    assert_eq!(routes[2].commit, CommitPolicy::FirstContent, "the default");
    assert_eq!(
        routes[2].on_content_filter,
        OnContentFilter::Return,
        "the default"
    );
    assert_eq!(routes[2].on_context_length, None);
    assert_eq!(
        config.server.max_stream_duration,
        Some(Duration::from_mins(10))
    );
    brace_gateway::Gateway::build(config).unwrap();

    let route = |keys: &str| {
        format!("{SEED}routes:\n  - match: m\n    providers: [{{name: openai}}]\n{keys}")
    };
    let err = error(&route("    on_content_filter: [nobody]\n"));
    assert!(err.contains("unknown provider `nobody`"), "{err}");
    let err = error(&route("    on_context_length: [nobody]\n"));
    assert!(err.contains("unknown provider `nobody`"), "{err}");
    let err = error(&route("    on_content_filter: sometimes\n"));
    assert!(err.contains("`return`, `failover`, or a list"), "{err}");
    let err = error(&route("    commit: {after_tokens: 0}\n"));
    assert!(err.contains("at least 1"), "{err}");
    let err = error(&route("    commit: later\n"));
    assert!(err.contains("later"), "{err}");
}

#[test]
fn the_configuration_in_force_loads_back_as_itself() {
    // `GET /v1/config` shows the configuration with every default filled in: written back
    // to a file, it is the same configuration (every duration in the form it is read in).
    let config = GatewayConfig::from_yaml(&format!(
        "{SEED}routes:\n  - match: \"gpt-*\"\n    providers: [openai, anthropic]\n\
         degradation:\n  levels: [full, reduced, offline]\n\
         server:\n  send_timeout: 90s\n  request_timeout: 30s\n"
    ))
    .unwrap();
    let written = serde_json::to_string_pretty(&config).unwrap();
    let again = GatewayConfig::from_yaml(&written).unwrap_or_else(|err| panic!("{err}\n{written}"));
    assert_eq!(again, config, "{written}");
    assert_eq!(again.server.send_timeout, Duration::from_secs(90));
}
