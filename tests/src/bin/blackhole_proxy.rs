//! The fault proxy of the integration tests as a process, for `scripts/load`:
//!
//! `blackhole_proxy <upstream 127.0.0.1:port> <control file>`
//!
//! Listens on a free port of 127.0.0.1, prints `127.0.0.1:<port>` on one line, and forwards
//! every connection to the upstream. Every 20 ms it reads the first word of the control file
//! (a missing file counts as `forward`) and acts when the word changes:
//!
//! - `forward`: forwards both ways (after `blackhole`, the open connections too, whose
//!   swallowed requests are never answered: use `reroute` to end a black hole);
//! - `blackhole`: keeps every socket open and forwards nothing, new connections included (a
//!   server that vanished without a reset);
//! - `reroute`: new connections are forwarded again, while the black-holed ones stay silent for
//!   good. Resuming them would hand the client answers to requests the proxy swallowed.
//!
//! A shell drives it with `echo blackhole > file`; a file needs no signal-handling feature.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use lexigram_cache_tests::proxy::{Mode, Proxy};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, control] = args.as_slice() else {
        eprintln!("usage: blackhole_proxy <upstream 127.0.0.1:port> <control file>");
        return ExitCode::FAILURE;
    };
    // A fault injector pointed at a shared host would black-hole someone else's traffic.
    match upstream.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() => {}
        _ => {
            eprintln!(
                "blackhole_proxy: the upstream must be a loopback address such as \
                 127.0.0.1:6379, not `{upstream}`"
            );
            return ExitCode::FAILURE;
        }
    }
    let proxy = Proxy::start(upstream).await;
    println!("{}", proxy.addr());
    let mut applied = String::from("forward");
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let word = match std::fs::read_to_string(control) {
            Ok(text) => text
                .split_whitespace()
                .next()
                .unwrap_or("forward")
                .to_owned(),
            Err(_) => "forward".to_owned(),
        };
        if word == applied {
            continue;
        }
        match word.as_str() {
            "forward" => proxy.set_mode(Mode::Forward),
            "blackhole" => proxy.set_mode(Mode::BlackHole),
            "reroute" => proxy.reroute(upstream),
            other => {
                eprintln!(
                    "blackhole_proxy: unknown word `{other}` in {control}; write forward, \
                     blackhole or reroute"
                );
                return ExitCode::FAILURE;
            }
        }
        eprintln!("blackhole_proxy: {word}");
        applied = word;
    }
}
