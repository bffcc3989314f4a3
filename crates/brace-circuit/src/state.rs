//! The state machine shared by every clone of a breaker.
//!
//! The state, its generation and the half-open permits left live in one atomic word, so the
//! hot path of a closed breaker is one atomic load to admit a call and one window update to
//! record it. Transitions take a lock (they are rare) and bump the generation: a call
//! admitted under an older generation can never trip, re-open or close the breaker, and a
//! half-open permit is always returned to the generation that issued it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use brace_core::{CircuitOpen, FailureClass, Outcome, Verdict};
use brace_core::{clock, duration};
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicU8, AtomicU32};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::{Settings, SlidingWindow};
use crate::event::StateTransition;
use crate::gate::HalfOpenGate;
use crate::handle::CircuitMetrics;
use crate::window::{CountWindow, Padded, Sample, TimeWindow, Totals, Window};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls pass and are recorded; the breaker opens when the failure or slow-call rate
    /// reaches its threshold.
    Closed,
    /// Calls fail at once with [`CircuitOpen`] until the wait is over.
    Open,
    /// A limited number of trial calls pass; their rates decide between closed and open.
    HalfOpen,
    /// Calls pass and nothing is recorded (set by hand).
    Disabled,
    /// Calls fail at once until the state is changed by hand.
    ForcedOpen,
    /// Calls pass and are recorded, but the breaker never opens (set by hand).
    MetricsOnly,
}

impl CircuitState {
    const ALL: [Self; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::ForcedOpen,
        Self::MetricsOnly,
    ];

    /// The state's name in snake case, as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Disabled => "disabled",
            Self::ForcedOpen => "forced_open",
            Self::MetricsOnly => "metrics_only",
        }
    }

    /// `true` in the states that admit calls without limit (closed, disabled, metrics-only).
    pub fn allows_calls(self) -> bool {
        matches!(self, Self::Closed | Self::Disabled | Self::MetricsOnly)
    }

    fn bits(self) -> u64 {
        self as u64
    }

    fn from_bits(bits: u64) -> Self {
        Self::ALL
            .get(bits as usize)
            .copied()
            .unwrap_or(Self::Closed)
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== Word =====

/// state (8 bits) | half-open permits left (16 bits) << 8 | generation (40 bits) << 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    const PERMIT_SHIFT: u32 = 8;
    const GEN_SHIFT: u32 = 24;
    const GEN_MASK: u64 = (1 << 40) - 1;

    fn new(generation: u64, state: CircuitState, permits: u32) -> Self {
        Self(
            state.bits()
                | (u64::from(permits) & 0xffff) << Self::PERMIT_SHIFT
                | (generation & Self::GEN_MASK) << Self::GEN_SHIFT,
        )
    }

    fn state(self) -> CircuitState {
        CircuitState::from_bits(self.0 & 0xff)
    }

    fn permits(self) -> u32 {
        ((self.0 >> Self::PERMIT_SHIFT) & 0xffff) as u32
    }

    fn generation(self) -> u64 {
        self.0 >> Self::GEN_SHIFT
    }

    fn next_generation(self) -> u64 {
        self.generation().wrapping_add(1) & Self::GEN_MASK
    }

    fn with_permits(self, permits: u32) -> Self {
        Self::new(self.generation(), self.state(), permits)
    }

    fn same_state(self, other: Self) -> bool {
        self.generation() == other.generation() && self.state() == other.state()
    }
}

// ===== Shared =====

/// One breaker: everything its handle, layer and services share.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    settings: Settings,
    minimum_calls: u64,
    /// Every instant below is stored as nanoseconds since `base`.
    base: Instant,
    /// Whether completing a call needs the clock (reading it is the costliest part of the
    /// hot path): to time slow calls, or to find the bucket of a time window.
    needs_clock: bool,
    word: Padded<AtomicU64>,
    /// The window of closed and metrics-only states; kept while open so that the metrics say
    /// why the breaker opened and so that calls admitted before the open are still counted.
    closed: Window,
    half_open: CountWindow,
    open_until: AtomicU64,
    half_open_until: AtomicU64,
    not_permitted: AtomicU64,
    /// Failures in a row in closed state, for the consecutive-failures rule.
    consecutive: AtomicU32,
    /// The class of the last recorded failure (an index into `FailureClass::ALL`).
    last_failure: AtomicU8,
    /// The class of the failure that opened the breaker, `NO_CAUSE` when forced open.
    open_cause: AtomicU8,
    transitions: Mutex<Transitions>,
    events: broadcast::Sender<StateTransition>,
    /// Asked before an open breaker moves to half-open (see [`HalfOpenGate`]).
    gate: OnceLock<Arc<dyn HalfOpenGate>>,
}

