//! No API key in any `Debug` or `Display` output of the clients, their configuration,
//! their requests, or any error they produce.

mod openai_fixture;

use brace_llm::LlmError;
use brace_providers::ProviderApi;
use brace_providers::openai::{OpenAiClient, OpenAiConfig, OpenAiWire};
use brace_providers::provider::{ApiKey, ClientConfig, Transport};
use openai_fixture::{SECRET, Server, Step, guard, http, request, sse_head, text_event};
use tower::ServiceExt;

const AZURE_SECRET: &str = "azSECRET0123456789abcdef";

fn assert_clean(what: &str, text: &str) {
    for secret in [SECRET, "SECRETabcdef", AZURE_SECRET, "0123456789abcdef"] {
        assert!(!text.contains(secret), "{what} leaks a key: {text}");
    }
}

fn assert_error_clean(err: &LlmError) {
    assert_clean("error Display", &err.to_string());
    assert_clean("error Debug", &format!("{err:?}"));
    assert_clean("error message", err.message());
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        assert_clean("error source", &cause.to_string());
        source = cause.source();
    }
}

#[tokio::test]
async fn no_key_in_any_client_config_request_or_error() {
    let key = ApiKey::new(SECRET);
    assert_clean("ApiKey Debug", &format!("{key:?}"));

    let server_errors = Server::start(|n| match n {
        // OpenAI echoes (part of) a wrong key back in its message.
        0 => vec![Step::Write(http(
            401,
            &[],
            &format!(
                r#"{{"error":{{"message":"Incorrect API key provided: {SECRET}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
            ),
        ))],
        1 => vec![Step::Write(http(
            400,
            &[],
            &format!("plain text error mentioning Bearer {SECRET}"),
        ))],
        2 => vec![Step::Hang],
        3 => vec![],
        4 => vec![Step::Write(http(200, &[], &format!("{{\"broken\": \"{SECRET}")))],
        5 => vec![
            Step::Write(sse_head()),
            Step::Write(text_event("x")),
            Step::Write(
                format!("data: {{\"error\":{{\"message\":\"bad key {SECRET}\"}}}}\n\n").into_bytes(),
            ),
        ],
        6 => vec![Step::Write(http(
            403,
            &[],
            &format!(r#"{{"error":{{"message":"key={AZURE_SECRET} denied","code":"PermissionDenied"}}}}"#),
        ))],
        7 => vec![Step::Write(http(
            401,
            &[],
            &format!(r#"{{"error":{{"message":"invalid key {SECRET}","code":"401"}}}}"#),
        ))],
        // A provider (here the Azure one) that echoes its exact key with no recognisable
        // prefix: only the client, which knows the key, can mask it.
        _ => vec![Step::Write(http(
            401,
            &[],
            &format!(
                r#"{{"error":{{"message":"Access denied due to invalid subscription key {AZURE_SECRET}.","code":"401"}}}}"#
            ),
        ))],
    })
    .await;

    let mut config = server_errors.config().with_organization("org-1");
    config.client = config.client.with_header("x-custom-auth", SECRET);
    assert_clean("OpenAiConfig Debug", &format!("{config:?}"));
    assert_clean("ClientConfig Debug", &format!("{:?}", config.client));
    let client = OpenAiClient::new(config.clone()).unwrap();
    assert_clean("OpenAiClient Debug", &format!("{client:?}"));
    assert_clean("OpenAiWire Debug", &format!("{:?}", client.api()));
    assert_clean(
        "Transport Debug",
        &format!("{:?}", Transport::new(&config.client).unwrap()),
    );
    let built = client.api().chat_request(&request(false)).unwrap();
    assert_clean("http::Request Debug", &format!("{built:?}"));
    assert_clean("ChatRequest Debug", &format!("{:?}", request(false)));

    for _ in 0..5 {
        let err = guard(client.clone().oneshot(request(false)))
            .await
            .unwrap_err();
        assert_error_clean(&err);
    }
    let response = guard(client.clone().oneshot(request(true))).await.unwrap();
    assert_clean("ChatResponse Debug", &format!("{response:?}"));
    let err = guard(response.into_completion()).await.unwrap_err();
    assert_error_clean(&err);
    let err = guard(client.clone().oneshot(request(false)))
        .await
        .unwrap_err();
    assert_error_clean(&err);
    let err = guard(client.probe()).await.unwrap_err();
    assert_error_clean(&err);

    // Azure: the key is a header, but check every output anyway.
    let azure = OpenAiConfig::azure(
        format!("http://{}", server_errors.addr),
        ApiKey::new(AZURE_SECRET),
        "2024-10-21",
    )
    .map_client(|p| p.with_default_model("dep"));
    assert_clean("Azure config Debug", &format!("{azure:?}"));
    let azure_client = OpenAiClient::new(azure.clone()).unwrap();
    assert_clean("Azure client Debug", &format!("{azure_client:?}"));
    assert_clean(
        "Azure wire Debug",
        &format!("{:?}", OpenAiWire::new(azure).unwrap()),
    );
    let err = guard(azure_client.oneshot(request(false)))
        .await
        .unwrap_err();
    assert_error_clean(&err);

    // Configuration errors never carry the key or a URL's query.
    let bad = OpenAiConfig::compatible("x", format!("ftp://h/?api_key={SECRET}"));
    assert_clean(
        "ClientConfigError",
        &OpenAiClient::new(bad).unwrap_err().to_string(),
    );
    let bad_key = OpenAiConfig::openai(ApiKey::new(format!("{SECRET}\n")));
    let bad_key = bad_key.map_client(|p| p.with_api_key(ApiKey::new(format!("a\u{7f}{SECRET}"))));
    let err = OpenAiClient::new(bad_key).unwrap_err();
    assert_clean("ClientConfigError", &format!("{err} {err:?}"));
    let provider = ClientConfig::new("p", "http://127.0.0.1:1").with_api_key(ApiKey::new(SECRET));
    assert_clean("ClientConfig Debug", &format!("{provider:#?}"));
}
