//! Failover drills: a fault-injection layer that makes one provider's real calls fail or
//! slow down, at a set rate, for a bounded time.
//!
//! Operators prove their fallbacks in production by breaking a provider on purpose and
//! watching the gateway route around it (Polly v8's chaos strategies are the model: fault,
//! outcome and latency injection at an injection rate, switched on and off at run time).
//! A drill
//!
//! - names a provider and one fault: `error_rate` (that share of calls fails, as a 503 from
//!   the provider unless `status` says otherwise), `status` (calls fail with that status),
//!   `latency` (calls are held that long first) or `stall` (calls never answer: the
//!   attempt's timeout ends them); `rate` is the share of calls hit (default all);
//! - lasts `duration` (at most a day) and **ends by itself**;
//! - starts with the configuration (`chaos: [...]`) or through the admin API
//!   (`POST /v1/chaos`, admin-protected; `DELETE /v1/chaos/{provider}` ends it early), and
//!   shows in `GET /v1/chaos`, the status page, the metrics (`brace_chaos_active`,
//!   `brace_chaos_injected_total{provider,fault}`) and an `x-brace-chaos` header on every
//!   answer while it runs.
//!
//! The injected faults happen where real ones do — between the provider's stream guard and
//! its client — so the breaker, retries, failover and metrics meet them as they would meet a
//! real outage. With no drill running the layer costs one atomic load per call.
//!
//! [`ChaosLayer`] is a plain tower layer over any service; the gateway puts one in every
//! provider's stack, each steered by that provider's [`ChaosSwitch`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tower::{Layer, Service};

/// The longest a drill may last.
pub const MAX_DURATION: Duration = Duration::from_hours(24);

// ===== configuration =====

/// One drill, as the configuration's `chaos` list and `POST /v1/chaos` write it.
///
/// # Example
///
/// ```
/// let config = brace_gateway::GatewayConfig::from_yaml(r#"
/// providers:
///   - name: sim-primary
///     kind: simulated
///     model: m
/// chaos:
///   - provider: sim-primary
///     error_rate: 0.5
///     duration: 2m
/// "#).unwrap();
/// assert_eq!(config.chaos[0].fault(), Some(brace_gateway::chaos::Fault::Error { status: 503 }));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// The provider whose calls the drill hits.
    pub provider: String,
    /// Fail this share of calls (0–1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Fail calls with this HTTP status (400–599; default 503 with `error_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Hold calls this long before they go out.
    #[serde(
        default,
        with = "brace_core::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency: Option<Duration>,
    /// Never answer calls (the attempt's timeout ends them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stall: bool,
    /// The share of calls hit by `status`, `latency` or `stall` (0–1], default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How long the drill lasts (at most a day); it ends by itself.
    #[serde(with = "brace_core::duration")]
    pub duration: Duration,
}

impl ChaosConfig {
    /// The fault, if exactly one is set.
    pub fn fault(&self) -> Option<Fault> {
        let error = self.error_rate.is_some() || self.status.is_some();
        match (error, self.latency, self.stall) {
            (true, None, false) => Some(Fault::Error {
                status: self.status.unwrap_or(503),
            }),
            (false, Some(latency), false) => Some(Fault::Latency(latency)),
            (false, None, true) => Some(Fault::Stall),
            _ => None,
        }
    }

    /// The share of calls hit.
    pub fn injection_rate(&self) -> f64 {
        self.error_rate.or(self.rate).unwrap_or(1.0)
    }

    /// Checks what deserializing cannot.
    ///
    /// # Errors
    ///
    /// The key at fault and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let faults = usize::from(self.error_rate.is_some() || self.status.is_some())
            + usize::from(self.latency.is_some())
            + usize::from(self.stall);
        if faults != 1 {
            return Err((
                "provider",
                format!(
                    "a drill on `{}` needs exactly one fault: `error_rate` and/or `status`, \
                     `latency`, or `stall: true`",
                    self.provider
                ),
            ));
        }
        let fraction = |value: f64| value > 0.0 && value <= 1.0;
        if let Some(rate) = self.error_rate {
            if !fraction(rate) {
                return Err((
                    "error_rate",
                    format!("`error_rate` must be a fraction in (0, 1], got {rate}"),
                ));
            }
            if self.rate.is_some() {
                return Err((
                    "rate",
                    "`error_rate` already is the share of calls hit: drop `rate`".to_owned(),
                ));
            }
        }
        if let Some(rate) = self.rate
            && !fraction(rate)
        {
            return Err((
                "rate",
                format!("`rate` must be a fraction in (0, 1], got {rate}"),
            ));
        }
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err((
                "status",
                format!("`status` must be an error status (400–599), got {status}"),
            ));
        }
        if self.latency.is_some_and(|latency| latency.is_zero()) {
            return Err(("latency", "`latency` must be more than zero".to_owned()));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err((
                "duration",
                format!(
                    "`duration` must be more than zero and at most 24h, got {:?}",
                    self.duration
                ),
            ));
        }
        Ok(())
    }
}

