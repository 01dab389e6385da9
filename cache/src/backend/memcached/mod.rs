//! Memcached, one or several servers, on our own client for the meta text protocol.
//!
//! - `protocol`: requests (`mg`, `ms`, `md`, `mn`) and an incremental reply parser;
//! - `pool`: per-server connection pools that never reuse a connection left mid-reply;
//! - `ring`: rendezvous hashing of keys onto servers;
//! - `keys`: a one-to-one mapping of any cache key onto a valid memcached key.

mod keys;
mod pool;
mod protocol;
mod ring;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::join_all;

use self::keys::WireKey;
use self::pool::{Failed, Lease, Server, Tls};
use self::protocol::Reply;
use self::ring::Ring;
use super::batch::{self, Batch, Reads, Turn};
use super::{CacheBackend, LockAttempt, lock_name};
use crate::error::{BackendError, CacheError};

/// Whether a request may go out again on a fresh connection after its pooled connection
/// broke during the exchange (the server may have applied it before the connection died).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resend {
    /// A second run changes nothing the first did not: reads, plain stores and deletes, and
    /// the lock's compare-and-delete (whose every answer, gone or another's, means done).
    Safe,
    /// A second run answers differently (an `add` finds the item the first one created):
    /// sent again only when no byte of it went out.
    IfUnsent,
}

/// memcached reads an expiry above 30 days as a Unix time, not as seconds from now.
const RELATIVE_TTL_MAX: u64 = 30 * 24 * 3600;

/// Builds a [`MemcachedBackend`].
///
/// ```
/// use std::time::Duration;
/// use lexigram_cache::MemcachedBackend;
/// let backend = MemcachedBackend::builder(["127.0.0.1:11211", "127.0.0.1:11212"])
///     .prefix("shop:")
///     .pool_size(8)
///     .op_timeout(Duration::from_millis(200))
///     .build()
///     .unwrap();
/// assert_eq!(backend.servers().len(), 2);
/// ```
#[derive(Clone)]
#[must_use]
pub struct MemcachedBackendBuilder {
    servers: Vec<String>,
    prefix: String,
    pool_size: usize,
    connect_timeout: Duration,
    op_timeout: Duration,
    max_item_size: usize,
    tls: bool,
    ca_file: Option<PathBuf>,
    credentials: Option<(String, String)>,
}

impl MemcachedBackendBuilder {
    /// Authenticates every new connection with memcached's text-protocol authentication (a
    /// server started with `-Y <auth file>`). The password is never printed.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// Talks TLS to every server (memcached started with `-Z`). The servers' certificates are
    /// checked against [`ca_file`](Self::ca_file), or the system's trust store without it.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// A PEM file with the CA that signed the servers' certificates. Implies [`tls`](Self::tls).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self.tls = true;
        self
    }

    /// Put before every key, such as `"shop:"`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connections per server, at most. Default 8.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long to wait for a connection. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call may take (per server) before it fails as a timeout. Default 500 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The servers' item size limit (memcached's `-I`, default 1 MiB). Larger values are
    /// refused before they are sent.
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes;
        self
    }

    /// Checks the addresses. Connections are opened on first use.
    pub fn build(self) -> Result<MemcachedBackend, CacheError> {
        if self.servers.is_empty() {
            return Err(config_error(
                "servers",
                "no memcached server given; list at least one, e.g. `servers: [\"127.0.0.1:11211\"]`",
            ));
        }
        if self.pool_size == 0 {
            return Err(config_error("pool_size", "must be at least 1"));
        }
        let mut addrs = Vec::with_capacity(self.servers.len());
        for (i, s) in self.servers.iter().enumerate() {
            let addr = parse_addr(s).map_err(|m| config_error(&format!("servers[{i}]"), m))?;
            if addrs.contains(&addr) {
                return Err(config_error(
                    &format!("servers[{i}]"),
                    format!("`{addr}` is listed twice"),
                ));
            }
            addrs.push(addr);
        }
        let tls = if self.tls {
            Some(tls_config(self.ca_file.as_deref())?)
        } else {
            None
        };
        let ring = Ring::new(&addrs);
        // Reads wait for a batch only while the pool could not lend them a connection anyway.
        let in_flight = self.pool_size.min(batch::IN_FLIGHT);
        let reads = addrs
            .iter()
            .map(|_| Reads::new(in_flight, self.op_timeout))
            .collect();
        let servers = addrs
            .into_iter()
            .map(|a| {
                Server::new(
                    a,
                    self.pool_size,
                    self.connect_timeout,
                    tls.clone(),
                    self.credentials.clone(),
                )
            })
            .collect();
        Ok(MemcachedBackend {
            inner: Arc::new(Inner {
                servers,
                reads,
                ring,
                prefix: self.prefix,
                op_timeout: self.op_timeout,
                max_item_size: self.max_item_size,
            }),
        })
    }
}

