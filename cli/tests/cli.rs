//! The `lexigram-cache` binary against a spawned Redis, configured by `LEX_CACHE__` variables.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use lexigram_cache::{Cache, RedisBackend};
use lexigram_cache_tests::servers::RedisServer;

fn cli(server: &RedisServer, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lexigram-cache"))
        .args(args)
        .env("LEX_CACHE__BACKENDS__0__TYPE", "redis")
        .env("LEX_CACHE__BACKENDS__0__REDIS_URL", server.url())
        .env("LEX_CACHE__BACKENDS__0__PREFIX", "svc:")
        .env_remove("LEX_CONFIG_FILE")
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn every_command_against_redis() {
    let server = RedisServer::start();
    let cache = Cache::from_backend(
        "svc",
        RedisBackend::builder(server.url())
            .prefix("svc:")
            .connect()
            .await
            .expect("connect"),
    );
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
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
}
