//! Benchmarks: criterion micro benchmarks and the load generator (filled in by the runtime-mio issue).