#[derive(Debug)]
struct Transitions {
    /// Consecutive opens since the breaker was last closed.
    attempts: u32,
    last: Instant,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Milliseconds, for event fields (signed: OpenTelemetry attributes have no unsigned
/// integers).
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// No failure class recorded.
const NO_CAUSE: u8 = u8::MAX;

fn class_bits(class: FailureClass) -> u8 {
    FailureClass::ALL
        .iter()
        .position(|c| *c == class)
        .map_or(NO_CAUSE, |i| i as u8)
}

fn class_from_bits(bits: u8) -> Option<FailureClass> {
    FailureClass::ALL.get(usize::from(bits)).copied()
}

/// Whether a breaker would admit a call now, as [`CircuitHandle::admission`](crate::CircuitHandle::admission) reads it without
/// taking a permit.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Calls pass (closed, disabled, metrics-only).
    Admit,
    /// The next call would be a half-open trial: the open wait is over, or the breaker is
    /// half-open with trial permits left.
    Trial,
    /// Calls are refused, and why.
    Reject(CircuitOpen),
}

impl Admission {
    /// `true` unless calls are refused.
    pub fn admits(&self) -> bool {
        !matches!(self, Self::Reject(_))
    }
}

/// The capacity of the event channel: a receiver that lags further behind misses events
/// (and is told so by `RecvError::Lagged`).
const EVENT_CAPACITY: usize = 64;

impl Shared {
    pub(crate) fn new(name: Arc<str>, settings: Settings) -> Self {
        let now = clock::now();
        let closed = match settings.sliding_window {
            SlidingWindow::Count(size) => Window::Count(CountWindow::new(size)),
            SlidingWindow::Time(seconds) => Window::Time(TimeWindow::new(seconds)),
        };
        let needs_clock =
            settings.track_slow_calls || matches!(settings.sliding_window, SlidingWindow::Time(_));
        Self {
            name,
            needs_clock,
            minimum_calls: settings.effective_minimum_calls(),
            half_open: CountWindow::new(settings.permitted_calls_in_half_open),
            settings,
            base: now,
            word: Padded(AtomicU64::new(Word::new(0, CircuitState::Closed, 0).0)),
            closed,
            open_until: AtomicU64::new(0),
            half_open_until: AtomicU64::new(u64::MAX),
            not_permitted: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            last_failure: AtomicU8::new(NO_CAUSE),
            open_cause: AtomicU8::new(NO_CAUSE),
            transitions: Mutex::new(Transitions {
                attempts: 0,
                last: now,
            }),
            events: broadcast::channel(EVENT_CAPACITY).0,
            gate: OnceLock::new(),
        }
    }

    /// Installs the gate asked before every move from open to half-open; `false` if one is
    /// installed already.
    pub(crate) fn set_gate(&self, gate: Arc<dyn HalfOpenGate>) -> bool {
        self.gate.set(gate).is_ok()
    }

    /// Whether the gate (if any) lets the breaker move from open to half-open now.
    fn gate_allows(&self) -> bool {
        self.gate
            .get()
            .is_none_or(|gate| gate.may_half_open(&self.name))
    }

    fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    pub(crate) fn state(&self) -> CircuitState {
        self.load().state()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.events.subscribe()
    }

    fn since_base(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.base)
    }

    fn nanos(&self, now: Instant) -> u64 {
        duration::nanos(self.since_base(now))
    }

    fn after(&self, now: Instant, wait: Duration) -> u64 {
        self.nanos(now).saturating_add(duration::nanos(wait))
    }

