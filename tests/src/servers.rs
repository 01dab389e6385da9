//! Real servers for the integration tests: `redis-server` (single node, TLS, 3-master Cluster)
//! on free 127.0.0.1 ports, each in its own scratch directory, killed on drop (also when the
//! test panics). A missing binary fails the test with a message naming `scripts/test`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> ScratchDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "lexigram-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago (and, for a Cluster node, whose bus port
/// `port + 10000` was free too).
pub fn free_port(with_bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if !with_bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Starts `program`, or fails the test with a message that says how to get it.
pub fn spawn(program: &str, args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create a server log file");
    let err = log.try_clone().expect("clone the log file handle");
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed: run `scripts/test`, which installs redis-server, \
             redis-tools and memcached with apt-get before running the tests"
        ),
        Err(e) => panic!("cannot start `{program}`: {e}"),
    }
}

/// Polls `ready` until the server answers. `Err(log)`: the process exited first (its port was
/// probably taken). Kills it and fails the test if it neither answers nor exits in time.
fn wait_ready(
    name: &str,
    port: u16,
    child: &mut Child,
    log: &Path,
    ready: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(std::fs::read_to_string(log).unwrap_or_default());
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{name} on port {port} did not answer within {START_TIMEOUT:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `kill -<signal> <pid>`. Uses the `kill` program so the tests need no unsafe code.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
    // A signal is delivered asynchronously; wait until the process is in the state it asked
    // for, so the test's next request really meets a stopped (or running) server.
    let want_stopped = signal == "STOP";
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("");
        if (state == "T") == want_stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends one inline command to a Redis server on `port` and returns the raw reply.
pub fn text_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        reply.extend_from_slice(&buf[..n]);
        if n == 0 || reply.ends_with(b"\r\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    tls: Option<TlsFiles>,
    _dir: ScratchDir,
    certs: Option<ScratchDir>,
}

/// The certificate files of a TLS server, made by the test with a throwaway CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The port that speaks TLS.
    pub port: u16,
    /// The CA that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// Another CA that did not sign it, for the wrong-CA test (PEM).
    pub other_ca: PathBuf,
}

impl RedisServer {
    /// A plain single-node server.
    pub fn start() -> RedisServer {
        Self::launch(Vec::new(), None, false, None)
    }

    /// A plain server on a given port (to bring a server back where a client expects it).
    pub fn start_at(port: u16) -> RedisServer {
        Self::launch(Vec::new(), None, false, Some(port))
    }

    /// A plain server with extra command-line arguments, such as
    /// `["--enable-debug-command", "yes"]`.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let extra = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch(extra, None, false, None)
    }

    /// A server that requires `password` (AUTH).
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::launch(
            vec!["--requirepass".into(), password.into()],
            None,
            false,
            None,
        )
    }

    /// A server with a TLS port (certificates from a CA made here) beside its plain port.
    pub fn start_tls() -> RedisServer {
        let dir = ScratchDir::new("redis-tls-certs");
        let files = make_certificates(dir.path());
        let tls_port = free_port(false);
        let args = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            files.0.display().to_string(),
            "--tls-key-file".into(),
            files.1.display().to_string(),
            "--tls-ca-cert-file".into(),
            files.2.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let tls = TlsFiles {
            port: tls_port,
            ca: files.2,
            other_ca: files.3,
        };
        let mut server = Self::launch(args, Some(tls), false, None);
        server.certs = Some(dir);
        server
    }

    fn launch(
        extra: Vec<String>,
        tls: Option<TlsFiles>,
        cluster: bool,
        fixed_port: Option<u16>,
    ) -> RedisServer {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let tls = tls.clone();
            let port = fixed_port.unwrap_or_else(|| free_port(cluster));
            let dir = ScratchDir::new("redis");
            let mut args = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.path().display().to_string(),
            ];
            if cluster {
                args.extend([
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.path().join("nodes.conf").display().to_string(),
                    "--cluster-node-timeout".into(),
                    "5000".into(),
                ]);
            }
            args.extend(extra.iter().cloned());
            let log = dir.path().join("server.log");
            let mut child = spawn("redis-server", &args, &log);
            let ready = || {
                let reply = text_command(port, "PING").unwrap_or_default();
                reply.starts_with("+PONG") || reply.starts_with("-NOAUTH")
            };
            match wait_ready("redis-server", port, &mut child, &log, ready) {
                Ok(()) => {
                    return RedisServer {
                        child,
                        port,
                        tls,
                        _dir: dir,
                        certs: None,
                    };
                }
                // Most likely the port was taken between probing and binding: try another.
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server would not start; last log:\n{last_log}");
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TLS port and certificate files, for a server from [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("this server was started without TLS")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a raw inline command on the plain port (no AUTH).
    pub fn raw(&self, command: &str) -> String {
        text_command(self.port, command).expect("raw redis command")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped process ignores SIGTERM until continued; SIGKILL works either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster on loopback ports: three masters, with or without a replica each.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        Self::create(3, 0, Vec::new())
    }

    /// Three masters with one replica each, and a short `cluster-node-timeout` (1 s) so that a
    /// killed master is failed over in seconds. Waits until every replica has synced.
    pub fn start_with_replicas() -> RedisCluster {
        let fast = vec!["--cluster-node-timeout".to_owned(), "1000".to_owned()];
        let cluster = Self::create(6, 1, fast);
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            loop {
                let info = node.raw("INFO replication");
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a replica did not sync with its master: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    fn create(count: usize, replicas: usize, extra: Vec<String>) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| RedisServer::launch(extra.clone(), None, true, None))
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = match Command::new("redis-cli").args(&args).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`redis-cli` is not installed: run `scripts/test`, which installs redis-tools"
            ),
            Err(e) => panic!("cannot run redis-cli: {e}"),
        };
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = node.raw("CLUSTER INFO");
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster did not reach cluster_state:ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The seed URLs of all nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The port of the master that serves `slot` now (from `CLUSTER NODES` of a live node).
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        let live = self
            .nodes
            .iter()
            .find_map(|n| text_command(n.port, "CLUSTER NODES").ok())?;
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
        live.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let holds = fields.iter().skip(8).any(|range| {
                let mut ends = range.splitn(2, '-');
                let lo = ends.next().and_then(|x| x.parse::<u16>().ok());
                let hi = ends.next().map_or(lo, |x| x.parse::<u16>().ok());
                matches!((lo, hi), (Some(lo), Some(hi)) if (lo..=hi).contains(&slot))
            });
            if !holds {
                return None;
            }
            fields
                .get(1)?
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
    }

    /// Kills the node on `port` (SIGKILL), leaving the others running.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// The hash slot of `key` (by asking a live node with `CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let reply = self
            .nodes
            .iter()
            .find_map(|n| text_command(n.port, &format!("CLUSTER KEYSLOT {key}")).ok())
            .expect("a live cluster node");
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("CLUSTER KEYSLOT answers an integer")
    }
}

