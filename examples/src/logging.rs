//! What a service adds to see the cache's warnings (a backend down at boot, a weak password
//! outside production, values that do not decode, the circuit breaker opening): a `tracing`
//! subscriber. Without one, `tracing` events go nowhere.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Logs to stderr at `warn` and above, or at what `RUST_LOG` says (`RUST_LOG=debug`,
/// `RUST_LOG=lexigram_cache=info`). Does nothing if a subscriber is already installed.
pub fn init() {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
