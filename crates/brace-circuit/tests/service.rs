//! The service's tower contract: readiness comes from the inner service, errors are boxed,
//! and breakers stack.

use brace_circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen, CircuitState};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Service, ServiceExt};

fn layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder("inner")
        .consecutive_failures(2)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reports_the_inner_services_readiness_and_errors() {
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<u32, u32, _>(layer());
    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let response = service.call(1);
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request, 1);
    send.send_response(2);
    assert_eq!(response.await.unwrap(), 2);

    handle.send_error("not ready");
    let err = assert_ready_err!(service.poll_ready());
    assert_eq!(err.to_string(), "not ready");
}

#[tokio::test(start_paused = true)]
async fn open_breaker_does_not_call_the_inner_service() {
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<u32, u32, _>(layer());
    handle.allow(10);
    for _ in 0..2 {
        assert_ready_ok!(service.poll_ready());
        let response = service.call(1);
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error("boom");
        response.await.unwrap_err();
    }
    assert_ready_ok!(service.poll_ready());
    let err = service.call(2).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn an_inner_breakers_refusal_is_not_counted_by_an_outer_breaker() {
    let inner = layer();
    let outer = CircuitBreakerLayer::builder("outer")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let (inner_handle, outer_handle) = (inner.handle(), outer.handle());
    let mut service = tower::ServiceBuilder::new()
        .layer(outer)
        .layer(inner)
        .service_fn(|(): ()| async { Err::<(), _>(std::io::Error::other("down")) });
    // Two real failures open both; afterwards the inner breaker refuses.
    for _ in 0..2 {
        let _ = service.ready().await.unwrap().call(()).await;
    }
    outer_handle.reset();
    for _ in 0..5 {
        let err = service.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "inner");
    }
    assert_eq!(inner_handle.state(), CircuitState::Open);
    assert_eq!(outer_handle.state(), CircuitState::Closed);
    assert_eq!(outer_handle.metrics().buffered_calls, 0);
}

#[test]
fn service_gives_access_to_its_inner_service_and_breaker() {
    let layer = layer();
    let mut service = CircuitBreaker::new(7u8, layer.handle());
    assert_eq!(*service.get_ref(), 7);
    *service.get_mut() = 8;
    assert!(service.handle().same_breaker(&layer.handle()));
    assert_eq!(service.into_inner(), 8);
}
