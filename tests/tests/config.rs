//! Configuration: sources and their order, env vars with indexed lists, validation messages,
//! production security, redaction, per-function overrides and the README's reference table.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lexigram_cache::config::{ConfigSources, FunctionConfig};
use lexigram_cache::{BackendConfig, BackendKind, CacheConfig, CacheError, CacheModule, cacheable};
use lexigram_cache_tests::servers::{RedisServer, ScratchDir};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write yaml");
    p
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(
    file: Option<&Path>,
    profile: Option<&str>,
    env: &[(&str, &str)],
) -> Result<CacheConfig, CacheError> {
    let mut s = ConfigSources::default();
    s.file = file.map(Path::to_path_buf);
    s.profile = profile.map(str::to_owned);
    s.vars = vars(env);
    s.load()
}

const BASE: &str = "
service:
  fill_wait: 3s
cache:
  enabled: true
  backends:
    - name: main
      type: memory
      prefix: 'file:'
      default_ttl: 60
      memory:
        engine: tinylfu
        max_entries: 500
";

#[test]
fn each_source_alone() {
    // Defaults.
    let config = load(None, None, &[]).expect("defaults");
    assert_eq!(config, CacheConfig::default());

    // The file: only its `cache:` section counts.
    let dir = ScratchDir::new("config");
    let file = write(dir.path(), "application.yaml", BASE);
    let config = load(Some(&file), None, &[]).expect("file");
    assert_eq!(config.backends[0].name, "main");
    assert_eq!(config.backends[0].prefix, "file:");
    assert_eq!(
        config.backends[0].default_ttl,
        Some(Duration::from_secs(60))
    );
    assert_eq!(config.backends[0].memory.max_entries, 500);
    assert_eq!(
        config.service.fill_wait,
        Duration::from_secs(10),
        "outside `cache:`"
    );

    // Env vars alone.
    let config = load(
        None,
        None,
        &[
            ("LEX_CACHE__ENABLED", "false"),
            ("LEX_CACHE__SERVICE__FILL_WAIT", "2s"),
            ("UNRELATED", "x"),
        ],
    )
    .expect("env");
    assert!(!config.enabled);
    assert_eq!(config.service.fill_wait, Duration::from_secs(2));
}

#[test]
fn later_sources_win_file_then_profile_then_env_then_code() {
    let dir = ScratchDir::new("config");
    let file = write(dir.path(), "application.yaml", BASE);
    write(
        dir.path(),
        "application-staging.yaml",
        "cache:\n  backends:\n    - name: main\n      prefix: 'profile:'\n      default_ttl: never\n",
    );
    let config = load(Some(&file), Some("staging"), &[]).expect("profile");
    // The profile's backend merges into the base backend of that name.
    assert_eq!(config.backends[0].prefix, "profile:");
    assert_eq!(config.backends[0].default_ttl, None);
    assert_eq!(config.backends[0].memory.max_entries, 500);

    let mut config = load(
        Some(&file),
        Some("staging"),
        &[("LEX_CACHE__BACKENDS__0__PREFIX", "env:")],
    )
    .expect("env over profile");
    assert_eq!(config.backends[0].prefix, "env:");
    assert_eq!(
        config.backends[0].default_ttl, None,
        "profile still applies"
    );

    config.backends[0].prefix = "code:".into();
    assert_eq!(config.backends[0].prefix, "code:");

    // A profile without a file is an error.
    let t = message(load(Some(&file), Some("nope"), &[]));
    assert!(t.contains("application-nope.yaml"), "{t}");
}

