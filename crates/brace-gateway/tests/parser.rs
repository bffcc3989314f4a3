//! Property tests of the request parser: whatever bytes or JSON a client sends to
//! `/v1/chat/completions`, the gateway answers without panicking, never with a 5xx, and with
//! an OpenAI-shaped error when it refuses. (`PROPTEST_CASES` sets how many cases run; CI runs
//! the default.)

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use brace_gateway::{Gateway, GatewayConfig, app::router};
use brace_llm::ChatRequest;

fn gateway() -> Arc<Gateway> {
    static GATEWAY: OnceLock<Arc<Gateway>> = OnceLock::new();
    GATEWAY
        .get_or_init(|| {
            let yaml = "providers:\n  - name: sim\n    kind: simulated\n    model: m\n\
                        fallback:\n  max_retries: 0\n\
                        degradation:\n  auto:\n    enabled: false\n";
            Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap()
        })
        .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Sends `body` to `/v1/chat/completions` and checks the answer: 2xx, or a 4xx with an
/// OpenAI-shaped error; a stream is read to its end.
fn check(body: Vec<u8>) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = router(gateway()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        prop_assert!(
            status.is_success() || status.is_client_error(),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() {
            let error: Value = serde_json::from_slice(&bytes)
                .map_err(|err| TestCaseError::fail(format!("{err}: {bytes:?}")))?;
            prop_assert!(error["error"]["message"].is_string(), "{error}");
            prop_assert!(error["error"]["type"].is_string(), "{error}");
        }
        Ok(())
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A value for one of the request's own fields: mostly the right shape, sometimes not.
fn field(name: &'static str) -> BoxedStrategy<Value> {
    let plausible: BoxedStrategy<Value> = match name {
        "model" => "[a-z0-9*.-]{1,20}".prop_map(Value::String).boxed(),
        "messages" => prop::collection::vec(message(), 1..4)
            .prop_map(Value::Array)
            .boxed(),
        "max_tokens" | "n" | "max_completion_tokens" | "seed" => {
            any::<i64>().prop_map(Value::from).boxed()
        }
        "temperature" | "top_p" | "presence_penalty" | "frequency_penalty" => {
            prop_oneof![any::<f64>().prop_map(|f| json!(f)), (-3.0..3.0f64).prop_map(|f| json!(f))]
                .boxed()
        }
        "stream" => any::<bool>().prop_map(Value::Bool).boxed(),
        "stream_options" => any::<bool>()
            .prop_map(|usage| json!({"include_usage": usage}))
            .boxed(),
        "stop" => prop_oneof![
            ".{0,8}".prop_map(Value::String),
            prop::collection::vec(".{0,8}".prop_map(Value::String), 0..5).prop_map(Value::Array),
        ]
        .boxed(),
        "tools" => prop::collection::vec(
            ("[a-z_]{0,12}", json_value()).prop_map(|(name, parameters)| {
                json!({"type": "function", "function": {"name": name, "parameters": parameters}})
            }),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        _ => json_value().boxed(),
    };
    prop_oneof![9 => plausible, 1 => json_value()].boxed()
}

fn message() -> impl Strategy<Value = Value> {
    let role = prop_oneof![
        6 => Just("user"),
        1 => Just("assistant"),
        1 => Just("system"),
        1 => Just("tool"),
        1 => Just("developer"),
        1 => Just("nobody"),
    ];
    let content = prop_oneof![
        6 => ".{0,40}".prop_map(Value::String),
        1 => Just(Value::Null),
        2 => prop::collection::vec(
            prop_oneof![
                ".{0,20}".prop_map(|text| json!({"type": "text", "text": text})),
                ".{0,20}".prop_map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
                json_value(),
            ],
            0..3
        )
        .prop_map(Value::Array),
        1 => json_value(),
    ];
    (role, content, proptest::option::weighted(0.1, json_value())).prop_map(
        |(role, content, extra)| {
            let mut message = json!({"role": role, "content": content});
            if let Some(extra) = extra {
                message["tool_calls"] = extra;
            }
            message
        },
    )
}

fn request() -> impl Strategy<Value = Value> {
    const FIELDS: &[&str] = &[
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "seed",
        "user",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "unknown_field",
    ];
    // `model` and `messages` are nearly always there, so that most requests get past the
    // first checks and reach the deeper ones (and the provider).
    let required = (
        proptest::option::weighted(0.95, field("model")),
        proptest::option::weighted(0.95, field("messages")),
    );
    let optional = prop::sample::subsequence(FIELDS, 0..5).prop_flat_map(|names| {
        names
            .into_iter()
            .map(|name| field(name).prop_map(move |value| (name, value)))
            .collect::<Vec<_>>()
    });
    (required, optional).prop_map(|((model, messages), fields)| {
        let mut object = Map::new();
        if let Some(model) = model {
            object.insert("model".to_owned(), model);
        }
        if let Some(messages) = messages {
            object.insert("messages".to_owned(), messages);
        }
        for (name, value) in fields {
            object.insert(name.to_owned(), value);
        }
        Value::Object(object)
    })
}

/// `value` with every non-integer number rounded to 12 significant digits.
fn rounded(value: Value) -> Value {
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or_default();
            json!(format!("{float:.11e}"))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(rounded).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, rounded(value)))
                .collect(),
        ),
        other => other,
    }
}

proptest! {
    #[test]
    fn any_bytes_get_an_answer_never_a_panic_or_a_5xx(body in prop::collection::vec(any::<u8>(), 0..512)) {
        // The parser alone first, then the whole endpoint.
        if let Ok(request) = serde_json::from_slice::<ChatRequest>(&body) {
            let _ = request.validate();
        }
        check(body)?;
    }

    #[test]
    fn any_request_shaped_json_gets_an_answer_never_a_panic_or_a_5xx(request in request()) {
        let body = serde_json::to_vec(&request).unwrap();
        if let Ok(parsed) = serde_json::from_slice::<ChatRequest>(&body)
            && parsed.validate().is_ok()
        {
                // What parses and validates serialises again and parses the same way (up to
                // the last bit of a float: serde_json's default float parsing is not exact).
                let again = serde_json::to_vec(&parsed).unwrap();
                let reparsed: ChatRequest = serde_json::from_slice(&again).unwrap();
                prop_assert_eq!(
                    rounded(serde_json::to_value(&reparsed).unwrap()),
                    rounded(serde_json::to_value(&parsed).unwrap())
                );
            }
        check(body)?;
    }
}
