//! The OpenAI client's pure half: URLs, headers and bodies for each flavour, answers and
//! stream events read — no socket, except one check that a real request carries what the
//! pure builder says.

mod openai_fixture;

use brace_llm::{ChatRequest, LlmErrorKind, Message};
use brace_providers::ProviderApi;
use brace_providers::openai::{
    OpenAiApi, OpenAiConfig, OpenAiDecoder, OpenAiWire, parse_completion,
};
use brace_providers::provider::{ApiKey, ClientConfig};
use brace_providers::sse::{DecodeError, Flow, SseDecoder, SseEvent, SseParser};
use openai_fixture::{COMPLETION, Server, Step, guard, http};
use proptest::prelude::*;
use tower::ServiceExt;

fn openai() -> OpenAiConfig {
    OpenAiConfig::openai(ApiKey::new("sk-proj-KEY123456"))
}

fn header(request: &http::Request<bytes::Bytes>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

#[test]
fn openai_requests_carry_bearer_organization_project_and_extra_headers() {
    let config = openai()
        .with_organization("org-abc")
        .with_project("proj_xyz")
        .map_client(|p| p.with_header("x-trace", "t-1"));
    let wire = OpenAiWire::new(config).unwrap();
    let request = wire
        .chat_request(&ChatRequest::new("gpt-4o", vec![Message::user("Hi")]))
        .unwrap();
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), "https://api.openai.com/v1/chat/completions");
    assert_eq!(
        header(&request, "authorization").as_deref(),
        Some("Bearer sk-proj-KEY123456")
    );
    assert!(request.headers()["authorization"].is_sensitive());
    assert_eq!(
        header(&request, "openai-organization").as_deref(),
        Some("org-abc")
    );
    assert_eq!(
        header(&request, "openai-project").as_deref(),
        Some("proj_xyz")
    );
    assert_eq!(header(&request, "x-trace").as_deref(), Some("t-1"));
    assert_eq!(
        header(&request, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(&request, "accept").as_deref(),
        Some("application/json")
    );
    assert!(header(&request, "api-key").is_none());
}

#[test]
fn azure_requests_use_the_deployment_url_api_version_and_api_key_header() {
    let config = OpenAiConfig::azure(
        "https://contoso.openai.azure.com/",
        ApiKey::new("azurekey0123456789"),
        "2024-10-21",
    )
    .map_client(|p| {
        p.with_model("gpt-4o", "gpt4o-prod")
            .with_default_model("gpt-4o-mini-dev")
    });
    let wire = OpenAiWire::new(config).unwrap();
    let request = wire
        .chat_request(&ChatRequest::new("gpt-4o", vec![Message::user("Hi")]).with_stream(true))
        .unwrap();
    assert_eq!(
        request.uri(),
        "https://contoso.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        header(&request, "api-key").as_deref(),
        Some("azurekey0123456789")
    );
    assert!(request.headers()["api-key"].is_sensitive());
    assert!(header(&request, "authorization").is_none());
    assert!(header(&request, "openai-organization").is_none());
    assert_eq!(
        header(&request, "accept").as_deref(),
        Some("text/event-stream")
    );
    let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
    assert_eq!(body["model"], "gpt4o-prod");

    // An unmapped model goes to the default deployment; odd names are encoded.
    let request = wire
        .chat_request(&ChatRequest::new("other", vec![Message::user("Hi")]))
        .unwrap();
    assert!(
        request
            .uri()
            .path()
            .ends_with("/deployments/gpt-4o-mini-dev/chat/completions")
    );
    assert_eq!(
        wire.probe_request().unwrap().uri().to_string(),
        "https://contoso.openai.azure.com/openai/models?api-version=2024-10-21"
    );
}

#[test]
fn azure_deployment_names_cannot_escape_the_path() {
    let config = OpenAiConfig::azure(
        "https://contoso.openai.azure.com",
        ApiKey::new("k0123456"),
        "2024-10-21",
    )
    .map_client(|p| p.with_default_model("../x?api-version=evil#"));
    let wire = OpenAiWire::new(config).unwrap();
    let request = wire
        .chat_request(&ChatRequest::new("m", vec![Message::user("Hi")]))
        .unwrap();
    assert_eq!(
        request.uri().path(),
        "/openai/deployments/..%2Fx%3Fapi-version%3Devil%23/chat/completions"
    );
    assert_eq!(request.uri().query(), Some("api-version=2024-10-21"));
}

#[test]
fn compatible_servers_need_no_key_and_get_none() {
    let wire = OpenAiWire::new(OpenAiConfig::compatible(
        "ollama",
        "http://127.0.0.1:11434/v1/",
    ))
    .unwrap();
    let request = wire
        .chat_request(&ChatRequest::new("llama3.1", vec![Message::user("Hi")]))
        .unwrap();
    assert_eq!(request.uri(), "http://127.0.0.1:11434/v1/chat/completions");
    assert!(header(&request, "authorization").is_none());
    assert_eq!(
        wire.probe_request().unwrap().uri().to_string(),
        "http://127.0.0.1:11434/v1/models"
    );

    let keyed = OpenAiConfig::compatible("vllm", "http://127.0.0.1:8000/v1")
        .map_client(|p| p.with_api_key(ApiKey::new("token-abc123")));
    let request = OpenAiWire::new(keyed)
        .unwrap()
        .chat_request(&ChatRequest::new("m", vec![Message::user("Hi")]))
        .unwrap();
    assert_eq!(
        header(&request, "authorization").as_deref(),
        Some("Bearer token-abc123")
    );
}

