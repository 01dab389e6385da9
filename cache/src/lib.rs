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
//!   one (values stay typed: a hit never serializes);
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
pub mod key;
mod observe;
mod protect;
mod registry;

#[doc(hidden)]
pub mod __private;

pub use backend::CacheBackend;
pub use backend::memory::{MemoryBackend, MemoryBackendBuilder, MemoryEngine};
pub use cache::{Cache, CacheOptions, CacheValue, Ttl};
pub use clock::Clock;
pub use codec::Format;
pub use config::{BackendConfig, BackendKind, CacheConfig};
pub use error::{BackendError, CacheError};
pub use observe::CacheStats;
pub use registry::{BackendHealth, CacheModule, Caches, HealthReport, installed};

/// Caches an async function's result. See the crate documentation and the README's tour.
pub use lexigram_cache_macros::cacheable;
