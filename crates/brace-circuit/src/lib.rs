//! brace-circuit (under construction).