#[test]
fn configurations_that_cannot_work_are_refused_at_build_time() {
    let no_key = OpenAiConfig::new(
        ClientConfig::new("openai", "https://api.openai.com/v1"),
        OpenAiApi::default(),
    );
    assert!(OpenAiWire::new(no_key).is_err());
    let missing_env = OpenAiConfig::new(
        ClientConfig::new("openai", "https://api.openai.com/v1")
            .with_api_key_env("BRACE_TEST_NO_SUCH_KEY_VARIABLE"),
        OpenAiApi::default(),
    );
    let err = OpenAiWire::new(missing_env).unwrap_err();
    assert!(err.to_string().contains("BRACE_TEST_NO_SUCH_KEY_VARIABLE"));
    let bad_url = OpenAiConfig::compatible("x", "localhost:8080");
    assert!(OpenAiWire::new(bad_url).is_err());
    let azure_no_version = OpenAiConfig::azure("https://a.openai.azure.com", ApiKey::new("k"), " ");
    assert!(OpenAiWire::new(azure_no_version).is_err());
    let bad_header = openai().map_client(|p| p.with_header("x-bad", "a\nb"));
    assert!(OpenAiWire::new(bad_header).is_err());
}

#[test]
fn request_body_keeps_unknown_fields_and_only_the_model_changes() {
    let request: ChatRequest = serde_json::from_str(
        r#"{"model":"fast","messages":[{"role":"user","content":"Hi"}],"logprobs":true,
            "top_logprobs":2,"parallel_tool_calls":false,"max_tokens":50,"temperature":0.2}"#,
    )
    .unwrap();
    let wire =
        OpenAiWire::new(openai().map_client(|p| p.with_model("fast", "gpt-4o-mini"))).unwrap();
    let built = wire.chat_request(&request).unwrap();
    let body: serde_json::Value = serde_json::from_slice(built.body()).unwrap();
    let mut expected = serde_json::to_value(&request).unwrap();
    expected["model"] = "gpt-4o-mini".into();
    assert_eq!(body, expected);
    assert_eq!(body["top_logprobs"], 2);
    assert_eq!(request.model, "fast", "the caller's request is not changed");
}

#[test]
fn configuration_deserializes_each_flavour() {
    let openai: OpenAiConfig = serde_json::from_str(
        r#"{"name":"openai","base_url":"https://api.openai.com/v1","api_key_env":"OPENAI_API_KEY",
            "organization":"org-1","stream_idle_timeout":"15s","malformed_events":"fail"}"#,
    )
    .unwrap();
    assert_eq!(
        openai.api,
        OpenAiApi::OpenAi {
            organization: Some("org-1".into()),
            project: None
        }
    );
    assert_eq!(
        openai.client.stream_idle_timeout,
        std::time::Duration::from_secs(15)
    );
    let azure: OpenAiConfig = serde_json::from_str(
        r#"{"name":"az","api":"azure","base_url":"https://a.openai.azure.com"}"#,
    )
    .unwrap();
    assert_eq!(
        azure.api,
        OpenAiApi::Azure {
            api_version: brace_providers::openai::DEFAULT_AZURE_API_VERSION.into()
        }
    );
    let local: OpenAiConfig = serde_json::from_str(
        r#"{"name":"llama","api":"compatible","base_url":"http://127.0.0.1:8080/v1","timeout":5}"#,
    )
    .unwrap();
    assert_eq!(local.api, OpenAiApi::Compatible);
    assert_eq!(local.client.timeout, std::time::Duration::from_secs(5));
}

#[test]
fn completions_parse_with_unknown_fields_kept() {
    let completion = parse_completion(COMPLETION.as_bytes()).unwrap();
    assert_eq!(completion.model, "gpt-4o-2024-08-06");
    assert_eq!(completion.usage.as_ref().unwrap().total_tokens, 29);
    assert_eq!(completion.extra["service_tier"], "default");
    let back = serde_json::to_value(&completion).unwrap();
    let original: serde_json::Value = serde_json::from_str(COMPLETION).unwrap();
    assert_eq!(back, original);
}

#[test]
fn tool_call_completion_parses() {
    let body = r#"{"id":"chatcmpl-abc","object":"chat.completion","created":1699896916,"model":"gpt-4o-mini",
      "choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123",
      "type":"function","function":{"name":"get_current_weather","arguments":"{\n\"location\": \"Boston, MA\"\n}"}}]},
      "logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}"#;
    let completion = parse_completion(body.as_bytes()).unwrap();
    let calls = completion.choices[0].message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "get_current_weather");
}

