//! The OpenAI client against a loopback server in every fault mode: each yields the right
//! `LlmError` kind, names the provider, and nothing hangs past its timeout.

mod openai_fixture;

use std::time::Duration;

use brace_llm::{LlmError, LlmErrorKind, ResponseBody};
use openai_fixture::{COMPLETION, Server, Step, guard, http, request};
use tower::ServiceExt;

async fn call_err(server: &Server) -> LlmError {
    guard(server.client().oneshot(request(false)))
        .await
        .expect_err("the call should fail")
}

struct Case {
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    kind: LlmErrorKind,
    retry_after: Option<Duration>,
}

const fn case(status: u16, body: &'static str, kind: LlmErrorKind) -> Case {
    Case {
        status,
        headers: &[],
        body,
        kind,
        retry_after: None,
    }
}

#[tokio::test]
async fn error_statuses_map_to_their_kinds() {
    use LlmErrorKind as K;
    let cases = [
        case(
            400,
            r#"{"error":{"message":"Invalid value for 'temperature': must be <= 2.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#,
            K::BadRequest,
        ),
        case(
            400,
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            K::ContextLengthExceeded,
        ),
        case(
            400,
            r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#,
            K::ContentFiltered,
        ),
        case(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-test-***********************6789. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            K::Auth,
        ),
        case(
            403,
            r#"{"error":{"message":"Project `proj_abc` does not have access to model `gpt-4o`","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
            K::ModelNotFound,
        ),
        case(
            403,
            r#"{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","param":null,"code":null}}"#,
            K::Auth,
        ),
        case(
            404,
            r#"{"error":{"message":"The model `gpt-5-ultra` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
            K::ModelNotFound,
        ),
        case(408, "", K::Timeout),
        case(
            413,
            r#"{"error":{"message":"Request too large for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Requested 50000.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
            K::RateLimited,
        ),
        case(
            413,
            "<html><body>413 Request Entity Too Large</body></html>",
            K::BadRequest,
        ),
        Case {
            headers: &[("retry-after", "20")],
            retry_after: Some(Duration::from_secs(20)),
            ..case(
                429,
                r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                K::RateLimited,
            )
        },
        Case {
            headers: &[("retry-after-ms", "1500")],
            retry_after: Some(Duration::from_millis(1500)),
            ..case(
                429,
                r#"{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
                K::RateLimited,
            )
        },
        case(
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            K::QuotaExhausted,
        ),
        case(
            500,
            r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
            K::Server,
        ),
        case(
            502,
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>",
            K::Server,
        ),
        Case {
            headers: &[("retry-after", "3")],
            retry_after: Some(Duration::from_secs(3)),
            ..case(
                503,
                r#"{"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error","param":null,"code":null}}"#,
                K::Overloaded,
            )
        },
        case(504, "", K::Timeout),
        case(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            K::Overloaded,
        ),
    ];
    for case in cases {
        let server = Server::always(vec![Step::Write(http(
            case.status,
            case.headers,
            case.body,
        ))])
        .await;
        let err = call_err(&server).await;
        assert_eq!(err.kind(), case.kind, "{}: {err}", case.status);
        assert_eq!(err.status(), Some(case.status), "{err}");
        assert_eq!(err.provider(), Some("openai-test"), "{err}");
        assert_eq!(
            err.retry_after(),
            case.retry_after,
            "{}: {err}",
            case.status
        );
    }
}

#[tokio::test]
async fn retry_after_as_http_date_is_read() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_mins(2));
    let header = Box::leak(date.into_boxed_str());
    let server = Server::always(vec![Step::Write(http(
        429,
        &[("retry-after", header)],
        r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
    ))])
    .await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    let delay = err.retry_after().expect("an HTTP-date Retry-After is read");
    assert!(
        delay > Duration::from_secs(100) && delay <= Duration::from_mins(2),
        "{delay:?}"
    );
}

#[tokio::test]
async fn no_answer_head_times_out() {
    let server = Server::always(vec![Step::Hang]).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::Timeout, "{err}");
    assert_eq!(err.provider(), Some("openai-test"));
}

