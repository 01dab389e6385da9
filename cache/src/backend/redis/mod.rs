//! Redis, single node or Cluster, on the `redis` crate.
//!
//! One [`RedisBackend`] holds one multiplexed connection or one Cluster connection. Every
//! operation runs under the backend's operation timeout, so a stalled server costs a caller at
//! most that long. A connection that breaks (the server closed or reset it, or restarted) is
//! dropped, and the next call opens a new one. A peer that vanished without a reset (a dead
//! host, a failover to another address) leaves the socket open and silent, which the client
//! never notices: after a few timeouts in a row a new connection is opened to replace it, and
//! TCP keepalive closes such sockets too.

pub(crate) mod invalidation;
mod slot;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::try_join_all;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisError, TlsCertificates, Value};
use tokio::sync::OnceCell;

use super::batch::{self, Batch, Keys, Reads, Turn};
use super::glob;
use super::{CacheBackend, LOCK_PREFIX, LockAttempt, lock_name};
use crate::error::{BackendError, CacheError};
use crate::secret::{ServerUrl, scrub};

/// Keys asked for per `SCAN` round trip and deleted per `UNLINK`.
const SCAN_BATCH: usize = 500;
/// After a failed connection attempt, calls fail fast for this long instead of each paying the
/// connect timeout; the next call after it tries again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// Timeouts in a row after which the connection is dropped and a new one opened.
const TIMEOUTS_TO_RECONNECT: u32 = 3;
/// TCP keepalive: the first probe after this much silence, then one per interval; a peer that
/// misses them all is declared dead and the socket closed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;
/// Sent data left unacknowledged this long closes the socket (Linux `TCP_USER_TIMEOUT`).
const UNACKED_LIMIT: Duration = Duration::from_secs(30);

/// Builds a [`RedisBackend`].
///
/// ```no_run
/// use std::time::Duration;
/// use lexigram_cache::RedisBackend;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lexigram_cache::CacheError> {
/// let backend = RedisBackend::builder("redis://127.0.0.1:6379/0")
///     .prefix("shop:")
///     .op_timeout(Duration::from_millis(200))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct RedisBackendBuilder {
    nodes: Vec<ServerUrl>,
    cluster: bool,
    prefix: String,
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    op_timeout: Duration,
    allow_unprefixed_clear: bool,
}

impl RedisBackendBuilder {
    /// Adds one more seed node (Cluster). Two or more nodes select Cluster mode.
    pub fn node(mut self, url: impl Into<ServerUrl>) -> Self {
        self.nodes.push(url.into());
        self
    }

    /// Talks to a Redis Cluster even when only one seed node is given.
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// Put before every key, exactly once, such as `"shop:"`. [`clear`](CacheBackend::clear)
    /// removes the keys under it and nothing else.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A PEM file with the CA that signed the server's certificate, for `rediss://` URLs.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// How long to wait for a connection. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one round trip may take before it fails with [`BackendError::Timeout`].
    /// Default 500 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Lets [`clear`](CacheBackend::clear) run without a prefix, deleting every key of the
    /// database (of every master, on a Cluster). Off by default.
    pub fn allow_unprefixed_clear(mut self, allow: bool) -> Self {
        self.allow_unprefixed_clear = allow;
        self
    }

    /// Checks the URLs and reads the CA file, without connecting. The backend connects on
    /// first use, and keeps retrying (at most once a second) while the server is away.
    pub fn build(self) -> Result<RedisBackend, CacheError> {
        let Some(first) = self.nodes.first() else {
            return Err(config_error(
                "redis_url",
                "no Redis URL given; set `redis_url`, e.g. redis://127.0.0.1:6379/0",
            ));
        };
        let certs = match &self.ca_file {
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    config_error(
                        "ca_file",
                        format!("cannot read the CA file {}: {e}", path.display()),
                    )
                })?),
            }),
            None => None,
        };
        let bad_url = |u: &ServerUrl, e: RedisError| {
            config_error(
                "redis_url",
                format!(
                    "`{u}` is not a usable Redis URL ({}); write redis://[user:password@]host:port[/db] or rediss://... for TLS",
                    scrub(e.to_string())
                ),
            )
        };
        // Who connects where, for messages about the first node, and its single-node client.
        let first_info = redis::IntoConnectionInfo::into_connection_info(first.expose())
            .map_err(|e| bad_url(first, e))?;
        let mut seeds = Vec::new();
        let mut listeners = Vec::new();
        let client = if self.cluster || self.nodes.len() > 1 {
            let mut infos = Vec::with_capacity(self.nodes.len());
            for u in &self.nodes {
                let info = redis::IntoConnectionInfo::into_connection_info(u.expose())
                    .map_err(|e| bad_url(u, e))?;
                match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port)
                    | redis::ConnectionAddr::TcpTls { host, port, .. } => {
                        seeds.push((host.clone(), *port));
                    }
                    _ => {}
                }
                // A plain connection to each seed for the invalidation subscriber: a Cluster
                // forwards every PUBLISH to all of its nodes, so any one node hears them all.
                let plain = info.clone().set_tcp_settings(tcp_settings());
                let plain = match &certs {
                    Some(certs) => redis::Client::build_with_tls(plain, certs.clone()),
                    None => redis::Client::open(plain),
                };
                listeners.push(plain.map_err(|e| bad_url(u, e))?);
                infos.push(info);
            }
            let mut builder = ClusterClient::builder(infos)
                .tcp_settings(tcp_settings())
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.op_timeout)
                .retries(1);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            Client::Cluster(builder.build().map_err(|e| bad_url(first, e))?)
        } else {
            let info = first_info.clone().set_tcp_settings(tcp_settings());
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs),
                None => redis::Client::open(info),
            };
            let client = client.map_err(|e| bad_url(first, e))?;
            listeners.push(client.clone());
            Client::Single(client)
        };
        let first_addr = match first_info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
            _ => None,
        };
        let user = first_info
            .redis_settings()
            .username()
            .unwrap_or("default")
            .to_owned();
        let db = first_info.redis_settings().db();
        let shown = self
            .nodes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Ok(RedisBackend {
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                client,
                slot: RwLock::new(Slot {
                    generation: 0,
                    cell: Arc::new(OnceCell::new()),
                }),
                timeouts: AtomicU32::new(0),
                reconnecting: AtomicBool::new(false),
                failed: Mutex::new(None),
                shown,
                tls: self.nodes.iter().any(|u| u.expose().starts_with("rediss:")),
                first_addr,
                user,
                db,
                prefix: self.prefix,
                connect_timeout: self.connect_timeout,
                op_timeout: self.op_timeout,
                allow_unprefixed_clear: self.allow_unprefixed_clear,
                seeds,
                listeners,
                reads: Reads::new(batch::IN_FLIGHT, self.op_timeout),
            }),
        })
    }

    /// [`build`](Self::build), then connects once: an unreachable server is an error here,
    /// naming the (redacted) URL.
    pub async fn connect(self) -> Result<RedisBackend, CacheError> {
        let backend = self.build()?;
        backend
            .inner
            .conn()
            .await
            .map_err(|e| CacheError::backend("redis", e))?;
        Ok(backend)
    }
}

