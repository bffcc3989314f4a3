//! `--demo`: drive traffic through a running gateway and show, live, what the stack does.
//!
//! The traffic runs in phases over the demo's duration, scripting the embedded simulated
//! providers through their handles: normal (the primary is flaky), the primary goes down
//! (its circuit opens and traffic moves to the secondary), every provider goes down (the
//! degradation level drops to cached answers and the static message), and everything
//! recovers (circuits close, the level climbs back).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use brace_llm::LlmErrorKind;
use brace_sim::Behavior;

use crate::stack::Gateway;

/// How the demo drives traffic.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// How long the traffic runs.
    pub duration: Duration,
    /// Requests per second.
    pub rate: u32,
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    errors: BTreeMap<u16, u64>,
    by_provider: BTreeMap<String, u64>,
    by_level: BTreeMap<String, u64>,
    cache_hits: u64,
    static_answers: u64,
    attempts: u64,
    latency_ms: Vec<f64>,
}

/// How each provider's circuit moved during the demo.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CircuitMoves {
    /// Times it opened.
    pub opened: u32,
    /// Times it closed again.
    pub closed: u32,
}

/// What the demo showed: the story it is meant to tell, checked.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The primary provider's name.
    pub primary: String,
    /// How each provider's circuit moved, by name.
    pub circuits: BTreeMap<String, CircuitMoves>,
    /// Answers the static level gave.
    pub static_answers: u64,
    /// Requests answered, and sent.
    pub answered: (u64, u64),
}

