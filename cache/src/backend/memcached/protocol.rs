//! memcached's meta text protocol: the requests we send and an incremental parser for the
//! replies.
//!
//! Every key goes out base64-encoded with the `b` flag, so no byte of a caller's key can end
//! a command line early or start another command (see `keys.rs`).

use std::fmt::Write as _;

/// A reply line longer than this without `\r\n` means the stream is not the meta protocol.
const MAX_LINE: usize = 8 * 1024;
/// The largest value size we accept in a `VA` header (memcached's own limit tops out at 1 GiB).
pub(crate) const MAX_VALUE: usize = 1024 * 1024 * 1024;

/// One reply of the meta protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `VA <size> <flags>*` and its data block.
    Value(Vec<u8>),
    /// `VA <size> c<cas> <flags>*`: a value with its compare-and-swap id (asked for with `c`).
    ValueCas(Vec<u8>, u64),
    /// `HD <flags>*`: success without a value.
    Stored,
    /// `HD c<cas> <flags>*`: stored, with the new item's compare-and-swap id (asked for with
    /// `c`).
    StoredCas(u64),
    /// `EN`: miss.
    Miss,
    /// `NF`: not found (delete of a missing key).
    NotFound,
    /// `NS`: not stored.
    NotStored,
    /// `EX`: exists (a compare-and-swap lost).
    Exists,
    /// `MN`: the end of a pipeline.
    NoOp,
    /// `CLIENT_ERROR ...`: the server rejected our request.
    ClientError(String),
    /// `SERVER_ERROR ...`: the server could not do it (out of memory, too large, ...).
    ServerError(String),
    /// `ERROR`: the server did not know the command.
    Error,
}

/// The stream is not a meta-protocol reply stream; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desync(pub(crate) String);

/// Parses one reply from the front of `buf`. `Ok(None)`: need more bytes. `Ok(Some((reply,
/// n)))`: the reply used the first `n` bytes. `Err`: the bytes cannot be a reply.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Desync> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(Desync(format!(
                "no line end within {MAX_LINE} bytes of a reply"
            )));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after_line = eol + 2;
    // A control character inside a reply line means two lines ran together or a line was
    // damaged: reading on would take the wrong bytes as the next reply.
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Desync("a reply line holds a control character".into()));
    }
    let text =
        std::str::from_utf8(line).map_err(|_| Desync("a reply line is not valid UTF-8".into()))?;
    let mut words = text.split(' ');
    let head = words.next().unwrap_or_default();
    let simple = |r: Reply| Ok(Some((r, after_line)));
    match head {
        "VA" => {
            let size: usize = words
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Desync(format!("bad VA header {text:?}")))?;
            if size > MAX_VALUE {
                return Err(Desync(format!("VA announces {size} bytes")));
            }
            let end = after_line + size;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Desync("a value block does not end with \\r\\n".into()));
            }
            let data = buf[after_line..end].to_vec();
            let reply = match cas_flag(words) {
                Some(cas) => Reply::ValueCas(data, cas),
                None => Reply::Value(data),
            };
            Ok(Some((reply, end + 2)))
        }
        "HD" => simple(match cas_flag(words) {
            Some(cas) => Reply::StoredCas(cas),
            None => Reply::Stored,
        }),
        "EN" if text == "EN" => simple(Reply::Miss),
        "NF" => simple(Reply::NotFound),
        "NS" => simple(Reply::NotStored),
        "EX" => simple(Reply::Exists),
        "MN" if text == "MN" => simple(Reply::NoOp),
        "ERROR" if text == "ERROR" => simple(Reply::Error),
        "CLIENT_ERROR" => simple(Reply::ClientError(rest(text, head))),
        "SERVER_ERROR" => simple(Reply::ServerError(rest(text, head))),
        _ => Err(Desync(format!(
            "unexpected reply {:?}",
            text.chars().take(64).collect::<String>()
        ))),
    }
}

