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
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
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
            Some('\\') if p.get(pi + 1) == Some(&t[ti]) => {
                pi += 2;
                ti += 1;
                continue;
            }
            Some(c) if *c != '\\' && *c == t[ti] => {
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