/// Writes a CA, a server certificate for 127.0.0.1/localhost signed by it, the server key, and
/// an unrelated second CA. Returns (cert, key, ca, other_ca).
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("self-signed ca")
    };
    let issuer = ca("lexigram test CA");
    let other = ca("some other CA");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "lexigram test redis");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("sign server cert");
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write pem");
        p
    };
    (
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
        write("ca.pem", issuer.pem()),
        write("other-ca.pem", other.pem()),
    )
}

/// A running `memcached`.
#[derive(Debug)]
pub struct MemcachedServer {
    child: Child,
    port: u16,
    _dir: ScratchDir,
    tls: Option<(TlsFiles, ScratchDir)>,
}

impl MemcachedServer {
    /// A server with the default item size limit (1 MiB).
    pub fn start() -> MemcachedServer {
        Self::launch(None, &[])
    }

    /// A server on a given port (to bring one back where clients expect it).
    pub fn start_at(port: u16) -> MemcachedServer {
        Self::launch(Some(port), &[])
    }

    /// A server with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> MemcachedServer {
        Self::launch(None, args)
    }

    /// A server that speaks only TLS, with a certificate from a CA made here.
    pub fn start_tls() -> MemcachedServer {
        let dir = ScratchDir::new("memcached-certs");
        let (cert, key, ca, other_ca) = make_certificates(dir.path());
        let port = free_port(false);
        let ssl = format!(
            "ssl_chain_cert={},ssl_key={}",
            cert.display(),
            key.display()
        );
        let log_dir = ScratchDir::new("memcached-tls");
        let log = log_dir.path().join("server.log");
        let mut args: Vec<String> = vec![
            "-l".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "0".into(),
            "-Z".into(),
            "-o".into(),
            ssl,
        ];
        if is_root() {
            args.extend(["-u".into(), "root".into()]);
        }
        let mut child = spawn("memcached", &args, &log);
        // The port speaks TLS only, so readiness is an accepted TCP connection.
        let ready = || TcpStream::connect(("127.0.0.1", port)).is_ok();
        if let Err(log) = wait_ready("memcached -Z", port, &mut child, &log, ready) {
            panic!("memcached -Z exited before it listened; log:\n{log}");
        }
        MemcachedServer {
            child,
            port,
            _dir: log_dir,
            tls: Some((TlsFiles { port, ca, other_ca }, dir)),
        }
    }

    /// The certificate files of a server from [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> &TlsFiles {
        &self.tls.as_ref().expect("started without TLS").0
    }

    fn launch(fixed_port: Option<u16>, extra: &[&str]) -> MemcachedServer {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = fixed_port.unwrap_or_else(|| free_port(false));
            let dir = ScratchDir::new("memcached");
            let mut args: Vec<String> = vec![
                "-l".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-U".into(),
                "0".into(),
                "-m".into(),
                "64".into(),
            ];
            // memcached refuses to run as root unless told which user to be.
            if is_root() {
                args.extend(["-u".into(), "root".into()]);
            }
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let log = dir.path().join("server.log");
            let mut child = spawn("memcached", &args, &log);
            // A server with `-Y` answers CLIENT_ERROR before authentication: also alive.
            let ready = || {
                text_command(port, "mn")
                    .is_ok_and(|r| r.starts_with("MN") || r.starts_with("CLIENT_ERROR"))
            };
            match wait_ready("memcached", port, &mut child, &log, ready) {
                Ok(()) => {
                    return MemcachedServer {
                        child,
                        port,
                        _dir: dir,
                        tls: None,
                    };
                }
                Err(log) => last_log = log,
            }
        }
        panic!("memcached would not start; last log:\n{last_log}");
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one raw text command and returns the reply.
    pub fn raw(&self, command: &str) -> String {
        text_command(self.port, command).expect("raw memcached command")
    }

    /// Freezes the server (SIGSTOP).
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
