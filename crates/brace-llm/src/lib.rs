//! brace-llm (under construction).
