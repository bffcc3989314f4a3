//! Run with: `cargo run --release --example gateway`
//!
//! brace's whole stack behind an OpenAI-compatible API. With no arguments it serves an
//! embedded demo — three simulated providers in-process (a flaky primary, a slow secondary
//! and a steady local fallback) — on `127.0.0.1:8080`, so failover, circuit breaking and
//! degradation can be seen with no API key.
//!
//! - `--config FILE`: load a YAML configuration (see the README); it is reloaded on SIGHUP
//!   and when the file changes, without dropping a request.
//! - `--listen ADDR`: override the address.
//! - `--demo`: also drive traffic through the gateway for a while and show a live view of
//!   requests per provider, errors, circuit states and the degradation level.
//! - `--worker-threads N`: the number of tokio worker threads (default: one per CPU).
//! - `--runtime per-core|multi-thread|auto`: one single-threaded runtime per core (or per
//!   `--worker-threads`), each with its own listening socket on the address
//!   (`brace_gateway::per_core`), or tokio's multi-threaded runtime; `auto` (the default)
//!   takes per-core on machines with up to 4 cores, where it measured faster (BENCHMARKS.md).

// The allocator: mimalloc, which serves the couple of hundred small allocations of each
// request for much less CPU than the system allocator, set up by `brace_alloc` to give freed
// memory back at once (see that crate, and BENCHMARKS.md "Allocator").
#[global_allocator]
static ALLOCATOR: brace_alloc::Allocator = brace_alloc::Allocator;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use brace_gateway::{Gateway, GatewayConfig};

/// brace gateway: an OpenAI-compatible API that keeps answering when providers fail.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A YAML configuration file (default: the embedded demo on simulated providers).
    #[arg(long, env = "BRACE_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on (overrides the configuration's `listen`).
    #[arg(long, env = "BRACE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Drive demo traffic through the gateway and show a live view, then exit.
    #[arg(long)]
    demo: bool,
    /// How long the demo traffic runs.
    #[arg(long, default_value = "20s", value_parser = brace_core::duration::parse)]
    demo_duration: Duration,
    /// Demo requests per second.
    #[arg(long, default_value_t = 40)]
    demo_rate: u32,
    /// With `--demo`: exit with an error unless the demo told its story (the primary's
    /// circuit opened and closed, the static level answered) — for CI.
    #[arg(long)]
    demo_check: bool,
    /// Worker threads of the tokio runtime (default: one per CPU). On a machine the gateway
    /// shares with other busy processes, fewer workers mean fewer cross-thread wake-ups per
    /// request (see BENCHMARKS.md).
    #[arg(long, env = "BRACE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// How requests are scheduled: `per-core` (one single-threaded runtime per worker
    /// thread, each with its own `SO_REUSEPORT` listener: a connection stays on one thread),
    /// `multi-thread` (tokio's work-stealing runtime), or `auto`: per-core on machines with
    /// up to 4 cores, multi-thread on larger ones (see BENCHMARKS.md). `--demo` always runs
    /// multi-thread.
    #[arg(long, env = "BRACE_RUNTIME", value_enum, default_value_t = RuntimeKind::Auto)]
    runtime: RuntimeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeKind {
    Auto,
    MultiThread,
    PerCore,
}

/// The most cores on which `auto` runs one runtime per core.
const PER_CORE_UP_TO: usize = 4;

impl RuntimeKind {
    /// `auto` decided for this machine (`demo`: always multi-thread).
    fn resolve(self, demo: bool) -> Self {
        match self {
            _ if demo => Self::MultiThread,
            Self::Auto => {
                let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
                if cores <= PER_CORE_UP_TO {
                    Self::PerCore
                } else {
                    Self::MultiThread
                }
            }
            chosen => chosen,
        }
    }
}