#[test]
fn indexed_env_lists_build_backends_and_server_lists() {
    let config = load(
        None,
        None,
        &[
            ("LEX_CACHE__BACKENDS__0__NAME", "local"),
            ("LEX_CACHE__BACKENDS__0__DEFAULT", "true"),
            ("LEX_CACHE__BACKENDS__1__NAME", "shared"),
            ("LEX_CACHE__BACKENDS__1__TYPE", "memcached"),
            ("LEX_CACHE__BACKENDS__1__SERVERS__0", "10.0.0.1:11211"),
            ("LEX_CACHE__BACKENDS__1__SERVERS__1", "10.0.0.2:11211"),
            ("LEX_CACHE__BACKENDS__1__POOL_SIZE", "4"),
            ("LEX_CACHE__BACKENDS__2__NAME", "sessions"),
            ("LEX_CACHE__BACKENDS__2__TYPE", "redis"),
            (
                "LEX_CACHE__BACKENDS__2__REDIS_URL",
                "redis://:s3cret@10.0.0.3:6379/2",
            ),
        ],
    )
    .expect("indexed lists");
    assert_eq!(config.backends.len(), 3);
    assert!(config.backends[0].default);
    assert_eq!(config.backends[1].kind, BackendKind::Memcached);
    assert_eq!(
        config.backends[1].servers,
        ["10.0.0.1:11211", "10.0.0.2:11211"]
    );
    assert_eq!(config.backends[1].pool_size, 4);
    assert_eq!(
        config.backends[2].redis_url.as_ref().map(|u| u.expose()),
        Some("redis://:s3cret@10.0.0.3:6379/2"),
        "a URL stays a string"
    );

    let err = load(None, None, &[("LEX_CACHE__BACKENDS__1__NAME", "x")]).expect_err("gap");
    assert!(err.to_string().contains("backends[0]"), "{err}");
    assert!(err.to_string().contains("LEX_CACHE__BACKENDS__0"), "{err}");
}

fn message(result: Result<impl std::fmt::Debug, CacheError>) -> String {
    result.expect_err("invalid").to_string()
}

#[tokio::test]
async fn every_validation_error_names_the_field_and_its_variable() {
    let env_err = |pairs: &[(&str, &str)]| message(load(None, None, pairs));
    let t = env_err(&[("LEX_CACHE__BACKENDS__0__TYPE", "redsi")]);
    assert!(
        t.contains("backends[0].type")
            && t.contains("LEX_CACHE__BACKENDS__0__TYPE")
            && t.contains("memory")
            && t.contains("redis")
            && t.contains("memcached"),
        "unknown type lists the valid ones: {t}"
    );
    let t = env_err(&[("LEX_CACHE__BACKENDS__0__TYPO", "1")]);
    assert!(t.contains("unknown field `typo`"), "{t}");
    let t = env_err(&[("LEX_CACHE__ENABLED", "maybe")]);
    assert!(
        t.contains("`enabled`") && t.contains("LEX_CACHE__ENABLED"),
        "{t}"
    );
    let t = env_err(&[("LEX_CACHE__BACKENDS__0__DEFAULT_TTL", "soon")]);
    assert!(
        t.contains("not a duration") && t.contains("DEFAULT_TTL"),
        "{t}"
    );
    let t = env_err(&[("LEX_CACHE__BACKENDS____TYPE", "redis")]);
    assert!(t.contains("empty segment"), "{t}");

    let dir = ScratchDir::new("config");
    let yaml = write(dir.path(), "a.yaml", "cache:\n  backendz: []\n");
    let t = message(load(Some(&yaml), None, &[]));
    assert!(
        t.contains("unknown field `backendz`"),
        "unknown YAML keys are reported: {t}"
    );
    let yaml = write(dir.path(), "b.yaml", "cache: [\n");
    let t = message(load(Some(&yaml), None, &[]));
    assert!(t.contains("b.yaml") && t.contains("not valid YAML"), "{t}");

    // Checks that need the whole config.
    type Change = Box<dyn Fn(&mut CacheConfig)>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|c| c.backends.clear()),
            "`backends`",
            "no backend is configured",
        ),
        (
            Box::new(|c| c.backends[0].name = " ".into()),
            "backends[0].name",
            "must not be empty",
        ),
        (
            Box::new(|c| c.backends.push(BackendConfig::memory("default"))),
            "backends[1].name",
            "names must be unique",
        ),
        (
            Box::new(|c| c.backends.push(BackendConfig::memory("other"))),
            "`backends`",
            "none has `default: true`",
        ),
        (
            Box::new(|c| {
                c.backends.push(BackendConfig::memory("other"));
                c.backends[0].default = true;
                c.backends[1].default = true;
            }),
            "`backends`",
            "mark exactly one",
        ),
        (
            Box::new(|c| c.backends[0].default_ttl = Some(Duration::ZERO)),
            "backends[0].default_ttl",
            "out of range",
        ),
        (
            Box::new(|c| c.backends = vec![BackendConfig::redis("default", "http://h:1")]),
            "backends[0].redis_url",
            "not a Redis URL",
        ),
        (
            Box::new(|c| c.backends[0].pool_size = 0),
            "backends[0].pool_size",
            "at least 1",
        ),
        (
            Box::new(|c| c.backends[0].op_timeout = Duration::ZERO),
            "backends[0].op_timeout",
            "out of range",
        ),
        (
            Box::new(|c| c.backends[0].memory.max_entries = 0),
            "backends[0].memory.max_entries",
            "",
        ),
        (
            Box::new(|c| {
                let mut f = FunctionConfig::default();
                f.backend = Some("nope".into());
                c.functions.insert("app::f".into(), f);
            }),
            "functions.app::f.backend",
            "no backend is named `nope`",
        ),
        (
            Box::new(|c| {
                let mut f = FunctionConfig::default();
                f.ttl = Some(Some(Duration::ZERO));
                c.functions.insert("app::f".into(), f);
            }),
            "functions.app::f.ttl",
            "out of range",
        ),
    ];
    for (change, field, text) in cases {
        let mut config = CacheConfig::default();
        change(&mut config);
        let t = message(CacheModule::configure(config).await);
        assert!(t.contains(field) && t.contains(text), "{field}: {t}");
        assert!(t.contains("(env `LEX_CACHE__"), "names the variable: {t}");
    }
}