    fn reject(&self, retry_after: Option<Duration>) -> CircuitOpen {
        self.not_permitted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            name = &*self.name,
            state = self.state().as_str(),
            retry_after_ms = retry_after.map(duration_ms),
            "call not permitted"
        );
        self.refusal(retry_after)
    }

    fn refusal(&self, retry_after: Option<Duration>) -> CircuitOpen {
        let cause = match self.state() {
            CircuitState::ForcedOpen => None,
            _ => class_from_bits(self.open_cause.load(Ordering::Relaxed)),
        };
        CircuitOpen::new(self.name.clone(), retry_after).with_cause(cause)
    }

    /// Whether a call would be admitted now, without admitting one (nothing is counted).
    pub(crate) fn admission(&self) -> Admission {
        let word = self.load();
        match word.state() {
            CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::Disabled => {
                Admission::Admit
            }
            CircuitState::ForcedOpen => Admission::Reject(self.refusal(None)),
            CircuitState::Open => {
                let elapsed = self.nanos(clock::now());
                let until = self.open_until.load(Ordering::Acquire);
                if elapsed < until {
                    Admission::Reject(self.refusal(Some(Duration::from_nanos(until - elapsed))))
                } else if self.gate_allows() {
                    Admission::Trial
                } else {
                    // The wait is over, but the trial is someone else's (see `HalfOpenGate`).
                    Admission::Reject(self.refusal(None))
                }
            }
            CircuitState::HalfOpen if word.permits() > 0 => Admission::Trial,
            CircuitState::HalfOpen => Admission::Reject(self.refusal(None)),
        }
    }

    /// Moves an open breaker to half-open now, before its wait is over (an active health
    /// check found the service up). Returns whether it moved.
    pub(crate) fn try_half_open(self: &Arc<Self>) -> bool {
        let word = self.load();
        word.state() == CircuitState::Open
            && self.gate_allows()
            && self.try_transition(word, CircuitState::HalfOpen, clock::now())
    }

    fn exceeds(&self, totals: Totals, minimum_calls: u64) -> bool {
        totals.calls >= minimum_calls
            && (totals.failure_rate() >= self.settings.failure_rate_threshold
                || totals.slow_rate() >= self.settings.slow_call_rate_threshold)
    }

    /// Asks to admit one call.
    ///
    /// `Ok(None)` admits a call that is not recorded (disabled state).
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Option<Permit>, CircuitOpen> {
        loop {
            let word = self.load();
            match word.state() {
                CircuitState::Closed | CircuitState::MetricsOnly => {
                    return Ok(Some(Permit::new(self, word, PermitKind::Closed)));
                }
                CircuitState::Disabled => return Ok(None),
                CircuitState::ForcedOpen => return Err(self.reject(None)),
                CircuitState::Open => {
                    let now = clock::now();
                    let elapsed = self.nanos(now);
                    let until = self.open_until.load(Ordering::Acquire);
                    if elapsed < until {
                        return Err(self.reject(Some(Duration::from_nanos(until - elapsed))));
                    }
                    if !self.gate_allows() {
                        return Err(self.reject(None));
                    }
                    self.try_transition(word, CircuitState::HalfOpen, now);
                }
                CircuitState::HalfOpen => {
                    if self.settings.max_wait_in_half_open.is_some() {
                        let now = clock::now();
                        if self.nanos(now) >= self.half_open_until.load(Ordering::Acquire) {
                            self.try_transition(word, CircuitState::Open, now);
                            continue;
                        }
                    }
                    let permits = word.permits();
                    if permits == 0 {
                        return Err(self.reject(None));
                    }
                    let taken = word.with_permits(permits - 1);
                    if self
                        .word
                        .compare_exchange_weak(word.0, taken.0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok(Some(Permit::new(self, word, PermitKind::HalfOpen)));
                    }
                }
            }
        }
    }

    /// Gives a half-open permit back to the generation that issued it.
    fn release(&self, generation: u64) {
        loop {
            let word = self.load();
            if word.generation() != generation
                || word.state() != CircuitState::HalfOpen
                || word.permits() >= self.settings.permitted_calls_in_half_open
            {
                return;
            }
            let returned = word.with_permits(word.permits() + 1);
            if self
                .word
                .compare_exchange_weak(word.0, returned.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    fn complete(
        self: &Arc<Self>,
        generation: u64,
        kind: PermitKind,
        started: Option<Instant>,
        outcome: &Outcome,
    ) {
        let verdict = outcome.verdict();
        if verdict == Verdict::Ignored {
            if kind == PermitKind::HalfOpen {
                self.release(generation);
            }
            return;
        }
        let now = self.needs_clock.then(clock::now);
        let slow = match (started, now) {
            (Some(started), Some(now)) => {
                now.saturating_duration_since(started) > self.settings.slow_call_duration
            }
            _ => false,
        };
        let sample = Sample {
            failed: verdict == Verdict::Failure,
            slow,
        };
        if sample.failed {
            self.last_failure
                .store(class_bits(outcome.class()), Ordering::Relaxed);
        }
        let word = self.load();
        match kind {
            PermitKind::Closed => {
                let current = word.generation() == generation;
                // The open that followed this call's closed state keeps its window.
                let late = word.state() == CircuitState::Open
                    && word.generation() == (generation.wrapping_add(1) & Word::GEN_MASK);
                if !(current || late) {
                    return;
                }
                if current
                    && self.consecutive_trips(sample.failed)
                    && word.state() == CircuitState::Closed
                {
                    self.try_transition(word, CircuitState::Open, now.unwrap_or_else(clock::now));
                }
                let elapsed = now.map_or(Duration::ZERO, |now| self.since_base(now));
                let Some(totals) = self.closed.record(sample, elapsed) else {
                    // Unchanged totals were judged when they were last changed.
                    return;
                };
                if current
                    && word.state() == CircuitState::Closed
                    && self.exceeds(totals, self.minimum_calls)
                {
                    self.try_transition(word, CircuitState::Open, now.unwrap_or_else(clock::now));
                }
            }
            PermitKind::HalfOpen => {
                if word.generation() != generation || word.state() != CircuitState::HalfOpen {
                    return;
                }
                // A half-open window is as long as the trials: no slot is ever reused.
                let totals = self
                    .half_open
                    .record(sample)
                    .unwrap_or_else(|| self.half_open.totals());
                let permitted = u64::from(self.settings.permitted_calls_in_half_open);
                if totals.calls >= permitted {
                    let to = if self.exceeds(totals, permitted) {
                        CircuitState::Open
                    } else {
                        CircuitState::Closed
                    };
                    self.try_transition(word, to, now.unwrap_or_else(clock::now));
                }
            }
        }
    }

    /// Counts a closed-state call for the consecutive-failures rule; `true` when it trips.
    fn consecutive_trips(&self, failed: bool) -> bool {
        let Some(limit) = self.settings.consecutive_failures else {
            return false;
        };
        if failed {
            self.consecutive.fetch_add(1, Ordering::Relaxed) + 1 >= limit
        } else {
            // Only a write when there is a run to end: successes stay read-only.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            false
        }
    }

    /// Moves from `expected` (same generation and state) to `to`; does nothing if the
    /// breaker has moved on since `expected` was read.
    fn try_transition(self: &Arc<Self>, expected: Word, to: CircuitState, now: Instant) -> bool {
        let mut transitions = self.transitions.lock();
        let current = self.load();
        if !current.same_state(expected) || current.state() == to {
            return false;
        }
        self.enter(&mut transitions, current, to, now, How::LOCAL);
        true
    }

    /// Moves to `to` by hand; nothing happens (and no event is emitted) if the breaker is
    /// already there.
    pub(crate) fn force(self: &Arc<Self>, to: CircuitState) {
        let mut transitions = self.transitions.lock();
        let current = self.load();
        if current.state() != to {
            self.enter(&mut transitions, current, to, clock::now(), How::LOCAL);
        }
    }

    /// Applies a state learned from elsewhere: enters `to` (an open one for `wait`) and
    /// tells subscribers the transition is remote. Returns whether anything changed.
    pub(crate) fn apply_remote(self: &Arc<Self>, to: CircuitState, wait: Option<Duration>) -> bool {
        let how = How {
            remote: true,
            wait: (to == CircuitState::Open).then(|| wait.unwrap_or_default()),
        };
        let mut transitions = self.transitions.lock();
        let current = self.load();
        let now = clock::now();
        match to {
            // A trial is a replica's own business: nobody else's half-open is applied.
            CircuitState::HalfOpen => false,
            CircuitState::Open if current.state() == CircuitState::Open => {
                // Already open: take the newer wait. A new generation makes the timer of
                // the old wait (if any) a no-op.
                let wait = how.wait.unwrap_or_default();
                self.open_until
                    .store(self.after(now, wait), Ordering::Release);
                let next = Word::new(current.next_generation(), CircuitState::Open, 0);
                self.word.store(next.0, Ordering::Release);
                if self.settings.automatic_transition
                    && let Some(at) = now.checked_add(wait)
                {
                    self.schedule(next, at, CircuitState::HalfOpen);
                }
                true
            }
            _ if current.state() == to => false,
            _ => {
                self.enter(&mut transitions, current, to, now, how);
                true
            }
        }
    }

    /// Closes the breaker and forgets every recorded call, the not-permitted count and the
    /// wait growth. Calls in flight from before the reset are not recorded.
    pub(crate) fn reset(self: &Arc<Self>) {
        let mut transitions = self.transitions.lock();
        let current = self.load();
        let now = clock::now();
        if current.state() == CircuitState::Closed {
            self.closed.reset();
            self.consecutive.store(0, Ordering::Relaxed);
            self.not_permitted.store(0, Ordering::Relaxed);
            transitions.attempts = 0;
            let next = Word::new(current.next_generation(), CircuitState::Closed, 0);
            self.word.store(next.0, Ordering::Release);
        } else {
            self.enter(
                &mut transitions,
                current,
                CircuitState::Closed,
                now,
                How::LOCAL,
            );
        }
    }

    /// Enters `to`; the caller holds the transition lock and has checked `to` differs from
    /// the current state.
    fn enter(
        self: &Arc<Self>,
        transitions: &mut Transitions,
        current: Word,
        to: CircuitState,
        now: Instant,
        how: How,
    ) {
        let mut permits = 0;
        let mut timer = None;
        let mut open_wait = None;
        match to {
            CircuitState::Open => {
                self.open_cause
                    .store(self.last_failure.load(Ordering::Relaxed), Ordering::Relaxed);
                transitions.attempts = transitions.attempts.saturating_add(1);
                let wait = how
                    .wait
                    .unwrap_or_else(|| self.settings.wait_in_open.wait(transitions.attempts));
                open_wait = Some(wait);
                self.open_until
                    .store(self.after(now, wait), Ordering::Release);
                if self.settings.automatic_transition {
                    // A wait too long to represent never ends by itself.
                    timer = now.checked_add(wait).map(|at| (at, CircuitState::HalfOpen));
                }
            }
            CircuitState::HalfOpen => {
                self.half_open.reset();
                permits = self.settings.permitted_calls_in_half_open;
                let until = match self.settings.max_wait_in_half_open {
                    Some(wait) => {
                        timer = now.checked_add(wait).map(|at| (at, CircuitState::Open));
                        self.after(now, wait)
                    }
                    None => u64::MAX,
                };
                self.half_open_until.store(until, Ordering::Release);
            }
            CircuitState::Closed | CircuitState::MetricsOnly => {
                self.consecutive.store(0, Ordering::Relaxed);
                self.closed.reset();
                self.not_permitted.store(0, Ordering::Relaxed);
                transitions.attempts = 0;
            }
            CircuitState::Disabled | CircuitState::ForcedOpen => transitions.attempts = 0,
        }
        let next = Word::new(current.next_generation(), to, permits);
        self.word.store(next.0, Ordering::Release);
        transitions.last = now;

        let event = StateTransition {
            name: self.name.clone(),
            from: current.state(),
            to,
            at: now,
            wait: open_wait,
            remote: how.remote,
        };
        self.log_transition(&event, open_wait);
        if let Some(callback) = &self.settings.on_transition {
            callback(&event);
        }
        // No receivers is not an error.
        let _ = self.events.send(event);

        if let Some((at, target)) = timer {
            self.schedule(next, at, target);
        }
    }

    /// Logs a transition once: a warning when the breaker opens (failures opened it, an
    /// operator forced it open, or another replica shared its open), information otherwise.
    fn log_transition(&self, event: &StateTransition, open_wait: Option<Duration>) {
        let cause = match event.to {
            _ if event.remote => "another replica",
            CircuitState::Open => class_from_bits(self.open_cause.load(Ordering::Relaxed))
                .map_or("failures", FailureClass::as_str),
            CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly => {
                "forced"
            }
            CircuitState::HalfOpen => "wait over",
            CircuitState::Closed => match event.from {
                CircuitState::HalfOpen => "trial calls succeeded",
                _ => "reset",
            },
        };
        macro_rules! transition {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    name = &*self.name,
                    from = event.from.as_str(),
                    to = event.to.as_str(),
                    cause,
                    wait_ms = open_wait.map(duration_ms),
                    "circuit state changed"
                )
            };
        }
        if matches!(event.to, CircuitState::Open | CircuitState::ForcedOpen) {
            transition!(tracing::Level::WARN);
        } else {
            transition!(tracing::Level::INFO);
        }
    }

    /// Moves from `expected` to `to` at `at`, on a task of the current tokio runtime (if
    /// there is one; otherwise the move happens on the next call).
    fn schedule(self: &Arc<Self>, expected: Word, at: Instant, to: CircuitState) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(shared) = shared.upgrade()
                && (to != CircuitState::HalfOpen || shared.gate_allows())
            {
                shared.try_transition(expected, to, clock::now());
            }
        });
    }

    pub(crate) fn metrics(&self) -> CircuitMetrics {
        let transitions = self.transitions.lock();
        let now = clock::now();
        let word = self.load();
        let (totals, minimum) = match word.state() {
            CircuitState::HalfOpen => (
                self.half_open.totals(),
                u64::from(self.settings.permitted_calls_in_half_open),
            ),
            _ => (self.closed.totals(self.since_base(now)), self.minimum_calls),
        };
        let remaining_wait = match word.state() {
            CircuitState::Open => Some(Duration::from_nanos(
                self.open_until
                    .load(Ordering::Acquire)
                    .saturating_sub(self.nanos(now)),
            )),
            _ => None,
        };
        CircuitMetrics {
            name: self.name.clone(),
            state: word.state(),
            failure_rate: (totals.calls >= minimum).then(|| totals.failure_rate()),
            slow_call_rate: (totals.calls >= minimum).then(|| totals.slow_rate()),
            buffered_calls: totals.calls,
            failed_calls: totals.failed,
            slow_calls: totals.slow,
            not_permitted_calls: self.not_permitted.load(Ordering::Relaxed),
            half_open_permits_left: (word.state() == CircuitState::HalfOpen)
                .then(|| word.permits()),
            consecutive_opens: transitions.attempts,
            last_transition_at: transitions.last,
            since_last_transition: now.saturating_duration_since(transitions.last),
            remaining_wait,
        }
    }
}

