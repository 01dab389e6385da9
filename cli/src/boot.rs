//! Booting the configured backends so that one that is down does not hide the others.
//!
//! The runtime refuses to boot when the default backend does not answer (a service cannot run
//! without it) and only warns about the others. A tool needs the backend it was asked about,
//! whichever that is, so it moves the default to that backend before booting.

use lexigram_cache::config::ConfigSources;
use lexigram_cache::{Cache, CacheConfig, CacheError, CacheModule, Caches};

/// The backend named `target` (the configured default when `None`), booted with the whole
/// configuration: the other backends are built too, but may be down.
pub async fn one(config: &CacheConfig, target: Option<&str>) -> Result<Cache, CacheError> {
    let mut config = config.clone();
    if let Some(name) = target {
        if !config.backends.iter().any(|b| b.name == name) {
            return Err(CacheError::UnknownCache(name.to_owned()));
        }
        for b in &mut config.backends {
            b.default = b.name == name;
        }
    }
    Ok(CacheModule::configure(config).await?.cache())
}

/// One configured backend and what booting it gave.
pub struct Booted {
    /// Its name.
    pub name: String,
    /// Its kind, from the configuration (a backend that did not boot has no `Cache` to ask).
    pub kind: &'static str,
    /// Its key prefix.
    pub prefix: String,
    /// The cache, or why it could not be booted.
    pub cache: Result<Cache, CacheError>,
    /// The registry it was booted in, which reports its health server by server.
    pub caches: Option<Caches>,
}

/// Every backend, in configuration order. One boot of the whole configuration serves them all
/// when the default answers; when it does not, each other backend is booted on its own, so it
/// can still be reached and reported.
pub async fn each(config: &CacheConfig) -> Result<Vec<Booted>, CacheError> {
    let failed_default = match CacheModule::configure(config.clone()).await {
        Ok(caches) => {
            return Ok(config
                .backends
                .iter()
                .map(|b| Booted {
                    name: b.name.clone(),
                    kind: b.kind.as_str(),
                    prefix: b.prefix.clone(),
                    cache: caches
                        .named(&b.name)
                        .ok_or_else(|| CacheError::UnknownCache(b.name.clone())),
                    caches: Some(caches.clone()),
                })
                .collect());
        }
        // The configuration is valid (validation runs first); a backend's server is missing
        // or refused its settings.
        Err(e @ CacheError::Backend { .. }) => e,
        Err(e) => return Err(e),
    };
    let mut failed_default = Some(failed_default);
    let mut booted = Vec::with_capacity(config.backends.len());
    for b in &config.backends {
        let caches = match failed_default.take_if(|e| is_about(e, &b.name)) {
            Some(e) => Err(e),
            None => {
                let mut alone = config.clone();
                let mut backend = b.clone();
                backend.default = true;
                alone.backends = vec![backend];
                // Function overrides may name the backends left out.
                alone.functions.clear();
                CacheModule::configure(alone).await
            }
        };
        let (cache, caches) = match caches {
            Ok(caches) => (Ok(caches.cache()), Some(caches)),
            Err(e) => (Err(e), None),
        };
        booted.push(Booted {
            name: b.name.clone(),
            kind: b.kind.as_str(),
            prefix: b.prefix.clone(),
            cache,
            caches,
        });
    }
    match failed_default {
        Some(e) => Err(e),
        None => Ok(booted),
    }
}

/// The backend named `target` out of `booted`, or all of them when `None`.
pub fn only(mut booted: Vec<Booted>, target: Option<&str>) -> Result<Vec<Booted>, CacheError> {
    if let Some(name) = target {
        booted.retain(|b| b.name == name);
        if booted.is_empty() {
            return Err(CacheError::UnknownCache(name.to_owned()));
        }
    }
    Ok(booted)
}

fn is_about(e: &CacheError, name: &str) -> bool {
    matches!(e, CacheError::Backend { cache, .. } if cache == name)
}

/// Where the configuration was read from, for messages that ask the user to fix it.
pub fn sources_text(sources: &ConfigSources) -> String {
    let file = match &sources.file {
        Some(f) => format!("file {}", f.display()),
        None => "no file (LEX_CONFIG_FILE is not set and there is no ./application.yaml)".into(),
    };
    let profile = match &sources.profile {
        Some(p) => format!(", profile `{p}`"),
        None => String::new(),
    };
    format!(
        "{file}{profile}, {} LEX_CACHE__ variable(s)",
        sources.vars.len()
    )
}
