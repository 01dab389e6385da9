//! The process-wide registry: zero-config default, install, named backends, configure.
//! Its own test binary, because installing a registry is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lexigram_cache::config::ServiceConfig;
use lexigram_cache::{
    BackendConfig, BackendError, BackendKind, CacheConfig, CacheError, CacheModule, cacheable,
};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer, ScratchDir, free_port};
use tracing_subscriber::util::SubscriberInitExt;

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(key = "reg:{id}")]
async fn on_default(id: u32) -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    id
}

#[cacheable(key = "reg:{id}", backend = "second")]
async fn on_second(id: u32) -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    id
}

fn two_backends(enabled: bool) -> CacheConfig {
    let mut first = BackendConfig::memory("first");
    first.default = true;
    let mut config = CacheConfig::default();
    config.enabled = enabled;
    config.backends = vec![first, BackendConfig::memory("second")];
    config
}

/// One test, because the steps share the process-wide registry and must run in order.
#[tokio::test]
async fn registry_lifecycle() {
    // Zero-config: nothing installed, a process-wide memory cache is used.
    on_default(1).await;
    on_default(1).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert!(
        lexigram_cache::installed()
            .cache()
            .exists("reg:1")
            .await
            .expect("exists")
    );
    // A named backend that does not exist: the body still runs, uncached.
    on_second(1).await;
    on_second(1).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 3);

    // Install two backends: the default and a named one are separate stores.
    let caches = CacheModule::configure(two_backends(true))
        .await
        .expect("boots");
    caches.install();
    assert_eq!(caches.names().collect::<Vec<_>>(), ["first", "second"]);
    on_default(2).await;
    on_default(2).await;
    on_second(2).await;
    on_second(2).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 5);
    assert!(caches.cache().exists("reg:2").await.expect("exists"));
    let second = caches.named("second").expect("named");
    assert!(second.exists("reg:2").await.expect("exists"));
    assert_eq!(second.stats().hits, 1);
    // Installed from another thread too (the per-thread copy follows installs).
    let from_thread = std::thread::spawn(|| lexigram_cache::installed().cache().name().to_string())
        .join()
        .expect("thread");
    assert_eq!(from_thread, "first");

    // enabled: false makes everything a pass-through.
    CacheModule::configure(two_backends(false))
        .await
        .expect("boots")
        .install();
    on_default(3).await;
    on_default(3).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 7);

    let health = caches.health().await;
    assert!(health.is_healthy());
    assert_eq!(health.backends.len(), 2);
}

#[tokio::test]
async fn configuration_errors_name_the_field() {
    let mut config = two_backends(true);
    config.backends[1].default = true;
    let err = CacheModule::configure(config)
        .await
        .expect_err("two defaults");
    assert!(
        err.to_string()
            .contains("2 backends have `default: true` (first, second)"),
        "{err}"
    );

    let mut config = two_backends(true);
    config.backends[0].default = false;
    let err = CacheModule::configure(config)
        .await
        .expect_err("no default");
    assert!(
        err.to_string().contains("none has `default: true`"),
        "{err}"
    );

    let mut config = two_backends(true);
    config.backends[1].name = "first".into();
    let err = CacheModule::configure(config).await.expect_err("duplicate");
    assert!(err.to_string().contains("backends[1].name"), "{err}");

    let mut config = CacheConfig::default();
    config.backends[0].memory.max_entries = 0;
    let err = CacheModule::configure(config)
        .await
        .expect_err("zero entries");
    assert!(
        err.to_string().contains("backends[0].memory.max_entries"),
        "{err}"
    );

    let mut config = CacheConfig::default();
    config.service = ServiceConfig::default();
    config.backends[0].kind = BackendKind::Redis;
    let err = CacheModule::configure(config).await.expect_err("no url");
    assert!(matches!(err, CacheError::Config { .. }), "{err}");
    assert!(err.to_string().contains("backends[0].redis_url"), "{err}");

    let mut config = CacheConfig::default();
    config.backends[0].kind = BackendKind::Memcached;
    let err = CacheModule::configure(config)
        .await
        .expect_err("no servers");
    assert!(matches!(err, CacheError::Config { .. }), "{err}");
    assert!(err.to_string().contains("backends[0].servers"), "{err}");
}

