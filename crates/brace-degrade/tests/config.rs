//! Reading configuration.

mod support;

use std::time::Duration;

use brace_degrade::{Admit, Ladder, LevelKind};
use support::{Features, Shape};

/// The configuration of a ladder whose live levels reshape the test's requests.
type DegradeConfig = brace_degrade::DegradeConfig<Shape>;

#[test]
fn empty_config_gives_the_standard_ladder_and_defaults() {
    let config: DegradeConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, DegradeConfig::default());
    let ladder = config.validate().unwrap();
    let names: Vec<_> = ladder
        .levels()
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    assert_eq!(names, ["full", "cached", "offline"]);
    assert_eq!(
        ladder.get(0).unwrap().kind(),
        &LevelKind::Live(Shape::default())
    );
    assert_eq!(
        ladder.get(2).unwrap().kind(),
        &LevelKind::Static("Service temporarily limited".into())
    );

    // Live levels of the request type's own go above the cached and static ones.
    let reduced = Shape {
        max_tokens: Some(1024),
        ..Shape::default()
    };
    let ladder =
        Ladder::with_live_levels([("full", Shape::default()), ("reduced", reduced)]).unwrap();
    let names: Vec<_> = ladder
        .levels()
        .iter()
        .map(brace_degrade::Level::name)
        .collect();
    assert_eq!(names, ["full", "reduced", "cached", "offline"]);
    assert!(Ladder::with_live_levels([("cached", Shape::default())]).is_err());
}

#[test]
fn levels_durations_and_cache_rules_are_read() {
    let config: DegradeConfig = serde_json::from_str(
        r#"{
            "levels": [
                { "name": "opus" },
                { "name": "haiku", "model": "claude-haiku", "max_tokens": 512,
                  "allow": { "tools": false, "images": false } },
                { "name": "cache", "kind": "cached" },
                { "name": "down", "kind": "static", "message": "back soon" }
            ],
            "start": "haiku",
            "cache": { "max_entries": 10, "max_bytes": 4096, "ttl": "90s", "admit": "all" },
            "auto": { "failure_threshold": 2, "window": 5, "probe_interval": "1m" }
        }"#,
    )
    .unwrap();
    let ladder = config.validate().unwrap();
    let LevelKind::Live(shape) = ladder.get(1).unwrap().kind() else {
        panic!("haiku is live");
    };
    assert_eq!(shape.model.as_deref(), Some("claude-haiku"));
    assert_eq!(shape.max_tokens, Some(512));
    assert_eq!(
        shape.allow,
        Features {
            tools: false,
            images: false,
            ..Features::ALL
        }
    );
    assert_eq!(config.cache.ttl, Duration::from_secs(90));
    assert_eq!(config.cache.admit, Admit::All);
    assert_eq!(config.auto.window, Duration::from_secs(5));
    assert_eq!(config.auto.probe_interval, Duration::from_mins(1));
    let layer = brace_degrade::DegradeLayer::<NoRequest>::builder()
        .config(config.clone())
        .build();
    assert_eq!(layer.unwrap().handle().level().name(), "haiku");
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    for text in [
        r#"{ "levls": [] }"#,
        r#"{ "cache": { "max_entry": 1 } }"#,
        r#"{ "auto": { "treshold": 1 } }"#,
        r#"{ "levels": [ { "name": "a", "modle": "x" } ] }"#,
        r#"{ "levels": [ { "name": "a", "allow": { "vision": false } } ] }"#,
    ] {
        assert!(
            serde_json::from_str::<DegradeConfig>(text).is_err(),
            "{text}"
        );
    }
}

#[test]
fn inconsistent_levels_are_rejected_with_a_reason() {
    for (text, needle) in [
        (r#"{ "levels": [] }"#, "at least one level"),
        (
            r#"{ "levels": [ { "name": "a" }, { "name": "a" } ] }"#,
            "two levels",
        ),
        (r#"{ "start": "nowhere" }"#, "start level"),
        (r#"{ "cache": { "ttl": 0 } }"#, "ttl"),
        (
            r#"{ "auto": { "failure_threshold": 0 } }"#,
            "failure_threshold",
        ),
    ] {
        let err = serde_json::from_str::<DegradeConfig>(text)
            .map_err(|e| e.to_string())
            .and_then(|config| config.validate().map(drop).map_err(|e| e.to_string()))
            .unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
    for text in [
        r#"{ "levels": [ { "name": "c", "kind": "cached", "model": "x" } ] }"#,
        r#"{ "levels": [ { "name": "s", "kind": "static", "max_tokens": 3 } ] }"#,
        r#"{ "levels": [ { "name": "l", "message": "hi" } ] }"#,
        r#"{ "levels": [ { "name": " " } ] }"#,
    ] {
        assert!(
            serde_json::from_str::<DegradeConfig>(text).is_err(),
            "{text}"
        );
    }
}

#[test]
fn a_config_survives_a_round_trip() {
    let config = DegradeConfig {
        levels: Some(support::ladder().levels().to_vec()),
        ..DegradeConfig::default()
    };
    let text = serde_json::to_string(&config).unwrap();
    let back: DegradeConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
}

/// A request type for building a layer without sending anything.
#[derive(Clone)]
struct NoRequest;

impl brace_degrade::Degradable for NoRequest {
    type Response = NoResponse;
    type Shape = Shape;
    type Reshaped = ();
    fn reshape(&mut self, _: &Shape) {}
    fn write_cache_key(&self, _: &mut dyn std::io::Write) -> std::io::Result<()> {
        Ok(())
    }
    fn is_deterministic(&self) -> bool {
        false
    }
    fn wants_stream(&self) -> bool {
        false
    }
    fn static_response(&self, _: &str) -> NoResponse {
        NoResponse
    }
}

struct NoResponse;

impl brace_degrade::DegradeResponse<()> for NoResponse {
    type Cached = ();
    fn annotate(&mut self, _: &brace_degrade::Degradation<()>) {}
    fn tee<F: FnOnce(()) + Send + 'static>(self, fill: F) -> Self {
        fill(());
        self
    }
    fn from_cached((): &(), _: bool) -> Self {
        NoResponse
    }
    fn cached_size((): &()) -> usize {
        0
    }
}
