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

    /// The password in the URL as written (still percent-encoded), if it has one
    /// (`scheme://user:PASSWORD@host` or `scheme://:PASSWORD@host`).
    pub fn password(&self) -> Option<&str> {
        let (start, end) = Authority::of(&self.0).userinfo?;
        self.0[start..end]
            .split_once(':')
            .map(|(_, pass)| pass)
            .filter(|p| !p.is_empty())
    }

    /// The password as the client sends it: percent-decoded.
    pub(crate) fn decoded_password(&self) -> Option<String> {
        self.password().map(percent_decode)
    }

    /// Whether the URL carries user info (`user:pass@` or `user@`).
    pub(crate) fn has_credentials(&self) -> bool {
        Authority::of(&self.0).userinfo.is_some()
    }

    /// Whether an `@` follows the authority (in the path, query or fragment): the mark of a
    /// password holding an unencoded `/`, `?` or `#`, which ends the authority early.
    pub(crate) fn has_at_after_authority(&self) -> bool {
        let a = Authority::of(&self.0);
        self.0[a.end..].contains('@')
    }

    /// The host the client connects to: the authority (which ends at the first `/`, `?` or
    /// `#`) without user info, port, or brackets around an IPv6 address. `None` when the
    /// authority is no `host[:port]`.
    pub fn host(&self) -> Option<&str> {
        let a = Authority::of(&self.0);
        let authority = &self.0[a.userinfo.map_or(a.start, |(_, at)| at + 1)..a.end];
        if !plain_authority(authority) {
            return None;
        }
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().filter(|h| !h.is_empty());
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        (!host.is_empty()).then_some(host)
    }
}

/// The authority of a URL as URL parsers read it: from after `://` to the first `/`, `?` or
/// `#`, with the user info ending at its last `@`.
struct Authority {
    start: usize,
    end: usize,
    /// Byte range of `user:pass`, without the `@`.
    userinfo: Option<(usize, usize)>,
}

impl Authority {
    fn of(url: &str) -> Authority {
        let start = url.find("://").map_or(0, |i| i + 3);
        let end = url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i);
        let userinfo = url[start..end].rfind('@').map(|at| (start, start + at));
        Authority {
            start,
            end,
            userinfo,
        }
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
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

/// A password is text, whatever it looks like: `123456` from a variable or an unquoted YAML
/// value arrives as a number, and is taken as its digits. No error repeats the value.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'v> serde::de::Visitor<'v> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the password as text")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "reads as a decimal number, which would change its digits; quote the password",
                ))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Secret, E> {
                Err(E::custom(
                    "is empty; give the password as text, or remove the field",
                ))
            }
            fn visit_seq<A: serde::de::SeqAccess<'v>>(self, _: A) -> Result<Secret, A::Error> {
                Err(serde::de::Error::custom("must be text, not a list"))
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(self, _: A) -> Result<Secret, A::Error> {
                Err(serde::de::Error::custom("must be text, not a mapping"))
            }
        }
        d.deserialize_any(Text)
    }
}

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

/// `url` with its user info's password (and any `password=`/`pass=` query value) replaced by
/// `***`. The user info runs from `://` to the *last* `@` anywhere in the text, not only in the
/// authority: a password with an unencoded `/`, `?` or `#` ends a parser's authority early,
/// and must stay hidden all the same. A user name is kept when the user info is plainly
/// `user:password`.
pub(crate) fn redact(url: &str) -> String {
    // Query values first: a password there may hold an `@` of its own.
    let mut url = url.to_owned();
    for name in ["password=", "pass="] {
        let mut from = 0;
        while let Some(i) = url[from..].find(name) {
            let value_start = from + i + name.len();
            let value_end = url[value_start..]
                .find(['&', '#'])
                .map_or(url.len(), |j| value_start + j);
            url.replace_range(value_start..value_end, "***");
            from = value_start + 3;
        }
    }
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@').map(|at| start + at) {
        Some(at) => {
            let info = &url[start..at];
            let shown = match info.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
                None if !info.contains(['/', '?', '#']) => info.to_owned(),
                _ => "***".to_owned(),
            };
            format!("{}{shown}{}", &url[..start], &url[at..])
        }
        // `scheme://:secret` or `scheme://user:pa?ss` (no host, or a `?` in the password):
        // the authority is no `host:port`, so it may well be a password; hide it all.
        None if !plain_authority(&url[start..Authority::of(&url).end]) => {
            format!("{}***", &url[..start])
        }
        None => url,
    }
}

/// Whether `authority` reads as `host`, `host:port` or `[v6]:port`, with a numeric port.
fn plain_authority(authority: &str) -> bool {
    let port = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => return true,
            Some((_, rest)) => rest.strip_prefix(':'),
            None => None,
        },
        None => match authority.split_once(':') {
            Some((_, port)) => Some(port),
            None => return true,
        },
    };
    port.is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// `text` (a client library's message) with the user info of every URL in it redacted, as
/// [`redact`] does for one URL. Passwords are found by where they sit, never by searching for
/// their text: a search for a short password would garble the message and tell the password
/// by where the `***` land.
pub(crate) fn scrub(text: String) -> String {
    if !text.contains("://") && !text.contains("pass") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // A URL in a message runs to the next whitespace or quote.
    while let Some(i) = rest.find(|c: char| !c.is_whitespace() && !"\"'`()<>".contains(c)) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest
            .find(|c: char| c.is_whitespace() || "\"'`()<>".contains(c))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if word.contains("://") || word.contains("pass") {
            out.push_str(&redact(word));
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Decodes `%XX` escapes; anything that is not a valid escape is kept as written.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn scrub_redacts_urls_by_structure_not_by_text() {
        let msg = "Password authentication failed";
        assert_eq!(scrub(msg.into()), msg);
        assert_eq!(
            scrub("cannot open redis://:e@h:1/0 (refused)".into()),
            "cannot open redis://:***@h:1/0 (refused)"
        );
        assert_eq!(
            scrub("bad `redis://:ab/cd@h`".into()),
            "bad `redis://:***@h`"
        );
    }

    #[test]
    fn a_password_ending_the_authority_early_stays_hidden() {
        for (url, shown) in [
            ("redis://:ab/cd@h:1", "redis://:***@h:1"),
            ("redis://ab/cd@h:1", "redis://***@h:1"),
            ("redis://u:ab?cd@h", "redis://u:***@h"),
            ("redis://:ab#cd@h", "redis://:***@h"),
            (":pw@h:1", ":***@h:1"),
            ("redis://:pw", "redis://***"),
            ("redis://u:pw?x", "redis://***"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://[::1]:6379", "redis://[::1]:6379"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn the_host_is_the_one_the_client_connects_to() {
        let u = ServerUrl::from("redis://10.0.0.5:6379/?x=@localhost");
        assert_eq!(u.host(), Some("10.0.0.5"));
        assert!(u.has_at_after_authority());
        assert!(!u.has_credentials());
        assert_eq!(ServerUrl::from("redis://u:p@ss@h:1").host(), Some("h"));
        assert_eq!(
            ServerUrl::from("redis://:pass%77ord@h").decoded_password(),
            Some("password".into())
        );
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }
}
