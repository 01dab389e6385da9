//! Configuration: the model, its serde defaults, and validation.
//!
//! Build a [`CacheConfig`] in code, or deserialize one from the `cache:` section of a YAML
//! file; [`CacheModule::configure`](crate::CacheModule::configure) validates it and boots the
//! backends.

mod duration;
mod functions;
mod list;
mod load;
mod model;
mod secret;
mod security;
mod validate;

pub use load::{ConfigSources, ENV_PREFIX};
pub(crate) use load::{env_hint, env_var};
pub use model::{
    BackendConfig, BackendKind, CacheConfig, FunctionConfig, MemoryConfig, NearConfig,
    ServiceConfig,
};
pub(crate) use secret::scrub;
pub use secret::{Secret, ServerUrl};
pub(crate) use security::{check as check_security, production_reason};
pub(crate) use validate::validate;