fn main() -> std::process::ExitCode {
    brace_alloc::give_back_at_once();
    let mut args = Args::parse();
    args.runtime = args.runtime.resolve(args.demo);
    // Per core: this runtime builds the gateway and runs its background tasks, the serving
    // threads run their own.
    let mut runtime = match args.runtime {
        RuntimeKind::PerCore => tokio::runtime::Builder::new_current_thread(),
        RuntimeKind::MultiThread | RuntimeKind::Auto => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if let (Some(workers), RuntimeKind::MultiThread) = (args.worker_threads, args.runtime) {
        runtime.worker_threads(usize::from(workers));
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> std::process::ExitCode {
    let config = match &args.config {
        Some(path) => match GatewayConfig::from_file(path) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("error: {err}");
                return std::process::ExitCode::from(2);
            }
        },
        None => GatewayConfig::demo(),
    };
    let telemetry =
        match brace_gateway::telemetry::init(config.server.json_logs, args.demo, &config.telemetry)
        {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("error: {err}");
                return std::process::ExitCode::from(2);
            }
        };
    let traces = telemetry.settings().map(|settings| {
        format!(
            "traces: exported over OTLP ({}) to {}, service `{}`, {}% of new traces",
            settings.protocol,
            settings.endpoint,
            settings.service_name,
            settings.sample_ratio * 100.0
        )
    });
    let code = serve(args, config, traces).await;
    if let Err(err) = telemetry.shutdown().await {
        eprintln!("warning: {err}");
    }
    code
}

async fn serve(
    args: Args,
    config: GatewayConfig,
    traces: Option<String>,
) -> std::process::ExitCode {
    let listen = args.listen.unwrap_or(config.listen);
    let gateway = match Gateway::build(config) {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    // A configuration file is reloaded on SIGHUP and when it changes.
    let _watching = match &args.config {
        Some(path) => Some(AbortOnDrop(tokio::spawn(brace_gateway::reload::watch(
            gateway.clone(),
            path.clone(),
            brace_gateway::reload::WatchOptions::default(),
        )))),
        None => {
            gateway.set_config_source("embedded demo configuration (simulated providers)");
            None
        }
    };
    if args.runtime == RuntimeKind::PerCore {
        return serve_per_core(gateway, listen, &args, traces.as_deref()).await;
    }
    let (listener, addr) = match brace_gateway::bind(listen).await {
        Ok(bound) => bound,
        Err(err) => {
            eprintln!("error: cannot listen on {listen}: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    print_listening(addr, &args, &gateway, traces.as_deref());

    if args.demo {
        let server = tokio::spawn(brace_gateway::serve(
            gateway.clone(),
            listener,
            std::future::pending(),
        ));
        let options = brace_gateway::demo::DemoOptions {
            duration: args.demo_duration,
            rate: args.demo_rate,
        };
        let result = brace_gateway::demo::run(addr, gateway, options).await;
        server.abort();
        return match result {
            Ok(report) if args.demo_check => match report.check() {
                Ok(()) => {
                    println!(
                        "demo check: the primary's circuit opened and closed, the static level answered"
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(missing) => {
                    eprintln!("demo check failed: {missing}");
                    std::process::ExitCode::from(2)
                }
            },
            Ok(_) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                std::process::ExitCode::from(1)
            }
        };
    }
    match brace_gateway::serve(gateway, listener, brace_gateway::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The banner: where the gateway listens, its configuration, and where traces go.
fn print_listening(addr: SocketAddr, args: &Args, gateway: &Gateway, traces: Option<&str>) {
    let source = match &args.config {
        Some(path) => brace_gateway::banner::ConfigSource::File(path),
        None => brace_gateway::banner::ConfigSource::Demo,
    };
    print!(
        "{}",
        brace_gateway::banner::banner(addr, source, &gateway.config())
    );
    if let Some(traces) = traces {
        println!("{traces}");
    }
}

/// Serves with one current-thread runtime per worker thread until SIGINT/SIGTERM.
async fn serve_per_core(
    gateway: std::sync::Arc<Gateway>,
    listen: SocketAddr,
    args: &Args,
    traces: Option<&str>,
) -> std::process::ExitCode {
    let threads = args.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    let serving = match brace_gateway::per_core::PerCore::start(&gateway, listen, threads) {
        Ok(serving) => serving,
        Err(err) => {
            eprintln!("error: cannot listen on {listen}: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    print_listening(serving.local_addr(), args, &gateway, traces);
    println!(
        "runtime: {} threads, one single-threaded runtime each",
        serving.threads()
    );
    brace_gateway::shutdown_signal().await;
    serving.stop();
    match tokio::task::spawn_blocking(move || serving.join()).await {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(1)
        }
        Err(_) => std::process::ExitCode::from(1),
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
