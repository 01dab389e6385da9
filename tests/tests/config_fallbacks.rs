//! No silent fallback to an in-memory cache: settings that only make sense for a remote
//! backend, a missing or misspelled `cache:` section, a missing profile file, and profile
//! lists that would have replaced the base list are errors (or merge, for lists).

use lexigram_cache::config::ConfigSources;
use lexigram_cache::{BackendConfig, BackendKind, CacheConfig};
use lexigram_cache_tests::config::{message, sources, write_yaml as write};
use lexigram_cache_tests::servers::ScratchDir;

#[test]
fn remote_settings_without_a_type_are_an_error() {
    for (var, value, field, hint) in [
        (
            "REDIS_URL",
            "redis://127.0.0.1:6379",
            "redis_url",
            "type: redis",
        ),
        ("HOST", "127.0.0.1", "host", "type: redis"),
        ("NODES__0", "redis://127.0.0.1:7000", "nodes", "type: redis"),
        (
            "SERVERS__0",
            "127.0.0.1:11211",
            "servers",
            "type: memcached",
        ),
        ("PASSWORD", "Zq8-long-and-random", "password", "type"),
        ("TLS", "true", "tls", "type"),
    ] {
        let name = format!("LEX_CACHE__BACKENDS__0__{var}");
        let config = sources(None, None, &[(name.as_str(), value)])
            .load()
            .expect("loads");
        let t = message(config.validate());
        assert!(
            t.contains(&format!("backends[0].{field}")) && t.contains(hint) && t.contains("memory"),
            "{var}: {t}"
        );
    }
    // Fields of another remote type.
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::redis("default", "redis://127.0.0.1:6379")];
    c.backends[0].servers = vec!["127.0.0.1:11211".into()];
    let t = message(c.validate());
    assert!(
        t.contains("backends[0].servers") && t.contains("redis"),
        "{t}"
    );
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::memcached("default", ["127.0.0.1:11211"])];
    c.backends[0].nodes = vec!["redis://127.0.0.1:7000".into()];
    let t = message(c.validate());
    assert!(
        t.contains("backends[0].nodes") && t.contains("memcached"),
        "{t}"
    );
    // With the type, the same settings are fine.
    let config = sources(
        None,
        None,
        &[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            ("LEX_CACHE__BACKENDS__0__HOST", "127.0.0.1"),
        ],
    )
    .load()
    .expect("loads");
    config.validate().expect("valid");
}

#[test]
fn a_file_without_a_cache_section_is_an_error() {
    let dir = ScratchDir::new("config-fallbacks");
    let file = write(
        dir.path(),
        "a.yaml",
        "caches:\n  backends:\n    - type: redis\n",
    );
    let t = message(sources(Some(&file), None, &[]).load());
    assert!(
        t.contains("a.yaml") && t.contains("`cache:`") && t.contains("`caches:`"),
        "{t}"
    );
    let file = write(dir.path(), "b.yaml", "service_name: catalog\n");
    let t = message(sources(Some(&file), None, &[]).load());
    assert!(
        t.contains("b.yaml") && t.contains("no `cache:` section"),
        "{t}"
    );
    let file = write(dir.path(), "c.yaml", "");
    let t = message(sources(Some(&file), None, &[]).load());
    assert!(t.contains("c.yaml") && t.contains("`cache:`"), "{t}");
    // An explicit empty section selects the defaults.
    let file = write(dir.path(), "d.yaml", "cache: {}\n");
    assert_eq!(
        sources(Some(&file), None, &[]).load().expect("defaults"),
        CacheConfig::default()
    );
}

const BASE: &str = "
cache:
  backends:
    - name: main
      type: redis
      redis_url: redis://127.0.0.1:6379
      default: true
    - name: local
      type: memory
      memory:
        max_entries: 500
";