#[tokio::test]
async fn body_that_stops_mid_way_times_out() {
    let mut head = http(200, &[], COMPLETION);
    head.truncate(head.len() - COMPLETION.len() / 2);
    let server = Server::always(vec![Step::Write(head), Step::Hang]).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn body_that_trickles_past_the_total_timeout_times_out() {
    // Every byte arrives well within the idle timeout, but the whole takes too long.
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n".to_vec();
    let mut steps = vec![Step::Write(head)];
    for _ in 0..40 {
        steps.push(Step::Write(b" ".to_vec()));
        steps.push(Step::Pause(Duration::from_millis(50)));
    }
    let server = Server::always(steps).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn error_body_that_never_ends_still_yields_the_status_error() {
    let head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 5000\r\nretry-after: 7\r\n\r\n{\"error\"".to_vec();
    let server = Server::always(vec![Step::Write(head), Step::Hang]).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::Overloaded, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = Server::always(vec![]).await.config();
    config.client.base_url = format!("http://{addr}/v1");
    let client = brace_providers::openai::OpenAiClient::new(config).unwrap();
    let err = guard(client.oneshot(request(false))).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Connect, "{err}");
    assert!(
        !err.to_string().contains(&addr.port().to_string()),
        "no URL in {err}"
    );
}

#[tokio::test]
async fn connection_dropped_before_the_answer_is_a_connect_error() {
    let server = Server::always(vec![]).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::Connect, "{err}");
    assert!(err.kind().is_retryable());
}

#[tokio::test]
async fn connection_dropped_mid_body_is_an_interrupted_answer() {
    let mut answer = http(200, &[], COMPLETION);
    answer.truncate(answer.len() - 40);
    let server = Server::always(vec![Step::Write(answer)]).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted, "{err}");
    assert!(err.kind().is_retryable());
}

#[tokio::test]
async fn malformed_json_is_a_malformed_response_naming_the_problem() {
    for body in [
        r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}"#,
        "not json at all",
        r#"{"id":"x","model":"m","choices":"many"}"#,
        r#"{"id":"x","model":"m","choices":[]}"#,
        "",
    ] {
        let server = Server::always(vec![Step::Write(http(200, &[], body))]).await;
        let err = call_err(&server).await;
        assert_eq!(err.kind(), LlmErrorKind::MalformedResponse, "{body}: {err}");
        assert!(!err.message().is_empty());
    }
}

#[tokio::test]
async fn error_object_with_a_success_status_is_read_as_an_error() {
    let body = r#"{"error":{"message":"model is loading","type":"unavailable_error","code":null}}"#;
    let server = Server::always(vec![Step::Write(http(200, &[], body))]).await;
    let err = call_err(&server).await;
    assert_eq!(err.kind(), LlmErrorKind::MalformedResponse);
    assert_eq!(err.message(), "model is loading");
}

