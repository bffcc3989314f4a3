//! Reading and moving the current level by hand, and watching it move.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::error::UnknownLevel;
use crate::level::{Ladder, LevelRef};
use crate::state::Shared;

/// Reads and sets the current level of a [`DegradeLayer`](crate::DegradeLayer) and every
/// service it made, as an admin endpoint such as `POST /v1/degradation/level` needs.
///
/// - [`set`](Self::set) moves the level; automatic movement goes on from there.
/// - [`pin`](Self::pin) moves the level and holds it there: automatic movement stops until
///   [`release`](Self::release).
///
/// Requests still fall back below the current level when it fails to answer them.
///
/// # Clone
///
/// Clones control the same layer.
#[derive(Debug, Clone)]
pub struct DegradeHandle {
    shared: Arc<Shared>,
}

impl DegradeHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The current level.
    pub fn level(&self) -> LevelRef {
        self.shared.ladder.level_ref(self.shared.current())
    }

    /// The ladder.
    pub fn ladder(&self) -> &Ladder {
        &self.shared.ladder
    }

    /// `true` while the level is pinned.
    pub fn is_pinned(&self) -> bool {
        self.shared.is_pinned()
    }

    /// Moves the current level to the level named `name`; automatic movement goes on from
    /// there (unless pinned: setting a pinned level keeps the pin on the new level).
    ///
    /// # Errors
    ///
    /// [`UnknownLevel`] if no level has that name.
    pub fn set(&self, name: &str) -> Result<LevelRef, UnknownLevel> {
        let index = self.index_of(name)?;
        self.shared.set(index, None);
        if self.shared.is_pinned() {
            self.shared.pin_changed(Some(index), false);
        }
        Ok(self.shared.ladder.level_ref(index))
    }

    /// Moves the current level to the level named `name` and holds it there until
    /// [`release`](Self::release).
    ///
    /// # Errors
    ///
    /// [`UnknownLevel`] if no level has that name.
    pub fn pin(&self, name: &str) -> Result<LevelRef, UnknownLevel> {
        let index = self.index_of(name)?;
        self.shared.set(index, Some(true));
        self.shared.pin_changed(Some(index), false);
        Ok(self.shared.ladder.level_ref(index))
    }

    /// Lets the level move by itself again, from where it is.
    pub fn release(&self) {
        self.shared.release();
        self.shared.pin_changed(None, false);
    }

    /// Receives a [`PinChange`] for every pin and release from now on (a
    /// [`set`](Self::set) while pinned moves the pin, and counts). A receiver that falls
    /// more than 64 events behind loses the oldest.
    ///
    /// This is what a store that shares the pin between replicas listens to; it applies
    /// the other replicas' pins with [`apply_remote_pin`](Self::apply_remote_pin).
    pub fn subscribe_pins(&self) -> broadcast::Receiver<PinChange> {
        self.shared.subscribe_pins()
    }

    /// Pins the level named `name` (`Some`) or releases the pin (`None`) because another
    /// replica did: as [`pin`](Self::pin) and [`release`](Self::release), but the
    /// [`PinChange`] says it is [remote](PinChange::is_remote), so that it is not sent
    /// back. Only the pin is shared: each replica's automatic level moves by itself.
    ///
    /// # Errors
    ///
    /// [`UnknownLevel`] if no level has that name (replicas with different ladders).
    pub fn apply_remote_pin(&self, name: Option<&str>) -> Result<(), UnknownLevel> {
        match name {
            Some(name) => {
                let index = self.index_of(name)?;
                if self.shared.is_pinned() && self.shared.current() == index {
                    return Ok(());
                }
                self.shared.set(index, Some(true));
                self.shared.pin_changed(Some(index), true);
            }
            None => {
                if !self.shared.is_pinned() {
                    return Ok(());
                }
                self.shared.release();
                self.shared.pin_changed(None, true);
            }
        }
        Ok(())
    }

    /// Receives a [`LevelChange`] for every change of the current level from now on.
    /// A receiver that falls more than 64 events behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<LevelChange> {
        self.shared.subscribe()
    }

    fn index_of(&self, name: &str) -> Result<usize, UnknownLevel> {
        self.shared
            .ladder
            .index_of(name)
            .ok_or_else(|| UnknownLevel::new(name))
    }
}

/// Why the current level changed (serialized as `failures`, `recovered` or `manual`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cause {
    /// Failures at the current level reached the threshold.
    Failures,
    /// A probe at the level above succeeded.
    Recovered,
    /// A [`DegradeHandle`] set or pinned it.
    Manual,
}

impl Cause {
    /// The cause's name: `failures`, `recovered` or `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failures => "failures",
            Self::Recovered => "recovered",
            Self::Manual => "manual",
        }
    }
}

/// The current level changed (serializable, for an admin endpoint or an event log).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LevelChange {
    from: LevelRef,
    to: LevelRef,
    cause: Cause,
}

impl LevelChange {
    pub(crate) fn new(from: LevelRef, to: LevelRef, cause: Cause) -> Self {
        Self { from, to, cause }
    }

    /// The level before.
    pub fn from(&self) -> &LevelRef {
        &self.from
    }

    /// The level now.
    pub fn to(&self) -> &LevelRef {
        &self.to
    }

    /// Why it changed.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// `true` if the level went down (to less capability).
    pub fn is_drop(&self) -> bool {
        self.to.index() > self.from.index()
    }
}

/// The level was pinned or released (see [`DegradeHandle::subscribe_pins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinChange {
    level: Option<LevelRef>,
    remote: bool,
}

impl PinChange {
    pub(crate) fn new(level: Option<LevelRef>, remote: bool) -> Self {
        Self { level, remote }
    }

    /// The pinned level, `None` when the pin was released.
    pub fn level(&self) -> Option<&LevelRef> {
        self.level.as_ref()
    }

    /// `true` if another replica pinned or released it
    /// ([`DegradeHandle::apply_remote_pin`]).
    pub fn is_remote(&self) -> bool {
        self.remote
    }
}
