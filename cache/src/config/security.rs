//! Production security: no remote cache server on a real network without a real password.

use super::load::env_var;
use super::{BackendConfig, BackendKind, CacheConfig};
use crate::error::CacheError;

/// Passwords that are as good as none: defaults from docs, tutorials and images.
const WEAK: &[&str] = &[
    "change-me",
    "changeme",
    "password",
    "passw0rd",
    "password1",
    "password123",
    "123456",
    "12345678",
    "123456789",
    "secret",
    "admin",
    "default",
    "qwerty",
    "letmein",
    "redis",
    "memcached",
    "root",
    "test",
    "guest",
    "foobared",
];

/// Whether `LEX_ENV` (or `APP_ENV`) says `production`, in any case.
pub(crate) fn is_production(lookup: impl Fn(&str) -> Option<String>) -> bool {
    ["LEX_ENV", "APP_ENV"]
        .iter()
        .filter_map(|name| lookup(name))
        .any(|v| v.trim().eq_ignore_ascii_case("production"))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Each server of a remote backend with the password that applies to it and the config field
/// (path) that sets that password.
fn servers(b: &BackendConfig, index: usize) -> Vec<(String, Option<String>, String)> {
    match b.kind {
        BackendKind::Memory => Vec::new(),
        BackendKind::Redis => b
            .redis_urls()
            .into_iter()
            .map(|u| {
                let field = if b.password.is_some() && b.redis_url.as_ref() != Some(&u) {
                    "password"
                } else {
                    "redis_url"
                };
                (
                    u.host().unwrap_or_default().to_owned(),
                    u.password().map(str::to_owned),
                    format!("backends[{index}].{field}"),
                )
            })
            .collect(),
        BackendKind::Memcached => b
            .servers
            .iter()
            .map(|s| {
                let host = s
                    .trim_start_matches("memcached://")
                    .rsplit_once(':')
                    .map_or(s.as_str(), |(h, _)| h)
                    .to_owned();
                (
                    host,
                    b.password.as_ref().map(|p| p.expose().to_owned()),
                    format!("backends[{index}].password"),
                )
            })
            .collect(),
    }
}

/// In production, refuses remote backends whose password is missing on a non-loopback host
/// or is a well-known weak one; elsewhere, logs a warning for the same findings.
pub(crate) fn check(config: &CacheConfig, production: bool) -> Result<(), CacheError> {
    for (index, b) in config.backends.iter().enumerate() {
        for (host, password, path) in servers(b, index) {
            let problem = match password.as_deref() {
                None | Some("") if !is_loopback(&host) => {
                    format!("has no password for the non-loopback host `{host}`")
                }
                Some(p) if WEAK.iter().any(|w| w.eq_ignore_ascii_case(p.trim())) => {
                    "uses a well-known weak password".to_owned()
                }
                _ => continue,
            };
            let message = format!(
                "backend `{}` {problem}; set a strong password with `{}`",
                b.name,
                env_var(&path)
            );
            if production {
                return Err(CacheError::Config {
                    path,
                    message: format!("{message} (refused because LEX_ENV is production)"),
                });
            }
            tracing::warn!(backend = %b.name, "{message}; this would be refused in production");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_is_read_from_either_variable_in_any_case() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(is_production(env(&[("LEX_ENV", "Production")])));
        assert!(is_production(env(&[("APP_ENV", "PRODUCTION")])));
        assert!(!is_production(env(&[("LEX_ENV", "staging")])));
        assert!(!is_production(env(&[])));
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "cache.internal", "0.0.0.0"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
