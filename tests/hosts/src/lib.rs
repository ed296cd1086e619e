//! Test hosts harness.
