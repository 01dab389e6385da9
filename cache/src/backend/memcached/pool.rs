//! Connections to one memcached server, pooled.
//!
//! A connection is leased for one request/response exchange and goes back to the pool only
//! when the exchange finished. If the caller's future is dropped half-way (a timeout, a
//! cancelled task), the lease is dropped unfinished and the connection is closed: its unread
//! reply bytes would otherwise be read as the answer to the next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::protocol::{self, Reply};
use crate::error::BackendError;

/// After a failed connect, or after [`FAILURES_TO_PAUSE`] failed calls in a row, calls to this
/// server fail fast for this long; the first call after it tries the server again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// Failed calls in a row (timeouts, broken connections) after which a server that still accepts
/// connections, but does not answer on them, is paused like one that refuses them.
const FAILURES_TO_PAUSE: u32 = 3;
/// Bytes read per socket read.
const READ_CHUNK: usize = 16 * 1024;

/// A plain or TLS byte stream.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One open connection and the bytes read from it but not parsed yet.
pub(crate) struct Conn {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &(self.buf.len() - self.start))
            .finish()
    }
}

/// TLS settings shared by every connection of a backend.
#[derive(Clone)]
pub(crate) struct Tls(pub(crate) Arc<tokio_rustls::rustls::ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// A server address, its idle connections and its health.
pub(crate) struct Server {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    size: usize,
    connect_timeout: Duration,
    tls: Option<Tls>,
    credentials: Option<(String, String)>,
    /// The failure that started the current pause, and when.
    failed: Mutex<Option<(Instant, Failure)>>,
    /// Failed calls in a row; 0 after any answer.
    failures: AtomicU32,
}

/// Why the last connection attempt failed, kept to fail the next calls fast.
#[derive(Debug, Clone)]
enum Failure {
    /// The server could not be reached (or the TLS handshake failed).
    Unreachable(String),
    /// The server was reached but the login does not fit it: a wrong password, or credentials
    /// for a server that does not require them. Retrying cannot help.
    Refused(String),
}

impl Failure {
    fn error(&self) -> BackendError {
        match self {
            Failure::Unreachable(why) => BackendError::Connection(why.clone()),
            Failure::Refused(why) => BackendError::Rejected(why.clone()),
        }
    }
}

/// Written by hand so that no `{:?}` can print the password: only the user name is shown.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("size", &self.size)
            .field("tls", &self.tls.is_some())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A pool of at most `size` connections to `addr` (`host:port`).
    pub(crate) fn new(
        addr: String,
        size: usize,
        connect_timeout: Duration,
        tls: Option<Tls>,
        credentials: Option<(String, String)>,
    ) -> Server {
        Server {
            addr,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            size: size.max(1),
            connect_timeout,
            tls,
            credentials,
            failed: Mutex::new(None),
            failures: AtomicU32::new(0),
        }
    }

    /// Connections the pool holds at most.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The error to fail fast with while the pause after a failure lasts.
    pub(crate) fn paused(&self) -> Option<BackendError> {
        // Every pause starts with a failure, and an answer ends both: a server that answered
        // last is not paused, and a call to it (the usual one) takes no lock.
        if self.failures.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match &*self.failed.lock() {
            Some((at, why)) if at.elapsed() < RECONNECT_PAUSE => Some(why.error()),
            _ => None,
        }
    }

    /// Whether the last call answered and no pause is on.
    pub(crate) fn is_healthy(&self) -> bool {
        self.failures.load(Ordering::Relaxed) == 0 && self.paused().is_none()
    }

    /// The server answered a call.
    pub(crate) fn answered(&self) {
        // Loaded first so that an answer after answers writes no shared cache line.
        if self.failures.load(Ordering::Relaxed) != 0
            && self.failures.swap(0, Ordering::Relaxed) != 0
        {
            *self.failed.lock() = None;
        }
    }

    /// A call found the server failing (`why`); enough of them in a row pause it.
    pub(crate) fn call_failed(&self, why: &BackendError) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_TO_PAUSE {
            self.pause(Failure::Unreachable(format!(
                "memcached at {} failed {failures} calls in a row (last: {why}); calls for its \
                 keys skip it for {RECONNECT_PAUSE:?} at a time until it answers",
                self.addr
            )));
        }
    }

    /// A connect that the operation timeout (`after`) cut short: the server may be
    /// unreachable, so the next calls do not each wait for it again.
    pub(crate) fn connect_cut(&self, after: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.pause(Failure::Unreachable(format!(
            "no connection to memcached at {} within the operation timeout of {after:?}",
            self.addr
        )));
    }

    fn pause(&self, why: Failure) {
        *self.failed.lock() = Some((Instant::now(), why));
    }

    /// Closes every idle connection: one found dead means the others, opened before the same
    /// restart or idle cut, are dead too.
    pub(crate) fn drop_idle(&self) {
        self.idle.lock().clear();
    }

    /// `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// How many idle connections the pool holds (for tests).
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// A place in the pool: waits while `size` connections are leased.
    pub(crate) async fn permit(&self) -> Result<SemaphorePermit<'_>, BackendError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| BackendError::Other("connection pool closed".into()))
    }

    /// Leases an idle connection, if the pool holds one.
    pub(crate) fn lease_idle<'a>(
        &'a self,
        permit: SemaphorePermit<'a>,
    ) -> Result<Lease<'a>, SemaphorePermit<'a>> {
        match self.idle.lock().pop() {
            Some(conn) => Ok(Lease::new(self, conn, permit)),
            None => Err(permit),
        }
    }

    /// Opens a new connection (and logs in), within the connect timeout. A failure starts the
    /// pause.
    pub(crate) async fn connect(&self) -> Result<Conn, BackendError> {
        if let Some(e) = self.paused() {
            return Err(e);
        }
        let attempt = tokio::time::timeout(self.connect_timeout, async {
            let unreachable = |e| {
                Failure::Unreachable(format!("cannot connect to memcached at {}: {e}", self.addr))
            };
            let stream = self.open().await.map_err(unreachable)?;
            let mut conn = Conn {
                stream,
                buf: Vec::with_capacity(READ_CHUNK),
                start: 0,
            };
            self.authenticate(&mut conn).await?;
            Ok::<_, Failure>(conn)
        });
        let why = match attempt.await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(why)) => why,
            Err(_) => Failure::Unreachable(format!(
                "no connection to memcached at {} within {:?}",
                self.addr, self.connect_timeout
            )),
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.pause(why.clone());
        Err(why.error())
    }
}