/// How a transition is entered.
#[derive(Debug, Clone, Copy)]
struct How {
    /// Learned from elsewhere.
    remote: bool,
    /// An open's wait, instead of the configured one.
    wait: Option<Duration>,
}

impl How {
    const LOCAL: Self = Self {
        remote: false,
        wait: None,
    };
}

// ===== Permit =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    Closed,
    HalfOpen,
}

/// One admitted call. Recording it consumes the permit; dropping it unrecorded gives a
/// half-open permit back.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    kind: PermitKind,
    /// When the call started, if slow calls are tracked.
    started: Option<Instant>,
    /// Still owed an outcome: dropping it gives a half-open permit back.
    armed: bool,
}

impl Permit {
    fn new(shared: &Arc<Shared>, word: Word, kind: PermitKind) -> Self {
        Self {
            shared: shared.clone(),
            generation: word.generation(),
            kind,
            started: shared.settings.track_slow_calls.then(clock::now),
            armed: true,
        }
    }

    /// Records the call's outcome.
    pub(crate) fn complete(mut self, outcome: &Outcome) {
        self.armed = false;
        self.shared
            .complete(self.generation, self.kind, self.started, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed && self.kind == PermitKind::HalfOpen {
            self.shared.release(self.generation);
        }
    }
}
