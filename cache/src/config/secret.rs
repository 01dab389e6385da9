//! Server URLs that may carry a password, and the redaction that keeps it out of every
//! Debug, Display, log line and error.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A server URL such as `redis://user:pass@host:6379/0`, possibly with a password in it.
///
/// `Debug` and `Display` print it with the password replaced by `***`, so a config struct can be
/// logged whole. [`expose`](Self::expose) gives the real text to the code that connects.
///
/// ```
/// use lexigram_cache::ServerUrl;
/// let url = ServerUrl::from("redis://app:hunter2@cache.internal:6379/0");
/// assert_eq!(url.to_string(), "redis://app:***@cache.internal:6379/0");
/// assert_eq!(format!("{url:?}"), "\"redis://app:***@cache.internal:6379/0\"");
/// assert!(url.expose().contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// The URL as written, password included. Hand it only to the code that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The password in the URL, if it has one (`scheme://user:PASSWORD@host` or
    /// `scheme://:PASSWORD@host`).
    pub fn password(&self) -> Option<&str> {
        userinfo(&self.0)
            .and_then(|(start, end)| self.0[start..end].split_once(':'))
            .map(|(_, pass)| pass)
            .filter(|p| !p.is_empty())
    }

    /// Whether the URL carries user info (`user:pass@` or `user@`).
    pub(crate) fn has_credentials(&self) -> bool {
        userinfo(&self.0).is_some()
    }

    /// The host part, without user info, port, path or brackets around an IPv6 address.
    pub fn host(&self) -> Option<&str> {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next();
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        (!host.is_empty()).then_some(host)
    }
}

/// A password in configuration. `Debug` prints `"***"`; [`expose`](Self::expose) gives the
/// text to the code that authenticates.
///
/// ```
/// use lexigram_cache::config::Secret;
/// let s = Secret::from("hunter2");
/// assert_eq!(format!("{s:?}"), "\"***\"");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for ServerUrl {
    fn from(s: &str) -> Self {
        ServerUrl(s.to_owned())
    }
}

impl From<String> for ServerUrl {
    fn from(s: String) -> Self {
        ServerUrl(s)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact(&self.0), f)
    }
}

/// Byte range of the user info (`user:pass`) in `url`, if there is one.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    // The last `@` of the authority ends the user info: a password may itself contain `@`.
    let at = url[start..authority_end].rfind('@')? + start;
    Some((start, at))
}

/// `url` with the password (and any `password=` query value) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let mut out = match userinfo(url) {
        Some((start, end)) => match url[start..end].find(':') {
            Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[end..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    for name in ["password=", "pass="] {
        let mut from = 0;
        while let Some(i) = out[from..].find(name) {
            let value_start = from + i + name.len();
            let value_end = out[value_start..]
                .find('&')
                .map_or(out.len(), |j| value_start + j);
            out.replace_range(value_start..value_end, "***");
            from = value_start + 3;
        }
    }
    out
}

/// Replaces every occurrence of each secret in `text` by `***`. Errors from client libraries
/// may quote what they were given; this is the last line of defence before they are shown.
pub(crate) fn scrub(text: String, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |t, s| t.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_every_spelling() {
        for (url, shown) in [
            ("redis://localhost:6379", "redis://localhost:6379"),
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("redis://u:pw@h", "redis://u:***@h"),
            ("rediss://u:p@ss:w@rd@h:6380", "rediss://u:***@h:6380"),
            ("redis://u@h", "redis://u@h"),
            (
                "redis://h/?password=pw&db=1",
                "redis://h/?password=***&db=1",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            let u = ServerUrl::from(url);
            assert!(!format!("{u} {u:?}").contains("pw"), "{url}");
        }
    }

    #[test]
    fn host_and_password_are_read_out() {
        let u = ServerUrl::from("redis://u:secret@10.0.0.5:6379/2");
        assert_eq!(u.host(), Some("10.0.0.5"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(ServerUrl::from("redis://[::1]:6379").host(), Some("::1"));
        assert_eq!(ServerUrl::from("redis://h").password(), None);
        assert_eq!(ServerUrl::from("redis://u:@h").password(), None);
    }

    #[test]
    fn scrub_removes_secrets_from_text() {
        let s = scrub("auth failed for hunter2".into(), &["hunter2".into()]);
        assert_eq!(s, "auth failed for ***");
    }
}