impl Server {
    /// memcached's text authentication (`-Y`): the login is a `set` whose data is
    /// `user password`, answered `STORED` when accepted. A server without `-Y` takes that
    /// `set` as an ordinary write and would store the credentials as a value, so the
    /// connection first sends `mn`: only a server that answers it `CLIENT_ERROR
    /// unauthenticated` is sent the credentials.
    async fn authenticate(&self, conn: &mut Conn) -> Result<(), Failure> {
        let Some((user, pass)) = &self.credentials else {
            return Ok(());
        };
        let probe = self.line_exchange(conn, b"mn\r\n").await?;
        match probe.as_str() {
            "CLIENT_ERROR unauthenticated" => {}
            "MN" => {
                return Err(Failure::Refused(format!(
                    "memcached at {} does not require authentication, but `username` and \
                     `password` are set for it (the credentials were not sent); start memcached \
                     with -Y <auth file>, or remove `username` and `password` from this backend",
                    self.addr
                )));
            }
            other => {
                return Err(Failure::Refused(format!(
                    "memcached at {} answered {other:?} before authentication instead of \
                     `CLIENT_ERROR unauthenticated`; the credentials were not sent",
                    self.addr
                )));
            }
        }
        let data = format!("{user} {pass}");
        let request = format!("set auth 0 0 {}\r\n{data}\r\n", data.len());
        let reply = self.line_exchange(conn, request.as_bytes()).await?;
        if reply == "STORED" {
            return Ok(());
        }
        Err(Failure::Refused(format!(
            "memcached at {}: authentication as `{user}` was refused ({reply}); check `username` \
             and `password`",
            self.addr
        )))
    }

    /// Writes `request` and reads one reply line (at most 256 bytes), without its `\r\n`.
    async fn line_exchange(&self, conn: &mut Conn, request: &[u8]) -> Result<String, Failure> {
        let broken = |e: std::io::Error| {
            Failure::Unreachable(format!("memcached at {} during login: {e}", self.addr))
        };
        conn.stream.write_all(request).await.map_err(broken)?;
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n") && reply.len() < 256 {
            let mut byte = [0u8; 1];
            if conn.stream.read(&mut byte).await.map_err(broken)? == 0 {
                return Err(Failure::Unreachable(format!(
                    "memcached at {} closed the connection during login",
                    self.addr
                )));
            }
            reply.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
    }

    async fn open(&self) -> std::io::Result<Box<dyn Io>> {
        let stream = TcpStream::connect(&self.addr).await?;
        // Requests are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(stream));
        };
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
        })?;
        let stream = TlsConnector::from(tls.0.clone())
            .connect(name, stream)
            .await
            .map_err(|e| {
                let hint = if e.to_string().contains("certificate") {
                    "; the server's certificate is not trusted: set `ca_file` to the CA that signed it"
                } else {
                    ""
                };
                std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}{hint}"))
            })?;
        Ok(Box::new(stream))
    }
}

/// A failed exchange, and whether the server may have seen any of its request.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: BackendError,
    /// Some byte of the request left for the server, which may have applied it: sending it
    /// again is safe only for a request whose second run changes nothing.
    pub(crate) sent: bool,
}