/// Keepalive and a limit on unacknowledged data, so that the kernel closes a socket whose peer
/// is gone even while no call is waiting on it.
///
/// Nagle's algorithm is off (`TCP_NODELAY`). With it on, the commands that callers sharing
/// the connection write while an earlier one is unacknowledged wait for that
/// acknowledgement, which on a network adds a round trip to them, and a command longer than
/// one segment (a `SET` of a value over about 1.4 kB) sends its tail only once the server
/// acknowledges the head, which a server waiting for the rest of the command delays by up
/// to 40 ms. On loopback under many concurrent callers Nagle's batching saves CPU (fewer,
/// larger packets), which is what a benchmark of the client at its defaults shows; a cache
/// is for latency, so it is not worth these stalls.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let settings = redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(UNACKED_LIMIT);
    settings
}

fn config_error(setting: &str, message: impl Into<String>) -> CacheError {
    CacheError::InvalidSetting {
        setting: setting.into(),
        message: message.into(),
    }
}

/// A Redis backend: single node, or Cluster with several seed nodes.
///
/// Values are stored with `SET key value PX ms`; keys carry the backend's prefix exactly once.
/// A ttl longer than Redis can store (about 146 million years, `Duration::MAX` included) is
/// stored as that longest ttl.
/// `delete_pattern` and `clear` walk the keyspace with `SCAN` (never `KEYS`) and delete with
/// `UNLINK`, on every master of a Cluster. Cheap to clone.
///
/// ```no_run
/// use lexigram_cache::{Cache, RedisBackend};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lexigram_cache::CacheError> {
/// let backend = RedisBackend::builder("redis://127.0.0.1:6379").prefix("app:").connect().await?;
/// let cache = Cache::from_backend("redis", backend);
/// cache.set("greeting", &"hello".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("greeting").await?.as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl RedisBackend {
    /// [`CacheBackend::get`] as a future of its own type, not boxed like the trait's: the
    /// cache's read of every hit on the server.
    ///
    /// On a single node, a read while the connection is busy waits for the next `MGET` (see
    /// `batch`). A Cluster routes each key to its own node, so its reads go out one by one.
    pub(crate) async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let inner = &*self.inner;
        if inner.is_cluster() {
            return inner.query(&inner.key_cmd("GET", key)).await;
        }
        let batch = || self.clone();
        match inner
            .reads
            .turn(|keys| keys.push(&inner.prefix, key), batch)
        {
            Turn::Now(slot) => {
                let read = inner.query(&inner.key_cmd("GET", key)).await;
                drop(slot);
                read
            }
            Turn::Later(wait) => wait.answer(batch).await,
        }
    }
}

impl Batch<KeyArgs> for RedisBackend {
    fn reads(&self) -> &Reads<KeyArgs> {
        &self.inner.reads
    }

    async fn read_many(
        &self,
        keys: KeyArgs,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut cmd = Cmd::with_capacity(keys.ends.len() + 1, keys.bytes.len() + 4);
        cmd.arg("MGET");
        let mut start = 0;
        for &end in &keys.ends {
            cmd.arg(&keys.bytes[start..end]);
            start = end;
        }
        self.inner.query_until(&cmd, deadline).await
    }
}

