//! Checks a [`CacheConfig`] before anything is built.

use std::collections::HashSet;

use std::time::Duration;

use super::duration::{Range, TTL, WAIT};
use super::{BackendConfig, CacheConfig};
use crate::error::CacheError;

/// The first duration outside its range, as an error at its field.
fn durations<'a>(
    fields: impl IntoIterator<Item = (String, &'a Range, Option<Duration>)>,
) -> Result<(), CacheError> {
    for (path, range, d) in fields {
        if let Some(d) = d {
            range.check(d).map_err(|m| invalid(path, m))?;
        }
    }
    Ok(())
}

fn invalid(path: String, message: impl Into<String>) -> CacheError {
    super::invalid(path, message)
}

/// A setting that the backend's type does not use: it would be ignored, and a Redis URL on a
/// backend whose `type` was left out would leave the service on the in-memory default.
fn misplaced(i: usize, b: &BackendConfig) -> Result<(), CacheError> {
    let defaults = BackendConfig::default();
    let set = [
        ("redis_url", b.redis_url.is_some(), "redis"),
        ("host", b.host.is_some(), "redis"),
        ("port", b.port.is_some(), "redis"),
        ("db", b.db.is_some(), "redis"),
        ("nodes", !b.nodes.is_empty(), "redis"),
        ("cluster", b.cluster, "redis"),
        ("servers", !b.servers.is_empty(), "memcached"),
        ("pool_size", b.pool_size != defaults.pool_size, "memcached"),
        (
            "max_item_size",
            b.max_item_size != defaults.max_item_size,
            "memcached",
        ),
        ("username", b.username.is_some(), "redis or memcached"),
        ("password", b.password.is_some(), "redis or memcached"),
        ("tls", b.tls, "redis or memcached"),
        ("ca_file", b.ca_file.is_some(), "redis or memcached"),
        ("memory", b.memory != defaults.memory, "memory"),
        ("near", b.near != defaults.near, "redis or memcached"),
        // A Redis backend publishes its own invalidations.
        ("near.backplane", b.near.backplane.is_some(), "memcached"),
        (
            "compression",
            b.compression != defaults.compression,
            "redis or memcached",
        ),
    ];
    let kind = b.kind.as_str();
    for (field, is_set, applies_to) in set {
        if is_set && !applies_to.split(" or ").any(|k| k == kind) {
            let hint = if kind == "memory" {
                format!(
                    "the backend's type is memory (the default when `type` is not given), which \
                     does not use it; add `type: {}`, or remove `{field}`",
                    applies_to.split(" or ").next().unwrap_or(applies_to)
                )
            } else {
                format!("only type {applies_to} uses it, and this backend is {kind}; remove it")
            };
            return Err(invalid(format!("backends[{i}].{field}"), hint));
        }
    }
    Ok(())
}

/// `host` is a host name or an IP address: a port, user info or path in it would otherwise be
/// reported against the URL built from it, a field the user never set.
fn check_host(i: usize, host: &str) -> Result<(), CacheError> {
    let path = format!("backends[{i}].host");
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    match (plain, port) {
        (true, None) => Ok(()),
        // Only a plain name is quoted back: anything else may hold a password.
        (true, Some(port)) => Err(invalid(
            path,
            format!(
                "`{host}` has a port in it; set the host alone and the port with `port: {port}` \
                 (`{}`)",
                super::env_var(&format!("backends[{i}].port"))
            ),
        )),
        (false, _) => Err(invalid(
            path,
            "is not a host name or IP address; write e.g. `cache.internal`, `10.0.0.5` or `::1` \
             (no scheme, port, user or path; put a whole URL in `redis_url`)",
        )),
    }
}

