//! Errors returned by the runtime.

use std::time::Duration;

/// An error from a byte-level [`CacheBackend`](crate::CacheBackend).
///
/// Backends return this; [`Cache`](crate::Cache) wraps it in [`CacheError::Backend`] together
/// with the cache's name, so a message says which backend failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The server could not be reached or the connection broke.
    #[error("connection failed: {0}; check that the server is running and the address is right")]
    Connection(String),
    /// The server refused this client: a wrong or missing password, or a user without the
    /// rights the cache needs. The message says what to change.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server was reached but the connection could not be set up: a failed TLS handshake,
    /// a database that does not exist, a server that is not of the configured kind. The
    /// message says what to change.
    #[error("{0}")]
    Setup(String),
    /// The operation did not finish within its timeout.
    #[error("operation timed out after {0:?}; the server is slow or unreachable")]
    Timeout(Duration),
    /// The server answered with something the client could not understand or an error reply.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The backend cannot do this operation (for example pattern delete on a store without key listing).
    #[error("`{operation}` is not supported by the {backend} backend: {hint}")]
    Unsupported {
        /// The backend kind, such as `memcached`.
        backend: &'static str,
        /// The operation that was asked for.
        operation: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The value or key is not acceptable to the backend (too large, bad characters, ...).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The backend's circuit breaker is open after repeated failures: the call did not touch
    /// the network.
    #[error(
        "the circuit breaker is open after repeated failures; calls skip the backend for another {retry_in:?}, then one call probes it"
    )]
    CircuitOpen {
        /// How long until a probe is let through.
        retry_in: Duration,
    },
    /// One server of a backend that spreads keys over several (Memcached) failed while others
    /// answer: only the keys it holds are affected, and the backend as a whole is healthy, so
    /// this does not count toward the circuit breaker (see
    /// [`counts_for_breaker`](Self::counts_for_breaker)). Calls for its keys fail fast until it
    /// answers again.
    #[error(
        "server {server} failed ({reason}); the backend's other servers still answer, so only the keys this server holds miss until it is back"
    )]
    ServerDown {
        /// The failed server, `host:port`.
        server: String,
        /// What went wrong with it.
        reason: String,
    },
    /// Every pooled connection to a server stayed busy for the whole operation timeout: this
    /// process sends more concurrent calls than the pool holds. The server did not fail, so
    /// this does not count toward the circuit breaker.
    #[error(
        "all {size} pooled connections to {server} stayed busy for {waited:?}; raise `pool_size` or send fewer concurrent calls"
    )]
    PoolBusy {
        /// The server, `host:port`.
        server: String,
        /// Connections its pool holds at most.
        size: usize,
        /// How long the call waited for one.
        waited: Duration,
    },
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// Whether this error says the backend is failing, so that the circuit breaker counts it.
    ///
    /// A request the backend refused ([`Rejected`](Self::Rejected),
    /// [`Unsupported`](Self::Unsupported)) was answered; a [`ServerDown`](Self::ServerDown) is
    /// one server of several while the others answer; a [`PoolBusy`](Self::PoolBusy) is a
    /// caller-side queue; a [`CircuitOpen`](Self::CircuitOpen) made no call. None of them says
    /// the backend as a whole is down. Every other error does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lexigram_cache::BackendError;
    /// assert!(BackendError::Timeout(Duration::from_millis(500)).counts_for_breaker());
    /// assert!(!BackendError::Rejected("too large".into()).counts_for_breaker());
    /// ```
    pub fn counts_for_breaker(&self) -> bool {
        !matches!(
            self,
            BackendError::Rejected(_)
                | BackendError::Unsupported { .. }
                | BackendError::ServerDown { .. }
                | BackendError::PoolBusy { .. }
                | BackendError::CircuitOpen { .. }
        )
    }
}

/// Every error the runtime returns.
///
/// Messages say what went wrong and what to do about it. Backend errors are only seen by code
/// that calls [`Cache`](crate::Cache) directly, or by `#[cacheable]` functions that opt in with
/// `skip_on_error = false`; by default a cached function treats them as misses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A backend operation failed.
    #[error("cache `{cache}`: {source}")]
    Backend {
        /// The name of the cache whose backend failed.
        cache: String,
        /// What the backend reported.
        #[source]
        source: BackendError,
    },
    /// A value could not be serialized for storage.
    #[error(
        "cache `{cache}`: cannot serialize the value for key `{key}`: {reason}; make sure the type's Serialize impl does not fail"
    )]
    Serialize {
        /// The cache name.
        cache: String,
        /// The key being written.
        key: String,
        /// The serializer's message.
        reason: String,
    },
    /// A TTL of zero was given.
    #[error(
        "a ttl of zero is not allowed: use `None` (or `Ttl::Default`) for the backend's default ttl, or `Ttl::Never` for no expiry"
    )]
    ZeroTtl,
    /// The configuration is invalid. The message names the field, the environment variable
    /// that sets it, and what to do.
    #[error("invalid cache configuration at `{path}` ({env}): {message}")]
    Config {
        /// The field path, such as `backends[0].type`.
        path: String,
        /// Where the field is set from the environment, such as
        /// ``env `LEX_CACHE__BACKENDS__0__TYPE` ``.
        env: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A builder was given a value it cannot use. Built from configuration, the same mistake
    /// is reported as [`Config`](Self::Config), at the field's path.
    #[error("invalid setting `{setting}`: {message}")]
    InvalidSetting {
        /// The builder's setting, named as the configuration field of a backend, such as
        /// `pool_size` or `memory.max_entries`.
        setting: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A configuration source (a file, `LEX_CONFIG_FILE`, an environment variable's name)
    /// could not be read.
    #[error("cannot load the cache configuration from {origin}: {message}")]
    ConfigSource {
        /// The file or variable.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tag given to [`Cache::set_tagged`](crate::Cache::set_tagged) or a tagged fill cannot
    /// be used; the message says why.
    #[error("{0}")]
    Tag(String),
    /// A write or delete of a key (or a glob) that starts with a NUL byte: those keys are the
    /// cache's own (fill locks, tag versions), and a caller's value there would break them.
    #[error(
        "the key {0:?} starts with a NUL byte: keys that start with NUL belong to the cache itself (fill locks, tag versions) and cannot be written or deleted; drop the NUL, or escape it in the data the key is built from"
    )]
    ReservedKey(String),
    /// No cache with this name is registered.
    #[error("no cache named `{0}` is configured; add a backend with that name to `cache.backends`")]
    UnknownCache(String),
}

impl CacheError {
    pub(crate) fn backend(cache: &str, source: BackendError) -> Self {
        CacheError::Backend {
            cache: cache.to_owned(),
            source,
        }
    }
}
