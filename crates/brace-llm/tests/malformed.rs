//! Malformed input to every deserializer is an error that says what is wrong, never a panic.

use brace_llm::{ChatChunk, ChatCompletion, ChatRequest, LlmError};
use http::{HeaderMap, StatusCode};
use proptest::prelude::*;

fn request_error(json: &str) -> String {
    serde_json::from_str::<ChatRequest>(json)
        .unwrap_err()
        .to_string()
}

#[test]
fn request_errors_name_the_problem() {
    assert!(request_error(r#"{"model":"m"}"#).contains("missing field `messages`"));
    assert!(request_error(r#"{"messages":[]}"#).contains("missing field `model`"));
    assert!(
        request_error(r#"{"model":"m","messages":[{"role":"wizard","content":"hi"}]}"#)
            .contains("unknown variant `wizard`")
    );
    assert!(
        request_error(r#"{"model":"m","messages":[],"max_tokens":"lots"}"#)
            .contains("invalid type: string \"lots\"")
    );
    assert!(
        request_error(r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#)
            .contains("a content part needs a string `type`")
    );
    assert!(
        request_error(r#"{"model":"m","messages":[{"role":"user","content":7}]}"#)
            .contains("expected a string or an array of content parts")
    );
    assert!(request_error(r#"{"model":"m","messages":[}"#).contains("line 1"));
}

#[test]
fn semantically_invalid_requests_are_explained() {
    let parse = |json: &str| serde_json::from_str::<ChatRequest>(json).unwrap();
    assert_eq!(
        parse(r#"{"model":"m","messages":[]}"#).validate(),
        Err("`messages` must contain at least one message".into())
    );
    assert!(
        parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#)
            .validate()
            .unwrap_err()
            .contains("temperature")
    );
    assert!(
        parse(r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#)
            .validate()
            .unwrap_err()
            .contains("model")
    );
    assert!(
        parse(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#)
            .validate()
            .unwrap_err()
            .contains("tool_call_id")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<ChatRequest>(&bytes);
        let _ = serde_json::from_slice::<ChatCompletion>(&bytes);
        let _ = serde_json::from_slice::<ChatChunk>(&bytes);
        let err = LlmError::from_response(StatusCode::BAD_GATEWAY, &HeaderMap::new(), &bytes);
        prop_assert!(!err.to_string().is_empty());
    }

    #[test]
    fn json_shaped_garbage_never_panics(
        text in r#"\{("(model|messages|role|content|type|choices|delta|error|usage)":(\[|\{|"x"|1|null|true),?){0,6}(\]|\})*"#
    ) {
        let _ = serde_json::from_str::<ChatRequest>(&text);
        let _ = serde_json::from_str::<ChatCompletion>(&text);
        let _ = serde_json::from_str::<ChatChunk>(&text);
        let _ = LlmError::from_response(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), text.as_bytes());
    }
}
