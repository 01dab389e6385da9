//! Per-function overrides from indexed variables: `LEX_CACHE__FUNCTIONS__<n>__NAME` names the
//! function, `..._TTL`, `..._ENABLED` and `..._BACKEND` override it, merged into
//! `cache.functions` over the YAML files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lexigram_cache::{CacheModule, cacheable};
use lexigram_cache_tests::config::{load, message};
use lexigram_cache_tests::servers::{RedisServer, ScratchDir};

const YAML: &str = "cache:
  backends:
    - name: main
      default: true
    - name: other
  functions:
    shop::catalog::load_product:
      ttl: 60
      backend: main
    shop::catalog::untouched:
      enabled: false
";

#[test]
fn indexed_variables_merge_into_the_functions_from_the_files() {
    let dir = ScratchDir::new("config-functions");
    let file = dir.path().join("application.yaml");
    std::fs::write(&file, YAML).expect("write yaml");
    let config = load(
        Some(&file),
        &[
            (
                "LEX_CACHE__FUNCTIONS__0__NAME",
                "shop::catalog::load_product",
            ),
            ("LEX_CACHE__FUNCTIONS__0__TTL", "10m"),
            // The name is a value, so it keeps its case and its colons.
            ("LEX_CACHE__FUNCTIONS__1__NAME", "shop::Catalog::reload"),
            ("LEX_CACHE__FUNCTIONS__1__ENABLED", "false"),
            ("LEX_CACHE__FUNCTIONS__1__BACKEND", "other"),
            ("LEX_CACHE__FUNCTIONS__2__NAME", " shop::catalog::never "),
            ("LEX_CACHE__FUNCTIONS__2__TTL", "never"),
        ],
    )
    .expect("loads");
    config.validate().expect("valid");
    let f = &config.functions;
    assert_eq!(f.len(), 4, "{f:?}");
    let product = &f["shop::catalog::load_product"];
    assert_eq!(
        product.ttl,
        Some(Some(Duration::from_secs(600))),
        "env wins"
    );
    assert_eq!(
        product.backend.as_deref(),
        Some("main"),
        "the file's other fields stay"
    );
    assert_eq!(f["shop::catalog::untouched"].enabled, Some(false));
    let reload = &f["shop::Catalog::reload"];
    assert_eq!(reload.enabled, Some(false));
    assert_eq!(reload.backend.as_deref(), Some("other"));
    assert_eq!(reload.ttl, None);
    assert_eq!(
        f["shop::catalog::never"].ttl,
        Some(None),
        "never, name trimmed"
    );
}

#[test]
fn indexed_variables_win_over_the_name_keyed_form() {
    let config = load(
        None,
        &[
            ("LEX_CACHE__FUNCTIONS__APP::F__TTL", "30s"),
            ("LEX_CACHE__FUNCTIONS__APP::F__ENABLED", "true"),
            ("LEX_CACHE__FUNCTIONS__0__NAME", "app::f"),
            ("LEX_CACHE__FUNCTIONS__0__TTL", "45s"),
        ],
    )
    .expect("loads");
    let f = &config.functions["app::f"];
    assert_eq!(f.ttl, Some(Some(Duration::from_secs(45))));
    assert_eq!(f.enabled, Some(true));
}

#[test]
fn indexed_function_variables_are_checked() {
    // The variables, then what the error says.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        // No NAME.
        (
            &[("LEX_CACHE__FUNCTIONS__0__TTL", "10m")],
            &[
                "functions[0].name",
                "LEX_CACHE__FUNCTIONS__0__NAME",
                "missing",
            ],
        ),
        (
            &[
                ("LEX_CACHE__FUNCTIONS__0__NAME", "  "),
                ("LEX_CACHE__FUNCTIONS__0__TTL", "10m"),
            ],
            &[
                "functions[0].name",
                "LEX_CACHE__FUNCTIONS__0__NAME",
                "missing",
            ],
        ),
        (
            &[("LEX_CACHE__FUNCTIONS__0__NAME", "17")],
            &[
                "LEX_CACHE__FUNCTIONS__0__NAME",
                "shop::catalog::load_product",
            ],
        ),
        // A field that does not exist.
        (
            &[
                ("LEX_CACHE__FUNCTIONS__0__NAME", "app::f"),
                ("LEX_CACHE__FUNCTIONS__0__TLL", "10m"),
            ],
            &[
                "functions[0].tll",
                "LEX_CACHE__FUNCTIONS__0__TLL",
                "ttl, enabled",
            ],
        ),
        // One function under two indices.
        (
            &[
                ("LEX_CACHE__FUNCTIONS__0__NAME", "app::f"),
                ("LEX_CACHE__FUNCTIONS__0__TTL", "10m"),
                ("LEX_CACHE__FUNCTIONS__1__NAME", "app::f"),
                ("LEX_CACHE__FUNCTIONS__1__ENABLED", "false"),
            ],
            &[
                "functions[1].name",
                "LEX_CACHE__FUNCTIONS__0__NAME",
                "LEX_CACHE__FUNCTIONS__1__NAME",
                "`app::f`",
            ],
        ),
        // A gap, as in the backends list.
        (
            &[
                ("LEX_CACHE__FUNCTIONS__0__NAME", "app::f"),
                ("LEX_CACHE__FUNCTIONS__2__NAME", "app::g"),
            ],
            &["functions[1]", "without gaps"],
        ),
        // The index bound, as in the backends list.
        (
            &[("LEX_CACHE__FUNCTIONS__1024__NAME", "app::f")],
            &["LEX_CACHE__FUNCTIONS__1024__NAME", "1023"],
        ),
        // Values are checked where they were set.
        (
            &[
                ("LEX_CACHE__FUNCTIONS__0__NAME", "app::f"),
                ("LEX_CACHE__FUNCTIONS__0__TTL", "0s"),
            ],
            &["functions[0].ttl", "LEX_CACHE__FUNCTIONS__0__TTL", "1ms"],
        ),
        (
            &[
                ("LEX_CACHE__FUNCTIONS__0__NAME", "app::f"),
                ("LEX_CACHE__FUNCTIONS__0__ENABLED", "maybe"),
            ],
            &["functions[0].enabled", "LEX_CACHE__FUNCTIONS__0__ENABLED"],
        ),
        // A value where the fields belong.
        (
            &[("LEX_CACHE__FUNCTIONS__0", "app::f")],
            &["LEX_CACHE__FUNCTIONS__0", "LEX_CACHE__FUNCTIONS__0__NAME"],
        ),
    ];
    for (vars, expected) in cases {
        let t = message(load(None, vars));
        for e in *expected {
            assert!(t.contains(e), "{vars:?}: `{e}` not in: {t}");
        }
    }
}

