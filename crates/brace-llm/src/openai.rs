//! The openai provider client (being written).