/// Memcached credentials belong in `username`/`password`; a server entry with user info would
/// otherwise be quoted, password and all, by the error that rejects it.
fn check_servers(i: usize, b: &BackendConfig) -> Result<(), CacheError> {
    for (j, server) in b.servers.iter().enumerate() {
        if server.contains('@') {
            return Err(invalid(
                format!("backends[{i}].servers[{j}]"),
                format!(
                    "`{}` has user info; write host:port here and set Memcached credentials \
                     with `username` and `password`",
                    crate::secret::redact(server)
                ),
            ));
        }
    }
    Ok(())
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
        durations([
            (format!("backends[{i}].default_ttl"), &TTL, b.default_ttl),
            (
                format!("backends[{i}].memory.time_to_idle"),
                &TTL,
                b.memory.time_to_idle,
            ),
            (format!("backends[{i}].near.ttl"), &WAIT, Some(b.near.ttl)),
            (
                format!("backends[{i}].connect_timeout"),
                &WAIT,
                Some(b.connect_timeout),
            ),
            (
                format!("backends[{i}].op_timeout"),
                &WAIT,
                Some(b.op_timeout),
            ),
            (format!("backends[{i}].call_budget"), &WAIT, b.call_budget),
        ])?;
    }
    for (i, b) in config.backends.iter().enumerate() {
        if b.near.max_entries == 0 {
            return Err(invalid(
                format!("backends[{i}].near.max_entries"),
                "must be at least 1; to switch the near cache off, set `near.enabled: false`",
            ));
        }
        if let Some(host) = &b.host {
            check_host(i, host)?;
        }
        check_servers(i, b)?;
        if b.port == Some(0) {
            return Err(invalid(
                format!("backends[{i}].port"),
                "must be a port number from 1 to 65535",
            ));
        }
        for (j, url) in b.redis_url.iter().chain(&b.nodes).enumerate() {
            let path = if b.redis_url.is_some() && j == 0 {
                format!("backends[{i}].redis_url")
            } else {
                format!(
                    "backends[{i}].nodes[{}]",
                    j - usize::from(b.redis_url.is_some())
                )
            };
            if url.has_at_after_authority() {
                return Err(invalid(
                    path,
                    format!(
                        "`{url}` has an `@` after the end of its host part (the first `/`, `?` \
                         or `#`), so a client would not read the host you meant; if the password \
                         holds `/`, `?` or `#`, write them as %2F, %3F and %23"
                    ),
                ));
            }
            let text = url.expose();
            let scheme_ok = text.starts_with("redis://") || text.starts_with("rediss://");
            if !scheme_ok || url.host().is_none() {
                return Err(invalid(
                    path,
                    format!(
                        "`{url}` is not a Redis URL; write redis://[user:password@]host:port[/db] \
                         or rediss://... for TLS"
                    ),
                ));
            }
        }
        if b.pool_size == 0 {
            return Err(invalid(
                format!("backends[{i}].pool_size"),
                "must be at least 1",
            ));
        }
        if b.max_item_size == 0 {
            return Err(invalid(
                format!("backends[{i}].max_item_size"),
                "must be greater than zero",
            ));
        }
    }
    for (i, b) in config.backends.iter().enumerate() {
        misplaced(i, b)?;
    }
    for (name, f) in &config.functions {
        durations([(format!("functions.{name}.ttl"), &TTL, f.ttl.flatten())])?;
        if let Some(backend) = &f.backend
            && !config.backends.iter().any(|b| &b.name == backend)
        {
            return Err(invalid(
                format!("functions.{name}.backend"),
                format!(
                    "no backend is named `{backend}`; the backends are: {}",
                    config
                        .backends
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let service = &config.service;
    durations(
        [
            ("fill_wait", &WAIT, Some(service.fill_wait)),
            ("lock_ttl", &WAIT, Some(service.lock_ttl)),
            ("lock_wait", &WAIT, Some(service.lock_wait)),
            ("breaker_open_for", &WAIT, Some(service.breaker_open_for)),
            ("stale_if_error", &TTL, service.stale_if_error),
        ]
        .map(|(field, range, d)| (format!("service.{field}"), range, d)),
    )?;
    if !(0.0..=1.0).contains(&service.ttl_jitter) {
        return Err(invalid(
            "service.ttl_jitter".into(),
            "must be between 0 (off) and 1; 0.1 means ±10%",
        ));
    }
    if !(service.beta > 0.0 && service.beta.is_finite()) {
        return Err(invalid(
            "service.beta".into(),
            "must be a positive number; 1.0 is the usual value",
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
