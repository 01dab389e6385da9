//! # lexigram-cache
//!
//! Cache-aside for async Rust services. One attribute caches an async function's result:
//!
//! ```
//! use lexigram_cache::cacheable;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, name: String }
//!
//! #[cacheable(ttl = 60, key = "user:{id}")]
//! async fn load_user(id: u64) -> Result<User, std::io::Error> {
//!     // the first call for an id runs the body; later calls within 60 s are cache hits
//!     Ok(User { id, name: format!("user {id}") })
//! }
//! # #[tokio::main] async fn main() {
//! # let _ = load_user(1).await;
//! # }
//! ```
//!
//! Below the attribute is a runtime you can use directly:
//!
//! - [`Cache`]: a typed handle over one backend (`get`, `set`, `get_or_insert_with`, ...),
//!   with single-flight stampede protection and statistics;
//! - [`CacheBackend`]: the byte-level interface of a store; [`MemoryBackend`] is the in-process
//!   one (values stay typed: a hit never serializes), [`RedisBackend`] talks to Redis (single
//!   node, TLS or Cluster), [`MemcachedBackend`] to one or several memcached servers;
//! - [`CacheModule`] and [`Caches`]: boot named caches from a [`CacheConfig`], and install them
//!   as the registry `#[cacheable]` uses. With nothing installed, a process-wide in-memory cache
//!   is created on first use.
//!
//! ```
//! use lexigram_cache::CacheModule;
//! use std::time::Duration;
//!
//! # #[tokio::main] async fn main() -> Result<(), lexigram_cache::CacheError> {
//! let cache = CacheModule::stub().cache();
//! let price = cache
//!     .get_or_insert_with("price:42", Duration::from_secs(30), || async { 9.99f64 })
//!     .await;
//! assert_eq!(cache.get::<f64>("price:42").await?, Some(price));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod backend;
mod cache;
mod clock;
pub mod codec;
pub mod config;
mod error;
mod events;
mod front;
pub mod key;
mod observe;
mod protect;
mod registry;
mod request;
mod secret;
mod store;
mod tags;
mod warm;

#[doc(hidden)]
pub mod __private;

pub use backend::CacheBackend;
pub use backend::memcached::{MemcachedBackend, MemcachedBackendBuilder};
pub use backend::memory::{MemoryBackend, MemoryBackendBuilder, MemoryEngine};
pub use backend::redis::{RedisBackend, RedisBackendBuilder};
pub use cache::{Cache, CacheOptions, CacheValue, Ttl};
pub use clock::Clock;
pub use codec::{Compression, Format};
pub use config::{BackendConfig, BackendKind, CacheConfig, ServerUrl};
pub use error::{BackendError, CacheError};
pub use events::{CacheEvent, CacheEvents, EVENTS_CAPACITY, EventError, EventKind};
pub use observe::{CacheStats, FunctionStats, function_stats};
pub use registry::{BackendHealth, CacheModule, Caches, HealthReport, ServerHealth, installed};
pub use request::{in_request_scope, inherit_request_scope, request_scope};
pub use store::near::NearOptions;
pub use warm::{WarmOptions, WarmOutcome, WarmReport};