impl DemoReport {
    /// Checks the demo told its story: the primary's circuit opened when it died and closed
    /// when it healed, and the static level answered while everything was down.
    ///
    /// # Errors
    ///
    /// What did not happen.
    pub fn check(&self) -> Result<(), String> {
        let primary = self
            .circuits
            .get(&self.primary)
            .copied()
            .unwrap_or_default();
        let mut missing = Vec::new();
        if primary.opened == 0 {
            missing.push(format!(
                "the primary's circuit (`{}`) never opened",
                self.primary
            ));
        }
        if primary.closed == 0 {
            missing.push(format!(
                "the primary's circuit (`{}`) never closed again",
                self.primary
            ));
        }
        if self.static_answers == 0 {
            missing.push("the static level never answered".to_owned());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}

const PROMPTS: [&str; 4] = [
    "What is a circuit breaker?",
    "Explain retries with jitter.",
    "Why degrade instead of failing?",
    "What is failover?",
];

/// Runs the demo against the gateway listening on `addr`.
///
/// # Errors
///
/// An error if the HTTP client cannot be built.
pub async fn run(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    options: DemoOptions,
) -> Result<DemoReport, Box<dyn std::error::Error>> {
    brace_providers::provider::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("http://{addr}/v1/chat/completions");
    let tally = Arc::new(Mutex::new(Tally::default()));
    // Every circuit transition, counted as it happens (the view samples state four times a
    // second and could miss a short open).
    let moves: Arc<Mutex<BTreeMap<String, CircuitMoves>>> = Arc::default();
    let mut watchers = tokio::task::JoinSet::new();
    for handle in gateway.circuits().handles() {
        let mut events = handle.subscribe();
        let moves = moves.clone();
        watchers.spawn(async move {
            while let Ok(event) = events.recv().await {
                let mut moves = moves.lock();
                let entry = moves.entry(event.name().to_owned()).or_default();
                match event.to() {
                    brace_circuit::CircuitState::Open => entry.opened += 1,
                    brace_circuit::CircuitState::Closed => entry.closed += 1,
                    _ => {}
                }
            }
        });
    }
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redraw = tokio::time::interval(Duration::from_millis(250));
    let tty = std::io::stdout().is_terminal();
    let mut phase = Phase::Normal;
    let mut last_line = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut n: usize = 0;
    // Each redraw clears the screen: the banner's hint is shown again under the view.
    let hint = crate::banner::curl_hint(addr, &gateway.config());

    loop {
        let elapsed = start.elapsed();
        if elapsed >= options.duration {
            break;
        }
        let next = Phase::at(elapsed.as_secs_f64() / options.duration.as_secs_f64());
        if next != phase {
            phase = next;
            phase.apply(&gateway);
        }
        tokio::select! {
            _ = ticker.tick() => {
                n += 1;
                // Three requests in four repeat a question (cacheable); the fourth is new
                // every time, so while everything is down only the static level answers it.
                let question = if n % 4 == 3 {
                    format!("Question #{n}: what changed since the last one?")
                } else {
                    PROMPTS[n % PROMPTS.len()].to_owned()
                };
                let body = serde_json::json!({
                    "model": "demo",
                    "temperature": 0,
                    "messages": [{"role": "user", "content": question}],
                });
                let client = client.clone();
                let url = url.clone();
                let tally = tally.clone();
                in_flight.spawn(async move {
                    let sent = Instant::now();
                    let response = client.post(&url).json(&body).send().await;
                    let mut tally = tally.lock();
                    tally.sent += 1;
                    match response {
                        Ok(response) if response.status().is_success() => {
                            tally.ok += 1;
                            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
                            *tally.by_provider.entry(header("x-brace-provider")).or_default() += 1;
                            *tally.by_level.entry(header("x-brace-degradation")).or_default() += 1;
                            if header("x-brace-cache") == "hit" {
                                tally.cache_hits += 1;
                            }
                            if header("x-brace-static") == "true" {
                                tally.static_answers += 1;
                            }
                            tally.attempts += header("x-brace-attempts").parse::<u64>().unwrap_or(0);
                            tally.latency_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                        Ok(response) => *tally.errors.entry(response.status().as_u16()).or_default() += 1,
                        Err(_) => *tally.errors.entry(0).or_default() += 1,
                    }
                });
            }
            _ = redraw.tick() => {
                while in_flight.try_join_next().is_some() {}
                let view = render(&gateway, &tally.lock(), &moves.lock(), elapsed, options.duration, phase);
                if tty {
                    print!("{}", frame(&view, &hint));
                    let _ = std::io::stdout().flush();
                } else if last_line.elapsed() >= Duration::from_secs(2) {
                    last_line = Instant::now();
                    println!("{}", view.lines().take(3).collect::<Vec<_>>().join(" | "));
                }
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
    Phase::Recovered.apply(&gateway);
    watchers.abort_all();
    let moves = moves.lock().clone();
    let tally = tally.lock();
    if tty {
        print!("\x1b[2J\x1b[H");
    }
    println!(
        "{}",
        render(
            &gateway,
            &tally,
            &moves,
            options.duration,
            options.duration,
            Phase::Recovered
        )
    );
    println!("{}", summary(&tally, &moves));
    Ok(DemoReport {
        primary: gateway
            .config()
            .providers
            .iter()
            .min_by_key(|p| p.priority)
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        circuits: moves,
        static_answers: tally.static_answers,
        answered: (tally.ok, tally.sent),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Normal,
    PrimaryDown,
    AllDown,
    Recovered,
}

impl Phase {
    fn at(progress: f64) -> Self {
        match progress {
            p if p < 0.25 => Self::Normal,
            p if p < 0.55 => Self::PrimaryDown,
            p if p < 0.70 => Self::AllDown,
            _ => Self::Recovered,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Normal => "normal: the primary fails one call in five; retries hide it",
            Self::PrimaryDown => {
                "the primary is down: 3 failures in a row open its circuit, traffic fails over"
            }
            Self::AllDown => {
                "every provider is down: circuits open, answers come from cache and the static level"
            }
            Self::Recovered => {
                "providers healed: after each circuit's 3 s wait a trial closes it, the level climbs back"
            }
        }
    }

    fn apply(self, gateway: &Gateway) {
        let down = || Behavior::fail(LlmErrorKind::Server);
        let set = |name: &str, behavior: Behavior| {
            if let Some(sim) = gateway.sim(name) {
                sim.set_behavior(behavior);
            }
        };
        let defaults: Vec<_> = gateway
            .config()
            .providers
            .iter()
            .map(|p| (p.name.clone(), p.simulate.clone().unwrap_or_default()))
            .collect();
        match self {
            Self::Normal | Self::Recovered => {
                for (name, behavior) in defaults {
                    set(&name, behavior);
                }
            }
            Self::PrimaryDown => {
                if let Some((name, _)) = defaults.first() {
                    set(name, down());
                }
            }
            Self::AllDown => {
                for (name, _) in defaults {
                    set(&name, down());
                }
            }
        }
    }
}

/// One screen of the live view on a terminal: the screen is cleared, then the view and the
/// banner's hint (which the clear would otherwise wipe) are drawn.
fn frame(view: &str, hint: &str) -> String {
    format!("\x1b[2J\x1b[H{view}\nwhile the demo runs, {hint}")
}

fn bar(done: f64, width: usize) -> String {
    let filled = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

fn render(
    gateway: &Gateway,
    tally: &Tally,
    moves: &BTreeMap<String, CircuitMoves>,
    elapsed: Duration,
    total: Duration,
    phase: Phase,
) -> String {
    let mut out = String::new();
    let progress = elapsed.as_secs_f64() / total.as_secs_f64();
    let level = gateway.degradation().level();
    let _ = writeln!(
        out,
        "brace demo {} {:>3.0}%  {:.0}s/{:.0}s",
        bar(progress, 40),
        progress.min(1.0) * 100.0,
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    );
    let _ = writeln!(out, "phase: {}", phase.describe());
    let _ = writeln!(
        out,
        "requests: {} sent, {} ok, {} failed, {} static; degradation level: {}\n",
        tally.sent,
        tally.ok,
        tally.errors.values().sum::<u64>(),
        tally.static_answers,
        level.name()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>10} {:>10} {:>8} {:>7} {:>7}",
        "provider", "served", "circuit", "retry in", "fails", "opened", "closed"
    );
    let health = gateway.health();
    for provider in &gateway.config().providers {
        let served = tally.by_provider.get(&provider.name).copied().unwrap_or(0);
        let circuit = gateway
            .circuit_state(&provider.name)
            .map_or("-", |s| s.as_str());
        let h = health.iter().find(|h| *h.name == *provider.name);
        let wait = h.and_then(|h| h.unhealthy_for).map_or_else(
            || "-".to_owned(),
            |wait| format!("{:.1}s", wait.as_secs_f64()),
        );
        let moved = moves.get(&provider.name).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>10} {:>10} {:>8} {:>7} {:>7}",
            provider.name,
            served,
            circuit,
            wait,
            h.map_or(0, |h| h.failures),
            moved.opened,
            moved.closed,
        );
    }
    for (name, count) in &tally.by_provider {
        if !gateway.has_provider(name) {
            let _ = writeln!(out, "{name:<16} {count:>8}");
        }
    }
    out
}

fn summary(tally: &Tally, moves: &BTreeMap<String, CircuitMoves>) -> String {
    let mut latencies = tally.latency_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mut out = String::from("\nsummary\n");
    let _ = writeln!(out, "{:<28} {:>10}", "requests sent", tally.sent);
    let _ = writeln!(
        out,
        "{:<28} {:>9.1}%",
        "answered",
        if tally.sent == 0 {
            0.0
        } else {
            tally.ok as f64 * 100.0 / tally.sent as f64
        }
    );
    let _ = writeln!(
        out,
        "{:<28} {:>10.2}",
        "attempts per answer",
        if tally.ok == 0 {
            0.0
        } else {
            tally.attempts as f64 / tally.ok as f64
        }
    );
    let _ = writeln!(out, "{:<28} {:>10}", "cache hits", tally.cache_hits);
    let _ = writeln!(out, "{:<28} {:>10}", "static answers", tally.static_answers);
    for (name, moved) in moves {
        let _ = writeln!(
            out,
            "{:<28} {:>10}",
            format!("circuit {name}"),
            format!("opened {}, closed {}", moved.opened, moved.closed)
        );
    }
    let _ = writeln!(out, "{:<28} {:>8.1}ms", "latency p50", pct(0.5));
    let _ = writeln!(out, "{:<28} {:>8.1}ms", "latency p99", pct(0.99));
    for (level, count) in &tally.by_level {
        let _ = writeln!(
            out,
            "{:<28} {:>10}",
            format!("answered at level {level}"),
            count
        );
    }
    for (status, count) in &tally.errors {
        let label = if *status == 0 {
            "transport errors".to_owned()
        } else {
            format!("HTTP {status}")
        };
        let _ = writeln!(out, "{label:<28} {count:>10}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_redraws_the_hint_after_clearing_the_screen() {
        let config = crate::GatewayConfig::demo();
        let hint = crate::banner::curl_hint("127.0.0.1:8080".parse().unwrap(), &config);
        let frame = frame("brace demo [----]", &hint);
        let cleared = frame.rfind("\x1b[2J").expect("the screen is cleared");
        let shown = frame
            .find(r#""model":"sim-large""#)
            .expect("the hint is drawn");
        assert!(shown > cleared, "{frame:?}");
    }
}