fn redis_at(url: &str) -> CacheConfig {
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::redis("default", url)];
    c
}

const WEAK: &[&str] = &[
    "change-me",
    "password",
    "123456",
    "secret",
    "admin",
    "default",
    "password123",
    "qwerty",
    "changeme",
    "foobared",
];

#[test]
fn production_refuses_weak_and_missing_passwords() {
    for weak in WEAK {
        // In the URL.
        let t = message(redis_at(&format!("redis://:{weak}@10.0.0.5:6379")).check_security(true));
        assert!(
            t.contains("weak password") && t.contains("`default`"),
            "{weak}: {t}"
        );
        assert!(t.contains("LEX_CACHE__BACKENDS__0__REDIS_URL"), "{t}");
        assert!(
            !t.contains(&format!(":{weak}@")),
            "the URL is not printed: {t}"
        );
        // As a field, in any case.
        let mut c = redis_at("redis://10.0.0.5:6379");
        c.backends[0].password = Some(weak.to_uppercase().as_str().into());
        let t = message(c.check_security(true));
        assert!(
            t.contains("LEX_CACHE__BACKENDS__0__PASSWORD"),
            "{weak}: {t}"
        );
        // Memcached.
        let mut c = CacheConfig::default();
        c.backends = vec![BackendConfig::memcached("mc", ["10.0.0.7:11211"])];
        c.backends[0].password = Some((*weak).into());
        assert!(c.check_security(true).is_err(), "{weak}");
        // Outside production: a warning only.
        assert!(
            redis_at(&format!("redis://:{weak}@10.0.0.5:6379"))
                .check_security(false)
                .is_ok()
        );
    }
    let t = message(redis_at("redis://cache.internal:6379").check_security(true));
    assert!(
        t.contains("no password") && t.contains("cache.internal"),
        "{t}"
    );
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::memcached("mc", ["10.0.0.7:11211"])];
    assert!(message(c.check_security(true)).contains("no password"));

    // Loopback without a password is fine; a strong password anywhere is fine.
    for ok in [
        "redis://127.0.0.1:6379",
        "redis://localhost:6379",
        "redis://[::1]:6379",
        "redis://:Zq8-long-and-random-4411@10.0.0.5:6379",
    ] {
        redis_at(ok).check_security(true).expect(ok);
    }
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::memcached("mc", ["127.0.0.1:11211"])];
    c.check_security(true).expect("loopback memcached");
}

