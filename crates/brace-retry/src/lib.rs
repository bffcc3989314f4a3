//! brace-retry (under construction).
