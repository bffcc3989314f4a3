//! The simulated provider (being written).