/// The prefixed keys of a waiting `MGET`, end to end in one buffer.
pub(crate) struct KeyArgs {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes`.
    ends: Vec<usize>,
}

impl KeyArgs {
    fn push(&mut self, prefix: &str, key: &str) {
        self.bytes.extend_from_slice(prefix.as_bytes());
        self.bytes.extend_from_slice(key.as_bytes());
        self.ends.push(self.bytes.len());
    }
}

impl Keys for KeyArgs {
    fn with_room(n: usize) -> Self {
        KeyArgs {
            // Room for keys of about 32 bytes; the buffer grows past that.
            bytes: Vec::with_capacity(n * 32),
            ends: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("servers", &self.inner.shown)
            .field("cluster", &matches!(self.inner.client, Client::Cluster(_)))
            .field("prefix", &self.inner.prefix)
            .field("op_timeout", &self.inner.op_timeout)
            .finish_non_exhaustive()
    }
}

// One per backend, inside its Arc: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A single node's connection is a plain multiplexed one, reconnected by this backend (see
/// [`Inner::lost`]): a `ConnectionManager` would add a boxed future, a shared-future poll and
/// a second clone of the connection to every call, for reconnects this backend does anyway.
#[derive(Clone)]
enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A connection, and which one of the backend's successive connections it is.
#[derive(Clone)]
struct Conn {
    link: Link,
    generation: u64,
}

/// The current connection, opened at most once: a new slot (next generation) replaces it.
struct Slot {
    generation: u64,
    cell: Arc<OnceCell<Conn>>,
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// A key and the backend's prefix, written as one argument without joining them first.
struct Prefixed<'a> {
    prefix: &'a str,
    key: &'a str,
}

impl redis::ToRedisArgs for Prefixed<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let mut w = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = w.write_all(self.prefix.as_bytes());
        let _ = w.write_all(self.key.as_bytes());
    }
}

struct Inner {
    /// This backend, for the connect task that outlives a caller who gave up waiting.
    me: Weak<Inner>,
    client: Client,
    slot: RwLock<Slot>,
    /// Timeouts in a row on the current connection.
    timeouts: AtomicU32,
    /// Whether a replacement connection is being opened.
    reconnecting: AtomicBool,
    /// When the last connection attempt failed, and why.
    failed: Mutex<Option<(Instant, BackendError)>>,
    /// The URLs, redacted, for messages.
    shown: String,
    tls: bool,
    /// `(host, port)` of the first node, to tell a plain server from a TLS one.
    first_addr: Option<(String, u16)>,
    /// The ACL user the URL names (`default` without one).
    user: String,
    /// The database index the URL selects.
    db: i64,
    prefix: String,
    connect_timeout: Duration,
    op_timeout: Duration,
    allow_unprefixed_clear: bool,
    /// The Cluster seed nodes as `(host, port)`; empty for a single node.
    seeds: Vec<(String, u16)>,
    /// Clients of single nodes for the invalidation subscriber, tried in turn: the server,
    /// or each Cluster seed.
    listeners: Vec<redis::Client>,
    /// The reads in flight on a single node's connection, and those waiting for an `MGET`.
    reads: Reads<KeyArgs>,
}

impl Inner {
    /// The current connection, or a new one. The attempt runs in a task of its own, so that a
    /// caller who stops waiting (its operation timeout) does not cancel it: it gets the whole
    /// connect timeout, and its failure starts the reconnect pause.
    async fn conn(&self) -> Result<Conn, BackendError> {
        let (generation, cell) = {
            let slot = self.slot.read();
            if let Some(c) = slot.cell.get() {
                return Ok(c.clone());
            }
            (slot.generation, slot.cell.clone())
        };
        if let Some((at, why)) = &*self.failed.lock()
            && at.elapsed() < RECONNECT_PAUSE
        {
            return Err(why.clone());
        }
        let Some(me) = self.me.upgrade() else {
            return Err(BackendError::Other("the Redis backend was dropped".into()));
        };
        let attempt = tokio::spawn(async move {
            cell.get_or_try_init(|| me.connect_now(generation))
                .await
                .cloned()
        });
        attempt.await.unwrap_or_else(|e| {
            Err(BackendError::Other(format!(
                "the Redis connect task failed: {e}"
            )))
        })
    }

    /// One connection attempt, within the connect timeout; a failure starts the pause.
    async fn connect_now(&self, generation: u64) -> Result<Conn, BackendError> {
        let attempt = tokio::time::timeout(self.connect_timeout, self.open()).await;
        let why = match attempt {
            Ok(Ok(link)) => {
                *self.failed.lock() = None;
                self.timeouts.store(0, Ordering::Relaxed);
                return Ok(Conn { link, generation });
            }
            Ok(Err(e)) => self.connect_error(&e).await,
            // A TLS handshake with a plain server waits for an answer that never comes.
            Err(_) if self.tls => self.tls_failure(None).await,
            Err(_) => BackendError::Connection(format!(
                "no connection to Redis at {} within {:?}",
                self.shown, self.connect_timeout
            )),
        };
        *self.failed.lock() = Some((Instant::now(), why.clone()));
        Err(why)
    }

    /// The connection, waited for at most the operation timeout.
    async fn conn_within(&self) -> Result<Conn, BackendError> {
        self.conn_until(tokio::time::Instant::now() + self.op_timeout)
            .await
    }

    /// The connection, waited for until `deadline` at most.
    async fn conn_until(&self, deadline: tokio::time::Instant) -> Result<Conn, BackendError> {
        // The usual case needs no wait, so it arms no timer.
        if let Some(c) = self.slot.read().cell.get() {
            return Ok(c.clone());
        }
        // Boxed: this wait is rare, and inline it would be part of every call's future.
        match tokio::time::timeout_at(deadline, Box::pin(self.conn())).await {
            Ok(conn) => conn,
            Err(_) => Err(BackendError::Timeout(self.op_timeout)),
        }
    }

    /// A call on connection `generation` timed out. A server that answers nothing for a few
    /// calls in a row may be gone without a reset, and the client would wait on that socket
    /// for minutes: a new connection is opened beside it, and replaces it once it works. Until
    /// then calls keep using the old one, which serves again at once if the server was only
    /// stalled.
    fn timed_out(&self, generation: u64) {
        let timeouts = self.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
        if timeouts < TIMEOUTS_TO_RECONNECT
            || self.slot.read().generation != generation
            || self.reconnecting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            self.reconnecting.store(false, Ordering::Release);
            return;
        };
        tracing::warn!(
            server = %self.shown,
            timeouts,
            "Redis did not answer {timeouts} calls in a row; opening a new connection to replace this one"
        );
        // Tried again after each failure until it works or the old connection answers again
        // (which clears the count): while the breaker is open, calls that would time out
        // come only once a period, and waiting for them would keep the breaker open a
        // period longer after the server is reachable again.
        tokio::spawn(async move {
            let next = generation + 1;
            loop {
                match me.connect_now(next).await {
                    Ok(conn) => {
                        let mut slot = me.slot.write();
                        if slot.generation == generation {
                            slot.generation = next;
                            slot.cell = Arc::new(OnceCell::new_with(Some(conn)));
                        }
                        me.timeouts.store(0, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(server = %me.shown, error = %e, "no new connection to Redis yet; trying again");
                    }
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                if me.timeouts.load(Ordering::Relaxed) == 0
                    || me.slot.read().generation != generation
                {
                    break;
                }
            }
            me.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Connection `generation` of a single node broke (closed, reset, refused): the next call
    /// opens a new one, within its operation timeout, and a failure to connect pauses
    /// reconnects like any other. A Cluster connection reconnects to its nodes by itself.
    fn lost(&self, generation: u64) {
        if self.is_cluster() {
            return;
        }
        let mut slot = self.slot.write();
        if slot.generation == generation {
            slot.generation = generation + 1;
            slot.cell = Arc::new(OnceCell::new());
        }
    }

    /// Connects, then runs one real command under the configured user (a `GET` of a key under
    /// the prefix that nothing writes): a server that wants a password, or a user without
    /// rights on the prefix, fails here rather than at every later call.
    async fn open(&self) -> Result<Link, RedisError> {
        let mut conn = match &self.client {
            Client::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    // Every call already runs under `op_timeout` (see `query`); a second timer
                    // per request inside the client would only cost time on the hit path.
                    .set_response_timeout(None);
                Link::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Client::Cluster(client) => Link::Cluster(client.get_async_connection().await?),
        };
        redis::cmd("GET")
            .arg(self.key(PROBE_KEY))
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await?;
        Ok(conn)
    }

    /// Why a connection attempt failed, and what to change.
    async fn connect_error(&self, e: &RedisError) -> BackendError {
        let detail = scrub(e.to_string());
        let at = &self.shown;
        if self.tls && (detail.contains("certificate") || detail.contains("Certificate")) {
            return BackendError::Setup(format!(
                "the TLS handshake with Redis at {at} failed: {detail}; the server's certificate \
                 is not trusted: set `ca_file` to the CA that signed it"
            ));
        }
        let user = &self.user;
        match e.code() {
            Some("NOAUTH") => {
                return BackendError::Auth(format!(
                    "Redis at {at} requires a password ({detail}): put it in `redis_url` \
                     (redis://:PASSWORD@host:port, or redis://USER:PASSWORD@host:port for an ACL \
                     user) or set `password`"
                ));
            }
            Some("NOPERM") => {
                let prefix = &self.prefix;
                return BackendError::Auth(format!(
                    "Redis at {at}: user `{user}` may not use the cache's keys or commands \
                     ({detail}); grant it the keys under the prefix `{prefix}` and the commands \
                     the cache sends, e.g. `ACL SETUSER {user} ~{prefix}* +@read +@write \
                     +@keyspace +@scripting +@connection`"
                ));
            }
            Some("WRONGPASS") => return self.wrong_password(&detail),
            _ => {}
        }
        if e.kind() == redis::ErrorKind::AuthenticationFailed {
            return self.wrong_password(&detail);
        }
        if detail.contains("DB index is out of range") {
            return BackendError::Setup(format!(
                "Redis at {at} has no database {}: the server has fewer `databases` (16 unless \
                 its configuration says otherwise); use a smaller index at the end of \
                 `redis_url`, e.g. /0",
                self.db
            ));
        }
        if matches!(
            e.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            return BackendError::Setup(format!(
                "the server at {at} did not answer like Redis; check that `redis_url` points at \
                 a Redis server's port"
            ));
        }
        if self.tls && !e.is_connection_refusal() && (e.is_io_error() || e.is_connection_dropped())
        {
            return self.tls_failure(Some(&detail)).await;
        }
        BackendError::Connection(format!("cannot connect to Redis at {at}: {detail}"))
    }

    fn wrong_password(&self, detail: &str) -> BackendError {
        BackendError::Auth(format!(
            "Redis at {} refused user `{}` with this password ({detail}); check the user name \
             and password in `redis_url` (or `password`)",
            self.shown, self.user
        ))
    }

    /// A TLS handshake that failed (`detail`) or never finished: says whether the port answers
    /// plain Redis instead.
    async fn tls_failure(&self, detail: Option<&str>) -> BackendError {
        let plain = match &self.first_addr {
            Some((host, port)) => answers_plain_redis(host, *port).await,
            None => false,
        };
        let what = match detail {
            Some(d) => format!("failed ({d})"),
            None => format!("did not complete within {:?}", self.connect_timeout),
        };
        let fix = if plain {
            "the port answers plain Redis, not TLS: use redis:// for it, or point rediss:// at \
             the server's tls-port"
        } else {
            "check that the port is the server's tls-port, or use redis:// for a plain port"
        };
        BackendError::Setup(format!(
            "the TLS handshake with Redis at {} {what}; {fix}",
            self.shown
        ))
    }

    fn error(&self, e: RedisError) -> BackendError {
        if e.is_timeout() {
            return BackendError::Timeout(self.op_timeout);
        }
        let text = scrub(e.to_string());
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            BackendError::Connection(format!("Redis at {}: {text}", self.shown))
        } else {
            BackendError::Protocol(format!("Redis at {} answered: {text}", self.shown))
        }
    }

    /// `key` under the prefix as one command argument, written straight into the command.
    fn arg<'a>(&'a self, key: &'a str) -> Prefixed<'a> {
        Prefixed {
            prefix: &self.prefix,
            key,
        }
    }

    /// A command `name` with one prefixed `key`, its buffers sized once.
    fn key_cmd(&self, name: &str, key: &str) -> Cmd {
        let mut cmd = Cmd::with_capacity(2, name.len() + self.prefix.len() + key.len());
        cmd.arg(name).arg(self.arg(key));
        cmd
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// Awaits one round trip under the operation timeout, mapping the client's errors.
    async fn bounded<T>(
        &self,
        round_trip: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BackendError> {
        self.bounded_until(tokio::time::Instant::now() + self.op_timeout, round_trip)
            .await
    }

    /// [`bounded`](Self::bounded), ending at `deadline`.
    async fn bounded_until<T>(
        &self,
        deadline: tokio::time::Instant,
        round_trip: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout_at(deadline, round_trip).await {
            Ok(r) => r.map_err(|e| self.error(e)),
            Err(_) => Err(BackendError::Timeout(self.op_timeout)),
        }
    }

    /// [`bounded_until`](Self::bounded_until), for a round trip on `conn`: a broken
    /// connection, or timeouts in a row, replace it.
    async fn bounded_on<T>(
        &self,
        conn: &mut Conn,
        deadline: tokio::time::Instant,
        round_trip: impl AsyncFnOnce(&mut Link) -> Result<T, RedisError>,
    ) -> Result<T, BackendError> {
        let generation = conn.generation;
        let result = self
            .bounded_until(deadline, round_trip(&mut conn.link))
            .await;
        match &result {
            Err(BackendError::Timeout(_)) => self.timed_out(generation),
            Err(BackendError::Connection(_)) => self.lost(generation),
            // Loaded first so that the answered case does not write a shared cache line.
            _ if self.timeouts.load(Ordering::Relaxed) != 0 => {
                self.timeouts.store(0, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }

    /// Runs one command under the operation timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BackendError> {
        self.query_until(cmd, tokio::time::Instant::now() + self.op_timeout)
            .await
    }

    /// Runs one command that must end by `deadline`, the wait for a connection included.
    async fn query_until<T: redis::FromRedisValue>(
        &self,
        cmd: &Cmd,
        deadline: tokio::time::Instant,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn_until(deadline).await?;
        self.bounded_on(&mut conn, deadline, async |c| cmd.query_async(c).await)
            .await
    }

    /// Runs one pipeline under the operation timeout, like [`query`](Self::query).
    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, BackendError> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        let mut conn = self.conn_until(deadline).await?;
        self.bounded_on(&mut conn, deadline, async |c| pipe.query_async(c).await)
            .await
    }

    /// Runs one command on one Cluster node, under the operation timeout.
    async fn query_node(
        &self,
        conn: &mut ClusterConnection,
        cmd: Cmd,
        node: &(String, u16),
    ) -> Result<Value, BackendError> {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: node.0.clone(),
            port: node.1,
        });
        self.bounded(conn.route_command(cmd, routing))
            .await
            .map_err(|e| {
                BackendError::Connection(format!(
                    "Redis Cluster node {}:{} failed: {e}",
                    node.0, node.1
                ))
            })
    }

    fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// Deletes every key under the prefix whose rest matches `pattern` (`None`: all of them).
    async fn scan_delete(&self, pattern: Option<&str>) -> Result<u64, BackendError> {
        let mut scan = Scan::start(self, pattern).await?;
        let mut removed = 0;
        while let Some(keys) = scan.next_batch().await? {
            if keys.is_empty() {
                continue;
            }
            removed += if self.is_cluster() {
                self.unlink_by_slot(&keys).await?
            } else {
                self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?
            };
        }
        Ok(removed)
    }

    /// `UNLINK` in one command per hash slot (a Cluster refuses keys of several slots).
    async fn unlink_by_slot(&self, keys: &[Vec<u8>]) -> Result<u64, BackendError> {
        let groups = slot::group_by_slot(keys);
        let counts = try_join_all(groups.iter().map(|g| async move {
            let mut cmd = redis::cmd("UNLINK");
            for &i in g {
                cmd.arg(&keys[i]);
            }
            self.query::<u64>(&cmd).await
        }))
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// The address of every master of the Cluster, from `CLUSTER NODES` asked of the first
    /// seed node that answers (a stalled node must not decide the answer), or of any node. An error when a
    /// master that holds slots is failing: a scan without it would silently miss its keys.
    async fn masters(
        &self,
        conn: &mut ClusterConnection,
    ) -> Result<Vec<(String, u16)>, BackendError> {
        let mut first_error = None;
        let mut text = None;
        for seed in &self.seeds {
            let cmd = redis::cmd("CLUSTER").arg("NODES").to_owned();
            match self.query_node(conn, cmd, seed).await {
                Ok(reply) => match redis::from_redis_value::<String>(reply) {
                    Ok(t) => {
                        text = Some(t);
                        break;
                    }
                    Err(e) => {
                        first_error.get_or_insert(BackendError::Protocol(format!(
                            "unexpected CLUSTER NODES reply from {}:{}: {e}",
                            seed.0, seed.1
                        )));
                    }
                },
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let text = match text {
            Some(t) => t,
            // The client may know the nodes by other addresses than the seeds' (a host name
            // for an address); then it picks one itself.
            None => {
                let any_node = self
                    .bounded(redis::cmd("CLUSTER").arg("NODES").query_async(conn))
                    .await;
                match (any_node, first_error) {
                    (Ok(t), _) => t,
                    (Err(_), Some(e)) | (Err(e), None) => return Err(e),
                }
            }
        };
        let masters = parse_masters(&text).map_err(BackendError::Connection)?;
        if masters.is_empty() {
            return Err(BackendError::Protocol(
                "CLUSTER NODES listed no reachable master; check the cluster with `redis-cli cluster nodes`"
                    .into(),
            ));
        }
        Ok(masters)
    }
}

/// Walks the keys under the prefix that match a glob, one `SCAN` batch at a time, on the
/// single node or on every master of a Cluster. Fill locks are never walked, so `keys`,
/// `delete_pattern` and `clear` see (and count) the same values.
struct Scan<'a> {
    inner: &'a Inner,
    pattern: Option<&'a str>,
    /// The server-side `MATCH`: the escaped prefix and literal head of the pattern, then `*`;
    /// the exact glob is applied here, because Redis' `?` counts bytes, not characters.
    server_match: String,
    /// Cluster masters still to scan, the current one first; empty for a single node.
    masters: Vec<(String, u16)>,
    cluster: Option<ClusterConnection>,
    cursor: u64,
    done: bool,
}

impl<'a> Scan<'a> {
    async fn start(inner: &'a Inner, pattern: Option<&'a str>) -> Result<Scan<'a>, BackendError> {
        let head = pattern.map_or_else(String::new, literal_head);
        let (cluster, mut masters) = match inner.conn_within().await?.link {
            Link::Single(_) => (None, Vec::new()),
            Link::Cluster(mut conn) => {
                let masters = inner.masters(&mut conn).await?;
                (Some(conn), masters)
            }
        };
        masters.reverse();
        Ok(Scan {
            inner,
            pattern,
            server_match: format!("{}*", escape_match(&format!("{}{head}", inner.prefix))),
            masters,
            cluster,
            cursor: 0,
            done: false,
        })
    }

    /// The next batch of full keys (possibly empty), or `None` when every node is done.
    async fn next_batch(&mut self) -> Result<Option<Vec<Vec<u8>>>, BackendError> {
        if self.done {
            return Ok(None);
        }
        let command = scan(self.cursor, &self.server_match);
        let (next, keys): (u64, Vec<Vec<u8>>) = match (&mut self.cluster, self.masters.last()) {
            (Some(conn), Some(node)) => {
                let reply = self.inner.query_node(conn, command, node).await?;
                redis::from_redis_value(reply)
                    .map_err(|e| BackendError::Protocol(format!("unexpected SCAN reply: {e}")))?
            }
            _ => self.inner.query(&command).await?,
        };
        self.cursor = next;
        if next == 0 {
            self.masters.pop();
            self.done = self.masters.is_empty();
        }
        let (prefix, pattern) = (self.inner.prefix.as_str(), self.pattern);
        Ok(Some(
            keys.into_iter()
                .filter(|full| {
                    full.strip_prefix(prefix.as_bytes()).is_some_and(|k| {
                        // A fill lock belongs to the process filling that key; it expires
                        // by itself.
                        !k.starts_with(LOCK_PREFIX.as_bytes())
                            && pattern.is_none_or(|pattern| glob::matches_bytes(pattern, k))
                    })
                })
                .collect(),
        ))
    }
}

fn scan(cursor: u64, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_BATCH);
    cmd
}

/// The masters to scan, from `CLUSTER NODES` lines:
/// `<id> <host:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
///
/// A failing master (`fail`, `fail?`, `noaddr`) that still holds slots is an error naming it:
/// its keys are out of reach until the cluster fails it over or it comes back. One that holds
/// no slots (its slots moved to a promoted replica) is left out, as are nodes in handshake.
fn parse_masters(text: &str) -> Result<Vec<(String, u16)>, String> {
    let mut masters = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(addr), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.contains(&"handshake") {
            continue;
        }
        let Some((host, port)) = addr
            .split(['@', ','])
            .next()
            .and_then(|hostport| hostport.rsplit_once(':'))
        else {
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let failing = flags
            .iter()
            .find(|f| matches!(**f, "fail" | "fail?" | "noaddr"));
        let slots: Vec<&str> = fields.skip(5).filter(|f| !f.starts_with('[')).collect();
        if let Some(flag) = failing {
            if slots.is_empty() {
                continue;
            }
            return Err(format!(
                "Redis Cluster master {host}:{port} is flagged `{flag}` and holds slots {}: \
                 a scan without it would miss its keys; retry once the cluster has settled \
                 (`redis-cli cluster nodes` shows it)",
                slots.join(",")
            ));
        }
        if let Ok(port) = port.parse::<u16>() {
            masters.push((host.to_owned(), port));
        }
    }
    Ok(masters)
}

/// The literal characters of a glob before its first wildcard, unescaped.
fn literal_head(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// Escapes the characters Redis `MATCH` treats specially, so `text` matches itself.
fn escape_match(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisBackend {
    /// A builder for a backend at `url` (`redis://` or `rediss://`).
    pub fn builder(url: impl Into<ServerUrl>) -> RedisBackendBuilder {
        RedisBackendBuilder {
            nodes: vec![url.into()],
            cluster: false,
            prefix: String::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_millis(500),
            allow_unprefixed_clear: false,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The server URLs with passwords redacted.
    pub fn servers(&self) -> &str {
        &self.inner.shown
    }

    /// Whether this backend talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.is_cluster()
    }

    /// Connects now if not connected yet; an error says why the server cannot be reached.
    pub async fn ensure_connected(&self) -> Result<(), BackendError> {
        self.inner.conn().await.map(drop)
    }
}

#[async_trait]
impl CacheBackend for RedisBackend {
    fn op_timeout(&self) -> Option<Duration> {
        Some(self.inner.op_timeout)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.read(key).await
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.inner
            .query::<()>(&set_command(&self.inner, key, value, ttl))
            .await
    }

    /// `SET <key> <value> NX [PX <ttl>]`.
    async fn add(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let mut cmd = set_command(&self.inner, key, value, ttl);
        cmd.arg("NX");
        let stored: Option<String> = self.inner.query(&cmd).await?;
        Ok(stored.is_some())
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let n: u64 = self.inner.query(&self.inner.key_cmd("DEL", key)).await?;
        Ok(n > 0)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.inner.key(k)).collect();
        if !self.inner.is_cluster() {
            return self.inner.query(redis::cmd("MGET").arg(&full)).await;
        }
        let groups = slot::group_by_slot(&full);
        let replies = try_join_all(groups.iter().map(|g| {
            let mut cmd = redis::cmd("MGET");
            for &i in g {
                cmd.arg(&full[i]);
            }
            async move { self.inner.query::<Vec<Option<Vec<u8>>>>(&cmd).await }
        }))
        .await?;
        let mut out = vec![None; keys.len()];
        for (group, values) in groups.iter().zip(replies) {
            if values.len() != group.len() {
                return Err(BackendError::Protocol(format!(
                    "MGET of {} keys answered {} values",
                    group.len(),
                    values.len()
                )));
            }
            for (&i, v) in group.iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    async fn set_many(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        if items.is_empty() {
            return Ok(());
        }
        let full: Vec<String> = items.iter().map(|(k, _)| self.inner.key(k)).collect();
        // One pipeline per slot: a single node gets exactly one, a Cluster node one per slot.
        let groups = if self.inner.is_cluster() {
            slot::group_by_slot(&full)
        } else {
            vec![(0..items.len()).collect()]
        };
        try_join_all(groups.iter().map(|g| {
            let mut pipe = redis::pipe();
            for &i in g {
                let cmd = pipe.cmd("SET").arg(&full[i]).arg(items[i].1);
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ttl_ms(ttl));
                }
                cmd.ignore();
            }
            async move { self.inner.query_pipe::<()>(&pipe).await }
        }))
        .await?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64, BackendError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let full: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| self.inner.key(k).into_bytes())
            .collect();
        if !self.inner.is_cluster() {
            return self.inner.query(redis::cmd("DEL").arg(&full)).await;
        }
        self.inner.unlink_by_slot(&full).await
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64, BackendError> {
        self.inner.scan_delete(Some(pattern)).await
    }

    async fn keys(&self, pattern: &str, limit: usize) -> Result<Vec<Vec<u8>>, BackendError> {
        let inner = &*self.inner;
        let mut scan = Scan::start(inner, Some(pattern)).await?;
        let mut out = Vec::new();
        while out.len() < limit
            && let Some(keys) = scan.next_batch().await?
        {
            let names = keys
                .into_iter()
                .filter_map(|k| k.strip_prefix(inner.prefix.as_bytes()).map(<[u8]>::to_vec));
            out.extend(names.take(limit - out.len()));
        }
        Ok(out)
    }

    async fn clear(&self) -> Result<u64, BackendError> {
        if self.inner.prefix.is_empty() && !self.inner.allow_unprefixed_clear {
            return Err(BackendError::Rejected(
                "clear on a Redis backend without a prefix would delete every key of the database, \
                 including other services' keys; set a `prefix` on this backend, or set \
                 `allow_unprefixed_clear: true` if deleting everything is what you want"
                    .into(),
            ));
        }
        self.inner.scan_delete(None).await
    }

    /// `SET <prefix>\0lexigram-cache:lock:<key> <token> NX PX <ttl>`, then `GET <prefix><key>`,
    /// pipelined: the lock lives under the prefix, in the reserved space no caller's key can
    /// reach, and expires by itself if its holder dies. The read comes
    /// after the lock in the same pipeline, so a holder that stored the value and released the
    /// lock before this attempt took it is always seen. A Cluster may keep the two keys on
    /// different nodes, so there they are sent one after the other.
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<LockAttempt, BackendError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut lock = redis::cmd("SET");
        lock.arg(lock_key(&self.inner, key))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl));
        let mut read = redis::cmd("GET");
        read.arg(self.inner.key(key));
        let (taken, value): (Option<String>, Option<Vec<u8>>) = if self.inner.is_cluster() {
            let taken: Option<String> = self.inner.query(&lock).await?;
            // A failed read after a taken lock is a miss, not an error: the token must reach
            // the caller, or the lock would hold every other process off until its ttl.
            let value = match self.inner.query(&read).await {
                Ok(value) => value,
                Err(_) if taken.is_some() => None,
                Err(e) => return Err(e),
            };
            (taken, value)
        } else {
            let mut pipe = redis::pipe();
            pipe.add_command(lock).add_command(read);
            self.inner.query_pipe(&pipe).await?
        };
        Ok(LockAttempt {
            token: taken.map(|_| token),
            value,
        })
    }

