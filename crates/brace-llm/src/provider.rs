//! Shared HTTP client plumbing for providers (being written).
