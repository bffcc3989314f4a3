//! Instant simulated providers over HTTP on `127.0.0.1`, for the load benches.
//!
//! Starts one [`SimServer`] per name (each on a free port), prints `NAME URL` per line, then
//! serves until SIGINT/SIGTERM or `--lifetime` elapses. Each port speaks HTTP/1.1 and
//! cleartext HTTP/2 (prior knowledge, up to [`SimServer::MAX_CONCURRENT_STREAMS`] streams per
//! connection); `GET /_sim/stats` counts the calls by HTTP version. Each server answers at once and can
//! be steered through `POST /_sim/behavior` (e.g. to fail 30% of requests).
//!
//! `simserver --names primary,secondary,tertiary`

use std::io::Write;
use std::time::Duration;

use brace_sim::{SimConfig, SimHandle, SimServer};
use clap::Parser;

/// Instant simulated LLM providers on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The providers' names, comma-separated (one server each).
    #[arg(long, value_delimiter = ',', default_value = "sim")]
    names: Vec<String>,
    /// Seed of the simulated providers' random choices (flaky behaviours).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Exit after this many seconds at the latest.
    #[arg(long, default_value_t = 3600)]
    lifetime: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> std::process::ExitCode {
    let mut servers = Vec::with_capacity(args.names.len());
    for name in &args.names {
        let config = SimConfig::new(name.as_str()).with_seed(args.seed);
        match SimServer::start(SimHandle::new(config)).await {
            Ok(server) => {
                println!("{name} {}", server.base_url());
                servers.push(server);
            }
            Err(err) => {
                eprintln!("error: cannot start `{name}`: {err}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let _ = std::io::stdout().flush();
    wait_for_stop(Duration::from_secs(args.lifetime)).await;
    for server in servers {
        server.shutdown().await;
    }
    std::process::ExitCode::SUCCESS
}

async fn wait_for_stop(lifetime: Duration) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
        () = tokio::time::sleep(lifetime) => {}
    }
}
