//! `brace_gateway::serve` on a real socket (127.0.0.1): the protocols it speaks and how it
//! stops.

use std::time::Duration;

use brace_gateway::{Gateway, GatewayConfig};

const ONE_SIM: &str = r"
providers:
  - name: primary
    kind: simulated
    model: sim-model
    priority: 1
degradation:
  auto:
    enabled: false
server:
  shutdown_grace: 60s
";

struct Served {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve() -> Served {
    brace_providers::provider::install_crypto_provider();
    let gateway = Gateway::build(GatewayConfig::from_yaml(ONE_SIM).unwrap()).unwrap();
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brace_gateway::serve(gateway, listener, async move {
        let _ = stopped.await;
    }));
    Served {
        url: format!("http://{addr}"),
        stop,
        server,
    }
}

async fn health(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, reqwest::Version) {
    let response = client
        .get(format!("{url}/v1/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (response.status(), response.version())
}

#[tokio::test]
async fn serves_http1_and_http2_prior_knowledge_on_the_same_port() {
    let served = serve().await;
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    assert_eq!(
        health(&http1, &served.url).await,
        (reqwest::StatusCode::OK, reqwest::Version::HTTP_11)
    );
    assert_eq!(
        health(&http2, &served.url).await,
        (reqwest::StatusCode::OK, reqwest::Version::HTTP_2)
    );
    let _ = served.stop.send(());
}

#[tokio::test]
async fn stopping_closes_idle_keep_alive_connections_without_waiting_for_the_grace_period() {
    let served = serve().await;
    let client = reqwest::Client::new();
    // The connection stays open (keep-alive) after this answer.
    assert_eq!(
        health(&client, &served.url).await.0,
        reqwest::StatusCode::OK
    );

    let _ = served.stop.send(());
    // The grace period is 60 s: returning well before it means the idle connection was
    // closed at once rather than waited for.
    let result = tokio::time::timeout(Duration::from_secs(20), served.server)
        .await
        .expect("serve returned before the grace period")
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_fresh_uuid_and_a_given_id_is_kept() {
    let served = serve().await;
    let client = reqwest::Client::new();
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let first = client
        .get(format!("{}/v1/health", served.url))
        .send()
        .await
        .unwrap();
    let second = client
        .get(format!("{}/v1/health", served.url))
        .send()
        .await
        .unwrap();
    let (first, second) = (id_of(&first), id_of(&second));
    for id in [&first, &second] {
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(id.as_bytes()[14], b'4', "version 4: {id}");
    }
    assert_ne!(first, second);

    let given = client
        .get(format!("{}/v1/health", served.url))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&given), "caller-chosen-id");
    let _ = served.stop.send(());
    served.server.await.unwrap().unwrap();
}

/// `serve` answers chat requests without the router; everything else on that path is the
/// router's: another method is a 405, a near miss of the path a 404, both in OpenAI's shape.
#[tokio::test]
async fn the_chat_path_answers_posts_and_leaves_the_rest_to_the_router() {
    let served = serve().await;
    let client = reqwest::Client::new();
    let chat = format!("{}/v1/chat/completions", served.url);
    let body =
        serde_json::json!({"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]});

    let answer = client.post(&chat).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    assert_eq!(answer.headers()["x-brace-provider"], "primary");
    assert!(answer.headers().contains_key("x-request-id"));
    let completion: serde_json::Value = answer.json().await.unwrap();
    assert!(completion["choices"][0]["message"]["content"].is_string());

    for (request, status) in [
        (client.get(&chat), reqwest::StatusCode::METHOD_NOT_ALLOWED),
        (
            client.put(&chat).json(&body),
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            client.post(format!("{chat}/")).json(&body),
            reqwest::StatusCode::NOT_FOUND,
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let _ = served.stop.send(());
    served.server.await.unwrap().unwrap();
}