/// The client TLS configuration: the CA file's certificates, or the system's trust store.
fn tls_config(ca_file: Option<&Path>) -> Result<Tls, CacheError> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |e: String| {
                config_error(
                    "ca_file",
                    format!("cannot read CA certificates from {}: {e}", path.display()),
                )
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("the file holds no PEM certificate".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls(Arc::new(config)))
}

impl fmt::Debug for MemcachedBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedBackendBuilder")
            .field("servers", &self.servers)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

fn config_error(setting: &str, message: impl Into<String>) -> CacheError {
    CacheError::InvalidSetting {
        setting: setting.into(),
        message: message.into(),
    }
}

/// `host:port` from `host:port` or `memcached://host:port`; the port defaults to 11211.
fn parse_addr(s: &str) -> Result<String, String> {
    let rest = s.trim();
    let rest = rest.strip_prefix("memcached://").unwrap_or(rest);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', ' ', '?']) {
        return Err(format!(
            "`{s}` is not a memcached address; write host:port, e.g. 127.0.0.1:11211"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, p),
        _ => (rest, "11211"),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    Ok(format!("{host}:{port}"))
}

/// A Memcached backend over one or several servers. Cheap to clone.
///
/// Keys are spread over the servers by rendezvous hashing; a server that is down makes its own
/// keys fail (cached functions then run their bodies) and leaves the others alone: while
/// another server answers, its failures are [`BackendError::ServerDown`], which the cache's
/// circuit breaker does not count, and after a failed connect or a few failed calls in a row
/// its keys fail fast for a second at a time. Memcached
/// cannot list keys, so [`delete_pattern`](CacheBackend::delete_pattern) and
/// [`clear`](CacheBackend::clear) return [`BackendError::Unsupported`] instead of pretending.
///
/// memcached cannot hold an item past 2038-01-19 03:14:07 UTC (it reads a ttl over 30 days as
/// a signed 32-bit Unix time): a longer ttl, `Duration::MAX` included, ends then.
///
/// ```no_run
/// use lexigram_cache::{Cache, MemcachedBackend};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lexigram_cache::CacheError> {
/// let backend = MemcachedBackend::builder(["127.0.0.1:11211"]).prefix("app:").build()?;
/// let cache = Cache::from_backend("memcached", backend);
/// cache.set("greeting", &"hello".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("greeting").await?.as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemcachedBackend {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    /// Each server's reads in flight, and those waiting to go out together.
    reads: Vec<Reads<Vec<WireKey>>>,
    ring: Ring,
    prefix: String,
    op_timeout: Duration,
    max_item_size: usize,
}

impl fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("servers", &self.servers())
            .field("prefix", &self.inner.prefix)
            .field("op_timeout", &self.inner.op_timeout)
            .finish_non_exhaustive()
    }
}

impl MemcachedBackend {
    /// `mn` to each server, in the order they were given: its address and round trip, or
    /// why it did not answer. For health pages that show servers one by one; the backend's
    /// [`ping`](CacheBackend::ping) answers while any server does.
    pub async fn ping_each(&self) -> Vec<(String, Result<Duration, BackendError>)> {
        let inner = &*self.inner;
        join_all(inner.servers.iter().map(|server| async move {
            let start = Instant::now();
            let pinged = match inner.exchange(server, b"mn\r\n", 1, Resend::Safe).await {
                Ok(mut replies) => match replies.pop() {
                    Some(Reply::NoOp) => Ok(start.elapsed()),
                    Some(other) => Err(inner.unexpected(server, other)),
                    None => Err(BackendError::Protocol(format!(
                        "memcached at {} sent no reply to a ping",
                        server.addr()
                    ))),
                },
                Err(e) => Err(e),
            };
            (server.addr().to_owned(), pinged)
        }))
        .await
    }

    /// A builder over `servers` (`host:port`, or `memcached://host:port`).
    pub fn builder<S: Into<String>>(
        servers: impl IntoIterator<Item = S>,
    ) -> MemcachedBackendBuilder {
        MemcachedBackendBuilder {
            servers: servers.into_iter().map(Into::into).collect(),
            prefix: String::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_millis(500),
            max_item_size: 1024 * 1024,
            tls: false,
            ca_file: None,
            credentials: None,
        }
    }

