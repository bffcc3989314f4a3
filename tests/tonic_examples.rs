//! The two tonic examples, run through their own `run` and `check` (real sockets on
//! 127.0.0.1): `cargo test --workspace` does not run examples, CI runs them as well.

// Each example loads the shared gRPC module itself, as it must when built alone.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/tonic_server.rs"]
#[allow(dead_code)] // the example's `main` is not called here
mod tonic_server;

#[path = "../examples/tonic_provider.rs"]
#[allow(dead_code)]
mod tonic_provider;

#[tokio::test]
async fn the_grpc_service_answers_each_failure_with_its_status() {
    let results = tonic_server::run().await.unwrap();
    tonic_server::check(&results).unwrap();
}

#[tokio::test]
async fn the_grpc_provider_is_retried_and_broken_by_grpc_codes() {
    let report = tonic_provider::run().await.unwrap();
    tonic_provider::check(&report).unwrap();
}
