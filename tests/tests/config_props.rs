//! Property tests over configuration values from YAML and from `LEX_CACHE__` variables:
//! numbers at their edges, NaN, huge and negative values, strings full of URL delimiters. No
//! input panics, and no password shows in any `Debug`, `Display` or error text.

use lexigram_cache::CacheConfig;
use lexigram_cache::config::ConfigSources;
use lexigram_cache_tests::servers::ScratchDir;
use proptest::prelude::*;

/// Every leaf field, as the path under one backend, the service or a function.
const FIELDS: &[&str] = &[
    "enabled",
    "backends.0.name",
    "backends.0.type",
    "backends.0.default",
    "backends.0.prefix",
    "backends.0.default_ttl",
    "backends.0.format",
    "backends.0.memory.engine",
    "backends.0.memory.max_entries",
    "backends.0.memory.max_weight",
    "backends.0.memory.time_to_idle",
    "backends.0.host",
    "backends.0.port",
    "backends.0.db",
    "backends.0.username",
    "backends.0.cluster",
    "backends.0.tls",
    "backends.0.ca_file",
    "backends.0.connect_timeout",
    "backends.0.op_timeout",
    "backends.0.call_budget",
    "backends.0.servers.0",
    "backends.0.pool_size",
    "backends.0.max_item_size",
    "backends.0.allow_unprefixed_clear",
    "service.fill_wait",
    "service.enable_protection",
    "service.lock_ttl",
    "service.lock_wait",
    "service.ttl_jitter",
    "service.early_refresh",
    "service.beta",
    "service.stale_if_error",
    "service.circuit_breaker_enabled",
    "service.breaker_threshold",
    "service.breaker_open_for",
    "functions.app::f.ttl",
    "functions.app::f.enabled",
    "functions.app::f.backend",
    // Indexed overrides; only the variables spell these (the YAML has no such keys).
    "functions.0.name",
    "functions.0.ttl",
    "functions.0.enabled",
    "functions.1.name",
];

/// Values at the edges of every type the fields have, and strings with URL delimiters.
fn value() -> impl Strategy<Value = String> {
    let edges = prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "65535",
        "65536",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "99999999999999999999999999999",
        "1e400",
        "-1e400",
        ".nan",
        "NaN",
        ".inf",
        "-.inf",
        "0.0",
        "1.5",
        "-0.5",
        "true",
        "never",
        "10000000000y",
        "0s",
        "1ns",
        "",
        "~",
        "redis",
        "memcached",
        "memory",
    ])
    .prop_map(str::to_owned);
    let text = "[a-z0-9:/?#@\\[\\]%&=.,_ -]{0,24}";
    prop_oneof![3 => edges, 2 => text]
}

/// A password of distinctive tokens and delimiters; a leak of any token is caught.
fn password() -> impl Strategy<Value = (String, Vec<String>)> {
    let token = "[A-Z][0-9][A-Z0-9]{4}";
    let delimiter = prop::sample::select(vec!["/", "?", "#", "@", ":", "%", "&", "=", " ", ""]);
    prop::collection::vec((token, delimiter), 1..3).prop_map(|parts| {
        let text = parts.iter().map(|(t, d)| format!("{t}{d}")).collect();
        (text, parts.into_iter().map(|(t, _)| t).collect())
    })
}

fn env_name(path: &str) -> String {
    format!("LEX_CACHE__{}", path.replace('.', "__").to_uppercase())
}