    /// The server addresses, in configuration order.
    pub fn servers(&self) -> Vec<&str> {
        self.inner.servers.iter().map(Server::addr).collect()
    }

    /// The address of the server that holds `key`.
    pub fn server_for(&self, key: &str) -> &str {
        let wk = WireKey::new(&self.inner.prefix, key);
        self.inner.servers[self.inner.ring.pick(wk.encoded.as_bytes())].addr()
    }

    /// Checks at boot that the backend can serve: `Ok` when at least one server answers,
    /// with the addresses of those that do not (logged as a warning: their keys miss until
    /// they come back). An error, naming every server, when none answers.
    pub async fn ensure_connected(&self) -> Result<Vec<String>, BackendError> {
        let inner = &*self.inner;
        let results = join_all(inner.servers.iter().map(|server| async move {
            // The answer is read, not only awaited: a `-Y` server that was not given
            // credentials answers `CLIENT_ERROR unauthenticated`, a refusal of the settings.
            match inner
                .exchange_within(
                    server,
                    b"mn\r\n",
                    1,
                    Resend::Safe,
                    tokio::time::Instant::now() + inner.op_timeout,
                )
                .await?
                .pop()
            {
                Some(Reply::NoOp) => {
                    server.answered();
                    Ok(())
                }
                Some(other) => Err(inner.unexpected(server, other)),
                None => Err(BackendError::Protocol(format!(
                    "memcached at {} sent no reply to mn",
                    server.addr()
                ))),
            }
        }))
        .await;
        let mut down = Vec::new();
        let mut errors = Vec::new();
        for (server, result) in inner.servers.iter().zip(results) {
            if let Err(e) = result {
                down.push(server.addr().to_owned());
                errors.push(e);
            }
        }
        // A server that answers but refuses the settings is a configuration mistake, not an
        // outage: reported even while the other servers answer.
        if let Some(refusal) = errors.iter().find(|e| {
            matches!(
                e,
                BackendError::Rejected(_) | BackendError::Auth(_) | BackendError::Setup(_)
            )
        }) {
            return Err(refusal.clone());
        }
        if down.len() == inner.servers.len() {
            if let [only] = errors.as_slice() {
                return Err(only.clone());
            }
            let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(BackendError::Connection(format!(
                "no memcached server answers ({})",
                details.join("; ")
            )));
        }
        if !down.is_empty() {
            tracing::warn!(
                down = ?down,
                answering = inner.servers.len() - down.len(),
                "memcached servers do not answer; their keys miss until they come back"
            );
        }
        Ok(down)
    }

    /// Idle pooled connections per server, in configuration order (for diagnostics).
    pub fn idle_connections(&self) -> Vec<usize> {
        self.inner.servers.iter().map(Server::idle).collect()
    }
}

impl Inner {
    /// The value a read of `key` on `server` answered: a hit, a miss, or anything else as an
    /// unexpected reply.
    fn value(
        &self,
        server: &Server,
        key: &WireKey,
        reply: Reply,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        match reply {
            Reply::Value(v) => Ok(key.unframe(v)),
            Reply::Miss => Ok(None),
            other => Err(self.unexpected(server, other)),
        }
    }

    fn server(&self, wk: &WireKey) -> &Server {
        &self.servers[self.ring.pick(wk.encoded.as_bytes())]
    }

    /// The wire keys of `key` and of its fill lock, and the server that holds both: the lock
    /// goes where the value goes, so that one round trip reaches both.
    fn with_lock(&self, key: &str) -> (WireKey, WireKey, &Server) {
        let wk = WireKey::new(&self.prefix, key);
        let lock = WireKey::new(&self.prefix, &lock_name(key));
        let server = self.server(&wk);
        (wk, lock, server)
    }

