//! Configuration from files and from the builder.

use std::time::Duration;

use brace_circuit::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitConfigError, CircuitRegistry, CircuitState,
    SlidingWindow, SlidingWindowKind,
};
use tower::{Service, ServiceExt};

fn from_config(
    name: &str,
    config: &CircuitBreakerConfig,
) -> Result<CircuitBreakerLayer, CircuitConfigError> {
    config.to_builder(name)?.build()
}

fn parse(json: &str) -> Result<CircuitBreakerConfig, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn config_reads_every_field_with_humantime_or_second_durations() {
    let config = parse(
        r#"{
            "sliding_window": "time",
            "sliding_window_size": 30,
            "minimum_calls": 10,
            "failure_rate_threshold": 40,
            "slow_call_rate_threshold": 80.5,
            "slow_call_duration": "2s 500ms",
            "wait_in_open": 15,
            "wait_multiplier": 1.5,
            "max_wait_in_open": "5m",
            "automatic_transition": true,
            "permitted_calls_in_half_open": 4,
            "max_wait_in_half_open": "1m"
        }"#,
    )
    .unwrap();
    assert_eq!(config.sliding_window, SlidingWindowKind::Time);
    assert_eq!(config.slow_call_duration, Some(Duration::from_millis(2500)));
    assert_eq!(config.wait_in_open, Some(Duration::from_secs(15)));
    assert_eq!(config.max_wait_in_open, Some(Duration::from_mins(5)));
    from_config("a", &config).unwrap();
}

#[test]
fn config_accepts_the_seed_failure_threshold_and_reset_timeout() {
    let config = parse(r#"{"failure_threshold": 5, "reset_timeout": 60}"#).unwrap();
    assert_eq!(config.failure_threshold, Some(5));
    assert_eq!(config.wait_in_open, Some(Duration::from_mins(1)));
    from_config("seed", &config).unwrap();
}

#[test]
fn config_rejects_unknown_fields_and_bad_durations() {
    let err = parse(r#"{"failure_treshold": 5}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    assert!(parse(r#"{"wait_in_open": -1}"#).is_err());
    assert!(parse(r#"{"wait_in_open": "soon"}"#).is_err());
}

#[test]
fn config_rejects_a_wait_cap_without_growth() {
    let config = parse(r#"{"max_wait_in_open": "5m"}"#).unwrap();
    let err = from_config("a", &config).unwrap_err();
    assert!(err.to_string().contains("wait_multiplier"), "{err}");
}

#[test]
fn config_takes_failure_threshold_beside_window_settings() {
    let config = parse(r#"{"consecutive_failures": 5, "minimum_calls": 10}"#).unwrap();
    assert_eq!(config.failure_threshold, Some(5));
    from_config("a", &config).unwrap();
    let zero = parse(r#"{"failure_threshold": 0}"#).unwrap();
    let err = from_config("a", &zero).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}

#[test]
fn out_of_range_settings_are_errors_not_panics() {
    let bad = [
        CircuitBreakerLayer::builder("a").failure_rate_threshold(0.0),
        CircuitBreakerLayer::builder("a").failure_rate_threshold(101.0),
        CircuitBreakerLayer::builder("a").slow_call_rate_threshold(f32::NAN),
        CircuitBreakerLayer::builder("a").sliding_window(SlidingWindow::Count(0)),
        CircuitBreakerLayer::builder("a").sliding_window(SlidingWindow::Count(u32::MAX)),
        CircuitBreakerLayer::builder("a").sliding_window(SlidingWindow::Time(0)),
        CircuitBreakerLayer::builder("a").sliding_window(SlidingWindow::Time(u32::MAX)),
        CircuitBreakerLayer::builder("a").minimum_calls(0),
        CircuitBreakerLayer::builder("a").permitted_calls_in_half_open(0),
        CircuitBreakerLayer::builder("a").permitted_calls_in_half_open(70_000),
        CircuitBreakerLayer::builder("a").exponential_wait(
            Duration::from_secs(1),
            0.5,
            Duration::from_secs(9),
        ),
        CircuitBreakerLayer::builder("a").consecutive_failures(0),
    ];
    for builder in bad {
        let err = builder.clone().build().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid circuit breaker config: ")
        );
    }
}

#[test]
fn huge_waits_saturate_instead_of_overflowing() {
    let config = parse(r#"{"wait_in_open": "1000000000years", "wait_multiplier": 1e300}"#);
    // Either the duration parser refuses it, or the breaker takes it without panicking.
    if let Ok(config) = config {
        let _ = from_config("a", &config);
    }
    let layer = CircuitBreakerLayer::builder("a")
        .consecutive_failures(1)
        .exponential_wait(Duration::MAX, 1e300, Duration::MAX)
        .automatic_transition(true)
        .max_wait_in_half_open(Duration::MAX)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut service = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(|()| async { Err::<(), _>(std::io::Error::other("down")) });
        for _ in 0..3 {
            let _ = service.ready().await.unwrap().call(()).await;
        }
    });
    assert_eq!(layer.handle().state(), CircuitState::Open);
}

#[test]
fn registry_lists_breakers_by_name_as_json() {
    let registry = CircuitRegistry::new();
    registry
        .layer(
            parse(r#"{"failure_threshold": 3}"#)
                .unwrap()
                .to_builder("b")
                .unwrap(),
        )
        .unwrap();
    let a = registry
        .layer(CircuitBreakerConfig::default().to_builder("a").unwrap())
        .unwrap();
    a.handle().force_open();
    let json = serde_json::to_value(registry.metrics()).unwrap();
    assert_eq!(json[0]["name"], "a");
    assert_eq!(json[0]["state"], "forced_open");
    assert_eq!(json[1]["name"], "b");
    assert_eq!(json[1]["state"], "closed");
    assert_eq!(json[1]["failure_rate"], serde_json::Value::Null);
    assert!(registry.remove("a").unwrap().same_breaker(&a.handle()));
    assert!(registry.get("a").is_none());
}