/// Runs only as a child of `configure_reads_lex_env_and_from_env_reads_the_process`.
#[tokio::test]
async fn child_process_boot() {
    if std::env::var("LEX_TEST_CHILD_BOOT").is_err() {
        return;
    }
    match CacheModule::from_env().await {
        Ok(caches) => println!("BOOTED {}", caches.names().collect::<Vec<_>>().join(",")),
        Err(e) => println!("REFUSED {e}"),
    }
}

fn child(env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process_boot", "--nocapture", "--quiet"])
        .env("LEX_TEST_CHILD_BOOT", "1")
        .env_remove("LEX_ENV")
        .env_remove("APP_ENV")
        .envs(env.iter().copied())
        .output()
        .expect("run child");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn configure_reads_lex_env_and_from_env_reads_the_process() {
    let dir = ScratchDir::new("config");
    let file = write(dir.path(), "app.yaml", BASE);
    write(
        dir.path(),
        "app-dev.yaml",
        "cache:\n  backends:\n    - name: main\n      default: true\n    - name: devcache\n",
    );
    let file = file.to_str().expect("utf-8 path");
    let out = child(&[("LEX_CONFIG_FILE", file)]);
    assert!(out.contains("BOOTED main"), "{out}");
    let out = child(&[("LEX_CONFIG_FILE", file), ("LEX_PROFILE", "dev")]);
    assert!(out.contains("BOOTED main,devcache"), "{out}");
    let out = child(&[
        ("LEX_CONFIG_FILE", file),
        ("LEX_CACHE__BACKENDS__0__NAME", "fromenv"),
    ]);
    assert!(out.contains("BOOTED fromenv"), "{out}");
    let out = child(&[("LEX_CONFIG_FILE", "/nonexistent/app.yaml")]);
    assert!(
        out.contains("REFUSED") && out.contains("LEX_CONFIG_FILE"),
        "{out}"
    );

    let weak = [
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
        (
            "LEX_CACHE__BACKENDS__0__REDIS_URL",
            // Weak on loopback too; were the refusal to fail, the child would only try a
            // closed loopback port.
            "redis://:admin@127.0.0.1:1",
        ),
    ];
    let mut production = weak.to_vec();
    production.push(("LEX_ENV", "Production"));
    let out = child(&production);
    assert!(
        out.contains("REFUSED") && out.contains("weak password"),
        "{out}"
    );
    assert!(!out.contains(":admin@"), "{out}");
    let mut production = weak.to_vec();
    production.push(("APP_ENV", "PRODUCTION"));
    assert!(child(&production).contains("weak password"));
}

#[test]
fn passwords_are_redacted_in_debug() {
    let config = load(
        None,
        None,
        &[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            (
                "LEX_CACHE__BACKENDS__0__REDIS_URL",
                "redis://u:hunter22@h:1/0",
            ),
            ("LEX_CACHE__BACKENDS__0__PASSWORD", "hunter33"),
        ],
    )
    .expect("load");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter22") && !shown.contains("hunter33"),
        "{shown}"
    );
    assert!(shown.contains("u:***@h"), "{shown}");
}

#[tokio::test]
async fn a_disabled_config_from_env_is_a_pass_through() {
    let config = load(None, None, &[("LEX_CACHE__ENABLED", "false")]).expect("load");
    let caches = CacheModule::configure(config).await.expect("boots");
    let cache = caches.cache();
    let runs = AtomicUsize::new(0);
    for _ in 0..2 {
        cache
            .get_or_insert_with("k", None, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                1u8
            })
            .await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

static OVERRIDDEN: AtomicUsize = AtomicUsize::new(0);
static SWITCHED_OFF: AtomicUsize = AtomicUsize::new(0);
static MOVED: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, key = "over:{id}")]
async fn overridden(id: u32) -> u32 {
    OVERRIDDEN.fetch_add(1, Ordering::SeqCst);
    id
}

