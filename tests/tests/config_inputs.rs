//! Bad input through YAML and `LEX_CACHE__` variables: every one is a clear error, none a
//! panic, an abort or a silent fallback.

use std::time::Duration;

use lexigram_cache::config::ConfigSources;
use lexigram_cache::{BackendConfig, CacheConfig};
use lexigram_cache_tests::config::{from_vars, from_yaml, message};

#[test]
fn indexed_variables_have_a_bounded_index() {
    for index in [
        "99999999999",
        "18446744073709551615",
        "10000000",
        "1024",
        "99999999999999999999999999",
    ] {
        let started = std::time::Instant::now();
        let name = format!("LEX_CACHE__BACKENDS__{index}__TYPE");
        let t = message(from_vars(&[(name.as_str(), "redis")]));
        assert!(t.contains("1023") && t.contains(&name), "{index}: {t}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{index}: no huge list is built"
        );
        let name = format!("LEX_CACHE__BACKENDS__0__SERVERS__{index}");
        let t = message(from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "memcached"),
            (name.as_str(), "127.0.0.1:11211"),
        ]));
        assert!(t.contains("1023"), "{index}: {t}");
    }
    // The last index allowed still works (and then reports the gap before it).
    let t = message(from_vars(&[("LEX_CACHE__BACKENDS__1023__TYPE", "memory")]));
    assert!(
        t.contains("backends[0]") && t.contains("without gaps"),
        "{t}"
    );
}

#[test]
fn every_duration_has_a_range_checked_at_load() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "LEX_CACHE__SERVICE__BREAKER_OPEN_FOR",
            "18446744073709551615",
            "service.breaker_open_for",
        ),
        ("LEX_CACHE__SERVICE__FILL_WAIT", "400d", "service.fill_wait"),
        ("LEX_CACHE__SERVICE__LOCK_TTL", "0", "service.lock_ttl"),
        (
            "LEX_CACHE__SERVICE__LOCK_WAIT",
            "500us",
            "service.lock_wait",
        ),
        (
            "LEX_CACHE__SERVICE__STALE_IF_ERROR",
            "10000000000y",
            "service.stale_if_error",
        ),
        (
            "LEX_CACHE__BACKENDS__0__DEFAULT_TTL",
            "11y",
            "backends[0].default_ttl",
        ),
        (
            "LEX_CACHE__BACKENDS__0__DEFAULT_TTL",
            "18446744073709551615",
            "backends[0].default_ttl",
        ),
        (
            "LEX_CACHE__BACKENDS__0__CONNECT_TIMEOUT",
            "2days",
            "backends[0].connect_timeout",
        ),
        (
            "LEX_CACHE__BACKENDS__0__OP_TIMEOUT",
            "0s",
            "backends[0].op_timeout",
        ),
        (
            "LEX_CACHE__BACKENDS__0__CALL_BUDGET",
            "2days",
            "backends[0].call_budget",
        ),
        (
            "LEX_CACHE__BACKENDS__0__MEMORY__TIME_TO_IDLE",
            "99999y",
            "backends[0].memory.time_to_idle",
        ),
        (
            "LEX_CACHE__FUNCTIONS__APP::F__TTL",
            "18446744073709551615",
            "functions.app::f.ttl",
        ),
    ];
    for (name, value, path) in cases {
        let t = message(from_vars(&[(name, value)]));
        assert!(t.contains(path), "{name}={value}: {t}");
        assert!(
            t.contains("between 1ms and 10years") || t.contains("between 1ms and 1day"),
            "{name}={value} names the range: {t}"
        );
    }
    let t = message(from_yaml(
        "cache:\n  functions:\n    app::f:\n      ttl: 10000000000y\n",
    ));
    assert!(
        t.contains("functions.app::f.ttl") && t.contains("10years"),
        "{t}"
    );
    let t = message(from_yaml(
        "cache:\n  service:\n    breaker_open_for: 18446744073709551615\n",
    ));
    assert!(
        t.contains("service.breaker_open_for") && t.contains("1day"),
        "{t}"
    );

    // The edges are accepted.
    let c = from_vars(&[
        ("LEX_CACHE__BACKENDS__0__DEFAULT_TTL", "10y"),
        ("LEX_CACHE__SERVICE__BREAKER_OPEN_FOR", "1ms"),
        ("LEX_CACHE__SERVICE__FILL_WAIT", "1day"),
        ("LEX_CACHE__FUNCTIONS__APP::F__TTL", "never"),
    ])
    .expect("edges load");
    assert_eq!(
        c.backends[0].default_ttl,
        Some(Duration::from_secs(315_576_000))
    );

    // A config built in code is held to the same ranges.
    let mut c = CacheConfig::default();
    c.service.breaker_open_for = Duration::MAX;
    let t = message(c.validate());
    assert!(
        t.contains("service.breaker_open_for") && t.contains("1day"),
        "{t}"
    );
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::memory("default")];
    c.backends[0].default_ttl = Some(Duration::MAX);
    let t = message(c.validate());
    assert!(
        t.contains("backends[0].default_ttl") && t.contains("10years"),
        "{t}"
    );
}

/// Runs only as a child of `non_utf8_variables_are_an_error_or_ignored`.
#[test]
fn child_process_sources() {
    if std::env::var_os("LEX_TEST_CHILD_SOURCES").is_none() {
        return;
    }
    match ConfigSources::from_process().and_then(|s| s.load()) {
        Ok(c) => println!("LOADED {}", c.backends[0].prefix),
        Err(e) => println!("REFUSED {e}"),
    }
}

#[test]
fn non_utf8_variables_are_an_error_or_ignored() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let run = |name: &OsStr, value: &OsStr| {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_process_sources", "--nocapture", "--quiet"])
            .current_dir(std::env::temp_dir())
            .env("LEX_TEST_CHILD_SOURCES", "1")
            .env_remove("LEX_CONFIG_FILE")
            .env_remove("LEX_PROFILE")
            .env("LEX_CACHE__BACKENDS__0__PREFIX", "ok:")
            .env(name, value)
            .output()
            .expect("run child");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let bad = OsStr::from_bytes(b"\xff\xfe");
    // Someone else's variable: not ours to judge.
    let out = run(OsStr::new("UNRELATED_BYTES"), bad);
    assert!(out.contains("LOADED ok:"), "{out}");
    // Ours: a clear error naming it.
    let out = run(OsStr::new("LEX_CACHE__BACKENDS__0__NAME"), bad);
    assert!(
        out.contains("REFUSED")
            && out.contains("LEX_CACHE__BACKENDS__0__NAME")
            && out.contains("UTF-8"),
        "{out}"
    );
    let out = run(OsStr::new("LEX_PROFILE"), bad);
    assert!(
        out.contains("REFUSED") && out.contains("LEX_PROFILE"),
        "{out}"
    );
    let out = run(OsStr::from_bytes(b"LEX_CACHE__\xff"), OsStr::new("x"));
    assert!(out.contains("REFUSED") && out.contains("UTF-8"), "{out}");
}