#[test]
fn a_validation_error_on_a_function_names_the_indexed_variables() {
    let config = load(
        None,
        &[
            ("LEX_CACHE__FUNCTIONS__0__NAME", "shop::Catalog::reload"),
            ("LEX_CACHE__FUNCTIONS__0__BACKEND", "nope"),
        ],
    )
    .expect("loads");
    let t = message(config.validate());
    assert!(
        t.contains("functions.shop::Catalog::reload.backend")
            && t.contains("LEX_CACHE__FUNCTIONS__<n>__BACKEND")
            && t.contains("LEX_CACHE__FUNCTIONS__<n>__NAME=shop::Catalog::reload")
            && t.contains("no backend is named `nope`"),
        "{t}"
    );
}

static RETIMED: AtomicUsize = AtomicUsize::new(0);
static SWITCHED_OFF: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, key = "retimed:{id}")]
async fn retimed(id: u32) -> u32 {
    RETIMED.fetch_add(1, Ordering::SeqCst);
    id
}

#[cacheable(ttl = 60, key = "off:{id}")]
async fn switched_off(id: u32) -> u32 {
    SWITCHED_OFF.fetch_add(1, Ordering::SeqCst);
    id
}

/// Runs only as a child of `variables_switch_a_function_off_and_change_a_ttl`: boots from the
/// process's own environment and installs the registry.
#[tokio::test]
async fn child_process_calls() {
    if std::env::var("LEX_TEST_FUNCTIONS_CHILD").is_err() {
        return;
    }
    match CacheModule::from_env().await {
        Ok(caches) => caches.install(),
        Err(e) => {
            println!("REFUSED {e}");
            return;
        }
    }
    for _ in 0..2 {
        retimed(1).await;
        switched_off(1).await;
    }
    println!(
        "RUNS retimed={} switched_off={}",
        RETIMED.load(Ordering::SeqCst),
        SWITCHED_OFF.load(Ordering::SeqCst)
    );
}

#[test]
fn variables_switch_a_function_off_and_change_a_ttl() {
    let server = RedisServer::start();
    let dir = ScratchDir::new("config-functions");
    let module = module_path!();
    let off = format!("{module}::switched_off");
    let retimed = format!("{module}::retimed");
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process_calls", "--nocapture", "--quiet"])
        .current_dir(dir.path())
        .env("LEX_TEST_FUNCTIONS_CHILD", "1")
        .env_remove("LEX_CONFIG_FILE")
        .env_remove("LEX_PROFILE")
        .env_remove("LEX_ENV")
        .env_remove("APP_ENV")
        .env("LEX_CACHE__BACKENDS__0__TYPE", "redis")
        .env("LEX_CACHE__BACKENDS__0__REDIS_URL", server.url())
        .env("LEX_CACHE__BACKENDS__0__PREFIX", "fe:")
        .env("LEX_CACHE__FUNCTIONS__0__NAME", &off)
        .env("LEX_CACHE__FUNCTIONS__0__ENABLED", "false")
        .env("LEX_CACHE__FUNCTIONS__1__NAME", &retimed)
        .env("LEX_CACHE__FUNCTIONS__1__TTL", "250s")
        .output()
        .expect("run child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("RUNS retimed=1 switched_off=2"),
        "switched off runs every time, retimed is cached: {text}"
    );
    assert_eq!(server.raw("EXISTS fe:off:1").trim(), ":0", "{text}");
    let pttl: i64 = server
        .raw("PTTL fe:retimed:1")
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("PTTL");
    assert!(
        pttl > 200_000 && pttl <= 275_000,
        "the variable's 250 s ± 10% jitter, not the attribute's 60 s: {pttl}"
    );
}
