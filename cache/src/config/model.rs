//! The configuration structs. Every field has a serde default, so an empty `cache:` section
//! is a valid configuration: one in-memory backend named `default`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use crate::backend::memory::MemoryEngine;
use crate::codec::{Compression, Format};
use crate::secret::{Secret, ServerUrl};

/// The whole `cache:` section.
///
/// ```
/// use lexigram_cache::{CacheConfig, BackendKind};
/// let config = CacheConfig::default();
/// assert!(config.enabled);
/// assert_eq!(config.backends.len(), 1);
/// assert_eq!(config.backends[0].name, "default");
/// assert_eq!(config.backends[0].kind, BackendKind::Memory);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// `false` makes every cache a pass-through: bodies always run, nothing is stored.
    pub enabled: bool,
    /// The backends. Exactly one is the default (a lone backend is the default).
    pub backends: Vec<BackendConfig>,
    /// Settings shared by every backend.
    pub service: ServiceConfig,
    /// Per-function overrides, by the function's path (`my_app::users::load_user`): they
    /// replace the `#[cacheable]` attribute's `ttl`, `enabled` and `backend` at run time. From
    /// variables, as numbered entries: `LEX_CACHE__FUNCTIONS__<n>__NAME` names the function
    /// and `..._TTL`, `..._ENABLED`, `..._BACKEND` beside it override it (see
    /// [`FunctionConfig`]).
    pub functions: BTreeMap<String, FunctionConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            backends: vec![BackendConfig::memory("default")],
            service: ServiceConfig::default(),
            functions: BTreeMap::new(),
        }
    }
}

impl CacheConfig {
    /// The configuration of this process: `application.yaml` (or `LEX_CONFIG_FILE`), the
    /// `LEX_PROFILE` file, then `LEX_CACHE__...` variables. See
    /// [`ConfigSources`](super::ConfigSources).
    pub fn from_env() -> Result<CacheConfig, crate::CacheError> {
        super::ConfigSources::from_process()?.load()
    }

    /// Checks the whole configuration without building anything: names unique, one
    /// default, URLs well formed, every number and duration in its range.
    /// [`CacheModule::configure`] runs this first.
    ///
    /// [`CacheModule::configure`]: crate::CacheModule::configure
    ///
    /// ```
    /// use lexigram_cache::{BackendConfig, CacheConfig};
    /// let mut config = CacheConfig::default();
    /// config.backends.push(BackendConfig::memory("other"));
    /// assert!(config.validate().unwrap_err().to_string().contains("default: true"));
    /// ```
    pub fn validate(&self) -> Result<(), crate::CacheError> {
        super::validate(self).map(drop)
    }

    /// The production password rules: with `production`, an error for a remote backend with
    /// no password on a non-loopback host or a well-known weak password (in the field or the
    /// URL); without, a logged warning for the same. [`CacheModule::configure`] runs this with
    /// `production` read from `LEX_ENV` / `APP_ENV`.
    ///
    /// [`CacheModule::configure`]: crate::CacheModule::configure
    ///
    /// ```
    /// use lexigram_cache::{BackendConfig, CacheConfig};
    /// let mut config = CacheConfig::default();
    /// config.backends = vec![BackendConfig::redis("default", "redis://:admin@10.1.2.3:6379")];
    /// let err = config.check_security(true).unwrap_err();
    /// assert!(err.to_string().contains("weak password"));
    /// assert!(config.check_security(false).is_ok());
    /// ```
    pub fn check_security(&self, production: bool) -> Result<(), crate::CacheError> {
        super::check_security(
            self,
            production.then_some("production rules were asked for"),
        )
    }
}

/// Overrides for one `#[cacheable]` function, keyed by its path in
/// [`CacheConfig::functions`]: the module path, then the function's name.
///
/// ```yaml
/// cache:
///   functions:
///     my_app::users::load_user:
///       ttl: 10m          # or "never"
///       enabled: true
///       backend: sessions
/// ```
///
/// The same from variables, which merge over the files: a path is no variable name in most
/// shells, so it is the value of `NAME` in a numbered entry (0 to 1023, without gaps).
///
/// ```
/// use lexigram_cache::config::ConfigSources;
/// let mut sources = ConfigSources::default();
/// sources.vars = vec![
///     ("LEX_CACHE__FUNCTIONS__0__NAME".into(), "my_app::users::load_user".into()),
///     ("LEX_CACHE__FUNCTIONS__0__TTL".into(), "10m".into()),
///     ("LEX_CACHE__FUNCTIONS__0__ENABLED".into(), "true".into()),
/// ];
/// let config = sources.load().unwrap();
/// let f = &config.functions["my_app::users::load_user"];
/// assert_eq!(f.ttl, Some(Some(std::time::Duration::from_secs(600))));
/// assert_eq!(f.enabled, Some(true));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FunctionConfig {
    /// Replaces the attribute's `ttl`: seconds, a duration such as `"10m"`, or `"never"`.
    #[serde(
        with = "duration::ttl_override",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Option<Duration>>,
    /// `false` runs the function's body on every call, uncached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replaces the attribute's `backend`: the name of a configured backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// The kind of store behind a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    /// In-process memory.
    #[default]
    Memory,
    /// Redis, single node or Cluster.
    Redis,
    /// Memcached, one or several servers.
    Memcached,
}

