//! A TCP proxy on 127.0.0.1 in front of a real server, for tests that look at the wire.
//!
//! It counts round trips: a run of bytes from the client that follows the server's answer (or
//! opens the connection) is one round trip, however TCP splits it, so a pipeline of three
//! commands counts once and two sequential commands count twice. It keeps what the client sent
//! in each round trip, to print when an assertion fails.
//!
//! Besides forwarding, it can black-hole traffic (every socket stays open, nothing is forwarded
//! either way: a server that stopped answering) and reset connections (every open connection,
//! and every new one, is closed with a TCP reset: a server that went away abruptly). It can also
//! send new connections to another server while the open ones keep what they have (a failover
//! to a new address while the old one went silent). And it can lose one reply: a chosen request
//! reaches the server, which applies it, and the client's connection is reset instead of
//! getting the answer (a connection that died while the request was in flight).

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways and counts.
    Forward,
    /// Keeps every socket open and forwards nothing, either way.
    BlackHole,
    /// Resets every open connection, and every new one as soon as it is accepted.
    Reset,
}

#[derive(Default)]
struct Counts {
    /// What the client sent, one entry per round trip.
    trips: Vec<Vec<u8>>,
    connections: usize,
}

struct Shared {
    counts: std::sync::Mutex<Counts>,
    /// Where new connections go, and the mode channel they follow.
    route: std::sync::Mutex<Route>,
    /// The mode channels of connections opened before a reroute; kept open so that those
    /// connections keep their mode, and told to reset when the proxy stops.
    retired: std::sync::Mutex<Vec<watch::Sender<Mode>>>,
    /// Set by [`Proxy::lose_reply_to`]; taken by the first request that holds these bytes.
    lose_reply_to: std::sync::Mutex<Option<Vec<u8>>>,
}

struct Route {
    upstream: String,
    mode: watch::Sender<Mode>,
}

/// A poisoned lock (a test thread panicked holding it) still holds usable data.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        lock(&self.counts)
    }
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`
    /// (`host:port`). Must be called inside a tokio runtime.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Forward);
        let shared = Arc::new(Shared {
            counts: std::sync::Mutex::new(Counts::default()),
            route: std::sync::Mutex::new(Route {
                upstream: upstream.to_owned(),
                mode,
            }),
            retired: std::sync::Mutex::new(Vec::new()),
            lose_reply_to: std::sync::Mutex::new(None),
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(connection(client, shared.clone()));
                }
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// `127.0.0.1:<port>` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches what the proxy does, for open connections and new ones (connections opened
    /// before a [`reroute`](Self::reroute) keep theirs).
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared.route).mode.send_replace(mode);
    }

    /// What the proxy does now.
    pub fn mode(&self) -> Mode {
        *lock(&self.shared.route).mode.borrow()
    }

    /// Sends new connections to `upstream` (`host:port`), forwarded; the connections open now
    /// keep what the proxy does to them (black-holed ones stay silent).
    pub fn reroute(&self, upstream: &str) {
        let mut route = lock(&self.shared.route);
        let (fresh, _) = watch::channel(Mode::Forward);
        let old = std::mem::replace(&mut route.mode, fresh);
        lock(&self.shared.retired).push(old);
        route.upstream = upstream.to_owned();
    }

    /// Round trips since the start or the last [`reset_counts`](Self::reset_counts), over
    /// every connection.
    pub fn round_trips(&self) -> usize {
        self.shared.counts().trips.len()
    }

    /// Connections accepted since the start or the last reset of the counts.
    pub fn connections(&self) -> usize {
        self.shared.counts().connections
    }

    /// What the client sent, one line per round trip (control bytes escaped, long ones cut),
    /// for assertion messages.
    pub fn transcript(&self) -> String {
        self.shared
            .counts()
            .trips
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let text: String = bytes.escape_ascii().to_string().chars().take(300).collect();
                format!("{}: {text}\n", i + 1)
            })
            .collect()
    }

    /// The next request (round trip, on any connection) whose bytes hold `needle` is
    /// forwarded, and when the server answers it, the answer is dropped and that connection
    /// is reset: the server applied the request, the client never hears so. Everything else,
    /// before and after, is forwarded as usual.
    pub fn lose_reply_to(&self, needle: &[u8]) {
        *lock(&self.shared.lose_reply_to) = Some(needle.to_vec());
    }

    /// Starts counting from zero.
    pub fn reset_counts(&self) {
        *self.shared.counts() = Counts::default();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connection tasks see the reset and end.
        lock(&self.shared.route).mode.send_replace(Mode::Reset);
        for old in lock(&self.shared.retired).iter() {
            old.send_replace(Mode::Reset);
        }
    }
}

/// Closes a socket with a TCP reset instead of an orderly shutdown.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(mut client: TcpStream, shared: Arc<Shared>) {
    let (upstream, mut mode) = {
        let route = lock(&shared.route);
        (route.upstream.clone(), route.mode.subscribe())
    };
    if *mode.borrow_and_update() == Mode::Reset {
        reset(client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.counts().connections += 1;
    {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        // Whether the last bytes forwarded went to the client: the next bytes from the
        // client then start a new round trip.
        let answered = AtomicBool::new(true);
        let lost = Lost::default();
        let up = pump(
            client_read,
            server_write,
            Direction::Request(&answered, &lost),
            &shared,
            mode.clone(),
        );
        let down = pump(
            server_read,
            client_write,
            Direction::Reply(&answered, &lost),
            &shared,
            mode.clone(),
        );
        let reset_asked = async {
            loop {
                if mode.changed().await.is_err() || *mode.borrow_and_update() == Mode::Reset {
                    return;
                }
            }
        };
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            () = reset_asked => {}
            () = lost.reply.notified() => {
                reset(client);
                reset(server);
                return;
            }
        }
    }
    if *mode.borrow() == Mode::Reset {
        reset(client);
        reset(server);
    }
}

enum Direction<'a> {
    Request(&'a AtomicBool, &'a Lost),
    Reply(&'a AtomicBool, &'a Lost),
}

/// One connection's part in [`Proxy::lose_reply_to`].
#[derive(Default)]
struct Lost {
    /// This connection's current request took the lost reply.
    taken: AtomicBool,
    /// The server answered it: the connection is to be reset.
    reply: tokio::sync::Notify,
}

/// Copies one direction until either side closes, counting round trips; in
/// [`Mode::BlackHole`] reads and drops instead.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    direction: Direction<'_>,
    shared: &Shared,
    mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if *mode.borrow() != Mode::Forward {
            // Swallowed: the socket stays open and the other side hears nothing.
            continue;
        }
        match direction {
            Direction::Request(answered, lost) => {
                let mut counts = shared.counts();
                if answered.swap(false, Ordering::SeqCst) || counts.trips.is_empty() {
                    counts.trips.push(Vec::new());
                }
                if let Some(last) = counts.trips.last_mut() {
                    last.extend_from_slice(&buf[..n]);
                    let mut wanted = lock(&shared.lose_reply_to);
                    if wanted.as_deref().is_some_and(|needle| {
                        needle.is_empty() || last.windows(needle.len()).any(|w| w == needle)
                    }) {
                        *wanted = None;
                        lost.taken.store(true, Ordering::SeqCst);
                    }
                }
            }
            Direction::Reply(_, lost) if lost.taken.load(Ordering::SeqCst) => {
                // notify_one keeps the wake-up if the select has not polled yet.
                lost.reply.notify_one();
                return;
            }
            Direction::Reply(answered, _) => answered.store(true, Ordering::SeqCst),
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