/// What a drill does to the calls it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this HTTP status, without reaching the provider.
    Error {
        /// The status.
        status: u16,
    },
    /// The call is held this long, then goes out.
    Latency(Duration),
    /// The call never answers.
    Stall,
}

impl Fault {
    /// `error`, `latency` or `stall` (the metrics' `fault` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error { .. } => "error",
            Self::Latency(_) => "latency",
            Self::Stall => "stall",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Error { .. } => 0,
            Self::Latency(_) => 1,
            Self::Stall => 2,
        }
    }

    const NAMES: [&'static str; 3] = ["error", "latency", "stall"];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error { status } => write!(f, "error {status}"),
            Self::Latency(latency) => write!(f, "latency {latency:?}"),
            Self::Stall => f.write_str("stall"),
        }
    }
}

/// A running drill.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    /// The fault.
    pub fault: Fault,
    /// The share of calls hit, (0, 1].
    pub rate: f64,
    /// When it started.
    pub started_at: Instant,
    /// When it ends by itself.
    pub ends_at: Instant,
    /// Who started it: `config` or `admin`.
    pub origin: &'static str,
}

impl Drill {
    /// The drill `config` describes, starting now.
    ///
    /// # Errors
    ///
    /// As [`ChaosConfig::validate`].
    pub fn from_config(
        config: &ChaosConfig,
        origin: &'static str,
    ) -> Result<Self, (&'static str, String)> {
        config.validate()?;
        let fault = config.fault().ok_or(("provider", "no fault".to_owned()))?;
        let now = Instant::now();
        Ok(Self {
            fault,
            rate: config.injection_rate(),
            started_at: now,
            ends_at: now + config.duration,
            origin,
        })
    }

    /// `true` until it ends.
    pub fn is_running(&self) -> bool {
        Instant::now() < self.ends_at
    }
}

// ===== the switch =====

/// Starts, ends and reads the drill on one provider; every [`ChaosLayer`] built from it (every
/// stack of that provider, across configuration reloads) obeys it.
///
/// # Clone
///
/// Cheap: clones are the same switch.
#[derive(Clone)]
pub struct ChaosSwitch {
    inner: Arc<SwitchInner>,
}

struct SwitchInner {
    name: Arc<str>,
    drill: ArcSwapOption<Drill>,
    injected: [AtomicU64; 3],
}

impl fmt::Debug for ChaosSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosSwitch")
            .field("name", &self.inner.name)
            .field("drill", &self.drill())
            .finish()
    }
}

impl ChaosSwitch {
    /// A switch with no drill, for the provider `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            inner: Arc::new(SwitchInner {
                name: name.into(),
                drill: ArcSwapOption::empty(),
                injected: Default::default(),
            }),
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Starts `drill`, replacing any running one.
    pub fn start(&self, drill: Drill) {
        tracing::warn!(
            provider = %self.inner.name,
            fault = %drill.fault,
            rate = drill.rate,
            duration_s = drill.ends_at.saturating_duration_since(drill.started_at).as_secs_f64(),
            origin = drill.origin,
            "chaos drill started"
        );
        self.inner.drill.store(Some(Arc::new(drill)));
    }

    /// Ends the running drill early; returns whether one was running.
    pub fn stop(&self) -> bool {
        let stopped = self
            .inner
            .drill
            .swap(None)
            .is_some_and(|drill| drill.is_running());
        if stopped {
            tracing::info!(provider = %self.inner.name, "chaos drill ended early");
        }
        stopped
    }

    /// The running drill, if any (a drill past its end is gone).
    pub fn drill(&self) -> Option<Arc<Drill>> {
        let drill = self.inner.drill.load_full()?;
        if drill.is_running() {
            return Some(drill);
        }
        // Ended by itself: forget it (unless another was started meanwhile).
        let ended = self
            .inner
            .drill
            .compare_and_swap(&Some(drill.clone()), None);
        if ended.as_ref().is_some_and(|now| Arc::ptr_eq(now, &drill)) {
            tracing::info!(provider = %self.inner.name, fault = %drill.fault, "chaos drill ended");
        }
        None
    }

    /// How many calls each fault hit so far: `[error, latency, stall]`.
    pub fn injected(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.inner.injected[i].load(Ordering::Relaxed))
    }

    /// The fault for the next call, if the drill hits it.
    fn pick(&self) -> Option<Fault> {
        // The common case — no drill — is one load.
        self.inner.drill.load().as_ref()?;
        let drill = self.drill()?;
        if drill.rate < 1.0 && fastrand::f64() >= drill.rate {
            return None;
        }
        self.inner.injected[drill.fault.index()].fetch_add(1, Ordering::Relaxed);
        Some(drill.fault)
    }
}

