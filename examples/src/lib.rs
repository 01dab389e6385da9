//! Runnable examples live in `examples/`. This library holds what they share with tests: the
//! axum service of `examples/axum_service.rs`, so a test can start it on a loopback port, and
//! the logging setup every example installs.

pub mod axum_service;
pub mod logging;
