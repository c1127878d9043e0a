//! tokio runtime
