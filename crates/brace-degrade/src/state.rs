//! The current level and the rules that move it, shared by every clone of the service,
//! its layer and its handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use brace_core::clock;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::AutoConfig;
use crate::handle::{Cause, LevelChange, PinChange};
use crate::level::Ladder;

const EVENT_CAPACITY: usize = 64;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) ladder: Ladder,
    auto: AutoConfig,
    current: AtomicUsize,
    pinned: AtomicBool,
    probing: AtomicBool,
    movement: Mutex<Movement>,
    events: broadcast::Sender<LevelChange>,
    pins: broadcast::Sender<PinChange>,
}

#[derive(Debug)]
struct Movement {
    window_start: Instant,
    failures: u32,
    successes: u32,
    /// The last move or probe: the clock for time-based probes.
    since: Instant,
}

/// Where a call starts, and whether it is the recovery probe.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) level: usize,
    /// The current level when the call started.
    pub(crate) current: usize,
    pub(crate) probe: Option<ProbeGuard>,
}

/// Marks the one probe in flight; dropping it (the probe finished or was cancelled) lets
/// the next probe go.
#[derive(Debug)]
pub(crate) struct ProbeGuard {
    shared: Arc<Shared>,
    pub(crate) level: usize,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.shared.probing.store(false, Ordering::Release);
    }
}

impl Shared {
    pub(crate) fn new(ladder: Ladder, auto: AutoConfig, start: usize) -> Self {
        let now = clock::now();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            ladder,
            auto,
            current: AtomicUsize::new(start),
            pinned: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            movement: Mutex::new(Movement {
                window_start: now,
                failures: 0,
                successes: 0,
                since: now,
            }),
            events,
            pins: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    pub(crate) fn subscribe_pins(&self) -> broadcast::Receiver<PinChange> {
        self.pins.subscribe()
    }

    /// Tells pin subscribers the pin is now on `level` (`None`: released).
    pub(crate) fn pin_changed(&self, level: Option<usize>, remote: bool) {
        // Nobody listening is fine.
        let _ = self.pins.send(PinChange::new(
            level.map(|index| self.ladder.level_ref(index)),
            remote,
        ));
    }

    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }

    fn moves_by_itself(&self) -> bool {
        self.auto.enabled && !self.is_pinned()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LevelChange> {
        self.events.subscribe()
    }

    /// Chooses where a call starts: the current level, or the level above it when a
    /// recovery probe is due and none is in flight.
    pub(crate) fn start(self: &Arc<Self>) -> Start {
        let current = self.current();
        let plain = Start {
            level: current,
            current,
            probe: None,
        };
        if current == 0 || !self.moves_by_itself() || self.probing.load(Ordering::Relaxed) {
            return plain;
        }
        let Some(above) = self.ladder.live_above(current) else {
            return plain;
        };
        {
            let movement = self.movement.lock();
            let due = movement.successes >= self.auto.recovery_successes
                || clock::now().saturating_duration_since(movement.since)
                    >= self.auto.probe_interval;
            if !due {
                return plain;
            }
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return plain;
        }
        Start {
            level: above,
            current,
            probe: Some(ProbeGuard {
                shared: self.clone(),
                level: above,
            }),
        }
    }

    /// Records a live call's outcome at `level`: `ok` is `false` when the level failed to
    /// answer.
    pub(crate) fn record(&self, level: usize, start: &Start, ok: bool) {
        if let Some(probe) = &start.probe
            && probe.level == level
        {
            self.record_probe(start.current, ok);
            return;
        }
        if level != start.current || !self.moves_by_itself() {
            return;
        }
        if ok {
            if level == 0 {
                // At the top there is nothing to recover; keep the hot path lock-free.
                return;
            }
            let mut movement = self.movement.lock();
            if self.current() == level {
                movement.successes = movement.successes.saturating_add(1);
            }
            return;
        }
        let mut movement = self.movement.lock();
        if self.current() != level {
            return;
        }
        let now = clock::now();
        if now.duration_since(movement.window_start) > self.auto.window {
            movement.window_start = now;
            movement.failures = 0;
        }
        movement.failures += 1;
        movement.successes = 0;
        if movement.failures >= self.auto.failure_threshold && level + 1 < self.ladder.len() {
            self.move_to(&mut movement, level + 1, Cause::Failures);
        }
    }

    fn record_probe(&self, current: usize, ok: bool) {
        let mut movement = self.movement.lock();
        if !self.moves_by_itself() || self.current() != current {
            return;
        }
        if ok && current > 0 {
            self.move_to(&mut movement, current - 1, Cause::Recovered);
        } else {
            movement.successes = 0;
            movement.since = clock::now();
        }
    }

    /// Sets the current level by hand; `pin` `Some` pins or releases it as well.
    pub(crate) fn set(&self, level: usize, pin: Option<bool>) {
        let mut movement = self.movement.lock();
        if let Some(pin) = pin {
            self.pinned.store(pin, Ordering::Release);
        }
        self.move_to(&mut movement, level, Cause::Manual);
    }

    pub(crate) fn release(&self) {
        let mut movement = self.movement.lock();
        self.pinned.store(false, Ordering::Release);
        let now = clock::now();
        movement.since = now;
        movement.window_start = now;
        movement.failures = 0;
        movement.successes = 0;
    }

    fn move_to(&self, movement: &mut Movement, to: usize, cause: Cause) {
        let now = clock::now();
        movement.window_start = now;
        movement.failures = 0;
        movement.successes = 0;
        movement.since = now;
        let from = self.current.swap(to, Ordering::AcqRel);
        if from != to {
            let change = LevelChange::new(
                self.ladder.level_ref(from),
                self.ladder.level_ref(to),
                cause,
            );
            log_change(&change);
            // Nobody listening is fine.
            let _ = self.events.send(change);
        }
    }
}

/// Logs a level change once: a warning when the level drops (less capability), information
/// when it climbs back or is set by hand.
fn log_change(change: &LevelChange) {
    macro_rules! change {
        ($level:expr) => {
            tracing::event!(
                $level,
                from = change.from().name(),
                to = change.to().name(),
                cause = change.cause().as_str(),
                "degradation level changed"
            )
        };
    }
    if change.is_drop() && change.cause() != Cause::Manual {
        change!(tracing::Level::WARN);
    } else {
        change!(tracing::Level::INFO);
    }
}