#[tokio::test]
async fn complete_answer_names_the_model_that_answered() {
    let (meta, completion) = completion_of(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    assert_eq!(&*meta.provider, "openai-test");
    assert_eq!(meta.model, "gpt-4o-2024-08-06");
    assert_eq!(completion.text(), "Hello! How can I assist you today?");
    assert_eq!(completion.extra["system_fingerprint"], "fp_fc9f1d7035");
    // The body is kept with the completion, to be forwarded as it came.
    assert_eq!(completion.json().unwrap(), COMPLETION.as_bytes());
    assert_eq!(completion.to_json().unwrap(), COMPLETION.as_bytes());
}

#[tokio::test]
async fn an_answer_changed_after_it_was_read_is_written_out_as_changed() {
    let (_, mut completion) = completion_of(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    completion.choices[0].message = brace_llm::Message::assistant("changed");
    assert!(completion.json().is_none());
    let written: serde_json::Value =
        serde_json::from_slice(&completion.to_json().unwrap()).unwrap();
    assert_eq!(written["choices"][0]["message"]["content"], "changed");
    assert_eq!(written["system_fingerprint"], "fp_fc9f1d7035");
}

/// Who answered and the whole completion of `steps`' answer, read through the client.
async fn completion_of(steps: Vec<Step>) -> (brace_llm::ResponseMeta, brace_llm::CompletionBody) {
    let server = Server::always(steps).await;
    let response = guard(server.client().oneshot(request(false)))
        .await
        .unwrap();
    let ResponseBody::Complete(completion) = response.body else {
        panic!("expected a whole completion");
    };
    (response.meta, completion)
}

/// The text of `steps`' answer, read through the client.
async fn text_of(steps: Vec<Step>) -> String {
    completion_of(steps).await.1.text()
}

#[tokio::test]
async fn an_answer_that_arrives_in_pieces_is_read_whole() {
    // With a length: the head and three pieces of the body, each written on its own.
    let whole = http(200, &[], COMPLETION);
    let head_len = whole.len() - COMPLETION.len();
    let third = COMPLETION.len() / 3;
    let mut steps = vec![Step::Write(whole[..head_len].to_vec())];
    for piece in whole[head_len..].chunks(third) {
        steps.push(Step::Pause(Duration::from_millis(20)));
        steps.push(Step::Write(piece.to_vec()));
    }
    assert_eq!(text_of(steps).await, "Hello! How can I assist you today?");

    // Without one (chunked): the body ends when its last chunk says so.
    let (a, b) = COMPLETION.split_at(COMPLETION.len() / 2);
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let steps = vec![
        Step::Write(head.to_vec()),
        Step::Write(format!("{:x}\r\n{a}\r\n", a.len()).into_bytes()),
        Step::Pause(Duration::from_millis(20)),
        Step::Write(format!("{:x}\r\n{b}\r\n0\r\n\r\n", b.len()).into_bytes()),
    ];
    assert_eq!(text_of(steps).await, "Hello! How can I assist you today?");
}

#[tokio::test]
async fn answers_are_not_followed_through_redirects() {
    let server = Server::always(vec![Step::Write(http(
        307,
        &[("location", "http://127.0.0.1:1/elsewhere")],
        "",
    ))])
    .await;
    let err = call_err(&server).await;
    assert_eq!(err.status(), Some(307));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn probe_succeeds_on_a_model_list_and_fails_with_the_kind() {
    let list = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1,"owned_by":"system"}]}"#;
    let server = Server::start(move |n| match n {
        0 => vec![Step::Write(http(200, &[], list))],
        1 => vec![Step::Write(http(
            401,
            &[],
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        ))],
        _ => vec![Step::Hang],
    })
    .await;
    let client = server.client();
    guard(client.probe()).await.unwrap();
    assert_eq!(server.seen()[0].request_line(), "GET /v1/models HTTP/1.1");
    let err = guard(client.probe()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Auth);
    let err = guard(client.probe()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Timeout);
}

#[tokio::test]
async fn concurrent_calls_share_the_pool_and_all_answer() {
    let server = Server::always(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    let client = server.client();
    let calls = (0..16).map(|_| client.clone().oneshot(request(false)));
    let results = guard(futures::future::join_all(calls)).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(server.seen().len(), 16);
}

#[tokio::test]
async fn oversized_answer_is_refused_not_buffered() {
    let server = Server::always(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    let mut config = server.config();
    config.client.max_response_bytes = 100;
    let client = brace_providers::openai::OpenAiClient::new(config).unwrap();
    let err = guard(client.oneshot(request(false))).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::MalformedResponse, "{err}");
    assert!(err.message().contains("larger than 100 bytes"), "{err}");
}

#[tokio::test]
async fn huge_error_body_is_read_only_up_to_the_cap() {
    let body = format!(
        r#"{{"error":{{"message":"{}","type":"server_error"}}}}"#,
        "x".repeat(1024 * 1024)
    );
    let server = Server::always(vec![Step::Write(http(500, &[], &body))]).await;
    let err = call_err(&server).await;
    // The body is cut at the cap, so it is no longer JSON: the status decides the kind.
    assert_eq!(err.kind(), LlmErrorKind::Server, "{}", err.kind());
    assert!(err.message().len() < 64 * 1024);
}
