//! The `full_stack` comparison with the stacks interleaved: every round times a short batch
//! of calls through each stack in turn, and the cost of a stack is read as the median over
//! rounds of its difference from the bare provider *in the same round*.
//!
//! On a shared virtual machine the speed of the CPU drifts by tens of percent over seconds;
//! criterion measures one function after another, so a drift lands on one function and not
//! the next. Pairing each stack with a baseline measured a few microseconds earlier cancels
//! the drift that the two share.
//!
//! Run with: `cargo bench -p brace-bench --bench interleaved` (about 30 s; `ROUNDS` and
//! `BATCH` in the environment change the defaults of 300 rounds of 2 000 calls).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod common;

use common::stats::{env_or, median, quartiles};
use common::{STACKS, build};

fn main() {
    let rounds = env_or("ROUNDS", 300).max(4);
    let batch = env_or("BATCH", 2_000).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    let mut stacks: Vec<(&str, common::Timed)> = STACKS
        .iter()
        .map(|&(name, what)| (what, build(name)))
        .collect();
    // Warm every stack up (caches, allocator, lazily built state) before measuring.
    for (_, stack) in &mut stacks {
        stack(&rt, batch);
    }
    let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); stacks.len()];
    for round in 0..rounds {
        // Rotate the order each round so no stack always runs right after another.
        let n = stacks.len();
        for k in 0..n {
            let i = (k + round as usize) % n;
            let elapsed = (stacks[i].1)(&rt, batch);
            per_call[i].push(elapsed.as_nanos() as f64 / batch as f64);
        }
    }
    let base = per_call[0].clone();
    println!("{rounds} rounds × {batch} calls per stack, interleaved; ns per call.\n");
    println!(
        "| stack | median ns/call | added over bare: median (p25 … p75) | median ratio to bare |"
    );
    println!("|---|---|---|---|");
    for (i, (name, _)) in stacks.iter().enumerate() {
        let mut own = per_call[i].clone();
        let mut added: Vec<f64> = per_call[i].iter().zip(&base).map(|(a, b)| a - b).collect();
        let mut ratio: Vec<f64> = per_call[i].iter().zip(&base).map(|(a, b)| a / b).collect();
        let (low, high) = quartiles(&mut added);
        println!(
            "| {name} | {:.0} | {:+.0} ({:+.0} … {:+.0}) | {:.2}× |",
            median(&mut own),
            median(&mut added),
            low,
            high,
            median(&mut ratio),
        );
    }
}
