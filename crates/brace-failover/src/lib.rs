//! brace-failover (under construction).