/// The value of a `c<cas>` return flag among a reply's flags.
fn cas_flag<'a>(mut flags: impl Iterator<Item = &'a str>) -> Option<u64> {
    flags.find_map(|w| w.strip_prefix('c').and_then(|n| n.parse::<u64>().ok()))
}

/// The message after an error word and its one separating space, kept as sent.
fn rest(text: &str, head: &str) -> String {
    let after = &text[head.len()..];
    after.strip_prefix(' ').unwrap_or(after).to_owned()
}

/// `mg <key> b v`: the value of a key.
pub(crate) fn get(out: &mut Vec<u8>, key_b64: &str) {
    line(out, format_args!("mg {key_b64} b v"));
}

/// `ms <key> <len> b [T<ttl>]` and the data block. `ttl` 0 means no expiry.
pub(crate) fn set(out: &mut Vec<u8>, key_b64: &str, value: &[u8], ttl: u64) {
    if ttl == 0 {
        line(out, format_args!("ms {key_b64} {} b", value.len()));
    } else {
        line(out, format_args!("ms {key_b64} {} b T{ttl}", value.len()));
    }
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `ms <key> <len> b T<ttl> ME c`: store only if the key does not exist (add), answering
/// with the new item's compare-and-swap id.
pub(crate) fn add(out: &mut Vec<u8>, key_b64: &str, value: &[u8], ttl: u64) {
    line(
        out,
        format_args!("ms {key_b64} {} b T{ttl} ME c", value.len()),
    );
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `md <key> b C<cas>`: delete only if the item is unchanged since it was created or read.
pub(crate) fn delete_cas(out: &mut Vec<u8>, key_b64: &str, cas: u64) {
    line(out, format_args!("md {key_b64} b C{cas}"));
}

/// `md <key> b`.
pub(crate) fn delete(out: &mut Vec<u8>, key_b64: &str) {
    line(out, format_args!("md {key_b64} b"));
}

/// `mn`: answered with `MN` after everything before it.
pub(crate) fn noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"mn\r\n");
}

