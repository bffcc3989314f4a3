//! One current-thread runtime per core, each with its own `SO_REUSEPORT` listener on one
//! address, over real loopback sockets: every thread serves, all of them share one stack
//! (one provider registry), and a stop ends them all gracefully.
#![cfg(unix)]

use std::time::Duration;

use brace_gateway::per_core::PerCore;
use brace_gateway::{Gateway, GatewayConfig};

const YAML: &str = "providers:\n  - { name: sim-a, kind: simulated, model: sim-model, priority: 1 }\n  \
                    - { name: sim-b, kind: simulated, model: sim-model, priority: 2 }\n";

#[test]
fn every_thread_serves_one_shared_stack_and_stops_gracefully() {
    brace_providers::provider::install_crypto_provider();
    // The gateway is built on a runtime of its own, which keeps running (as `main`'s does).
    let control = tokio::runtime::Runtime::new().unwrap();
    let gateway = control
        .block_on(async { Gateway::build(GatewayConfig::from_yaml(YAML).unwrap()).unwrap() });
    let serving = PerCore::start(&gateway, "127.0.0.1:0".parse().unwrap(), 2).unwrap();
    assert_eq!(serving.threads(), 2);
    let addr = serving.local_addr();
    assert_ne!(addr.port(), 0);

    // Each request on a fresh connection, so the kernel spreads them over both listeners.
    let requests = 40;
    control.block_on(async {
        for _ in 0..requests {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let response = tokio::time::timeout(
                Duration::from_secs(30),
                client
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(r#"{"model":"sim-model","messages":[{"role":"user","content":"hi"}]}"#)
                    .send(),
            )
            .await
            .expect("an answer in time")
            .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-brace-provider"], "sim-a");
        }
    });
    // One registry for every thread: it saw every request.
    let calls: u64 = gateway.health().iter().map(|p| p.calls).sum();
    assert_eq!(calls, requests);

    // Both sockets listen on the one port: a third bind without SO_REUSEPORT fails.
    assert!(std::net::TcpListener::bind(addr).is_err());

    serving.stop();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(serving.join());
    });
    ended
        .recv_timeout(Duration::from_secs(30))
        .expect("every thread ended")
        .unwrap();
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
