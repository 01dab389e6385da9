//! `lexigram-cache`: look at and clean the caches a service is configured with.
//!
//! It reads the same configuration as the service (`application.yaml`, `LEX_PROFILE`,
//! `LEX_CACHE__...`), so it sees the same backends, prefixes and credentials.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use lexigram_cache::codec::Envelope;
use lexigram_cache::config::ConfigSources;
use lexigram_cache::{Cache, CacheError, CacheModule};

const USAGE: &str = "\
usage: lexigram-cache [--config FILE] [--profile NAME] [--backend NAME] [--yes] COMMAND

commands:
  ping            check every backend answers, with its latency
  stats           backends, their kind, prefix and number of keys (where listable)
  get KEY         show the value stored under KEY (envelope header and payload)
  del KEY         delete KEY
  keys PATTERN    list keys matching a glob (* ? \\), at most 1000
  clear           delete every key under the backend's prefix (asks first; --yes skips)

The configuration comes from LEX_CONFIG_FILE or ./application.yaml, LEX_PROFILE and
LEX_CACHE__... variables, as for the service. --backend picks a backend by name (default:
the default backend).";

struct Args {
    config: Option<String>,
    profile: Option<String>,
    backend: Option<String>,
    yes: bool,
    command: Vec<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        config: None,
        profile: None,
        backend: None,
        yes: false,
        command: Vec::new(),
    };
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--config" => args.config = Some(value("--config")?),
            "--profile" => args.profile = Some(value("--profile")?),
            "--backend" => args.backend = Some(value("--backend")?),
            "--yes" | "-y" => args.yes = true,
            "--help" | "-h" => return Err(String::new()),
            flag if flag.starts_with('-') && args.command.is_empty() => {
                return Err(format!("unknown option `{flag}`"));
            }
            _ => args.command.push(a),
        }
    }
    if args.command.is_empty() {
        return Err("no command given".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, CacheError> {
    let mut sources = ConfigSources::from_process()?;
    if let Some(file) = &args.config {
        sources.file = Some(file.into());
    }
    if let Some(profile) = &args.profile {
        sources.profile = Some(profile.clone());
    }
    let caches = CacheModule::configure(sources.load()?).await?;
    let cache = match &args.backend {
        Some(name) => caches
            .named(name)
            .ok_or_else(|| CacheError::UnknownCache(name.clone()))?,
        None => caches.cache(),
    };
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["ping"] => {
            let report = caches.health().await;
            for b in &report.backends {
                match (&b.latency, &b.error) {
                    (Some(l), _) if b.healthy => {
                        println!("{:<16} {:<10} ok  {l:?}", b.name, b.kind)
                    }
                    (_, e) => println!(
                        "{:<16} {:<10} FAILED  {}",
                        b.name,
                        b.kind,
                        e.as_deref().unwrap_or("no answer")
                    ),
                }
            }
            Ok(if report.is_healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ["stats"] => {
            for name in caches.names() {
                let Some(c) = caches.named(name) else {
                    continue;
                };
                let config = caches
                    .config()
                    .backends
                    .iter()
                    .find(|b| b.name == name)
                    .map(|b| b.prefix.clone())
                    .unwrap_or_default();
                let keys = match c.keys("*", usize::MAX).await {
                    Ok(k) => k.len().to_string(),
                    Err(_) => "-".to_owned(),
                };
                println!("{name:<16} {:<10} prefix {config:?}  keys {keys}", c.kind());
            }
            Ok(ExitCode::SUCCESS)
        }
        ["get", key] => {
            match cache.raw(key).await? {
                None => {
                    println!("(miss) {key}");
                    return Ok(ExitCode::FAILURE);
                }
                Some(bytes) => describe(key, &bytes),
            }
            Ok(ExitCode::SUCCESS)
        }
        ["del", key] => {
            let removed = cache.delete(key).await?;
            println!("{}", if removed { "deleted" } else { "(no such key)" });
            Ok(ExitCode::SUCCESS)
        }
        ["keys", pattern] => {
            for k in cache.keys(pattern, 1000).await? {
                println!("{k}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["clear"] => clear(&cache, args.yes).await,
        _ => {
            eprintln!(
                "error: unknown command `{}`\n\n{USAGE}",
                args.command.join(" ")
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// Prints what an envelope holds; bytes that are not one are shown as such.
fn describe(key: &str, bytes: &[u8]) {
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
            println!("payload     {} bytes", env.payload.len());
            match env.format.from_slice::<serde_json::Value>(env.payload) {
                Ok(v) => println!("{v}"),
                Err(e) => println!("(payload does not decode: {e})"),
            }
        }
        Err(reason) => println!(
            "key {key}: {} bytes that are not a lexigram-cache value ({reason})",
            bytes.len()
        ),
    }
}

async fn clear(cache: &Cache, yes: bool) -> Result<ExitCode, CacheError> {
    if !yes {
        let count = match cache.keys("*", usize::MAX).await {
            Ok(k) => k.len().to_string(),
            Err(_) => "all".to_owned(),
        };
        print!(
            "delete {count} keys of cache `{}` (only under its prefix)? [y/N] ",
            cache.name()
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("\nnothing deleted (answer y, or pass --yes)");
            return Ok(ExitCode::FAILURE);
        }
    }
    let removed = cache.clear().await?;
    println!("deleted {removed} keys");
    Ok(ExitCode::SUCCESS)
}
