//! The examples' logging setup makes the runtime's warnings visible, filtered by `RUST_LOG`.
//!
//! A subscriber is process-wide, so the test runs itself again as a child process, which
//! installs it, boots caches whose secondary backend is down, and exits; the parent reads the
//! child's stderr.

use std::process::Command;

use lexigram_cache::{BackendConfig, CacheConfig, CacheModule};
use lexigram_cache_tests::servers::free_port;

const CHILD: &str = "LEXIGRAM_LOGGING_CHILD";
const TEST: &str = "warnings_are_shown_by_default_and_rust_log_filters_them";

#[tokio::test]
async fn warnings_are_shown_by_default_and_rust_log_filters_them() {
    if std::env::var_os(CHILD).is_some() {
        lexigram_cache_examples::logging::init();
        let mut config = CacheConfig::default();
        let dead = format!("redis://127.0.0.1:{}", free_port(false));
        config
            .backends
            .push(BackendConfig::redis("remote", dead.as_str()));
        config.backends[0].default = true;
        CacheModule::configure(config)
            .await
            .expect("a secondary backend down only warns");
        return;
    }
    let child_stderr = |rust_log: Option<&str>| {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let out = command.output().expect("run the child");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let shown = child_stderr(None);
    assert!(
        shown.contains("WARN") && shown.contains("not reachable at boot"),
        "default level warn: {shown}"
    );
    let filtered = child_stderr(Some("error"));
    assert!(!filtered.contains("not reachable at boot"), "{filtered}");
}
