//! A provider's [`RequestHook`] sees the headers of every request the client sends, after
//! the client's own, and what it adds goes out (how the gateway propagates `traceparent`),
//! on either HTTP client.

mod openai_fixture;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use brace_providers::HttpClient;
use brace_providers::openai::OpenAiClient;
use brace_providers::provider::RequestHook;
use openai_fixture::{COMPLETION, Server, Step, guard, http, request};
use tower::ServiceExt;

#[tokio::test]
async fn the_hook_adds_its_headers_to_every_request() {
    // On either HTTP client (the lean one is `auto`'s choice for this plain-http server).
    for choice in [HttpClient::Lean, HttpClient::Reqwest] {
        let server = Server::always(vec![Step::Write(http(200, &[], COMPLETION))]).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let config = server.config().map_client(|client| {
            client
                .with_http_client(choice)
                .with_request_hook(RequestHook::new(move |headers| {
                    // The client's own headers are already there.
                    assert!(headers.contains_key("authorization"));
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    headers.insert(
                        "traceparent",
                        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000{n:02x}-01")
                            .parse()
                            .unwrap(),
                    );
                }))
        });
        let client = OpenAiClient::new(config).unwrap();
        for _ in 0..2 {
            guard(client.clone().oneshot(request(false))).await.unwrap();
        }

        assert_eq!(calls.load(Ordering::SeqCst), 2, "{choice:?}");
        let sent: Vec<_> = server
            .seen()
            .iter()
            .map(|seen| seen.header("traceparent"))
            .collect();
        assert_eq!(
            sent,
            [
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-01".to_owned()),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000002-01".to_owned()),
            ],
            "{choice:?}"
        );
    }
}

#[tokio::test]
async fn without_a_hook_nothing_is_added() {
    let server = Server::always(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    guard(server.client().oneshot(request(false)))
        .await
        .unwrap();
    assert_eq!(server.seen()[0].header("traceparent"), None);
}