#[test]
fn decoder_reads_chunks_done_errors_and_malformed_events() {
    let mut decoder = OpenAiDecoder::new();
    let mut out = Vec::new();
    let chunk = SseEvent::data(
        r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
    );
    assert_eq!(decoder.decode(&chunk, &mut out).unwrap(), Flow::Continue);
    assert_eq!(out[0].extra["system_fingerprint"], "fp_44709d6fcb");
    assert_eq!(
        decoder.decode(&SseEvent::data("[DONE]"), &mut out).unwrap(),
        Flow::Done
    );
    assert!(matches!(
        decoder.decode(&SseEvent::data("{\"id\": 1"), &mut out),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decoder.decode(&SseEvent::data("[1,2,3]"), &mut out),
        Err(DecodeError::Malformed(_))
    ));
    match decoder.decode(&SseEvent::named("error", "upstream went away"), &mut out) {
        Err(DecodeError::Fatal(err)) => assert_eq!(err.kind(), LlmErrorKind::Server),
        other => panic!("expected a fatal error, got {other:?}"),
    }
    match decoder.decode(
        &SseEvent::data(r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#),
        &mut out,
    ) {
        Err(DecodeError::Fatal(err)) => {
            assert_eq!(err.kind(), LlmErrorKind::QuotaExhausted);
            assert_eq!(err.status(), None, "a stream error has no HTTP status of its own");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    assert_eq!(out.len(), 1);
}

#[tokio::test]
async fn sent_request_matches_the_pure_builder() {
    let server = Server::always(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    let config = server
        .config()
        .with_organization("org-abc")
        .map_client(|p| p.with_model("gpt-4o", "gpt-4o-2024-08-06"));
    let client = brace_providers::openai::OpenAiClient::new(config).unwrap();
    let request = ChatRequest::new("gpt-4o", vec![Message::user("Hi")]);
    let built = client.api().chat_request(&request).unwrap();
    guard(client.oneshot(request)).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.request_line(), "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some(format!("Bearer {}", openai_fixture::SECRET).as_str())
    );
    assert_eq!(
        seen.header("openai-organization").as_deref(),
        Some("org-abc")
    );
    assert_eq!(seen.body, built.body().to_vec());
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_parser_or_decoder(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)
    ) {
        let mut parser = SseParser::with_max_event_bytes(256);
        let mut decoder = OpenAiDecoder::new();
        let mut out = Vec::new();
        let mut feed = |event: SseEvent| {
            let _ = decoder.decode(&event, &mut out);
        };
        for piece in &pieces {
            parser.push(piece);
            while let Ok(Some(event)) = parser.next_event() {
                feed(event);
            }
        }
        while let Ok(Some(event)) = parser.finish() {
            feed(event);
        }
        let _ = parse_completion(&pieces.concat());
    }

    #[test]
    fn any_split_of_a_stream_gives_the_same_events(split in proptest::collection::vec(1_usize..40, 1..20)) {
        let text = b": hi\r\nevent: a\r\ndata: {\"x\":1}\r\n\r\ndata: two\rdata: lines\r\r\nid: 9\ndata: [DONE]\n\n";
        let whole = {
            let mut parser = SseParser::new();
            parser.push(text);
            let mut events = Vec::new();
            while let Some(event) = parser.finish().unwrap() {
                events.push(event);
            }
            events
        };
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut rest = &text[..];
        for size in split.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            parser.push(piece);
            while let Some(event) = parser.next_event().unwrap() {
                events.push(event);
            }
        }
        while let Some(event) = parser.finish().unwrap() {
            events.push(event);
        }
        prop_assert_eq!(events, whole);
    }
}

#[test]
fn a_request_read_from_json_and_unchanged_is_sent_as_it_came() {
    let json = r#"{ "model" : "gpt-4o", "messages": [ {"role":"user","content":"Hi"} ], "seed": 7, "x_vendor": null }"#;
    let wire = OpenAiWire::new(openai()).unwrap();
    let request = ChatRequest::from_json(json.into()).unwrap();
    let sent = wire.chat_request(&request).unwrap();
    assert_eq!(sent.body(), json.as_bytes());

    // Changed after it was read: written out, with the change.
    let mut changed = request.clone();
    changed.options_mut().seed = Some(8);
    let sent = wire.chat_request(&changed).unwrap();
    let body: serde_json::Value = serde_json::from_slice(sent.body()).unwrap();
    assert_eq!(body["seed"], 8);
    assert_eq!(body["model"], "gpt-4o");

    // A model the provider knows by another name: written out under that name.
    let mapped =
        OpenAiWire::new(openai().map_client(|c| c.with_model("gpt-4o", "gpt-4o-2024-08-06")))
            .unwrap();
    let sent = mapped.chat_request(&request).unwrap();
    let body: serde_json::Value = serde_json::from_slice(sent.body()).unwrap();
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["seed"], 7);
}
