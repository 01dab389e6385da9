//! No password reaches any text a user or a log sees: `Display`/`Debug` of URLs and configs,
//! and every configuration error, whatever characters the password holds.

use lexigram_cache::config::{ConfigSources, Secret};
use lexigram_cache::{BackendConfig, CacheConfig, CacheModule, ServerUrl};
use proptest::prelude::*;

/// A password built of distinctive tokens joined by URL delimiters, so that a leak of any
/// piece of it (not only of the whole) is caught.
fn password() -> impl Strategy<Value = (String, Vec<String>)> {
    let token = "[A-Z][0-9][A-Z0-9]{4}";
    let delimiter = prop::sample::select(vec![
        "/", "?", "#", "@", ":", "%", "%2F", "&", "=", " ", "[", "]", "\\", "'", "\"", "`", ",", "",
    ]);
    prop::collection::vec((token, delimiter), 1..4).prop_map(|parts| {
        let text = parts.iter().map(|(t, d)| format!("{t}{d}")).collect();
        (text, parts.into_iter().map(|(t, _)| t).collect())
    })
}

fn url_shapes(pw: &str) -> Vec<String> {
    let mut shapes = vec![
        format!("redis://:{pw}@127.0.0.1:1/0"),
        format!("redis://app:{pw}@127.0.0.1:1"),
        format!("rediss://app:{pw}@127.0.0.1:1/2"),
        format!("redis://:{pw}@[::1]:1"),
        format!("redis://:{pw}@"),
        format!("redis:/:{pw}@127.0.0.1:1"),
        format!(":{pw}@127.0.0.1:1"),
        // In a query, a raw `&` or `#` ends the value for every parser: written encoded.
        format!(
            "redis://127.0.0.1:1/?password={}",
            pw.replace('&', "%26").replace('#', "%23")
        ),
    ];
    // Without a host: what follows a password's own `@` would be the host to any parser.
    if !pw.contains('@') {
        shapes.push(format!("redis://:{pw}"));
    }
    shapes
}

fn assert_hidden(text: &str, tokens: &[String], what: &str) {
    for t in tokens {
        assert!(!text.contains(t.as_str()), "{what} shows `{t}`: {text}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn no_password_in_url_display_debug_or_errors((pw, tokens) in password()) {
        let rt = runtime();
        for url in url_shapes(&pw) {
            let u = ServerUrl::from(url.as_str());
            assert_hidden(&format!("{u} {u:?}"), &tokens, &url);
            let mut config = CacheConfig::default();
            config.backends = vec![BackendConfig::redis("default", url.as_str())];
            config.backends[0].connect_timeout = std::time::Duration::from_millis(20);
            assert_hidden(&format!("{config:?}"), &tokens, &url);
            if let Err(e) = config.check_security(true) {
                assert_hidden(&e.to_string(), &tokens, &url);
            }
            let mut remote = config.clone();
            remote.backends[0].redis_url = Some(url.replace("127.0.0.1:1", "cache.internal:6379").into());
            if let Err(e) = remote.check_security(true) {
                assert_hidden(&e.to_string(), &tokens, &url);
            }
            // The boot path: validation, URL parsing and the connection attempt (a closed
            // loopback port; nothing else is ever dialled) all report without the password.
            if let Err(e) = rt.block_on(CacheModule::configure(config.clone())) {
                assert_hidden(&e.to_string(), &tokens, &url);
                assert_hidden(&format!("{e:?}"), &tokens, &url);
            }
            // The same URL from a variable and as a Cluster seed.
            let mut sources = ConfigSources::default();
            sources.vars = vec![
                ("LEX_CACHE__BACKENDS__0__TYPE".into(), "redis".into()),
                ("LEX_CACHE__BACKENDS__0__NODES__0".into(), url.clone()),
                ("LEX_CACHE__BACKENDS__0__CONNECT_TIMEOUT".into(), "20ms".into()),
            ];
            match sources.load() {
                Ok(config) => assert_hidden(&format!("{config:?}"), &tokens, &url),
                Err(e) => assert_hidden(&e.to_string(), &tokens, &url),
            }
        }
        let s = Secret::from(pw.as_str());
        assert_hidden(&format!("{s:?}"), &tokens, "Secret");
    }
}

#[test]
fn a_password_with_a_slash_is_hidden() {
    for url in [
        "redis://:ab/cd@127.0.0.1:6379",
        "redis://u:ab?cd@127.0.0.1:6379/0",
        "redis://:ab#cd@127.0.0.1:6379",
    ] {
        let u = ServerUrl::from(url);
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("ab") && !shown.contains("cd"), "{shown}");
        assert!(shown.contains("@127.0.0.1:6379"), "the host stays: {shown}");
    }
}
