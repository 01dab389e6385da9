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
mod security;
mod validate;

pub use crate::secret::{Secret, ServerUrl};
pub(crate) use load::env_var;
pub use load::{ConfigSources, ENV_PREFIX};
pub use model::{
    BackendConfig, BackendKind, CacheConfig, FunctionConfig, MemoryConfig, NearConfig,
    ServiceConfig,
};
pub(crate) use security::{check as check_security, production_reason};
pub(crate) use validate::validate;

/// The error for the configuration field at `path`, naming the variable that sets it.
pub(crate) fn invalid(path: String, message: impl Into<String>) -> crate::CacheError {
    crate::CacheError::Config {
        env: load::env_hint(&path),
        path,
        message: message.into(),
    }
}
