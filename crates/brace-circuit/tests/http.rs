//! `StatusClassifier` works for `http::Response`s.

use brace_circuit::{CircuitBreakerLayer, CircuitOpen, CircuitState};
use brace_core::StatusClassifier;
use http::{Response, StatusCode};
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn status_classifier_counts_server_errors_and_ignores_client_errors() {
    let layer = CircuitBreakerLayer::builder("upstream")
        .consecutive_failures(3)
        .classifier(StatusClassifier::new())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|status: u16| async move {
            Ok::<_, std::io::Error>(
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .body(())
                    .unwrap(),
            )
        });
    let mut send = async |status: u16| service.ready().await.unwrap().call(status).await;

    for status in [503, 502, 404, 400, 200] {
        send(status).await.unwrap();
    }
    let metrics = handle.metrics();
    assert_eq!((metrics.buffered_calls, metrics.failed_calls), (3, 2));
    assert_eq!(handle.state(), CircuitState::Closed);

    for status in [500, 429, 503] {
        // A 5xx response is still a response: the caller gets it.
        assert_eq!(send(status).await.unwrap().status().as_u16(), status);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let err = send(200).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().name(),
        "upstream"
    );
}
