//! The anthropic provider client (being written).