    /// Compare-and-delete in one script, so a lock that expired and was taken by another
    /// holder is never released by the old one.
    async fn unlock(&self, key: &str, token: &str) -> Result<(), BackendError> {
        self.inner
            .query::<u64>(&unlock_command(&self.inner, key, token))
            .await
            .map(drop)
    }

    /// `SET` and the unlock script in one pipeline (one after the other on a Cluster, where the
    /// value and its lock may live on different nodes and the value must land first).
    async fn set_and_unlock(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        token: &str,
    ) -> Result<(), BackendError> {
        let store = set_command(&self.inner, key, value, ttl);
        let unlock = unlock_command(&self.inner, key, token);
        if self.inner.is_cluster() {
            let stored = self.inner.query::<()>(&store).await;
            let unlocked = self.inner.query::<u64>(&unlock).await.map(drop);
            return stored.and(unlocked);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(store)
            .ignore()
            .add_command(unlock)
            .ignore();
        self.inner.query_pipe::<()>(&pipe).await
    }

    async fn ping(&self) -> Result<Duration, BackendError> {
        let start = Instant::now();
        let reply: String = self.inner.query(&redis::cmd("PING")).await?;
        if reply != "PONG" {
            return Err(BackendError::Protocol(format!(
                "PING answered {reply:?} instead of PONG"
            )));
        }
        Ok(start.elapsed())
    }
}

/// Deletes the lock only if it still holds the caller's token. Sent as `EVAL` with its text,
/// not `EVALSHA`: the server caches the compiled script by itself, and a server that restarted
/// or failed over never answers `NOSCRIPT`, which would cost two more round trips.
const UNLOCK_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn unlock_command(inner: &Inner, key: &str, token: &str) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(UNLOCK_SCRIPT)
        .arg(1)
        .arg(lock_key(inner, key))
        .arg(token);
    cmd
}

