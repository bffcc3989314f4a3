//! What the Redis state store adds to a request on the success path, against the in-memory
//! store in the same run: the whole gateway (`Gateway::call`, three in-process simulated
//! providers) built four ways — in memory, with a Redis store, and each again with a rate
//! limit on the primary high enough never to refuse — timed in interleaved batches, each
//! read against the in-memory gateway of the same round (see `interleaved.rs` for why).
//!
//! Run with: `BRACE_REDIS_URL=redis://127.0.0.1:6379 cargo bench -p brace-bench --bench state_store`
//! (`ROUNDS` and `BATCH` in the environment change the defaults of 200 rounds of 1 000
//! calls). Without `BRACE_REDIS_URL` it says so and measures nothing.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::{ChatRequest, Message};
use common::stats::{env_or, median, quartiles};
use tokio::runtime::Runtime;
use tokio::time::Instant;

fn gateway(rt: &Runtime, url: &str, redis: bool, rate_limit: bool) -> Arc<Gateway> {
    let limit = if rate_limit {
        ", rate_limit: { requests_per_minute: 100000000, tokens_per_minute: 100000000000 }"
    } else {
        ""
    };
    let state = if redis {
        format!(
            "state: {{ redis_url_env: BRACE_REDIS_URL, key_prefix: 'bench:{:08x}:' }}",
            fastrand::u32(..)
        )
    } else {
        String::new()
    };
    let yaml = format!(
        r"
providers:
  - {{ name: sim-primary, kind: simulated, model: sim-a, priority: 1 {limit} }}
  - {{ name: sim-secondary, kind: simulated, model: sim-b, priority: 2 }}
  - {{ name: sim-tertiary, kind: simulated, model: sim-c, priority: 3 }}
fallback: {{ max_retries: 1 }}
cache: {{ enabled: false }}
{state}
"
    );
    let url = url.to_owned();
    let gateway = rt.block_on(async move {
        let gateway =
            Gateway::build_with_env(GatewayConfig::from_yaml(&yaml).unwrap(), move |var| {
                (var == "BRACE_REDIS_URL").then(|| url.clone())
            })
            .unwrap();
        for _ in 0..400 {
            if gateway.state_store().is_up() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gateway
    });
    assert!(gateway.state_store().is_up(), "redis is reachable");
    gateway
}

fn batch(rt: &Runtime, gateway: &Arc<Gateway>, calls: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..calls {
            let request = ChatRequest::new("sim-a", vec![Message::user("Hello")]);
            black_box(gateway.call(black_box(request)).await.unwrap());
        }
        start.elapsed()
    })
}

fn main() {
    let Ok(url) = std::env::var("BRACE_REDIS_URL") else {
        println!(
            "BRACE_REDIS_URL is not set: start a redis-server and set it to measure the Redis store."
        );
        return;
    };
    let rounds = env_or("ROUNDS", 200).max(4);
    let calls = env_or("BATCH", 1_000).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let gateways = [
        ("in-memory store", gateway(&rt, &url, false, false)),
        ("Redis store", gateway(&rt, &url, true, false)),
        ("in-memory + rate limit", gateway(&rt, &url, false, true)),
        (
            "Redis + rate limit (batched reservations)",
            gateway(&rt, &url, true, true),
        ),
    ];
    for (_, gateway) in &gateways {
        batch(&rt, gateway, calls);
    }
    let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); gateways.len()];
    for round in 0..rounds {
        let n = gateways.len();
        for k in 0..n {
            let i = (k + round as usize) % n;
            let elapsed = batch(&rt, &gateways[i].1, calls);
            per_call[i].push(elapsed.as_nanos() as f64 / calls as f64);
        }
    }
    let base = per_call[0].clone();
    println!("{rounds} rounds × {calls} calls per gateway, interleaved; ns per call.\n");
    println!(
        "| gateway | median ns/call | added over in-memory: median (p25 … p75) | median ratio |"
    );
    println!("|---|---|---|---|");
    for (i, (name, _)) in gateways.iter().enumerate() {
        let mut own = per_call[i].clone();
        let mut added: Vec<f64> = per_call[i].iter().zip(&base).map(|(a, b)| a - b).collect();
        let mut ratio: Vec<f64> = per_call[i].iter().zip(&base).map(|(a, b)| a / b).collect();
        let (low, high) = quartiles(&mut added);
        println!(
            "| {name} | {:.0} | {:+.0} ({:+.0} … {:+.0}) | {:.3}× |",
            median(&mut own),
            median(&mut added),
            low,
            high,
            median(&mut ratio),
        );
    }
}