/// Caches an async function's result (cache-aside).
///
/// ```
/// use lexigram_cache::cacheable;
///
/// #[cacheable(ttl = "5m", key = "square:{n}")]
/// async fn square(n: u64) -> Result<u64, std::io::Error> {
///     Ok(n * n)
/// }
///
/// # #[tokio::main] async fn main() {
/// assert_eq!(square(3).await.unwrap(), 9);      // runs the body, stores 9
/// assert_eq!(square(3).await.unwrap(), 9);      // served from the cache
/// assert_eq!(square_cache_key(3), "square:3");  // generated companion
/// square_invalidate(3).await.unwrap();          // generated companion: evicts the entry
/// # }
/// ```
///
/// Works on `async fn` free functions, inherent methods taking `&self` (or `self: &Self`,
/// `self: &Arc<Self>`, `self: Arc<Self>`, `self: Rc<Self>`, `self: Pin<&Self>`), trait impl
/// methods (native `async fn` in traits, and methods of an `#[async_trait]` impl: put
/// `#[async_trait]` on the impl block and `#[cacheable]` on the method), trait default
/// methods, and generic functions that give `key`. The wrapper keeps the signature,
/// visibility, docs and attributes, and its future is `Send` whenever the body's future is:
/// the wrapper never holds the function's error across an await, so a
/// `Result<T, Box<dyn Error>>` function whose body is `Send` has a `Send` future too.
///
/// # What is cached
///
/// Decided by the return type's trait impls, not its spelling: any `Result<T, E>` (also
/// `anyhow::Result<T>`, `io::Result<T>` or a local alias) stores only `Ok` values;
/// `Option<T>` stores only `Some`; any other type is stored as is. The stored type must be
/// `Serialize + Deserialize + Clone + Send + Sync + 'static`.
///
/// # Options (all optional)
///
/// | option | meaning |
/// |---|---|
/// | `ttl = 60` / `ttl = "90s"` / `ttl = "never"` | lifetime; default: the backend's `default_ttl`. `0` is a compile error |
/// | `key = "user:{id}"` | key template: `{param}`, `{param.field}`, `{self.field}` with `Display`; `{{`/`}}` for braces |
/// | `prefix = "app:"` | put before the key |
/// | `cache = expr` | the `Cache` (or `&Cache`) to use, e.g. `cache = self.cache` |
/// | `backend = "name"` | a named backend of the installed registry |
/// | `skip(a, b)` | parameters left out of the automatic key; with `key`, parameters the template leaves out on purpose (any other left-out parameter is a compile error). `skip(self)` is accepted: `self` is never in an automatic key |
/// | `cache_err` | also store `Err` values (`E` must be cacheable) |
/// | `cache_none` | also store `None` |
/// | `version = 2` | bumps the key space (automatic keys contain `:v2:`; every key's type fingerprint changes) |
/// | `skip_on_error = false` | return cache *read* errors to the caller, converted with `From<CacheError>` into the fn's error type (Result returns only). Default `true`: a backend error is a miss |
/// | `companions = false` | do not generate `<fn>_cache_key` / `<fn>_invalidate`; needed in trait impls, where extra methods are not allowed |
/// | `protect = false` | no distributed fill lock for this function (in-process single flight stays on). Default: `service.enable_protection` |
/// | `early_refresh = false` / `beta = 2.0` | XFetch early refresh on remote backends, and its beta (0.001 or more, used as written). Default: `service.early_refresh`, `service.beta` |
/// | `stale_if_error = "10m"` | keep values that long past expiry and return them when the body fails |
/// | `request_scope` | inside [`request_scope`], answer repeated calls with the same key from the scope (typed, before the cache, even when the cache is switched off or the value expired); outside one, a single task-local check |
/// | `crate = "my_cache"` | the path of this crate, for a crate that renamed the dependency |
///
/// Without `cache` or `backend`, the installed registry's default cache is used
/// ([`Caches::install`]); with nothing installed, a process-wide in-memory cache is created on
/// first use.
///
/// # Keys
///
/// The automatic key is `{prefix}{scope}:v{version}:{hash}`, the hash being XXH3-128 of the
/// non-skipped arguments' canonical serde encoding ([`key`]): stable across processes, machines
/// and builds. `self` is not part of an automatic key: two instances of one type share values,
/// so methods whose result depends on `self` name its fields in a template (`skip(self)` is
/// accepted and changes nothing). An argument that is not `Serialize` is a compile error
/// suggesting `skip(...)` or `key`.
///
/// # Scopes
///
/// A function's scope names it in automatic keys, in [`function_stats`] and in
/// `cache.functions` overrides:
///
/// - a free function: `{module_path}::{fn_name}`, e.g. `my_app::users::load_user`;
/// - a method or associated function of an inherent impl: `{module_path}::{SelfType}::{fn}`,
///   e.g. `my_app::repo::Orders::name`, and one scope per instantiation of a generic impl:
///   `my_app::repo::Repo<Apples>::count`, `my_app::repo::Repo<u64>::count`;
/// - a function of a trait impl (or a trait's default body): `{module_path}::<SelfType as
///   Trait>::{fn}`, e.g. `my_app::pages::<Page as Title>::text`.
///
/// Types are written as [`type_name`](core::any::type_name) prints them, with the module's
/// own path left out (a type of another module keeps its full path, and then starts the
/// scope: `my_app::models::User::name`). The scope is read at run time from the compiler's
/// name for a closure in the function's body, which is why it knows the impl around the
/// function although the macro does not. So same-named functions of different types or
/// traits, and the instantiations of a generic impl, never share keys, statistics or
/// overrides. The compiler does not promise that `type_name` stays the same between compiler
/// versions: a new compiler may move the automatic keys of functions in impls (one miss each,
/// never a wrong value).
///
/// # Companions
///
/// For `fn load_user(id: u64)` the macro also writes `fn load_user_cache_key(id: u64) -> String`
/// and `async fn load_user_invalidate(id: u64) -> Result<bool, CacheError>` (sibling methods for
/// methods), taking the same parameters as the function.
pub use lexigram_cache_macros::cacheable;