/// `SET key value [PX ms]`.
fn set_command(inner: &Inner, key: &str, value: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(inner.arg(key)).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl_ms(ttl));
    }
    cmd
}

/// The key (after the prefix) that the connection's first command reads; nothing writes it.
const PROBE_KEY: &str = "\0lexigram-cache:probe";

/// Whether `host:port` answers a plain-text `PING` the way Redis does (`+PONG`, or an error
/// such as `-NOAUTH`), within a second.
async fn answers_plain_redis(host: &str, port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.ok()?;
        Some(matches!(first[0], b'+' | b'-'))
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The lock key of `key` under the prefix (see [`lock_name`]).
fn lock_key(inner: &Inner, key: &str) -> String {
    inner.key(&lock_name(key))
}

/// The longest `PX` sent, about 146 million years. Redis refuses a `PX` whose expiry time
/// (its clock plus the ttl, in milliseconds) does not fit an `i64`; half of `i64::MAX` stays
/// clear of that whatever the server's clock says.
const PX_MAX: u64 = i64::MAX as u64 / 2;

/// Milliseconds for `PX`, at least 1 (a sub-millisecond ttl must still expire, not persist)
/// and at most [`PX_MAX`] (a longer ttl, up to `Duration::MAX`, is stored with that one).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, PX_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_a_safe_server_side_prefix() {
        assert_eq!(literal_head("user:*"), "user:");
        assert_eq!(literal_head(r"a\*b?c"), "a*b");
        assert_eq!(literal_head("plain"), "plain");
        assert_eq!(escape_match("a*b[c]?\\^"), r"a\*b\[c\]\?\\\^");
    }

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host.example master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
e5 [::1]:7004@17004 master - 0 0 4 connected 10923-16383
";
        assert_eq!(
            parse_masters(text),
            Ok(vec![
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("::1".to_owned(), 7004)
            ])
        );
        assert_eq!(parse_masters("garbage\n\n"), Ok(Vec::new()));
    }

    #[test]
    fn a_failing_master_that_holds_slots_is_named() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master,fail? - 0 0 2 connected 5461-10922 [5461->-a1]
e5 127.0.0.1:7004@17004 master - 0 0 4 connected 10923-16383
";
        let err = parse_masters(text).expect_err("a master is failing");
        assert!(
            err.contains("127.0.0.1:7001") && err.contains("`fail?`") && err.contains("5461-10922"),
            "{err}"
        );
        let noaddr = "b2 :0@0 master,noaddr - 0 0 2 connected 1-2\n";
        assert!(parse_masters(noaddr).is_err());
        let failed_over = "b2 127.0.0.1:7001@17001 master,fail - 0 0 2 connected\n";
        assert_eq!(parse_masters(failed_over), Ok(Vec::new()));
    }
}
