//! Stored bytes as a person reads them.

use lexigram_cache::codec::Envelope;

/// Prints what an envelope holds; bytes that are not one are shown as such. `key` is already
/// escaped.
pub fn envelope(key: &str, bytes: &[u8]) {
    match Envelope::parse(bytes) {
        Ok(env) => {
            println!("key         {key}");
            println!("format      {:?}", env.format);
            println!("stored at   {} ms (unix)", env.stored_at_ms);
            if env.expires_at_ms == 0 {
                println!("expires     never");
            } else {
                println!("expires at  {} ms (unix)", env.expires_at_ms);
            }
            println!("computed in {} µs", env.compute_us);
            println!("payload     {} bytes stored", env.payload.len());
            // Large values are stored compressed: show what was serialized, not the LZ4 block.
            match lexigram_cache::codec::payload(bytes) {
                Ok(payload) => match env.format.from_slice::<serde_json::Value>(&payload) {
                    Ok(v) => println!("{v}"),
                    Err(e) => println!("(payload does not decode: {e})"),
                },
                Err(reason) => println!("(payload does not inflate: {reason})"),
            }
        }
        Err(reason) => println!(
            "key {key}: {} bytes that are not a lexigram-cache value ({reason})",
            bytes.len()
        ),
    }
}