impl Failed {
    /// A failure after the request went out, or whose request's fate is unknown.
    pub(crate) fn sent(error: BackendError) -> Failed {
        Failed { error, sent: true }
    }

    fn unsent(error: BackendError) -> Failed {
        Failed { error, sent: false }
    }
}

/// A leased connection. Returned to the pool on drop only after a finished exchange.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    server: &'a Server,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
    finished: bool,
}

impl<'a> Lease<'a> {
    /// A lease of `conn`, holding one place of `server`'s pool.
    pub(crate) fn new(server: &'a Server, conn: Conn, permit: SemaphorePermit<'a>) -> Lease<'a> {
        Lease {
            server,
            conn: Some(conn),
            _permit: permit,
            finished: false,
        }
    }

    /// Swaps in a new connection for the one this lease holds (which is closed).
    pub(crate) fn replace(&mut self, conn: Conn) {
        self.conn = Some(conn);
        self.finished = false;
    }

    /// Writes `request` and reads replies until `done` says the last one arrived. A reply the
    /// protocol does not allow here, a broken stream or a closed connection is an error, and
    /// the connection is not reused. A connection found closed before the request is written
    /// fails as not sent.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        mut done: impl FnMut(&Reply) -> bool,
    ) -> Result<Vec<Reply>, Failed> {
        self.finished = false;
        let server = self.server;
        let conn = self.conn.as_mut().ok_or_else(|| {
            Failed::unsent(BackendError::Other("lease used after failure".into()))
        })?;
        let io = |e: std::io::Error| {
            BackendError::Connection(format!("memcached at {}: {e}", server.addr))
        };
        if let Some(e) = closed_while_idle(conn, &server.addr) {
            self.conn = None;
            return Err(Failed::unsent(e));
        }
        let mut written = 0;
        while written < request.len() {
            match conn.stream.write(&request[written..]).await {
                Ok(0) => {
                    self.conn = None;
                    return Err(Failed {
                        error: io(std::io::ErrorKind::WriteZero.into()),
                        sent: written > 0,
                    });
                }
                Ok(n) => written += n,
                Err(e) => {
                    self.conn = None;
                    return Err(Failed {
                        error: io(e),
                        sent: written > 0,
                    });
                }
            }
        }
        let io = |e| Failed::sent(io(e));
        let mut replies = Vec::new();
        loop {
            match protocol::parse(&conn.buf[conn.start..]) {
                Ok(Some((reply, used))) => {
                    conn.start += used;
                    let last = done(&reply);
                    replies.push(reply);
                    if last {
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(desync) => {
                    self.conn = None;
                    return Err(Failed::sent(BackendError::Protocol(format!(
                        "memcached at {}: {}; the connection was closed",
                        self.server.addr, desync.0
                    ))));
                }
            }
            if conn.start > 0 {
                conn.buf.drain(..conn.start);
                conn.start = 0;
            }
            conn.buf.reserve(READ_CHUNK);
            let n = conn.stream.read_buf(&mut conn.buf).await.map_err(io)?;
            if n == 0 {
                self.conn = None;
                return Err(Failed::sent(BackendError::Connection(format!(
                    "memcached at {} closed the connection",
                    self.server.addr
                ))));
            }
        }
        if conn.start == conn.buf.len() {
            conn.buf.clear();
            conn.start = 0;
        } else {
            // Bytes nobody asked for: the stream is out of step with our requests.
            self.conn = None;
            return Err(Failed::sent(BackendError::Protocol(format!(
                "memcached at {} sent more replies than requests; the connection was closed",
                self.server.addr
            ))));
        }
        self.finished = true;
        Ok(replies)
    }

    /// Closes the connection instead of returning it to the pool.
    pub(crate) fn discard(&mut self) {
        self.conn = None;
    }
}

/// Reads once without waiting from a connection that should hold nothing to read: a server
/// that closed it (a restart, its idle timeout) left an end of stream or a reset there, and a
/// request written to it would be lost with no way to tell whether it was applied.
fn closed_while_idle(conn: &mut Conn, addr: &str) -> Option<BackendError> {
    let mut probe = [0u8; 1];
    match conn.stream.read(&mut probe).now_or_never()? {
        Ok(0) => Some(BackendError::Connection(format!(
            "memcached at {addr} had closed the pooled connection"
        ))),
        Ok(_) => Some(BackendError::Protocol(format!(
            "memcached at {addr} sent bytes on an idle connection; the connection was closed"
        ))),
        Err(e) => Some(BackendError::Connection(format!(
            "memcached at {addr}: the pooled connection is broken: {e}"
        ))),
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.finished
            && let Some(conn) = self.conn.take()
        {
            self.server.idle.lock().push(conn);
        }
    }
}