/// The `cache:` section with a Redis backend carrying `pw` in all three places, and each
/// `path: value` in its place, the value written raw (it may well not parse).
fn yaml(pw: &str, fields: &[(&str, String)]) -> String {
    let fields: std::collections::BTreeMap<&str, &str> =
        fields.iter().map(|(p, v)| (*p, v.as_str())).collect();
    let under = |prefix: &str, indent: usize| {
        let mut out = String::new();
        for (path, v) in &fields {
            if let Some(key) = path.strip_prefix(prefix)
                && !key.contains('.')
            {
                out.push_str(&format!("{}{key}: {v}\n", " ".repeat(indent)));
            }
        }
        out
    };
    let mut out = String::from("cache:\n");
    out.push_str(&under("", 2));
    out.push_str(&format!(
        "  backends:\n    - password: {pw}\n      redis_url: redis://:{pw}@127.0.0.1:1\n      \
         nodes: [\"redis://:{pw}@127.0.0.1:2\"]\n"
    ));
    if !fields.contains_key("backends.0.type") {
        out.push_str("      type: redis\n");
    }
    out.push_str(&under("backends.0.", 6));
    if let Some(v) = fields.get("backends.0.servers.0") {
        out.push_str(&format!("      servers: [{v}]\n"));
    }
    out.push_str("      memory:\n");
    out.push_str(&under("backends.0.memory.", 8));
    out.push_str("  service:\n");
    out.push_str(&under("service.", 4));
    out.push_str("  functions:\n    app::f:\n");
    out.push_str(&under("functions.app::f.", 6));
    out
}

fn check(result: Result<CacheConfig, lexigram_cache::CacheError>, tokens: &[String], what: &str) {
    let mut texts = Vec::new();
    match result {
        Ok(config) => {
            texts.push(format!("{config:?}"));
            if let Err(e) = config.validate() {
                texts.push(format!("{e} {e:?}"));
            }
            for production in [true, false] {
                if let Err(e) = config.check_security(production) {
                    texts.push(format!("{e} {e:?}"));
                }
            }
        }
        Err(e) => texts.push(format!("{e} {e:?}")),
    }
    for text in texts {
        for t in tokens {
            assert!(!text.contains(t.as_str()), "{what}: `{t}` shows in: {text}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn variables_never_panic_or_show_a_password(
        fields in prop::collection::vec((prop::sample::select(FIELDS), value()), 0..6),
        (pw, tokens) in password(),
        kind in prop::sample::select(vec!["redis", "memcached", "memory"]),
        in_url in any::<bool>(),
    ) {
        let mut vars = vec![("LEX_CACHE__BACKENDS__0__TYPE".to_owned(), kind.to_owned())];
        if in_url {
            vars.push((
                "LEX_CACHE__BACKENDS__0__REDIS_URL".into(),
                format!("redis://app:{pw}@127.0.0.1:1/0"),
            ));
            vars.push((
                "LEX_CACHE__BACKENDS__0__NODES__0".into(),
                format!("redis://:{pw}@127.0.0.1:2"),
            ));
        } else {
            vars.push(("LEX_CACHE__BACKENDS__0__PASSWORD".into(), pw.clone()));
        }
        vars.extend(fields.iter().map(|(path, v)| (env_name(path), v.clone())));
        let mut sources = ConfigSources::default();
        sources.vars = vars.clone();
        check(sources.load(), &tokens, &format!("{vars:?}"));
    }

    #[test]
    fn yaml_never_panics_or_shows_a_password(
        fields in prop::collection::vec((prop::sample::select(FIELDS), value()), 0..6),
        (pw, tokens) in password(),
        quoted in any::<bool>(),
    ) {
        let dir = ScratchDir::new("config-props");
        let pw = if quoted { format!("'{}'", pw.replace('\'', "''")) } else { pw };
        let text = yaml(&pw, &fields);
        let file = dir.path().join("application.yaml");
        std::fs::write(&file, &text).expect("write yaml");
        let mut sources = ConfigSources::default();
        sources.file = Some(file);
        check(sources.load(), &tokens, &text);
    }
}

#[test]
fn the_generated_yaml_is_a_valid_configuration_when_its_values_are() {
    let dir = ScratchDir::new("config-props");
    let file = dir.path().join("application.yaml");
    let text = yaml(
        "A1B2C3",
        &[
            ("service.beta", "1.5".into()),
            ("backends.0.port", "6380".into()),
            ("functions.app::f.ttl", "never".into()),
            ("backends.0.memory.max_entries", "5".into()),
        ],
    );
    std::fs::write(&file, &text).expect("write yaml");
    let mut sources = ConfigSources::default();
    sources.file = Some(file);
    let config = sources.load().expect(&text);
    assert_eq!(config.service.beta, 1.5);
    assert_eq!(config.backends[0].port, Some(6380));
    assert_eq!(
        config.backends[0].password.as_ref().map(|p| p.expose()),
        Some("A1B2C3")
    );
}
