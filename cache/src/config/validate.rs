//! Checks a [`CacheConfig`] before anything is built.

use std::collections::HashSet;

use super::CacheConfig;
use crate::error::CacheError;

fn invalid(path: String, message: impl Into<String>) -> CacheError {
    CacheError::Config {
        path,
        message: message.into(),
    }
}

/// Returns the index of the default backend.
pub(crate) fn validate(config: &CacheConfig) -> Result<usize, CacheError> {
    if config.backends.is_empty() {
        return Err(invalid(
            "backends".into(),
            "no backend is configured; add one, e.g. `backends: [{name: default, type: memory}]`",
        ));
    }
    let mut names = HashSet::new();
    for (i, b) in config.backends.iter().enumerate() {
        if b.name.trim().is_empty() {
            return Err(invalid(format!("backends[{i}].name"), "must not be empty"));
        }
        if !names.insert(b.name.as_str()) {
            return Err(invalid(
                format!("backends[{i}].name"),
                format!("`{}` is used by two backends; names must be unique", b.name),
            ));
        }
        if b.default_ttl == Some(std::time::Duration::ZERO) {
            return Err(invalid(
                format!("backends[{i}].default_ttl"),
                "must be greater than zero; write \"never\" for no expiry",
            ));
        }
    }
    if config.service.fill_wait.is_zero() {
        return Err(invalid(
            "service.fill_wait".into(),
            "must be greater than zero",
        ));
    }
    let defaults: Vec<usize> = config
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.default)
        .map(|(i, _)| i)
        .collect();
    match (defaults.as_slice(), config.backends.len()) {
        ([only], _) => Ok(*only),
        ([], 1) => Ok(0),
        ([], _) => Err(invalid(
            "backends".into(),
            "several backends and none has `default: true`; mark exactly one as the default",
        )),
        (many, _) => Err(invalid(
            "backends".into(),
            format!(
                "{} backends have `default: true` ({}); mark exactly one",
                many.len(),
                many.iter()
                    .map(|&i| config.backends[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