    /// One exchange with `server` under the operation timeout, recorded in the server's
    /// health. While another server answers, a failure of this one is a
    /// [`BackendError::ServerDown`]: it concerns only the keys this server holds.
    async fn exchange(
        &self,
        server: &Server,
        request: &[u8],
        expected: usize,
        resend: Resend,
    ) -> Result<Vec<Reply>, BackendError> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        self.exchange_until(server, request, expected, resend, deadline)
            .await
    }

    /// [`exchange`](Self::exchange), ending by `deadline`.
    async fn exchange_until(
        &self,
        server: &Server,
        request: &[u8],
        expected: usize,
        resend: Resend,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Reply>, BackendError> {
        let result = self
            .exchange_within(server, request, expected, resend, deadline)
            .await;
        match &result {
            Ok(_) => server.answered(),
            Err(e @ (BackendError::Connection(_) | BackendError::Timeout(_))) => {
                if server.paused().is_none() {
                    server.call_failed(e);
                }
                let others_answer = self
                    .servers
                    .iter()
                    .any(|s| !std::ptr::eq(s, server) && s.is_healthy());
                if others_answer {
                    return Err(BackendError::ServerDown {
                        server: server.addr().to_owned(),
                        reason: e.to_string(),
                    });
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Every step (a place in the pool, a connection, the round trip) shares one deadline. A
    /// pooled connection that turns out dead (the server restarted, or something on the way
    /// dropped the idle connection) is replaced by a fresh one once before the call fails, when
    /// `resend` allows: a request that went out and may have been applied is sent again only
    /// if that is [`Resend::Safe`].
    async fn exchange_within(
        &self,
        server: &Server,
        request: &[u8],
        expected: usize,
        resend: Resend,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Reply>, BackendError> {
        if let Some(e) = server.paused() {
            return Err(e);
        }
        let Ok(permit) = tokio::time::timeout_at(deadline, server.permit()).await else {
            return Err(BackendError::PoolBusy {
                server: server.addr().to_owned(),
                size: server.size(),
                waited: self.op_timeout,
            });
        };
        let (mut lease, pooled) = match server.lease_idle(permit?) {
            Ok(lease) => (lease, true),
            Err(permit) => (
                // Boxed, like the reconnect below: a connect is a future of 1.5 kB, and inline
                // it made the (boxed) future of every call 2 kB, past the largest block
                // glibc's allocator serves from its per-thread cache; calls seldom connect.
                Lease::new(
                    server,
                    Box::pin(self.connect(server, deadline)).await?,
                    permit,
                ),
                false,
            ),
        };
        let first = self
            .round_trip(&mut lease, request, expected, deadline)
            .await;
        match first {
            Err(Failed {
                error: BackendError::Connection(_),
                sent,
            }) if pooled && (!sent || resend == Resend::Safe) => {
                server.drop_idle();
                lease.replace(Box::pin(self.connect(server, deadline)).await?);
                self.round_trip(&mut lease, request, expected, deadline)
                    .await
                    .map_err(|f| f.error)
            }
            other => other.map_err(|f| f.error),
        }
    }

    /// A new connection to `server` before `deadline`. A connect the deadline cuts short
    /// pauses the server like a failed one.
    async fn connect(
        &self,
        server: &Server,
        deadline: tokio::time::Instant,
    ) -> Result<pool::Conn, BackendError> {
        match tokio::time::timeout_at(deadline, server.connect()).await {
            Ok(conn) => conn,
            Err(_) => {
                server.connect_cut(self.op_timeout);
                Err(BackendError::Timeout(self.op_timeout))
            }
        }
    }

    async fn round_trip(
        &self,
        lease: &mut Lease<'_>,
        request: &[u8],
        expected: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Reply>, Failed> {
        let mut seen = 0;
        let exchanged = lease.exchange(request, |_| {
            seen += 1;
            seen == expected
        });
        let replies = match tokio::time::timeout_at(deadline, exchanged).await {
            Ok(replies) => replies?,
            Err(_) => return Err(Failed::sent(BackendError::Timeout(self.op_timeout))),
        };
        if replies.iter().any(|r| {
            matches!(
                r,
                Reply::ServerError(_) | Reply::ClientError(_) | Reply::Error
            )
        }) {
            // After an error the server may still be swallowing a value we sent; start the
            // next request on a fresh connection.
            lease.discard();
        }
        Ok(replies)
    }

    /// A reply that is not one of `allowed` is an error that says what came back.
    fn unexpected(&self, server: &Server, reply: Reply) -> BackendError {
        match reply {
            Reply::ServerError(m) if m.contains("too large") => BackendError::Rejected(format!(
                "memcached at {} refused the value: {m}; raise `max_item_size` and the server's -I, or cache smaller values",
                server.addr()
            )),
            Reply::ServerError(m) => {
                BackendError::Protocol(format!("memcached at {}: SERVER_ERROR {m}", server.addr()))
            }
            Reply::ClientError(m) if m == "unauthenticated" => BackendError::Rejected(format!(
                "memcached at {} requires authentication (it runs with -Y); set `username` and \
                 `password` for this backend",
                server.addr()
            )),
            Reply::ClientError(m) => {
                BackendError::Protocol(format!("memcached at {}: CLIENT_ERROR {m}", server.addr()))
            }
            other => BackendError::Protocol(format!(
                "memcached at {} answered {other:?} where it should not",
                server.addr()
            )),
        }
    }

    fn check_size(&self, wk: &WireKey, value: &[u8]) -> Result<(), BackendError> {
        // memcached stores the key and ~50 bytes of item header in the same slab item.
        let size = value.len() + wk.overhead() + wk.encoded.len() + 64;
        if size > self.max_item_size {
            return Err(BackendError::Rejected(format!(
                "a value of {} bytes does not fit memcached's item size limit of {} bytes; \
                 raise `max_item_size` (and the server's -I) or cache smaller values",
                value.len(),
                self.max_item_size
            )));
        }
        Ok(())
    }

    /// Groups key indices by the server that holds them.
    fn by_server(&self, wire: &[WireKey]) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, wk) in wire.iter().enumerate() {
            let s = self.ring.pick(wk.encoded.as_bytes());
            match groups.iter_mut().find(|(g, _)| *g == s) {
                Some((_, members)) => members.push(i),
                None => groups.push((s, vec![i])),
            }
        }
        groups
    }
}

/// The latest expiry memcached stores: it reads an absolute exptime into a signed 32-bit
/// number, so a Unix time past 2038-01-19 wraps negative and the item expires at once.
const ABSOLUTE_TTL_MAX: u64 = i32::MAX as u64;

/// The `T` flag for a ttl: whole seconds from now (at least 1), or an absolute Unix time past
/// memcached's 30-day limit for relative times, capped at [`ABSOLUTE_TTL_MAX`] (so a ttl that
/// would end after 2038-01-19 ends then). `None`: no expiry (0).
fn exptime(ttl: Option<Duration>) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    exptime_at(ttl, now)
}

/// [`exptime`] with the current Unix time given.
fn exptime_at(ttl: Option<Duration>, now: u64) -> u64 {
    let Some(ttl) = ttl else { return 0 };
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    if secs <= RELATIVE_TTL_MAX {
        return secs;
    }
    now.saturating_add(secs).min(ABSOLUTE_TTL_MAX)
}

#[async_trait]
impl CacheBackend for MemcachedBackend {
    fn op_timeout(&self) -> Option<Duration> {
        Some(self.inner.op_timeout)
    }

    fn kind(&self) -> &'static str {
        "memcached"
    }

    /// While the server is busy, a read waits to go out with others as one pipeline (see
    /// `batch`).
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let inner = &*self.inner;
        let wk = WireKey::new(&inner.prefix, key);
        let index = inner.ring.pick(wk.encoded.as_bytes());
        let server = &inner.servers[index];
        let on_server = || OnServer {
            backend: self.clone(),
            index,
        };
        match inner.reads[index].turn(|keys| keys.push(wk.clone()), on_server) {
            Turn::Now(slot) => {
                let mut req = Vec::with_capacity(wk.encoded.len() + 12);
                protocol::get(&mut req, &wk.encoded);
                let replies = inner.exchange(server, &req, 1, Resend::Safe).await;
                drop(slot);
                match replies?.pop() {
                    Some(reply) => inner.value(server, &wk, reply),
                    None => Err(BackendError::Protocol("no reply".into())),
                }
            }
            Turn::Later(wait) => wait.answer(on_server).await,
        }
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let wk = WireKey::new(&inner.prefix, key);
        inner.check_size(&wk, value)?;
        let server = inner.server(&wk);
        let mut req = Vec::with_capacity(value.len() + wk.encoded.len() + 32);
        protocol::set(&mut req, &wk.encoded, &wk.frame(value), exptime(ttl));
        match inner.exchange(server, &req, 1, Resend::Safe).await?.pop() {
            Some(Reply::Stored) => Ok(()),
            Some(other) => Err(inner.unexpected(server, other)),
            None => Err(BackendError::Protocol("no reply".into())),
        }
    }

    /// `ms <key> ... ME` (add): only the first writer of an absent key stores.
    async fn add(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let inner = &*self.inner;
        let wk = WireKey::new(&inner.prefix, key);
        inner.check_size(&wk, value)?;
        let server = inner.server(&wk);
        let mut req = Vec::with_capacity(value.len() + wk.encoded.len() + 32);
        protocol::add(&mut req, &wk.encoded, &wk.frame(value), exptime(ttl));
        match inner
            .exchange(server, &req, 1, Resend::IfUnsent)
            .await?
            .pop()
        {
            Some(Reply::StoredCas(_) | Reply::Stored) => Ok(true),
            Some(Reply::NotStored) => Ok(false),
            Some(other) => Err(inner.unexpected(server, other)),
            None => Err(BackendError::Protocol("no reply".into())),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let inner = &*self.inner;
        let wk = WireKey::new(&inner.prefix, key);
        let server = inner.server(&wk);
        let mut req = Vec::new();
        protocol::delete(&mut req, &wk.encoded);
        match inner.exchange(server, &req, 1, Resend::Safe).await?.pop() {
            Some(Reply::Stored) => Ok(true),
            Some(Reply::NotFound) => Ok(false),
            Some(other) => Err(inner.unexpected(server, other)),
            None => Err(BackendError::Protocol("no reply".into())),
        }
    }

    /// One pipelined round trip per server (`mg` for each key, then `mn`). Keys on a server
    /// that fails are misses, unless every server failed: then the error is returned.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let inner = &*self.inner;
        let wire: Vec<WireKey> = keys
            .iter()
            .map(|k| WireKey::new(&inner.prefix, k))
            .collect();
        let groups = inner.by_server(&wire);
        let results = join_all(groups.iter().map(|(s, members)| {
            let mut req = Vec::with_capacity(members.len() * 40);
            for &i in members {
                protocol::get(&mut req, &wire[i].encoded);
            }
            protocol::noop(&mut req);
            let server = &inner.servers[*s];
            async move {
                let replies = inner
                    .exchange(server, &req, members.len() + 1, Resend::Safe)
                    .await?;
                check_pipeline(inner, server, replies)
            }
        }))
        .await;
        let mut out = vec![None; keys.len()];
        let mut first_error = None;
        let mut failed_groups = 0;
        for ((s, members), result) in groups.iter().zip(results) {
            match result {
                Ok(replies) => {
                    for (&i, reply) in members.iter().zip(replies) {
                        out[i] = inner.value(&inner.servers[*s], &wire[i], reply)?;
                    }
                }
                Err(e) => {
                    tracing::warn!(server = inner.servers[*s].addr(), error = %e, "memcached server failed; its keys read as misses");
                    failed_groups += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if failed_groups == groups.len() => Err(e),
            _ => Ok(out),
        }
    }

    async fn set_many(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let wire: Vec<WireKey> = items
            .iter()
            .map(|(k, _)| WireKey::new(&inner.prefix, k))
            .collect();
        for (wk, (_, v)) in wire.iter().zip(items) {
            inner.check_size(wk, v)?;
        }
        let exp = exptime(ttl);
        let results = join_all(inner.by_server(&wire).into_iter().map(|(s, members)| {
            let mut req = Vec::new();
            for &i in &members {
                protocol::set(&mut req, &wire[i].encoded, &wire[i].frame(items[i].1), exp);
            }
            protocol::noop(&mut req);
            let server = &inner.servers[s];
            async move {
                let replies = inner
                    .exchange(server, &req, members.len() + 1, Resend::Safe)
                    .await?;
                for reply in check_pipeline(inner, server, replies)? {
                    if reply != Reply::Stored {
                        return Err(inner.unexpected(server, reply));
                    }
                }
                Ok(())
            }
        }))
        .await;
        results.into_iter().collect()
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64, BackendError> {
        let inner = &*self.inner;
        let wire: Vec<WireKey> = keys
            .iter()
            .map(|k| WireKey::new(&inner.prefix, k))
            .collect();
        let results = join_all(inner.by_server(&wire).into_iter().map(|(s, members)| {
            let mut req = Vec::new();
            for &i in &members {
                protocol::delete(&mut req, &wire[i].encoded);
            }
            protocol::noop(&mut req);
            let server = &inner.servers[s];
            async move {
                let replies = inner
                    .exchange(server, &req, members.len() + 1, Resend::Safe)
                    .await?;
                let mut removed = 0u64;
                for reply in check_pipeline(inner, server, replies)? {
                    match reply {
                        Reply::Stored => removed += 1,
                        Reply::NotFound => {}
                        other => return Err(inner.unexpected(server, other)),
                    }
                }
                Ok(removed)
            }
        }))
        .await;
        results.into_iter().sum()
    }

    async fn delete_pattern(&self, _pattern: &str) -> Result<u64, BackendError> {
        Err(BackendError::Unsupported {
            backend: "memcached",
            operation: "delete_pattern",
            hint: "memcached cannot list its keys; delete known keys with delete/delete_many, \
                   or use a `version` on the cached function to move to fresh keys",
        })
    }

    async fn clear(&self) -> Result<u64, BackendError> {
        Err(BackendError::Unsupported {
            backend: "memcached",
            operation: "clear",
            hint: "memcached cannot list the keys under a prefix; change the backend's `prefix` \
                   (or a function's `version`) to start from empty keys, and let the old ones \
                   expire",
        })
    }

    /// `ms <lock key> ... ME c` (add), then `mg <key>`, in one round trip to the server of
    /// the value: only one client can create the lock item, which expires by itself (whole
    /// seconds, at least 1) if its holder dies. The lock's token is the item's CAS id, so
    /// releasing it needs no read first.
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<LockAttempt, BackendError> {
        let inner = &*self.inner;
        let (wk, lock, server) = inner.with_lock(key);
        let mut req = Vec::new();
        // The item's data only helps whoever looks at the server; the CAS id is the token.
        protocol::add(
            &mut req,
            &lock.encoded,
            &lock.frame(b"1"),
            exptime(Some(ttl)),
        );
        protocol::get(&mut req, &wk.encoded);
        let mut replies = inner
            .exchange(server, &req, 2, Resend::IfUnsent)
            .await?
            .into_iter();
        let token = match replies.next() {
            Some(Reply::StoredCas(cas)) => Some(cas.to_string()),
            Some(Reply::NotStored) => None,
            Some(other) => return Err(inner.unexpected(server, other)),
            None => return Err(BackendError::Protocol("no reply".into())),
        };
        let value = match replies.next() {
            Some(reply) => inner.value(server, &wk, reply)?,
            None => return Err(BackendError::Protocol("no reply".into())),
        };
        Ok(LockAttempt { token, value })
    }

    /// `md <lock key> C<cas>`: deletes the lock only if it is still the item this holder
    /// created (one that expired and was created again has another CAS id).
    async fn unlock(&self, key: &str, token: &str) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let Ok(cas) = token.parse::<u64>() else {
            // Not a token `try_lock` handed out: there is no lock of ours to release.
            return Ok(());
        };
        let (_, lock, server) = inner.with_lock(key);
        let mut req = Vec::new();
        protocol::delete_cas(&mut req, &lock.encoded, cas);
        let reply = inner.exchange(server, &req, 1, Resend::Safe).await?.pop();
        check_unlocked(inner, server, reply)
    }

    /// `ms <key>` and `md <lock key> C<cas>` in one round trip; both keys live on the same
    /// server, which applies them in order, so whoever takes the lock next sees the value.
    async fn set_and_unlock(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        token: &str,
    ) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let Ok(cas) = token.parse::<u64>() else {
            return self.set(key, value, ttl).await;
        };
        let (wk, lock, server) = inner.with_lock(key);
        inner.check_size(&wk, value)?;
        let mut req = Vec::with_capacity(value.len() + wk.encoded.len() + 64);
        protocol::set(&mut req, &wk.encoded, &wk.frame(value), exptime(ttl));
        protocol::delete_cas(&mut req, &lock.encoded, cas);
        let mut replies = inner
            .exchange(server, &req, 2, Resend::Safe)
            .await?
            .into_iter();
        let stored = match replies.next() {
            Some(Reply::Stored) => Ok(()),
            Some(other) => Err(inner.unexpected(server, other)),
            None => Err(BackendError::Protocol("no reply".into())),
        };
        stored.and(check_unlocked(inner, server, replies.next()))
    }

    /// `mn` to every server; the slowest round trip of those that answered. The backend
    /// answers while one server does, as its calls do: the others only make their own keys
    /// miss, and a warning names them ([`MemcachedBackend::ping_each`] has each server's
    /// result). Fails, naming the first server, when none answers.
    async fn ping(&self) -> Result<Duration, BackendError> {
        let mut slowest = None;
        let mut down = Vec::new();
        for (addr, pinged) in self.ping_each().await {
            match pinged {
                Ok(took) => slowest = Some(slowest.unwrap_or(Duration::ZERO).max(took)),
                Err(e) => down.push((addr, e)),
            }
        }
        let Some(slowest) = slowest else {
            return Err(down.into_iter().next().map_or_else(
                || BackendError::Protocol("no memcached server to ping".into()),
                |(_, e)| e,
            ));
        };
        if !down.is_empty() {
            let servers: Vec<String> = down
                .iter()
                .map(|(addr, e)| format!("{addr}: {e}"))
                .collect();
            tracing::warn!(
                down = %servers.join("; "),
                "memcached servers did not answer the ping; the others serve, and only the keys these hold miss until they are back"
            );
        }
        Ok(slowest)
    }
}

/// The reply to a lock's compare-and-delete: gone, already gone, or another holder's by now
/// are all fine.
fn check_unlocked(
    inner: &Inner,
    server: &Server,
    reply: Option<Reply>,
) -> Result<(), BackendError> {
    match reply {
        Some(Reply::Stored | Reply::NotFound | Reply::Exists) => Ok(()),
        Some(other) => Err(inner.unexpected(server, other)),
        None => Err(BackendError::Protocol("no reply".into())),
    }
}

/// The reads of one server, sent together.
struct OnServer {
    backend: MemcachedBackend,
    index: usize,
}

impl Batch<Vec<WireKey>> for OnServer {
    fn reads(&self) -> &Reads<Vec<WireKey>> {
        &self.backend.inner.reads[self.index]
    }

    async fn read_many(
        &self,
        keys: Vec<WireKey>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let inner = &*self.backend.inner;
        let server = &inner.servers[self.index];
        let mut req =
            Vec::with_capacity(keys.iter().map(|k| k.encoded.len() + 12).sum::<usize>() + 4);
        for key in &keys {
            protocol::get(&mut req, &key.encoded);
        }
        protocol::noop(&mut req);
        let replies = inner
            .exchange_until(server, &req, keys.len() + 1, Resend::Safe, deadline)
            .await?;
        check_pipeline(inner, server, replies)?
            .into_iter()
            .zip(keys)
            .map(|(reply, key)| inner.value(server, &key, reply))
            .collect()
    }
}

/// The replies of a pipeline that ends with `mn`, without the final `MN`.
fn check_pipeline(
    inner: &Inner,
    server: &Server,
    mut replies: Vec<Reply>,
) -> Result<Vec<Reply>, BackendError> {
    match replies.pop() {
        Some(Reply::NoOp) => Ok(replies),
        Some(other) => Err(inner.unexpected(server, other)),
        None => Err(BackendError::Protocol("no reply".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_past_thirty_days_become_unix_times() {
        assert_eq!(exptime(None), 0);
        assert_eq!(exptime(Some(Duration::from_millis(1))), 1);
        assert_eq!(exptime(Some(Duration::from_millis(1500))), 2);
        assert_eq!(
            exptime(Some(Duration::from_secs(RELATIVE_TTL_MAX))),
            RELATIVE_TTL_MAX
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let forty_days = exptime(Some(Duration::from_secs(40 * 24 * 3600)));
        assert!(forty_days >= now + 40 * 24 * 3600 && forty_days < now + 40 * 24 * 3600 + 5);
    }

    #[test]
    fn ttls_ending_after_2038_end_in_2038() {
        let now = 1_800_000_000;
        let twenty_years = Duration::from_secs(20 * 365 * 24 * 3600);
        assert_eq!(exptime_at(Some(twenty_years), now), ABSOLUTE_TTL_MAX);
        assert_eq!(exptime_at(Some(Duration::MAX), now), ABSOLUTE_TTL_MAX);
        assert_eq!(exptime_at(Some(Duration::MAX), u64::MAX), ABSOLUTE_TTL_MAX);
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(exptime_at(Some(year), now), now + 365 * 24 * 3600);
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            parse_addr("127.0.0.1:11211").as_deref(),
            Ok("127.0.0.1:11211")
        );
        assert_eq!(
            parse_addr("memcached://cache:1234").as_deref(),
            Ok("cache:1234")
        );
        assert_eq!(parse_addr("cache").as_deref(), Ok("cache:11211"));
        assert!(parse_addr("cache:port").is_err());
        assert!(parse_addr("").is_err());
        assert!(parse_addr("http://x/y").is_err());
        let err = MemcachedBackend::builder(["a:1", "a:1"])
            .build()
            .expect_err("twice");
        assert!(err.to_string().contains("servers[1]"), "{err}");
    }
}