#[cacheable(ttl = 60, key = "off:{id}")]
async fn switched_off(id: u32) -> u32 {
    SWITCHED_OFF.fetch_add(1, Ordering::SeqCst);
    id
}

#[cacheable(ttl = 60, key = "moved:{id}")]
async fn moved(id: u32) -> u32 {
    MOVED.fetch_add(1, Ordering::SeqCst);
    id
}

/// The only test in this binary that installs a registry.
#[tokio::test]
async fn function_overrides_change_ttl_enabled_and_backend_at_run_time() {
    let server = RedisServer::start();
    let dir = ScratchDir::new("config");
    let module = module_path!();
    let yaml = format!(
        "cache:
  backends:
    - name: main
      type: redis
      redis_url: {url}
      prefix: 'o:'
    - name: other
      type: redis
      redis_url: {url}
      prefix: 'x:'
      default: true
  functions:
    {module}::overridden:
      ttl: 250s
    {module}::switched_off:
      enabled: false
    {module}::moved:
      backend: main
",
        url = server.url()
    );
    let file = write(dir.path(), "application.yaml", &yaml);
    let config = load(Some(&file), None, &[]).expect("load");
    CacheModule::configure(config)
        .await
        .expect("boot")
        .install();

    overridden(1).await;
    overridden(1).await;
    assert_eq!(OVERRIDDEN.load(Ordering::SeqCst), 1);
    let pttl: i64 = server
        .raw("PTTL x:over:1")
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("PTTL");
    assert!(
        pttl > 66_000 && pttl <= 275_000,
        "the override's 250 s ± 10% jitter, not 60 s: {pttl}"
    );

    switched_off(1).await;
    switched_off(1).await;
    assert_eq!(
        SWITCHED_OFF.load(Ordering::SeqCst),
        2,
        "enabled: false runs every time"
    );
    assert_eq!(server.raw("EXISTS x:off:1").trim(), ":0");

    moved(1).await;
    moved(1).await;
    assert_eq!(MOVED.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.raw("EXISTS o:moved:1").trim(),
        ":1",
        "stored in `main`"
    );
    assert_eq!(server.raw("EXISTS x:moved:1").trim(), ":0");
}

/// Every field of the config appears in the README's reference table with the right
/// variable, and the table lists nothing that does not exist.
#[test]
fn readme_configuration_table_matches_the_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration reference section");
    let mut documented = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let field = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        let env = cells[2].trim_matches('`');
        if !field.starts_with("functions.") {
            let expected = format!(
                "LEX_CACHE__{}",
                field
                    .replace("[]", ".<i>")
                    .split('.')
                    .map(|p| if p == "<i>" {
                        p.to_owned()
                    } else {
                        p.to_uppercase()
                    })
                    .collect::<Vec<_>>()
                    .join("__")
            );
            assert_eq!(env, expected, "env var of `{field}`");
        }
        documented.insert(field);
    }

    let mut config = CacheConfig::default();
    config.functions.insert("<fn>".into(), {
        let mut f = FunctionConfig::default();
        f.ttl = Some(None);
        f.enabled = Some(true);
        f.backend = Some("x".into());
        f
    });
    let value = serde_json::to_value(&config).expect("serialize");
    let mut actual = BTreeSet::new();
    fn walk(v: &serde_json::Value, path: String, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, p, out);
                }
            }
            serde_json::Value::Array(items) if path == "backends" => {
                walk(&items[0], format!("{path}[]"), out);
            }
            _ => {
                out.insert(path);
            }
        }
    }
    walk(&value, String::new(), &mut actual);
    assert_eq!(documented, actual, "README table vs config fields");
}
