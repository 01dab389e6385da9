//! Runnable examples live in `examples/`. This library holds the one piece they share with
//! tests: the axum service of `examples/axum_service.rs`, so a test can start it on a loopback
//! port.

pub mod axum_service;