#[test]
fn profile_lists_merge_into_the_base_by_name_or_index() {
    let dir = ScratchDir::new("config-fallbacks");
    let file = write(dir.path(), "application.yaml", BASE);
    // No name: by index.
    write(
        dir.path(),
        "application-prod.yaml",
        "cache:\n  backends:\n    - prefix: 'prod:'\n",
    );
    let c = sources(Some(&file), Some("prod"), &[])
        .load()
        .expect("prod");
    assert_eq!(c.backends.len(), 2);
    assert_eq!(
        c.backends[0].kind,
        BackendKind::Redis,
        "not turned into memory"
    );
    assert_eq!(c.backends[0].prefix, "prod:");
    // By name, whatever the position; a new name is appended.
    write(
        dir.path(),
        "application-staging.yaml",
        "cache:\n  backends:\n    - name: local\n      prefix: 'stg:'\n    - name: extra\n",
    );
    let c = sources(Some(&file), Some("staging"), &[])
        .load()
        .expect("staging");
    assert_eq!(c.backends.len(), 3);
    assert_eq!(c.backends[0].prefix, "");
    assert_eq!(c.backends[1].prefix, "stg:");
    assert_eq!(c.backends[1].memory.max_entries, 500);
    assert_eq!(c.backends[2].name, "extra");
    // A list of values is the profile's.
    write(
        dir.path(),
        "application-mc.yaml",
        "cache:\n  backends:\n    - name: main\n      type: memcached\n      redis_url: ~\n      servers: ['127.0.0.1:11212']\n",
    );
    let base = write(
        dir.path(),
        "base-mc.yaml",
        "cache:\n  backends:\n    - name: main\n      type: memcached\n      servers: ['127.0.0.1:11211', '127.0.0.1:11213']\n",
    );
    std::fs::rename(
        dir.path().join("application-mc.yaml"),
        dir.path().join("base-mc-mc.yaml"),
    )
    .expect("rename");
    let c = sources(Some(&base), Some("mc"), &[]).load().expect("mc");
    assert_eq!(c.backends[0].servers, ["127.0.0.1:11212"]);
}

#[test]
fn a_missing_profile_file_is_an_error_and_a_lone_profile_file_is_read() {
    let dir = ScratchDir::new("config-fallbacks");
    let file = write(dir.path(), "application.yaml", BASE);
    let t = message(sources(Some(&file), Some("nosuch"), &[]).load());
    assert!(
        t.contains("nosuch") && t.contains("application-nosuch.yaml"),
        "{t}"
    );

    // A profile file without a base file beside it.
    let alone = ScratchDir::new("config-fallbacks");
    let base = alone.path().join("application.yaml");
    write(
        alone.path(),
        "application-dev.yaml",
        "cache:\n  backends:\n    - name: devcache\n",
    );
    let mut s = sources(None, Some("dev"), &[]);
    s.file = Some(base);
    let c = s.load().expect("the profile file alone");
    assert_eq!(c.backends[0].name, "devcache");
}

/// Runs only as a child of `the_process_sources_read_a_lone_profile_file`.
#[test]
fn child_process_sources() {
    if std::env::var("LEX_TEST_CHILD_SOURCES").is_err() {
        return;
    }
    match ConfigSources::from_process().and_then(|s| s.load()) {
        Ok(c) => println!("LOADED {}", c.backends[0].name),
        Err(e) => println!("REFUSED {e}"),
    }
}

#[test]
fn the_process_sources_read_a_lone_profile_file() {
    let dir = ScratchDir::new("config-fallbacks");
    write(
        dir.path(),
        "application-dev.yaml",
        "cache:\n  backends:\n    - name: devcache\n",
    );
    let run = |profile: &str| {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_process_sources", "--nocapture", "--quiet"])
            .current_dir(dir.path())
            .env("LEX_TEST_CHILD_SOURCES", "1")
            .env_remove("LEX_CONFIG_FILE")
            .env("LEX_PROFILE", profile)
            .output()
            .expect("run child");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run("dev");
    assert!(out.contains("LOADED devcache"), "{out}");
    let out = run("nosuch");
    assert!(
        out.contains("REFUSED") && out.contains("LEX_PROFILE") && out.contains("nosuch"),
        "{out}"
    );
}