// ===== the layer =====

/// Injects the faults of a [`ChaosSwitch`]'s drill into the calls of the services it wraps.
///
/// `make_error` turns an injected status into the inner service's error type (the gateway
/// makes an `LlmError` as if the provider had answered with that status).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use brace_gateway::chaos::{ChaosConfig, ChaosLayer, ChaosSwitch, Drill};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let switch = ChaosSwitch::new("upstream");
/// let service = ServiceBuilder::new()
///     .layer(ChaosLayer::new(switch.clone(), |status: u16| format!("injected {status}")))
///     .service_fn(|x: u32| async move { Ok::<_, String>(x) });
/// assert_eq!(service.clone().oneshot(1).await, Ok(1));
///
/// let drill: ChaosConfig = serde_json::from_value(serde_json::json!({
///     "provider": "upstream", "status": 429, "duration": "2s"
/// })).unwrap();
/// switch.start(Drill::from_config(&drill, "admin").unwrap());
/// assert_eq!(service.clone().oneshot(2).await, Err("injected 429".to_owned()));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChaosLayer<F> {
    switch: ChaosSwitch,
    make_error: F,
}

impl<F> ChaosLayer<F> {
    /// A layer steered by `switch`.
    pub fn new(switch: ChaosSwitch, make_error: F) -> Self {
        Self { switch, make_error }
    }
}

impl<S, F: Clone> Layer<S> for ChaosLayer<F> {
    type Service = Chaos<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos {
            inner,
            switch: self.switch.clone(),
            make_error: self.make_error.clone(),
        }
    }
}

/// The service [`ChaosLayer`] makes.
///
/// # Clone
///
/// Clones share the switch.
#[derive(Debug, Clone)]
pub struct Chaos<S, F> {
    inner: S,
    switch: ChaosSwitch,
    make_error: F,
}

impl<S, F> Chaos<S, F> {
    brace_core::define_inner_service_accessors!();
}

impl<S, F, Req> Service<Req> for Chaos<S, F>
where
    S: Service<Req>,
    F: Fn(u16) -> S::Error,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let state = match self.switch.pick() {
            None => State::Pass {
                inner: self.inner.call(request),
            },
            Some(Fault::Error { status }) => State::Failed {
                error: Some((self.make_error)(status)),
            },
            Some(Fault::Latency(latency)) => State::Delayed {
                sleep: tokio::time::sleep(latency),
                inner: self.inner.call(request),
            },
            Some(Fault::Stall) => State::Stalled,
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of [`Chaos`]: the inner call, perhaps held first, or an injected failure,
    /// or nothing ever.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner call (if one was made); nothing else is held.
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Pass { #[pin] inner: F },
        Delayed { #[pin] sleep: tokio::time::Sleep, #[pin] inner: F },
        Failed { error: Option<E> },
        Stalled,
    }
}

impl<F, T, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Pass { inner } => inner.poll(cx),
            StateProj::Delayed { sleep, inner } => {
                ready!(sleep.poll(cx));
                inner.poll(cx)
            }
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("an injected failure is polled once"))),
            StateProj::Stalled => Poll::Pending,
        }
    }
}

// ===== every provider's switch =====

/// The switches of a gateway's providers, by name; kept across configuration reloads.
#[derive(Debug, Default)]
pub(crate) struct Switches {
    switches: RwLock<BTreeMap<String, ChaosSwitch>>,
}

/// A drill that cannot start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// No provider has this name.
    UnknownProvider(String),
    /// The drill is not valid: the key and why.
    Invalid(&'static str, String),
}

