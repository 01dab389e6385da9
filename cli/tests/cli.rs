//! The `lexigram-cache` binary against spawned servers, configured by `LEX_CACHE__` variables.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use lexigram_cache::{Cache, RedisBackend};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer, free_port};

/// Runs the binary with exactly these `LEX_CACHE__` variables (none inherited), in the temp
/// dir (no `application.yaml`), feeding `stdin`.
fn run<A: AsRef<OsStr>>(vars: &[(&str, String)], args: &[A], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lexigram-cache"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LEX_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lexigram-cache");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// One Redis backend `svc` (prefix `svc:`) on `server`.
fn redis_vars(server: &RedisServer) -> Vec<(&'static str, String)> {
    vec![
        ("LEX_CACHE__BACKENDS__0__NAME", "svc".into()),
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis".into()),
        ("LEX_CACHE__BACKENDS__0__REDIS_URL", server.url()),
        ("LEX_CACHE__BACKENDS__0__PREFIX", "svc:".into()),
    ]
}

fn cli(server: &RedisServer, args: &[&str], stdin: &str) -> Output {
    run(&redis_vars(server), args, stdin)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn redis_cache(server: &RedisServer) -> Cache {
    Cache::from_backend(
        "svc",
        RedisBackend::builder(server.url())
            .prefix("svc:")
            .connect()
            .await
            .expect("connect"),
    )
}

#[tokio::test]
async fn every_command_against_redis() {
    let server = RedisServer::start();
    let cache = redis_cache(&server).await;
    for id in 0..3u32 {
        cache
            .set(&format!("user:{id}"), &format!("name {id}"), None)
            .await
            .expect("set");
    }
    server.raw("SET foreign:1 x");

    let o = cli(&server, &["ping"], "");
    assert!(
        o.status.success() && stdout(&o).contains("redis") && stdout(&o).contains("ok"),
        "{o:?}"
    );

    let o = cli(&server, &["stats"], "");
    assert!(stdout(&o).contains("keys 3"), "{}", stdout(&o));

    let o = cli(&server, &["get", "user:1"], "");
    let text = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        text.contains("MsgPack") && text.contains("\"name 1\""),
        "{text}"
    );
    let o = cli(&server, &["get", "nope"], "");
    assert!(!o.status.success() && stdout(&o).contains("(miss)"));

    let o = cli(&server, &["keys", "user:*"], "");
    let mut listed: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, ["user:0", "user:1", "user:2"]);

    let o = cli(&server, &["del", "user:2"], "");
    assert!(stdout(&o).contains("deleted"));
    assert_eq!(server.raw("EXISTS svc:user:2").trim(), ":0");

    // clear asks first: no answer (or "n") deletes nothing.
    let o = cli(&server, &["clear"], "");
    assert!(!o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("nothing deleted"), "{}", stdout(&o));
    assert_eq!(server.raw("EXISTS svc:user:0").trim(), ":1");
    let o = cli(&server, &["clear"], "n\n");
    assert!(!o.status.success());
    assert_eq!(server.raw("EXISTS svc:user:0").trim(), ":1");

    // "y" on stdin, or --yes, clears the prefix and nothing else.
    let o = cli(&server, &["clear", "--yes"], "");
    assert!(
        o.status.success() && stdout(&o).contains("deleted 2 keys"),
        "{o:?}"
    );
    assert_eq!(
        server.raw("DBSIZE").trim(),
        ":1",
        "the foreign key survives"
    );

    let o = cli(&server, &["frobnicate"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Usage"), "{}", stderr(&o));
}

#[test]
fn help_is_on_stdout_and_says_where_the_configuration_comes_from() {
    let o = run(&[], &["--help"], "");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    for needle in [
        "Usage",
        "get",
        "set",
        "LEX_CONFIG_FILE",
        "application.yaml",
        "LEX_CACHE__",
        "LEX_PROFILE",
        "RUST_LOG",
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` missing from --help:\n{text}"
        );
    }
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn get_without_a_key_says_a_key_is_needed() {
    let o = run(&[], &["get"], "");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("<KEY>"), "{err}");
    assert!(!err.contains("unknown command"), "{err}");
}

#[test]
fn a_key_that_is_not_utf8_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let key = OsStr::from_bytes(b"\xff\xfe");
    let o = run(&[], &[OsStr::new("get"), key], "");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("\\xff\\xfe") && err.contains("UTF-8"),
        "the error names the bytes and why: {err}"
    );
}

#[tokio::test]
async fn set_stores_a_json_value_that_get_and_the_library_read_back() {
    let server = RedisServer::start();
    let value = r#"{"id":9,"tags":["a"]}"#;
    let o = cli(&server, &["set", "user:9", value, "--ttl", "90s"], "");
    assert!(o.status.success(), "{o:?}");
    let ttl: i64 = server
        .raw("TTL svc:user:9")
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("a TTL reply");
    assert!((1..=99).contains(&ttl), "ttl {ttl}");
    let o = cli(&server, &["get", "user:9"], "");
    assert!(o.status.success() && stdout(&o).contains(value), "{o:?}");
    let read: Option<serde_json::Value> =
        redis_cache(&server).await.get("user:9").await.expect("get");
    assert_eq!(read, Some(serde_json::json!({"id": 9, "tags": ["a"]})));

    let o = cli(&server, &["set", "forever", "1", "--ttl", "never"], "");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(server.raw("TTL svc:forever").trim(), ":-1");

    // A bare word is not JSON, and a zero ttl stores nothing: both refused before any write.
    let o = cli(&server, &["set", "word", "text"], "");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("not JSON"), "{}", stderr(&o));
    let o = cli(&server, &["set", "word", "1", "--ttl", "0"], "");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(server.raw("EXISTS svc:word").trim(), ":0");
}

/// Values above the compression threshold are stored compressed; `get` shows the value, not
/// the compressed block.
#[tokio::test]
async fn get_shows_a_compressed_value() {
    let server = RedisServer::start();
    let big: Vec<String> = (0..400).map(|i| format!("item number {i}")).collect();
    redis_cache(&server)
        .await
        .set("big", &big, None)
        .await
        .expect("set");
    let o = cli(&server, &["get", "big"], "");
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("\"item number 399\""), "{}", stdout(&o));
}

#[tokio::test]
async fn keys_print_one_escaped_key_per_line_and_say_when_cut() {
    let server = RedisServer::start();
    let cache = redis_cache(&server).await;
    for key in ["two\nlines", "back\\slash", "plain"] {
        cache.set(key, &1u32, None).await.expect("set");
    }
    let o = cli(&server, &["keys"], "");
    let mut listed: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, ["back\\\\slash", "plain", "two\\nlines"]);

    let o = cli(&server, &["get", "two\nlines"], "");
    assert!(
        o.status.success() && stdout(&o).contains("key         two\\nlines\n"),
        "{o:?}"
    );

    for id in 0..5u32 {
        cache.set(&format!("n:{id}"), &id, None).await.expect("set");
    }
    let o = cli(&server, &["keys", "n:*", "--limit", "3"], "");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    assert!(stderr(&o).contains("first 3; more exist"), "{}", stderr(&o));
    let o = cli(&server, &["keys", "n:*", "--limit", "5"], "");
    assert_eq!(stdout(&o).lines().count(), 5, "{}", stdout(&o));
    assert!(!stderr(&o).contains("first"), "{}", stderr(&o));
}

#[test]
fn clear_on_memcached_says_it_cannot_before_asking() {
    let server = MemcachedServer::start();
    let vars = [
        ("LEX_CACHE__BACKENDS__0__TYPE", "memcached".to_owned()),
        ("LEX_CACHE__BACKENDS__0__SERVERS__0", server.addr()),
        ("LEX_CACHE__BACKENDS__0__PREFIX", "svc:".to_owned()),
    ];
    let o = run(&vars, &["clear"], "y\n");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        !stdout(&o).contains("[y/N]"),
        "asked anyway: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("cannot list its keys") && err.contains("nothing was deleted"),
        "{err}"
    );
    let o = run(&vars, &["clear", "--yes"], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("not supported by the memcached backend"),
        "{}",
        stderr(&o)
    );
}

/// A Memcached backend over three servers, one of them killed: `ping` succeeds, as the backend
/// serves while a server answers, and lists each server under it, naming the dead one.
#[test]
fn ping_lists_each_memcached_server_and_names_the_dead_one() {
    let mut servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let mut vars = vec![("LEX_CACHE__BACKENDS__0__TYPE", "memcached".to_owned())];
    for (key, addr) in [
        "LEX_CACHE__BACKENDS__0__SERVERS__0",
        "LEX_CACHE__BACKENDS__0__SERVERS__1",
        "LEX_CACHE__BACKENDS__0__SERVERS__2",
    ]
    .into_iter()
    .zip(&addrs)
    {
        vars.push((key, addr.clone()));
    }
    servers[1].kill();
    let o = run(&vars, &["ping"], "");
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "the backend and its three servers:\n{text}");
    assert!(
        lines[0].starts_with("default") && lines[0].contains(" ok "),
        "{text}"
    );
    for (line, addr) in lines[1..].iter().zip(&addrs) {
        assert!(line.trim_start().starts_with(addr.as_str()), "{text}");
        let state = if *addr == addrs[1] { " DOWN " } else { " up " };
        assert!(line.contains(state), "{addr} should be{state}:\n{text}");
    }
}

/// `main` (the default) points at a port nobody listens on; `other` is a live Redis.
fn default_down_vars(server: &RedisServer) -> Vec<(&'static str, String)> {
    let dead = free_port(false);
    vec![
        ("LEX_CACHE__BACKENDS__0__NAME", "main".into()),
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis".into()),
        (
            "LEX_CACHE__BACKENDS__0__REDIS_URL",
            format!("redis://127.0.0.1:{dead}"),
        ),
        ("LEX_CACHE__BACKENDS__0__DEFAULT", "true".into()),
        ("LEX_CACHE__BACKENDS__1__NAME", "other".into()),
        ("LEX_CACHE__BACKENDS__1__TYPE", "redis".into()),
        ("LEX_CACHE__BACKENDS__1__REDIS_URL", server.url()),
        ("LEX_CACHE__BACKENDS__1__PREFIX", "svc:".into()),
    ]
}

#[tokio::test]
async fn with_the_default_backend_down_ping_reports_each_and_other_backends_still_work() {
    let server = RedisServer::start();
    redis_cache(&server)
        .await
        .set("user:1", &"one".to_owned(), None)
        .await
        .expect("set");
    let vars = default_down_vars(&server);

    let o = run(&vars, &["ping"], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let text = stdout(&o);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_owned()
    };
    assert!(line("main").contains("FAILED"), "{text}");
    assert!(line("other").contains(" ok "), "{text}");

    let o = run(&vars, &["--backend", "other", "ping"], "");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "only `other`: {}",
        stdout(&o)
    );
    assert!(stdout(&o).starts_with("other"), "{}", stdout(&o));

    let o = run(&vars, &["--backend", "other", "get", "user:1"], "");
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("\"one\""), "{}", stdout(&o));

    let o = run(&vars, &["get", "user:1"], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("cache `main`"), "{}", stderr(&o));

    let o = run(&vars, &["--backend", "nosuch", "get", "user:1"], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("no cache named `nosuch`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_runtime_warnings_reach_stderr_and_rust_log_filters_them() {
    let server = RedisServer::start();
    let mut vars = default_down_vars(&server);
    let args = ["--backend", "other", "keys"];
    let o = run(&vars, &args, "");
    assert!(o.status.success(), "{o:?}");
    assert!(
        stderr(&o).contains("WARN") && stderr(&o).contains("not reachable at boot"),
        "the secondary-down warning is shown by default: {}",
        stderr(&o)
    );
    vars.push(("RUST_LOG", "error".into()));
    let o = run(&vars, &args, "");
    assert!(o.status.success(), "{o:?}");
    assert!(
        !stderr(&o).contains("not reachable at boot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn data_commands_refuse_an_in_memory_backend_and_say_where_the_configuration_came_from() {
    let o = run(&[], &["get", "k"], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(
        err.contains("in-memory") && err.contains("LEX_CONFIG_FILE is not set"),
        "{err}"
    );
    let o = run(&[], &["ping"], "");
    assert!(o.status.success(), "{o:?}");
}

#[tokio::test]
async fn keys_lists_a_key_that_is_not_utf8_and_clear_counts_what_keys_lists() {
    let server = RedisServer::start();
    let cache = redis_cache(&server).await;
    cache.set("plain", &1u32, None).await.expect("set");
    // Written by another client: the bytes ff fe are not UTF-8.
    assert_eq!(server.raw(r#"SET "svc:bad\xff\xfe" v"#).trim(), "+OK");
    server.raw("SET foreign:1 x");

    let o = cli(&server, &["keys"], "");
    assert!(o.status.success(), "{o:?}");
    let mut listed: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, ["bad\\xff\\xfe", "plain"]);

    let o = cli(&server, &["clear"], "n\n");
    assert!(
        stdout(&o).contains(&format!("delete {} keys", listed.len())),
        "{o:?}"
    );
    let o = cli(&server, &["clear", "--yes"], "");
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains(&format!("deleted {} keys", listed.len())),
        "{o:?}"
    );
    assert_eq!(
        server.raw("DBSIZE").trim(),
        ":1",
        "only the foreign key is left"
    );
}