impl BackendKind {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
            BackendKind::Memcached => "memcached",
        }
    }
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackendConfig {
    /// Unique name; `#[cacheable(backend = "...")]` and `Caches::named` use it.
    pub name: String,
    /// `memory`, `redis` or `memcached`.
    #[serde(rename = "type")]
    pub kind: BackendKind,
    /// Whether this is the default backend (the one `#[cacheable]` uses without `backend`).
    pub default: bool,
    /// Put before every key, so that services sharing a server do not see each other's keys.
    pub prefix: String,
    /// Lifetime of values stored without an explicit ttl: seconds, `"5m"`, or `"never"`.
    /// Default `5m`.
    #[serde(with = "duration::ttl")]
    pub default_ttl: Option<Duration>,
    /// Payload format on remote backends: `msgpack` (default) or `json`.
    pub format: Format,
    /// Remote backends: compress payloads of at least this many bytes (`1024`, `"16KiB"`), or
    /// `off` (`0`). Default `1KiB`.
    pub compression: Compression,
    /// Options of the in-memory store (type `memory`).
    pub memory: MemoryConfig,
    /// Redis and Memcached: the near cache, an in-process tier in front of the server
    /// (`LEX_CACHE__BACKENDS__<i>__NEAR__ENABLED`, `..__NEAR__MAX_ENTRIES`, `..__NEAR__TTL`).
    /// On by default for Redis, kept coherent across processes over pub/sub; off by default
    /// for Memcached, which has no way to tell other processes of a change.
    pub near: NearConfig,
    /// Redis: `redis://[user:password@]host:port[/db]`, or `rediss://...` for TLS. The password
    /// is never printed (see [`ServerUrl`]).
    pub redis_url: Option<ServerUrl>,
    /// Redis without `redis_url`: the host. Default unset.
    pub host: Option<String>,
    /// Redis without `redis_url`: the port. Default 6379.
    pub port: Option<u16>,
    /// Redis without `redis_url`: the database number. Default 0.
    pub db: Option<u32>,
    /// Redis (ACL user, or with `redis_url`'s host) and Memcached (with `password`, for a
    /// server started with `-Y`): the user name.
    pub username: Option<String>,
    /// Redis and Memcached: the password. Never printed.
    pub password: Option<Secret>,
    /// Redis Cluster: seed node URLs. Listing more than one node, or setting `cluster: true`,
    /// selects Cluster mode; `redis_url` then counts as one more seed.
    #[serde(with = "super::list")]
    pub nodes: Vec<ServerUrl>,
    /// Redis: treat the servers as a Cluster even if only one seed is given.
    pub cluster: bool,
    /// Memcached: talk TLS to the servers (memcached started with `-Z`). Redis selects TLS
    /// with a `rediss://` URL instead.
    pub tls: bool,
    /// TLS (Redis `rediss://`, Memcached `tls: true`): a PEM file with the CA that signed the
    /// server's certificate. Without it the system's trust store is used.
    pub ca_file: Option<PathBuf>,
    /// Remote backends: how long to wait for a connection. Default `2s`.
    #[serde(with = "duration::wait")]
    pub connect_timeout: Duration,
    /// Remote backends: how long one operation may take before it counts as failed. Default
    /// `500ms`: a cache that answers later than that is slower than most bodies it saves.
    #[serde(with = "duration::wait")]
    pub op_timeout: Duration,
    /// Remote backends: the cache budget of one cached call, the time all its round trips
    /// (read, fill lock, store) together may take before the call runs its body without the
    /// cache; a store still going then finishes in the background. Default unset:
    /// `op_timeout`.
    #[serde(with = "duration::optional_wait")]
    pub call_budget: Option<Duration>,
    /// Memcached: the servers, `host:port` each. Keys are spread over them by rendezvous
    /// hashing.
    #[serde(with = "super::list")]
    pub servers: Vec<String>,
    /// Memcached: connections per server, at most. Default 8.
    pub pool_size: usize,
    /// Memcached: the servers' item size limit in bytes (memcached's `-I`). Larger values are
    /// refused before they are sent. Default 1 MiB.
    pub max_item_size: usize,
    /// Let `clear` run with an empty `prefix`, which deletes *every* key on the server (or in
    /// the database). Off by default, because that is almost never what a service wants.
    pub allow_unprefixed_clear: bool,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            name: "default".into(),
            kind: BackendKind::Memory,
            default: false,
            prefix: String::new(),
            default_ttl: Some(Duration::from_secs(300)),
            format: Format::MsgPack,
            compression: Compression::default(),
            memory: MemoryConfig::default(),
            near: NearConfig::default(),
            redis_url: None,
            host: None,
            port: None,
            db: None,
            username: None,
            password: None,
            nodes: Vec::new(),
            cluster: false,
            tls: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_millis(500),
            call_budget: None,
            allow_unprefixed_clear: false,
            servers: Vec::new(),
            pool_size: 8,
            max_item_size: 1024 * 1024,
        }
    }
}

