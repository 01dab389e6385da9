//! Runnable examples live in `examples/`. This library holds what they share with tests: the
//! axum service of `examples/axum_service.rs`, so a test can start it on a loopback port, the
//! logging setup every example installs, and how an example ends.

pub mod axum_service;
pub mod logging;

/// An example's end: success, or its error on stderr and a failure exit code.
pub fn exit<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