impl Switches {
    /// The switch of `provider`, created if new.
    pub(crate) fn switch(&self, provider: &str) -> ChaosSwitch {
        if let Some(switch) = self.switches.read().get(provider) {
            return switch.clone();
        }
        self.switches
            .write()
            .entry(provider.to_owned())
            .or_insert_with(|| ChaosSwitch::new(provider))
            .clone()
    }

    /// Starts the drill `config` describes, if its provider is one of `known`.
    pub(crate) fn start(
        &self,
        config: &ChaosConfig,
        origin: &'static str,
        known: impl Fn(&str) -> bool,
    ) -> Result<ChaosSwitch, StartError> {
        if !known(&config.provider) {
            return Err(StartError::UnknownProvider(config.provider.clone()));
        }
        let drill = Drill::from_config(config, origin)
            .map_err(|(key, why)| StartError::Invalid(key, why))?;
        let switch = self.switch(&config.provider);
        switch.start(drill);
        Ok(switch)
    }

    /// Ends the drill on `provider` early; whether one was running.
    pub(crate) fn stop(&self, provider: &str) -> bool {
        self.switches
            .read()
            .get(provider)
            .is_some_and(ChaosSwitch::stop)
    }

    /// Every switch.
    pub(crate) fn all(&self) -> Vec<ChaosSwitch> {
        self.switches.read().values().cloned().collect()
    }

    /// The running drills, by provider.
    pub(crate) fn running(&self) -> Vec<(ChaosSwitch, Arc<Drill>)> {
        self.all()
            .into_iter()
            .filter_map(|switch| switch.drill().map(|drill| (switch, drill)))
            .collect()
    }

    /// `GET /v1/chaos`: the running drills.
    pub(crate) fn json(&self) -> serde_json::Value {
        let drills: Vec<_> = self
            .running()
            .iter()
            .map(|(switch, drill)| drill_json(switch, drill))
            .collect();
        json!({ "drills": drills })
    }

    /// Mirrors the switches in the metrics: `brace_chaos_active{provider}` and
    /// `brace_chaos_injected_total{provider,fault}`.
    pub(crate) fn export(&self) {
        for switch in self.all() {
            let name = switch.name().to_owned();
            metrics::gauge!("brace_chaos_active", "provider" => name.clone())
                .set(if switch.drill().is_some() { 1.0 } else { 0.0 });
            for (index, count) in switch.injected().into_iter().enumerate() {
                metrics::counter!(
                    "brace_chaos_injected_total",
                    "provider" => name.clone(),
                    "fault" => Fault::NAMES[index],
                )
                .absolute(count);
            }
        }
    }

    /// The `x-brace-chaos` header's value while drills run: `provider=fault@rate` each.
    pub(crate) fn header(&self) -> Option<String> {
        // Asked on every answer: with no drill, one pass over the switches, nothing more.
        let any = self
            .switches
            .read()
            .values()
            .any(|switch| switch.inner.drill.load().is_some());
        if !any {
            return None;
        }
        let running = self.running();
        if running.is_empty() {
            return None;
        }
        let parts: Vec<_> = running
            .iter()
            .map(|(switch, drill)| {
                format!(
                    "{}={}@{}%",
                    switch.name(),
                    drill.fault.to_string().replace(' ', ":"),
                    (drill.rate * 100.0).round()
                )
            })
            .collect();
        Some(parts.join(", "))
    }
}

/// Starts the drills of `config`'s `chaos` section: all of them at start, and on a reload
/// those that are new or changed (a drill written the same way as before is left as it is,
/// running or ended).
pub(crate) fn start_configured(
    switches: &Switches,
    config: &crate::GatewayConfig,
    previous: Option<&crate::GatewayConfig>,
) {
    for drill in &config.chaos {
        if previous.is_some_and(|previous| previous.chaos.contains(drill)) {
            continue;
        }
        let known = |name: &str| config.providers.iter().any(|p| p.name == name);
        if let Err(err) = switches.start(drill, "config", known) {
            // The configuration was checked when it was read: this is not expected.
            tracing::error!(provider = %drill.provider, ?err, "chaos drill not started");
        }
    }
}