impl BackendConfig {
    /// An in-memory backend with default options.
    pub fn memory(name: impl Into<String>) -> Self {
        BackendConfig {
            name: name.into(),
            ..BackendConfig::default()
        }
    }

    /// The Redis URLs this backend connects to, each with the field that sets it: `redis_url`
    /// and `nodes[i]`, or one URL built from `host`/`port`/`db`/`tls` (field `host`). The
    /// credentials are as written; [`redis_urls`](Self::redis_urls) fills them in.
    pub(crate) fn redis_sources(&self) -> Vec<(String, ServerUrl)> {
        let mut urls: Vec<(String, ServerUrl)> = self
            .redis_url
            .iter()
            .map(|u| ("redis_url".to_owned(), u.clone()))
            .chain(
                self.nodes
                    .iter()
                    .enumerate()
                    .map(|(i, u)| (format!("nodes[{i}]"), u.clone())),
            )
            .collect();
        if urls.is_empty()
            && let Some(host) = &self.host
        {
            let scheme = if self.tls { "rediss" } else { "redis" };
            let port = self.port.unwrap_or(6379);
            let db = self.db.unwrap_or(0);
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            urls.push((
                "host".to_owned(),
                ServerUrl::from(format!("{scheme}://{host}:{port}/{db}")),
            ));
        }
        urls
    }

    /// The Redis URLs this backend connects to (see [`redis_sources`](Self::redis_sources));
    /// `username`/`password` fill in a URL that has no credentials.
    pub(crate) fn redis_urls(&self) -> Vec<ServerUrl> {
        let urls = self.redis_sources().into_iter().map(|(_, u)| u);
        if self.password.is_none() && self.username.is_none() {
            return urls.collect();
        }
        let user = self
            .username
            .as_deref()
            .map(percent_encode)
            .unwrap_or_default();
        let pass = self
            .password
            .as_ref()
            .map(|p| format!(":{}", percent_encode(p.expose())))
            .unwrap_or_default();
        urls.map(|u| match u.expose().split_once("://") {
            Some((scheme, rest)) if !u.has_credentials() => {
                ServerUrl::from(format!("{scheme}://{user}{pass}@{rest}"))
            }
            _ => u,
        })
        .collect()
    }

    /// A Memcached backend over `servers` (`host:port` each).
    ///
    /// ```
    /// use lexigram_cache::{BackendConfig, BackendKind};
    /// let b = BackendConfig::memcached("sessions", ["10.0.0.1:11211", "10.0.0.2:11211"]);
    /// assert_eq!(b.kind, BackendKind::Memcached);
    /// ```
    pub fn memcached<S: Into<String>>(
        name: impl Into<String>,
        servers: impl IntoIterator<Item = S>,
    ) -> Self {
        BackendConfig {
            name: name.into(),
            kind: BackendKind::Memcached,
            servers: servers.into_iter().map(Into::into).collect(),
            ..BackendConfig::default()
        }
    }

    /// A Redis backend at `url` (single node; add `nodes` or set `cluster` for a Cluster).
    ///
    /// ```
    /// use lexigram_cache::BackendConfig;
    /// let b = BackendConfig::redis("sessions", "redis://:pw@127.0.0.1:6379/0");
    /// assert_eq!(format!("{:?}", b.redis_url), "Some(\"redis://:***@127.0.0.1:6379/0\")");
    /// ```
    pub fn redis(name: impl Into<String>, url: impl Into<ServerUrl>) -> Self {
        BackendConfig {
            name: name.into(),
            kind: BackendKind::Redis,
            redis_url: Some(url.into()),
            ..BackendConfig::default()
        }
    }
}

