//! The mio runtime: filled in by the runtime-mio issue.
