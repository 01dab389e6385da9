//! Configuration: the model, its serde defaults, and validation.
//!
//! Build a [`CacheConfig`] in code, or deserialize one from the `cache:` section of a YAML
//! file; [`CacheModule::configure`](crate::CacheModule::configure) validates it and boots the
//! backends.

mod duration;
mod model;
mod secret;
mod validate;

pub use model::{BackendConfig, BackendKind, CacheConfig, MemoryConfig, ServiceConfig};
pub use secret::ServerUrl;
pub(crate) use secret::scrub;
pub(crate) use validate::validate;
