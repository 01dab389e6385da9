//! Errors point at what the user set: the variable that asked for production, the range of a
//! number, the field that holds a bad value, the way to write a list in variables.

use lexigram_cache::CacheModule;
use lexigram_cache_tests::config::{from_vars, message};

/// Runs only as a child of `production_refusals_name_the_variable_that_was_set`.
#[tokio::test]
async fn child_process_boot() {
    if std::env::var("LEX_TEST_CHILD_BOOT").is_err() {
        return;
    }
    match CacheModule::from_env().await {
        Ok(_) => println!("BOOTED"),
        Err(e) => println!("REFUSED {e}"),
    }
}

#[test]
fn production_refusals_name_the_variable_that_was_set() {
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_process_boot", "--nocapture", "--quiet"])
            .env("LEX_TEST_CHILD_BOOT", "1")
            .env_remove("LEX_ENV")
            .env_remove("APP_ENV")
            .env_remove("LEX_CONFIG_FILE")
            .env_remove("LEX_PROFILE")
            .current_dir(std::env::temp_dir())
            .env("LEX_CACHE__BACKENDS__0__TYPE", "redis")
            // Refused before connecting; were it not, only a closed loopback port is tried.
            .env(
                "LEX_CACHE__BACKENDS__0__REDIS_URL",
                "redis://:admin@127.0.0.1:1",
            )
            .envs(env.iter().copied())
            .output()
            .expect("run child");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&[("APP_ENV", "production")]);
    assert!(
        out.contains("REFUSED") && out.contains("APP_ENV is production"),
        "{out}"
    );
    assert!(!out.contains("LEX_ENV"), "{out}");
    let out = run(&[("LEX_ENV", "production")]);
    assert!(out.contains("LEX_ENV is production"), "{out}");
}

#[test]
fn out_of_range_numbers_name_the_range() {
    for (var, value, range) in [
        ("BACKENDS__0__PORT", "99999", "1 to 65535"),
        ("BACKENDS__0__PORT", "-1", "1 to 65535"),
        ("BACKENDS__0__DB", "4294967296", "0 to 4294967295"),
        ("SERVICE__BREAKER_THRESHOLD", "-5", "0 to 4294967295"),
        (
            "BACKENDS__0__POOL_SIZE",
            "18446744073709551616",
            "18446744073709551615",
        ),
    ] {
        let name = format!("LEX_CACHE__{var}");
        let t = message(from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            (name.as_str(), value),
        ]));
        assert!(
            t.contains(range) && !t.contains("expected u"),
            "{var}={value}: {t}"
        );
    }
    let t = message(
        from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            ("LEX_CACHE__BACKENDS__0__HOST", "127.0.0.1"),
            ("LEX_CACHE__BACKENDS__0__PORT", "0"),
        ])
        .expect("loads")
        .validate(),
    );
    assert!(
        t.contains("backends[0].port") && t.contains("1 to 65535"),
        "{t}"
    );
}

#[test]
fn a_port_in_host_is_reported_against_host() {
    let t = message(
        from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            ("LEX_CACHE__BACKENDS__0__HOST", "127.0.0.1:16379"),
        ])
        .expect("loads")
        .validate(),
    );
    assert!(
        t.contains("backends[0].host") && t.contains("LEX_CACHE__BACKENDS__0__PORT"),
        "{t}"
    );
    assert!(!t.contains("redis_url"), "{t}");
    for bad in ["h/0", "u:p@h", "h?x", " h", "[::1]"] {
        let t = message(
            from_vars(&[
                ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
                ("LEX_CACHE__BACKENDS__0__HOST", bad),
            ])
            .expect("loads")
            .validate(),
        );
        assert!(
            t.contains("at `backends[0].host`") && !t.contains("at `backends[0].redis_url`"),
            "{bad}: {t}"
        );
    }
    // An IPv6 address is a host.
    from_vars(&[
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
        ("LEX_CACHE__BACKENDS__0__HOST", "::1"),
    ])
    .expect("loads")
    .validate()
    .expect("IPv6 host");
}

#[test]
fn a_list_given_as_one_variable_hints_at_indexed_variables() {
    let t = message(from_vars(&[
        ("LEX_CACHE__BACKENDS__0__TYPE", "memcached"),
        ("LEX_CACHE__BACKENDS__0__SERVERS", "a:11211,b:11211"),
    ]));
    assert!(t.contains("LEX_CACHE__BACKENDS__0__SERVERS__0"), "{t}");
    assert!(!t.contains("a:11211"), "the value is not repeated: {t}");
    let t = message(from_vars(&[
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
        (
            "LEX_CACHE__BACKENDS__0__NODES",
            "redis://:Zq8pw@127.0.0.1:7000,redis://:Zq8pw@127.0.0.1:7001",
        ),
    ]));
    assert!(t.contains("LEX_CACHE__BACKENDS__0__NODES__0"), "{t}");
    assert!(!t.contains("Zq8pw"), "{t}");
}

#[test]
fn user_info_in_host_or_servers_is_refused_without_repeating_it() {
    let t = message(
        from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            ("LEX_CACHE__BACKENDS__0__HOST", "Zq8pw@127.0.0.1:6379"),
        ])
        .expect("loads")
        .validate(),
    );
    assert!(
        t.contains("backends[0].host") && !t.contains("Zq8pw"),
        "{t}"
    );
    let t = message(
        from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "memcached"),
            (
                "LEX_CACHE__BACKENDS__0__SERVERS__0",
                "memcached://app:Zq8pw@127.0.0.1:11211",
            ),
        ])
        .expect("loads")
        .validate(),
    );
    assert!(
        t.contains("backends[0].servers[0]") && t.contains("password"),
        "{t}"
    );
    assert!(!t.contains("Zq8pw"), "{t}");
}

/// A builder used from code names its own setting, never an environment variable that does
/// not exist; the same mistake made in configuration names the field and its variable.
#[tokio::test]
async fn builder_errors_name_the_setting_and_configuration_errors_the_variable() {
    use lexigram_cache::{MemcachedBackend, MemoryBackend, RedisBackend};
    let errors = [
        MemoryBackend::builder()
            .max_entries(0)
            .build()
            .expect_err("no entries"),
        MemcachedBackend::builder(["127.0.0.1:1"])
            .pool_size(0)
            .build()
            .expect_err("no pool"),
        RedisBackend::builder("redis://127.0.0.1:1")
            .ca_file("/nonexistent/ca.pem")
            .build()
            .expect_err("no CA file"),
    ];
    for (e, setting) in errors
        .iter()
        .zip(["memory.max_entries", "pool_size", "ca_file"])
    {
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("invalid setting `{setting}`: ")),
            "{text}"
        );
        assert!(!text.contains("LEX_CACHE"), "{text}");
    }
    // The builder's error, raised while booting from variables.
    let config = from_vars(&[
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
        ("LEX_CACHE__BACKENDS__0__REDIS_URL", "rediss://127.0.0.1:1"),
        ("LEX_CACHE__BACKENDS__0__CA_FILE", "/nonexistent/ca.pem"),
    ])
    .expect("loads");
    let text = message(CacheModule::configure(config).await);
    assert!(
        text.contains("`backends[0].ca_file`")
            && text.contains("LEX_CACHE__BACKENDS__0__CA_FILE")
            && text.contains("cannot read the CA file"),
        "{text}"
    );
}
