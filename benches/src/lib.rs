//! Shared helpers for the medseg criterion benchmarks.
