//! `lexigram-cache`: look at, fill and clean the caches a service is configured with.
//!
//! It reads the same configuration as the service (`application.yaml`, `LEX_PROFILE`,
//! `LEX_CACHE__...`), so it sees the same backends, prefixes and credentials.

mod args;
mod boot;
mod escape;
mod show;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Parser;
use lexigram_cache::config::ConfigSources;
use lexigram_cache::{BackendError, Cache, CacheConfig, CacheError};

use args::{Cli, Command};
use escape::escape;

/// What can go wrong besides the runtime's own errors.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(
        "cache `{cache}` is an in-memory backend: it lives inside each process, so this tool \
         would only see its own empty copy, not a service's. Configuration read: {sources}. \
         Point LEX_CONFIG_FILE (or --config) at the service's file, or set the \
         service's LEX_CACHE__ variables"
    )]
    InMemory { cache: String, sources: String },
    #[error(
        "cache `{cache}` cannot list its keys, so `clear` cannot find what to delete (nothing \
         was deleted): {reason}"
    )]
    CannotClear { cache: String, reason: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Warnings of the runtime (a backend down at boot, values that do not decode, the breaker)
/// go to stderr; `RUST_LOG` picks another level (invalid directives are reported and skipped).
fn install_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let mut sources = ConfigSources::from_process()?;
    if let Some(file) = cli.config {
        sources.file = Some(file);
    }
    if let Some(profile) = cli.profile {
        sources.profile = Some(profile);
    }
    let config = sources.load()?;
    let target = cli.backend.as_deref();
    match cli.command {
        Command::Ping => ping(boot::only(boot::each(&config).await?, target)?).await,
        Command::Stats => stats(boot::only(boot::each(&config).await?, target)?).await,
        Command::Get { key } => {
            let cache = remote(&config, target, &sources).await?;
            match cache.raw(&key).await? {
                None => {
                    println!("(miss) {}", escape(key.as_bytes()));
                    Ok(ExitCode::FAILURE)
                }
                Some(bytes) => {
                    show::envelope(&escape(key.as_bytes()), &bytes);
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Set { key, value, ttl } => {
            let cache = remote(&config, target, &sources).await?;
            cache.set(&key, &value, ttl.unwrap_or_default()).await?;
            println!("stored {}", escape(key.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Del { key } => {
            let cache = remote(&config, target, &sources).await?;
            let removed = cache.delete(&key).await?;
            println!("{}", if removed { "deleted" } else { "(no such key)" });
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { pattern, limit } => {
            let cache = remote(&config, target, &sources).await?;
            let found = cache.raw_keys(&pattern, limit.saturating_add(1)).await?;
            for k in found.iter().take(limit) {
                println!("{}", escape(k));
            }
            if found.len() > limit {
                eprintln!("(first {limit}; more exist: --limit N lists more)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clear { yes } => {
            let cache = remote(&config, target, &sources).await?;
            clear(&cache, yes).await
        }
    }
}

/// The backend a data command works on. An in-memory one is refused: it would be this
/// process's own, empty, cache.
async fn remote(
    config: &CacheConfig,
    target: Option<&str>,
    sources: &ConfigSources,
) -> Result<Cache, CliError> {
    let cache = boot::one(config, target).await?;
    if cache.kind() == "memory" {
        return Err(CliError::InMemory {
            cache: cache.name().to_owned(),
            sources: boot::sources_text(sources),
        });
    }
    Ok(cache)
}

/// One line per backend; below a backend over several servers, one line per server, so a
/// dead one is named even while the backend answers.
async fn ping(backends: Vec<boot::Booted>) -> Result<ExitCode, CliError> {
    let mut healthy = true;
    for b in backends {
        let health = match &b.caches {
            Some(caches) => caches.health_of(&b.name).await,
            None => None,
        };
        let pinged = match (&b.cache, &health) {
            (Err(e), _) => Err(e.to_string()),
            (Ok(_), Some(h)) => h.latency.filter(|_| h.healthy).ok_or_else(|| {
                h.error
                    .clone()
                    .unwrap_or_else(|| "did not answer".to_owned())
            }),
            (Ok(cache), None) => cache.ping().await.map_err(|e| e.to_string()),
        };
        match pinged {
            Ok(latency) => println!("{:<16} {:<10} ok      {latency:?}", b.name, b.kind),
            Err(e) => {
                healthy = false;
                println!("{:<16} {:<10} FAILED  {e}", b.name, b.kind);
            }
        }
        for s in health.iter().flat_map(|h| &h.servers) {
            match (&s.latency, &s.error) {
                (Some(latency), None) => println!("  {:<25} up      {latency:?}", s.addr),
                (_, error) => println!(
                    "  {:<25} DOWN    {}",
                    s.addr,
                    error.as_deref().unwrap_or("did not answer")
                ),
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn stats(backends: Vec<boot::Booted>) -> Result<ExitCode, CliError> {
    let mut code = ExitCode::SUCCESS;
    for b in backends {
        let keys = match &b.cache {
            Ok(cache) => match cache.raw_keys("*", usize::MAX).await {
                Ok(k) => k.len().to_string(),
                Err(CacheError::Backend {
                    source: BackendError::Unsupported { .. },
                    ..
                }) => "- (cannot be listed)".to_owned(),
                Err(e) => {
                    code = ExitCode::FAILURE;
                    format!("- FAILED  {e}")
                }
            },
            Err(e) => {
                code = ExitCode::FAILURE;
                format!("- FAILED  {e}")
            }
        };
        println!(
            "{:<16} {:<10} prefix {:?}  keys {keys}",
            b.name, b.kind, b.prefix
        );
    }
    Ok(code)
}

async fn clear(cache: &Cache, yes: bool) -> Result<ExitCode, CliError> {
    if !yes {
        let count = match cache.raw_keys("*", usize::MAX).await {
            Ok(k) => k.len(),
            Err(CacheError::Backend {
                source: e @ BackendError::Unsupported { .. },
                ..
            }) => {
                return Err(CliError::CannotClear {
                    cache: cache.name().to_owned(),
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
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
