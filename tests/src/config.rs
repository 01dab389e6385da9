//! Loading a `CacheConfig` the way an application does, from a YAML file, a profile and
//! `LEX_CACHE__` variables given by the test instead of the process environment; and installing
//! a registry that switches functions off.

use std::path::{Path, PathBuf};

use lexigram_cache::config::{ConfigSources, FunctionConfig};
use lexigram_cache::{CacheConfig, CacheError, CacheModule};
use tokio::sync::OnceCell;

use crate::servers::ScratchDir;

/// The sources of one load: `file` and `profile` if given, and exactly the variables `vars`.
pub fn sources(file: Option<&Path>, profile: Option<&str>, vars: &[(&str, &str)]) -> ConfigSources {
    let mut s = ConfigSources::default();
    s.file = file.map(Path::to_path_buf);
    s.profile = profile.map(str::to_owned);
    s.vars = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    s
}

/// Loads from `file` if given and the variables `vars`.
pub fn load(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<CacheConfig, CacheError> {
    sources(file, None, vars).load()
}

/// Loads from the variables `vars` alone.
pub fn from_vars(vars: &[(&str, &str)]) -> Result<CacheConfig, CacheError> {
    load(None, vars)
}

/// Loads from one YAML file holding `text` and no variables.
pub fn from_yaml(text: &str) -> Result<CacheConfig, CacheError> {
    let dir = ScratchDir::new("config-yaml");
    let file = write_yaml(dir.path(), "application.yaml", text);
    load(Some(&file), &[])
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_yaml(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write yaml");
    p
}

/// The message of an error a load (or any cache call) was expected to return.
pub fn message<T: std::fmt::Debug>(result: Result<T, CacheError>) -> String {
    result.expect_err("expected an error").to_string()
}

/// Installs, once per test process, an in-memory registry whose `cache.functions` switches off
/// each of `functions` (full paths, as the macro names them). Later calls wait for the first
/// and install nothing, so one test binary passes one list.
pub async fn install_with_functions_off(functions: &[&str]) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let mut config = CacheConfig::default();
            let mut off = FunctionConfig::default();
            off.enabled = Some(false);
            for name in functions {
                config.functions.insert((*name).to_owned(), off.clone());
            }
            CacheModule::configure(config)
                .await
                .expect("a memory registry boots")
                .install();
        })
        .await;
}
