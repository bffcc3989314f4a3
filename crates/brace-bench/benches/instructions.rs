//! Instructions per call through each stack of `full_stack`, counted by valgrind's callgrind:
//! a measure that does not move with the load on a shared machine, where wall time does.
//!
//! Each stack runs in a child process under valgrind twice, with a small and a large number
//! of calls; the difference divided by the difference in calls is the cost of one call, with
//! set-up, runtime start and valgrind's own start cancelled out. Instruction counts are not
//! time (a cache miss or a long `memcpy` costs more than its count says), so read them
//! next to `full_stack`'s wall times.
//!
//! Run with: `cargo bench -p brace-bench --bench instructions` (needs `valgrind` on `PATH`;
//! prints a note and exits when it is missing).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod common;

use brace_llm::ChatRequest;
use common::{
    Backend, STACKS, brace_stack, build, failover_stack, provider_stack, request, retry_timeout,
    tower_stack,
};
use tower::Service;

const FEW: u64 = 2_000;
const MANY: u64 = 12_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--child") {
        let stack = &args[at + 1];
        let calls: u64 = args[at + 2].parse().expect("a number of calls");
        child(stack, calls);
        return;
    }
    // `cargo bench` passes `--bench`; a further free argument filters the stacks.
    let filter = args
        .iter()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .cloned();
    if !common::callgrind::available() {
        println!("instructions: valgrind is not installed; nothing measured");
        return;
    }
    print_sizes();
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut bare = None;
    println!("| stack | instructions per call | added over bare | ratio to bare |");
    println!("|---|---|---|---|");
    for &(name, what) in STACKS {
        // The baseline is always measured: every row is read against it.
        if name != "bare"
            && filter
                .as_deref()
                .is_some_and(|filter| !name.contains(filter))
        {
            continue;
        }
        let few = count(&exe, name, FEW);
        let many = count(&exe, name, MANY);
        let per_call = many.saturating_sub(few) / (MANY - FEW);
        let base = *bare.get_or_insert(per_call);
        println!(
            "| {what} | {per_call} | {:+} | {:.2}× |",
            i128::from(per_call) - i128::from(base),
            per_call as f64 / base as f64,
        );
    }
}

/// The size of each stack's response future: every move of a future (into an `async`
/// block's state, into a layer's own future) copies this many bytes.
fn print_sizes() {
    fn size<S: Service<ChatRequest>>(mut service: S) -> usize {
        std::mem::size_of_val(&service.call(request()))
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    println!("Response future sizes (bytes):");
    println!("| stack | future size |");
    println!("|---|---|");
    for (what, bytes) in [
        ("bare simulated provider", size(Backend::ok("bare"))),
        ("tower retry + timeout", size(tower_stack(Backend::ok("t")))),
        (
            "brace retry → timeout",
            size(retry_timeout(Backend::ok("r"))),
        ),
        (
            "breaker → retry → timeout",
            size(provider_stack("b", Backend::ok("b"), true).0),
        ),
        ("failover (3) → …", size(failover_stack())),
        (
            "degrade → failover (3) → …",
            size(brace_stack(Backend::ok("p"), true, false).0),
        ),
    ] {
        println!("| {what} | {bytes} |");
    }
    println!();
    println!("Values every layer moves (bytes):");
    println!("| value | size |");
    println!("|---|---|");
    for (what, bytes) in [
        ("ChatRequest", size_of::<ChatRequest>()),
        ("ChatResponse", size_of::<brace_llm::ChatResponse>()),
        ("ResponseMeta", size_of::<brace_llm::ResponseMeta>()),
        ("ResponseBody", size_of::<brace_llm::ResponseBody>()),
        ("ChatCompletion", size_of::<brace_llm::ChatCompletion>()),
        ("Degradation", size_of::<brace_llm::degrade::Degradation>()),
        (
            "Result<ChatResponse, BoxError>",
            size_of::<Result<brace_llm::ChatResponse, brace_core::BoxError>>(),
        ),
    ] {
        println!("| {what} | {bytes} |");
    }
    println!();
}

/// Instructions valgrind counted for `calls` calls through `stack` (start-up included).
fn count(exe: &std::path::Path, stack: &str, calls: u64) -> u64 {
    common::callgrind::count(exe, &["--child", stack, &calls.to_string()], None)
}

/// Runs `calls` calls through `stack` on a current-thread runtime.
fn child(stack: &str, calls: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    build(stack)(&rt, calls);
}
