//! Keys as one unambiguous line of text.

use std::fmt::Write;

/// `bytes` as text that names them exactly and stays on one line: `\` becomes `\\`, line
/// breaks, tabs, other control and invisible characters become `\n`, `\t`, `\u{..}`, and bytes
/// that are not UTF-8 become `\xNN`. Printable text, spaces included, is left as it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if is_invisible(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Characters a terminal shows as nothing, as a line break, or that reorder the text around
/// them: with them printed raw, two different keys could look the same.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn every_key_is_one_line_that_tells_it_apart() {
        assert_eq!(escape(b"user:1"), "user:1");
        assert_eq!(escape("caf\u{e9} au lait".as_bytes()), "caf\u{e9} au lait");
        assert_eq!(escape(b"a\nb"), "a\\nb");
        assert_eq!(
            escape(b"a\\nb"),
            "a\\\\nb",
            "a real backslash differs from an escape"
        );
        assert_eq!(escape(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(escape(b"t\tr\r\x1b"), "t\\tr\\r\\u{1b}");
        assert_eq!(
            escape("a\u{200b}b\u{2028}".as_bytes()),
            "a\\u{200b}b\\u{2028}"
        );
    }
}