/// What a subscriber set for the current thread writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A memory default and a Memcached secondary named `sessions` at `addr`.
fn memcached_secondary(addr: String) -> CacheConfig {
    let mut local = BackendConfig::memory("local");
    local.default = true;
    let mut config = CacheConfig::default();
    config.backends = vec![local, BackendConfig::memcached("sessions", [addr])];
    config
}

/// Credentials the server refuses, or does not ask for, or a server that asks for ones that
/// are not configured: a mistake in the configuration, which waiting does not fix.
#[tokio::test]
async fn a_secondary_backend_that_rejects_its_settings_fails_the_boot_naming_it() {
    let plain = MemcachedServer::start();
    let dir = ScratchDir::new("registry-auth");
    let auth = dir.path().join("auth");
    std::fs::write(&auth, "app:Str0ng-pass-99\n").expect("auth file");
    let secured = MemcachedServer::start_with(&["-Y", auth.to_str().expect("utf-8")]);

    let with = |addr: String, password: Option<&str>| {
        let mut config = memcached_secondary(addr);
        if let Some(password) = password {
            config.backends[1].username = Some("app".into());
            config.backends[1].password = Some(password.into());
        }
        config
    };
    let cases = [
        (
            with(plain.addr(), Some("Str0ng-pass-99")),
            "does not require authentication",
        ),
        (
            with(secured.addr(), Some("wrong-pass-77")),
            "authentication as `app` was refused",
        ),
        (with(secured.addr(), None), "requires authentication"),
    ];
    for (config, expected) in cases {
        let err = CacheModule::configure(config)
            .await
            .expect_err("a rejected secondary does not boot");
        let text = err.to_string();
        assert!(
            matches!(
                &err,
                CacheError::Backend { cache, source: BackendError::Rejected(_) } if cache == "sessions"
            ),
            "{err:?}"
        );
        assert!(
            text.contains("`sessions`") && text.contains(expected),
            "{text}"
        );
        assert!(
            !text.contains("Str0ng-pass-99") && !text.contains("wrong-pass-77"),
            "{text}"
        );
    }

    // The right credentials boot.
    let caches = CacheModule::configure(with(secured.addr(), Some("Str0ng-pass-99")))
        .await
        .expect("authenticated");
    let sessions = caches.named("sessions").expect("configured");
    sessions.set("k", &1u8, None).await.expect("set");
}

#[tokio::test]
async fn a_secondary_backend_that_is_down_boots_with_a_warning() {
    let logs = Logs::default();
    let _guard = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish()
        .set_default();
    let addr = format!("127.0.0.1:{}", free_port(false));
    let caches = CacheModule::configure(memcached_secondary(addr))
        .await
        .expect("a secondary that is down is only a warning");
    assert_eq!(caches.names().collect::<Vec<_>>(), ["local", "sessions"]);
    let text = logs.text();
    assert!(
        text.contains("WARN")
            && text.contains("not reachable at boot")
            && text.contains("sessions"),
        "{text}"
    );
}

/// A Redis secondary whose password the server refuses, or whose database does not exist, is
/// as much a configuration mistake as refused Memcached credentials: the boot fails naming it.
#[tokio::test]
async fn a_secondary_redis_with_a_wrong_password_or_database_fails_the_boot() {
    let server = RedisServer::start_with_password("Str0ng-pass-99");
    let port = server.port();
    let cases = [
        (
            format!("redis://:wrong-pass-77@127.0.0.1:{port}"),
            "wrong-pass-77",
        ),
        (
            format!("redis://:Str0ng-pass-99@127.0.0.1:{port}/99"),
            "Str0ng-pass-99",
        ),
    ];
    for (url, secret) in cases {
        let mut local = BackendConfig::memory("local");
        local.default = true;
        let mut config = CacheConfig::default();
        config.backends = vec![local, BackendConfig::redis("sessions", url.as_str())];
        let err = CacheModule::configure(config)
            .await
            .expect_err("a secondary Redis that refuses its settings does not boot");
        let text = err.to_string();
        assert!(
            matches!(&err, CacheError::Backend { cache, .. } if cache == "sessions"),
            "{err:?}"
        );
        assert!(!text.contains(secret), "{text}");
    }
}
