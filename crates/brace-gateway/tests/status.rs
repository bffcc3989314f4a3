//! How the gateway answers a failure of the stack: [`brace_gateway::gateway_status`] over
//! brace's give-up errors and provider errors.

use std::time::Duration;

use brace_core::{AllProvidersFailed, CircuitOpen, ProviderFailure, RetriesExhausted};
use brace_gateway::gateway_status;
use brace_llm::{LlmError, LlmErrorKind};
use http::StatusCode;

#[test]
fn gateway_status_maps_all_failed_to_429_or_503() {
    let limited = |secs| {
        Box::new(
            LlmError::new(LlmErrorKind::RateLimited, "slow down")
                .with_retry_after(Some(Duration::from_secs(secs))),
        )
    };
    let all_limited = AllProvidersFailed::new(vec![
        ProviderFailure::new("a", limited(30)),
        ProviderFailure::new(
            "b",
            Box::new(RetriesExhausted::new(
                3,
                brace_core::GiveUpReason::MaxRetries,
                limited(7),
            )),
        ),
    ]);
    assert_eq!(
        gateway_status(&all_limited),
        (StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)))
    );

    let mixed = AllProvidersFailed::new(vec![
        ProviderFailure::new("a", limited(30)),
        ProviderFailure::new("b", Box::new(CircuitOpen::new("b", None))),
        ProviderFailure::new("c", Box::new(LlmError::new(LlmErrorKind::Server, "boom"))),
    ]);
    assert_eq!(gateway_status(&mixed).0, StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn gateway_status_maps_open_circuits_and_timeouts() {
    assert_eq!(
        gateway_status(&CircuitOpen::new("a", Some(Duration::from_secs(4)))),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(4))
        )
    );
    assert_eq!(
        gateway_status(&tower::timeout::error::Elapsed::new()),
        (StatusCode::GATEWAY_TIMEOUT, None)
    );
    let refused = LlmError::new(LlmErrorKind::ContextLengthExceeded, "too long");
    assert_eq!(gateway_status(&refused), (StatusCode::BAD_REQUEST, None));
}
