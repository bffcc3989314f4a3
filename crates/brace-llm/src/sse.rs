//! Incremental server-sent-events parsing (being written).
