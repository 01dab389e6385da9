//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Parser, Subcommand};
use lexigram_cache::Ttl;

use crate::escape::escape;

const CONFIGURATION: &str = r"Configuration (the same sources as the service, later wins):
  1. a file's `cache:` section: --config FILE, else the file LEX_CONFIG_FILE names,
     else ./application.yaml in the current directory, if there is one
  2. application-NAME.yaml beside that file, for --profile NAME or LEX_PROFILE=NAME
  3. LEX_CACHE__... variables, e.g. LEX_CACHE__BACKENDS__0__TYPE=redis and
     LEX_CACHE__BACKENDS__0__REDIS_URL=redis://127.0.0.1:6379
With none of them the only backend is in memory, which this tool cannot look into.

Keys are printed escaped, one per line: \\ for a backslash, \n, \t, and \u{..} for other
invisible characters.

Warnings go to stderr; RUST_LOG sets the level (default warn), e.g. RUST_LOG=debug.";

/// Look at, fill and clean the caches a service is configured with.
#[derive(Debug, Parser)]
#[command(name = "lexigram-cache", version, after_help = CONFIGURATION)]
pub struct Cli {
    /// The configuration file (instead of LEX_CONFIG_FILE or ./application.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The profile: application-NAME.yaml beside the file is layered on top (instead of
    /// LEX_PROFILE).
    #[arg(long, global = true, value_name = "NAME", value_parser = text())]
    pub profile: Option<String>,
    /// The backend to work on, by name (default: the configured default backend; for ping
    /// and stats, every backend). Only this one has to answer; the others may be down.
    #[arg(long, global = true, value_name = "NAME", value_parser = text())]
    pub backend: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ping every backend and report each one's latency or error.
    Ping,
    /// Every backend with its kind, prefix and number of keys (where it can list them).
    Stats,
    /// Show the value stored under KEY: its envelope header and its payload as JSON.
    Get {
        /// The key, without the backend's prefix.
        #[arg(value_parser = text())]
        key: String,
    },
    /// Store a JSON value under KEY.
    ///
    /// The value is stored as a `serde_json::Value`: `get` shows it, and a service reading the
    /// key as another type treats it as a miss and refills it.
    Set {
        /// The key, without the backend's prefix.
        #[arg(value_parser = text())]
        key: String,
        /// The value as JSON: 42, true, '"text"', '{"id": 7}'.
        #[arg(value_parser = json())]
        value: serde_json::Value,
        /// How long it lives: 90 (seconds), 90s, 5m, 1h 30m, or never (default: the backend's
        /// default_ttl).
        #[arg(long, value_parser = ttl)]
        ttl: Option<Ttl>,
    },
    /// Delete KEY.
    Del {
        /// The key, without the backend's prefix.
        #[arg(value_parser = text())]
        key: String,
    },
    /// List keys (without the prefix) that match a glob: * any text, ? one character, \ escapes.
    Keys {
        /// The glob.
        #[arg(default_value = "*", value_parser = text())]
        pattern: String,
        /// List at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete every key under the backend's prefix; asks first.
    Clear {
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

/// An argument that must be text: cache keys, names and globs are strings. Bytes that are not
/// UTF-8 are an error that shows them.
fn text() -> impl TypedValueParser<Value = String> {
    OsStringValueParser::new().try_map(|arg| {
        arg.into_string().map_err(|arg| {
            format!(
                "`{}` is not UTF-8 text; keys, names and patterns are text",
                escape(arg.as_encoded_bytes())
            )
        })
    })
}

fn json() -> impl TypedValueParser<Value = serde_json::Value> {
    text().try_map(|arg| {
        serde_json::from_str(&arg)
            .map_err(|e| format!("not JSON ({e}); a string needs its quotes, e.g. '\"text\"'"))
    })
}

fn ttl(arg: &str) -> Result<Ttl, String> {
    let d = match arg.trim() {
        "never" => return Ok(Ttl::Never),
        secs if secs.bytes().all(|b| b.is_ascii_digit()) => {
            secs.parse()
                .map(Duration::from_secs)
                .map_err(|e| format!("{e}; write e.g. 90, 90s, 5m or never"))?
        }
        text => humantime::parse_duration(text)
            .map_err(|e| format!("{e}; write e.g. 90, 90s, 5m or never"))?,
    };
    if d.is_zero() {
        return Err(
            "a ttl of zero stores nothing; leave --ttl out for the backend's \
                    default_ttl, or write never"
                .into(),
        );
    }
    Ok(Ttl::After(d))
}
