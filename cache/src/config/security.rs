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

/// Why the production rules apply: `"LEX_ENV is production"` or `"APP_ENV is production"`
/// when that variable says `production` (in any case), else `None`.
pub(crate) fn production_reason(lookup: impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    [
        ("LEX_ENV", "LEX_ENV is production"),
        ("APP_ENV", "APP_ENV is production"),
    ]
    .into_iter()
    .find(|(name, _)| lookup(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("production")))
    .map(|(_, reason)| reason)
}

/// `localhost`, 127.0.0.0/8, `::1`, and 127.0.0.0/8 written as an IPv4-mapped IPv6 address
/// (`::ffff:127.0.0.1`), which reaches the same interface.
fn is_loopback(host: &str) -> bool {
    use std::net::IpAddr;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Ok(ip) => ip.is_loopback(),
            Err(_) => false,
        }
}

/// One server of a remote backend as the production rules see it.
struct Server {
    /// The host the client connects to; `None` when the address has none that parses.
    host: Option<String>,
    /// What to show for the server: a redacted URL or a `host:port`.
    shown: String,
    /// The password the client sends to it, decoded.
    password: Option<String>,
    /// The field that sets that password.
    field: String,
}

/// `host` of a Memcached `host:port` (or `memcached://host:port`) entry, brackets removed.
fn memcached_host(server: &str) -> &str {
    let rest = server.trim();
    let rest = rest.strip_prefix("memcached://").unwrap_or(rest);
    let rest = rest.trim_end_matches('/');
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match rest.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => rest,
    }
}

fn servers(b: &BackendConfig, index: usize) -> Vec<Server> {
    let field = |name: &str| format!("backends[{index}].{name}");
    match b.kind {
        BackendKind::Memory => Vec::new(),
        BackendKind::Redis => b
            .redis_sources()
            .into_iter()
            .map(|(name, url)| {
                // A URL with user info sends that; `password` fills in the others.
                let (password, from) = match &b.password {
                    Some(p) if !url.has_credentials() => {
                        (Some(p.expose().to_owned()), field("password"))
                    }
                    _ => (url.decoded_password(), field(&name)),
                };
                Server {
                    host: url.host().map(str::to_owned),
                    shown: url.to_string(),
                    password,
                    field: from,
                }
            })
            .collect(),
        BackendKind::Memcached => b
            .servers
            .iter()
            .map(|s| Server {
                host: Some(memcached_host(s).to_owned()),
                shown: s.clone(),
                password: b.password.as_ref().map(|p| p.expose().to_owned()),
                field: field("password"),
            })
            // The backplane is a Redis of its own: only its URL carries its password.
            .chain(b.near.backplane.iter().map(|url| Server {
                host: url.host().map(str::to_owned),
                shown: url.to_string(),
                password: url.decoded_password(),
                field: field("near.backplane"),
            }))
            .collect(),
    }
}

/// With `production` (the reason the rules apply, for the message), refuses remote backends
/// whose password is missing (or blank) on a non-loopback host or is a well-known weak one;
/// without, logs a warning for the same findings.
pub(crate) fn check(config: &CacheConfig, production: Option<&str>) -> Result<(), CacheError> {
    for (index, b) in config.backends.iter().enumerate() {
        for server in servers(b, index) {
            let password = server.password.as_deref().map(str::trim).unwrap_or("");
            let loopback = server.host.as_deref().is_some_and(is_loopback);
            let problem = if password.is_empty() {
                if loopback {
                    continue;
                }
                format!(
                    "has no password for the non-loopback server `{}`",
                    server.shown
                )
            } else if WEAK.iter().any(|w| w.eq_ignore_ascii_case(password)) {
                "uses a well-known weak password".to_owned()
            } else {
                continue;
            };
            let message = format!(
                "backend `{}` {problem}; set a strong password with `{}`",
                b.name,
                env_var(&server.field)
            );
            if let Some(reason) = production {
                return Err(super::invalid(
                    server.field,
                    format!("{message} (refused because {reason})"),
                ));
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
        assert_eq!(
            production_reason(env(&[("LEX_ENV", "Production")])),
            Some("LEX_ENV is production")
        );
        assert_eq!(
            production_reason(env(&[("APP_ENV", "PRODUCTION")])),
            Some("APP_ENV is production")
        );
        assert_eq!(production_reason(env(&[("LEX_ENV", "staging")])), None);
        assert_eq!(production_reason(env(&[])), None);
    }

    #[test]
    fn a_backplane_without_a_password_on_another_host_is_refused_in_production() {
        let mut b = BackendConfig::memcached("default", ["127.0.0.1:11211"]);
        b.near.backplane = Some("redis://cache.internal:6379".into());
        let mut config = CacheConfig {
            backends: vec![b],
            ..CacheConfig::default()
        };
        let e = check(&config, Some("LEX_ENV is production"))
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("backends[0].near.backplane") && e.contains("cache.internal"),
            "{e}"
        );
        config.backends[0].near.backplane =
            Some("redis://:a-long-random-secret@cache.internal:6379".into());
        check(&config, Some("LEX_ENV is production")).expect("a password is set");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "cache.internal", "0.0.0.0", "::ffff:10.0.0.1"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