/// One running drill, as the API shows it.
pub(crate) fn drill_json(switch: &ChaosSwitch, drill: &Drill) -> serde_json::Value {
    let now = Instant::now();
    let [errors, delayed, stalled] = switch.injected();
    json!({
        "provider": switch.name(),
        "fault": drill.fault.as_str(),
        "status": match drill.fault { Fault::Error { status } => Some(status), _ => None },
        "latency_ms": match drill.fault {
            Fault::Latency(latency) => Some(latency.as_secs_f64() * 1000.0),
            _ => None,
        },
        "rate": drill.rate,
        "origin": drill.origin,
        "elapsed_s": now.saturating_duration_since(drill.started_at).as_secs_f64(),
        "ends_in_s": drill.ends_at.saturating_duration_since(now).as_secs_f64(),
        "injected": {"error": errors, "latency": delayed, "stall": stalled},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn drill(json: serde_json::Value) -> ChaosConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_drill_needs_exactly_one_fault_and_sane_bounds() {
        let ok = |value| drill(value).validate().map_err(|(key, _)| key);
        assert_eq!(
            ok(json!({"provider": "p", "error_rate": 0.5, "duration": "1m"})),
            Ok(())
        );
        assert_eq!(
            ok(json!({"provider": "p", "status": 429, "rate": 0.1, "duration": "1m"})),
            Ok(())
        );
        assert_eq!(
            ok(json!({"provider": "p", "duration": "1m"})),
            Err("provider")
        );
        assert_eq!(
            ok(json!({"provider": "p", "stall": true, "latency": "1s", "duration": "1m"})),
            Err("provider")
        );
        assert_eq!(
            ok(json!({"provider": "p", "error_rate": 1.5, "duration": "1m"})),
            Err("error_rate")
        );
        assert_eq!(
            ok(json!({"provider": "p", "error_rate": 0.5, "rate": 0.5, "duration": "1m"})),
            Err("rate")
        );
        assert_eq!(
            ok(json!({"provider": "p", "status": 200, "duration": "1m"})),
            Err("status")
        );
        assert_eq!(
            ok(json!({"provider": "p", "stall": true, "duration": "25h"})),
            Err("duration")
        );
        assert_eq!(
            ok(json!({"provider": "p", "latency": "0s", "duration": "1m"})),
            Err("latency")
        );
    }

    fn echo() -> impl Service<u32, Response = u32, Error = String, Future: Send> + Clone {
        tower::service_fn(|x: u32| async move { Ok::<_, String>(x) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_drill_hits_calls_until_it_ends_by_itself() {
        let switch = ChaosSwitch::new("p");
        let service =
            ChaosLayer::new(switch.clone(), |status: u16| status.to_string()).layer(echo());
        switch.start(
            Drill::from_config(
                &drill(json!({"provider": "p", "status": 502, "duration": "2s"})),
                "admin",
            )
            .unwrap(),
        );
        assert_eq!(service.clone().oneshot(1).await, Err("502".to_owned()));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(service.clone().oneshot(1).await, Err("502".to_owned()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(service.clone().oneshot(1).await, Ok(1));
        assert!(switch.drill().is_none());
        assert_eq!(switch.injected(), [2, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_holds_calls_and_stall_never_answers() {
        let switch = ChaosSwitch::new("p");
        let service =
            ChaosLayer::new(switch.clone(), |status: u16| status.to_string()).layer(echo());
        switch.start(
            Drill::from_config(
                &drill(json!({"provider": "p", "latency": "300ms", "duration": "1m"})),
                "config",
            )
            .unwrap(),
        );
        let start = Instant::now();
        assert_eq!(service.clone().oneshot(7).await, Ok(7));
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        switch.start(
            Drill::from_config(
                &drill(json!({"provider": "p", "stall": true, "duration": "1m"})),
                "config",
            )
            .unwrap(),
        );
        let stalled =
            tokio::time::timeout(Duration::from_secs(30), service.clone().oneshot(7)).await;
        assert!(stalled.is_err(), "a stalled call never answers");
        assert!(switch.stop());
        assert_eq!(service.clone().oneshot(8).await, Ok(8));
        assert_eq!(switch.injected(), [0, 1, 1]);
    }

    #[tokio::test]
    async fn a_rate_hits_about_that_share_of_calls() {
        fastrand::seed(7);
        let switch = ChaosSwitch::new("p");
        let service =
            ChaosLayer::new(switch.clone(), |status: u16| status.to_string()).layer(echo());
        switch.start(
            Drill::from_config(
                &drill(json!({"provider": "p", "error_rate": 0.25, "duration": "1h"})),
                "admin",
            )
            .unwrap(),
        );
        let mut failed = 0;
        for i in 0..2000 {
            if service.clone().oneshot(i).await.is_err() {
                failed += 1;
            }
        }
        assert_eq!(switch.injected()[0], failed);
        assert!((350..650).contains(&failed), "{failed} of 2000 hit at 25%");
    }
}