/// Options of an in-memory backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// `s3fifo` (default; quick_cache) or `tinylfu` (moka).
    pub engine: MemoryEngine,
    /// Maximum number of entries. Default 10 000.
    pub max_entries: u64,
    /// Bound by bytes instead (key + MessagePack size of each value). Default: unset.
    pub max_weight: Option<u64>,
    /// Drop entries not read for this long (`tinylfu` only). Default: unset.
    #[serde(with = "duration::optional_ttl")]
    pub time_to_idle: Option<Duration>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            engine: MemoryEngine::S3Fifo,
            max_entries: 10_000,
            max_weight: None,
            time_to_idle: None,
        }
    }
}

/// The near cache of a remote backend: values kept in this process as their Rust type, so a
/// hit neither decodes nor touches the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NearConfig {
    /// On or off. Unset: on for Redis (single node or Cluster), off for Memcached, which
    /// cannot tell other processes of a change; turned on there, a value changed by another
    /// process may be served until `ttl` runs out.
    pub enabled: Option<bool>,
    /// Values held, at most. Default 10 000.
    pub max_entries: u64,
    /// The longest a value stays in the near cache, whatever its own ttl: the longest a
    /// process may serve a value changed elsewhere if the invalidation is lost. Default `5s`.
    #[serde(with = "duration::wait")]
    pub ttl: Duration,
    /// Memcached only: a Redis (`redis://` or `rediss://` URL) that carries the near cache's
    /// invalidations, which Memcached cannot; turns the near cache on unless `enabled` says
    /// otherwise, kept coherent across processes like a Redis backend's. The channel is named
    /// after the backend's `prefix`. Default unset: the near cache relies on `ttl` alone.
    pub backplane: Option<ServerUrl>,
}

impl Default for NearConfig {
    fn default() -> Self {
        NearConfig {
            enabled: None,
            max_entries: 10_000,
            ttl: Duration::from_secs(5),
            backplane: None,
        }
    }
}

/// Settings shared by all backends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// How long a caller waits for another caller's fill of the same key before running the
    /// body itself. Default `10s`.
    #[serde(with = "duration::wait")]
    pub fill_wait: Duration,
    /// Take the backend's distributed fill lock before running a body on Redis or Memcached,
    /// so one process fills a cold key while the others wait. Default `true`.
    pub enable_protection: bool,
    /// How long a fill lock lives if its holder dies. Default `10s`.
    #[serde(with = "duration::wait")]
    pub lock_ttl: Duration,
    /// How long a caller waits for another process's fill before running the body itself.
    /// Default `10s`.
    #[serde(with = "duration::wait")]
    pub lock_wait: Duration,
    /// Filled values get their ttl scaled by a random factor in `1 ± ttl_jitter`; `0` is off.
    /// Default `0.1`.
    pub ttl_jitter: f64,
    /// XFetch early refresh of hot keys on remote backends. Default `true`.
    pub early_refresh: bool,
    /// XFetch's beta: above 1 refreshes earlier. Default `1.0`.
    pub beta: f64,
    /// Keep values this long past expiry and serve them when a refill fails. Default unset.
    #[serde(with = "duration::optional_ttl")]
    pub stale_if_error: Option<Duration>,
    /// Open a backend's circuit breaker after repeated failures. Default `true`.
    pub circuit_breaker_enabled: bool,
    /// Consecutive failures (timeouts count) that open the breaker. Default `5`.
    pub breaker_threshold: u32,
    /// How long an open breaker skips the backend before one call probes it. Default `5s`.
    #[serde(with = "duration::wait")]
    pub breaker_open_for: Duration,
}

impl Default for ServiceConfig {
    /// The same defaults as [`CacheOptions`](crate::CacheOptions), which a cache built
    /// without configuration uses: one source for both.
    fn default() -> Self {
        let o = crate::CacheOptions::default();
        ServiceConfig {
            fill_wait: o.fill_wait,
            enable_protection: o.lock,
            lock_ttl: o.lock_ttl,
            lock_wait: o.lock_wait,
            ttl_jitter: o.ttl_jitter,
            early_refresh: o.early_refresh,
            beta: o.beta,
            stale_if_error: o.stale_if_error,
            circuit_breaker_enabled: o.breaker_threshold > 0,
            breaker_threshold: o.breaker_threshold,
            breaker_open_for: o.breaker_open_for,
        }
    }
}

/// Percent-encodes everything but unreserved URL characters, for credentials put into a URL.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
