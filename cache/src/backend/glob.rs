//! Glob matching for `delete_pattern`, with Redis `MATCH` semantics for `*`, `?` and `\`.

/// Whether `text` matches `pattern`: `*` matches any run of characters (also none), `?` exactly
/// one character, and `\` makes the next character literal.
///
/// ```
/// use lexigram_cache::backend::glob::matches;
/// assert!(matches("user:*", "user:42"));
/// assert!(matches("user:?", "user:7"));
/// assert!(!matches("user:?", "user:42"));
/// assert!(matches(r"a\*b", "a*b"));
/// ```
pub fn matches(pattern: &str, text: &str) -> bool {
    let t: Vec<Option<char>> = text.chars().map(Some).collect();
    matches_units(pattern, &t)
}

/// [`matches`] for a key as stored, which another client may have written in bytes that are
/// not UTF-8: each such byte is one character that only `?` and `*` match.
pub(crate) fn matches_bytes(pattern: &str, text: &[u8]) -> bool {
    let mut t = Vec::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        t.extend(chunk.valid().chars().map(Some));
        t.extend(chunk.invalid().iter().map(|_| None));
    }
    matches_units(pattern, &t)
}

/// The matcher over the text's characters, `None` standing for a byte that is not UTF-8.
fn matches_units(pattern: &str, t: &[Option<char>]) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matcher with one backtrack point (the last `*`): linear in practice and never
    // exponential, whatever the pattern.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some('\\') if t[ti].is_some() && p.get(pi + 1).copied() == t[ti] => {
                pi += 2;
                ti += 1;
                continue;
            }
            Some(c) if *c != '\\' && Some(*c) == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while p.get(pi) == Some(&'*') {
        pi += 1;
    }
    pi == p.len()
}

/// Whether the pattern has no wildcard, so it names exactly one key (after unescaping).
pub(crate) fn literal(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => return None,
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "a123b456c"));
        assert!(!matches("a*b*c", "a123b456"));
        assert!(matches("??", "éx"));
        assert!(!matches("?", ""));
        assert!(matches("k\\?", "k?"));
        assert!(!matches("k\\?", "kx"));
        assert!(matches("*:v1:*", "m::f:v1:abc"));
        assert!(!matches("abc", "abcd"));
        assert!(matches("a**", "a"));
        assert!(matches_bytes("a?", b"a\xff"));
        assert!(matches_bytes("*", b"\xff\xfe"));
        assert!(!matches_bytes("a?", b"a\xff\xfe"));
        assert!(matches_bytes("é?", b"\xc3\xa9\x80"));
        assert!(!matches_bytes("\\?", b"\xff"));
        // No exponential blow-up.
        let long = "a".repeat(2000);
        assert!(!matches("*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn literals() {
        assert_eq!(literal("user:1"), Some("user:1".into()));
        assert_eq!(literal("user:\\*"), Some("user:*".into()));
        assert_eq!(literal("user:*"), None);
    }
}
