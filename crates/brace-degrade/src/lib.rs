//! brace-degrade (under construction).