fn line(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let mut s = String::with_capacity(64);
    let _ = s.write_fmt(args);
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(r: &Reply) -> Vec<u8> {
        match r {
            Reply::Value(v) => {
                let mut out = format!("VA {} t-1\r\n", v.len()).into_bytes();
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
                out
            }
            Reply::ValueCas(v, cas) => {
                let mut out = format!("VA {} c{cas}\r\n", v.len()).into_bytes();
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
                out
            }
            Reply::Stored => b"HD\r\n".to_vec(),
            Reply::StoredCas(cas) => format!("HD c{cas}\r\n").into_bytes(),
            Reply::Miss => b"EN\r\n".to_vec(),
            Reply::NotFound => b"NF\r\n".to_vec(),
            Reply::NotStored => b"NS\r\n".to_vec(),
            Reply::Exists => b"EX\r\n".to_vec(),
            Reply::NoOp => b"MN\r\n".to_vec(),
            Reply::ClientError(m) => format!("CLIENT_ERROR {m}\r\n").into_bytes(),
            Reply::ServerError(m) => format!("SERVER_ERROR {m}\r\n").into_bytes(),
            Reply::Error => b"ERROR\r\n".to_vec(),
        }
    }

    fn reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Reply::Value),
            (proptest::collection::vec(any::<u8>(), 0..50), any::<u64>())
                .prop_map(|(v, c)| Reply::ValueCas(v, c)),
            Just(Reply::Stored),
            any::<u64>().prop_map(Reply::StoredCas),
            Just(Reply::Miss),
            Just(Reply::NotFound),
            Just(Reply::NotStored),
            Just(Reply::Exists),
            Just(Reply::NoOp),
            Just(Reply::Error),
            "[a-z ]{1,20}".prop_map(|m| Reply::ServerError(m.trim().to_owned())),
            "[a-z ]{1,20}".prop_map(|m| Reply::ClientError(m.trim().to_owned())),
        ]
    }

    /// Feeds `stream` in chunks of `chunk` bytes, as a socket would deliver it.
    fn parse_all(stream: &[u8], chunk: usize) -> Result<Vec<Reply>, Desync> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some((r, n)) = parse(&buf)? {
                out.push(r);
                buf.drain(..n);
            }
        }
        if !buf.is_empty() {
            return Err(Desync(format!("{} bytes left over", buf.len())));
        }
        Ok(out)
    }

    #[test]
    fn known_replies_parse() {
        let stream = b"VA 3 f0\r\nabc\r\nVA 1 c42 t-1\r\nx\r\nHD c9\r\nHD\r\nEN\r\nNF\r\nNS\r\nEX\r\nMN\r\nSERVER_ERROR out of memory\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\nVA 0\r\n\r\n";
        assert_eq!(
            parse_all(stream, 1).expect("valid"),
            vec![
                Reply::Value(b"abc".to_vec()),
                Reply::ValueCas(b"x".to_vec(), 42),
                Reply::StoredCas(9),
                Reply::Stored,
                Reply::Miss,
                Reply::NotFound,
                Reply::NotStored,
                Reply::Exists,
                Reply::NoOp,
                Reply::ServerError("out of memory".into()),
                Reply::ClientError("bad data chunk".into()),
                Reply::Error,
                Reply::Value(Vec::new()),
            ]
        );
    }

    #[test]
    fn broken_streams_are_desyncs_not_guesses() {
        for bad in [
            &b"VA x\r\n"[..],
            b"VA 3\r\nabcd\r\n",
            b"VALUE k 0 3\r\nabc\r\nEND\r\n",
            b"END\r\n",
            b"\xff\xfe\r\n",
            b"VA 99999999999999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&vec![b'a'; MAX_LINE + 1]).is_err());
        assert_eq!(parse(b"VA 3\r\nab"), Ok(None), "waits for the rest");
    }

    #[test]
    fn requests_are_one_line_each() {
        let mut out = Vec::new();
        get(&mut out, "a2V5");
        set(&mut out, "a2V5", b"v\r\nx", 30);
        set(&mut out, "a2V5", b"", 0);
        delete(&mut out, "a2V5");
        add(&mut out, "a2V5", b"t", 10);
        delete_cas(&mut out, "a2V5", 7);
        noop(&mut out);
        assert_eq!(
            out,
            b"mg a2V5 b v\r\nms a2V5 4 b T30\r\nv\r\nx\r\nms a2V5 0 b\r\n\r\nmd a2V5 b\r\nms a2V5 1 b T10 ME c\r\nt\r\nmd a2V5 b C7\r\nmn\r\n"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
            let _ = parse_all(&bytes, 7);
        }

        #[test]
        fn valid_streams_parse_back_whatever_the_chunking(
            replies in proptest::collection::vec(reply(), 0..20),
            chunk in 1usize..64,
        ) {
            let stream: Vec<u8> = replies.iter().flat_map(encode).collect();
            prop_assert_eq!(parse_all(&stream, chunk).expect("valid stream"), replies);
        }

        #[test]
        fn a_corrupted_byte_never_shifts_the_frames(
            // Replies whose flags we do not read: a corrupted CAS id re-encodes shorter without
            // any frame moving, which this length check would misread.
            replies in proptest::collection::vec(
                reply().prop_filter("no CAS", |r| {
                    !matches!(r, Reply::ValueCas(..) | Reply::StoredCas(_))
                }),
                1..10,
            ),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut stream: Vec<u8> = replies.iter().flat_map(encode).collect();
            let i = at.index(stream.len());
            prop_assume!(stream[i] != byte);
            stream[i] = byte;
            // Either the parser notices, or it parses a stream that re-encodes to the same
            // bytes (a changed byte inside a value or a message): never a shifted frame.
            if let Ok(parsed) = parse_all(&stream, 13) {
                let again: Vec<u8> = parsed.iter().flat_map(encode).collect();
                prop_assert_eq!(again.len(), stream.len());
            }
        }
    }
}
