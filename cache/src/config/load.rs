//! Loading a [`CacheConfig`] from layered sources, later wins: built-in defaults, the
//! `cache:` section of `application.yaml`, of `application-{profile}.yaml`, then
//! `LEX_CACHE__...` environment variables. Values set in code come last: change the loaded
//! config before handing it to [`CacheModule::configure`](crate::CacheModule::configure).

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::{CacheConfig, functions};
use crate::error::CacheError;

/// The prefix of the environment variables read, with `__` separating path segments.
pub const ENV_PREFIX: &str = "LEX_CACHE__";

/// Indexed variables (`..._BACKENDS__3__...`) number list elements from 0 to this, so that a
/// typo cannot build a list of billions of elements.
const MAX_INDEX: usize = 1023;

/// Where configuration comes from. [`from_process`](Self::from_process) reads the real
/// environment; tests and tools can fill one in by hand.
///
/// ```
/// use lexigram_cache::config::ConfigSources;
/// let mut sources = ConfigSources::default();
/// sources.vars = vec![
///     ("LEX_CACHE__BACKENDS__0__TYPE".into(), "memory".into()),
///     ("LEX_CACHE__BACKENDS__0__DEFAULT_TTL".into(), "90s".into()),
/// ];
/// let config = sources.load().unwrap();
/// assert_eq!(config.backends[0].default_ttl, Some(std::time::Duration::from_secs(90)));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConfigSources {
    /// The YAML file whose `cache:` section is read. `None`: no file.
    pub file: Option<PathBuf>,
    /// The profile: `application-{profile}.yaml` beside `file` (in the working directory when
    /// `file` is `None`) is layered on top. It must exist; the base file need not.
    pub profile: Option<String>,
    /// Environment variables (name, value); only names starting with `LEX_CACHE__` are used.
    pub vars: Vec<(String, String)>,
}

impl ConfigSources {
    /// The process's sources: the file named by `LEX_CONFIG_FILE` (an error if it is
    /// missing), else `./application.yaml` if it exists; the profile from `LEX_PROFILE`; and
    /// every `LEX_CACHE__...` variable. One of these variables that is not UTF-8 is an error;
    /// other variables are not read.
    pub fn from_process() -> Result<ConfigSources, CacheError> {
        let file = match std::env::var_os("LEX_CONFIG_FILE") {
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(CacheError::ConfigSource {
                        origin: "LEX_CONFIG_FILE".into(),
                        message: format!("names {}, which is not a readable file", path.display()),
                    });
                }
                Some(path)
            }
            None => Some(PathBuf::from("application.yaml")).filter(|p| p.is_file()),
        };
        let profile = match std::env::var_os("LEX_PROFILE") {
            None => None,
            Some(p) => match p.into_string() {
                Ok(p) => Some(p).filter(|p| !p.trim().is_empty()),
                Err(_) => return Err(not_utf8("LEX_PROFILE")),
            },
        };
        let mut vars = Vec::new();
        // `vars_os`: another program's variable that is not UTF-8 is none of our business,
        // and `std::env::vars` would panic on it.
        for (name, value) in std::env::vars_os() {
            let ours = name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes());
            if !ours {
                continue;
            }
            let shown = name.to_string_lossy().into_owned();
            let name = name.into_string().map_err(|_| not_utf8(&shown))?;
            let value = value.into_string().map_err(|_| not_utf8(&name))?;
            vars.push((name, value));
        }
        Ok(ConfigSources {
            file,
            profile,
            vars,
        })
    }

    /// Layers the sources and deserializes the result. Errors name the field and where its
    /// value came from.
    pub fn load(&self) -> Result<CacheConfig, CacheError> {
        let mut tree = Value::Mapping(Mapping::new());
        if let Some(file) = &self.file
            && (file.is_file() || self.profile.is_none())
        {
            merge(&mut tree, read_section(file)?);
        }
        if let Some(profile) = &self.profile {
            // Beside the base file, or in the working directory when there is none; the
            // base file itself may be absent.
            let base = self
                .file
                .as_deref()
                .unwrap_or(Path::new("application.yaml"));
            let file = profile_file(base, profile);
            if !file.is_file() {
                return Err(CacheError::ConfigSource {
                    origin: format!("the profile `{profile}` (LEX_PROFILE or --profile)"),
                    message: format!(
                        "there is no {}; create it, or unset the profile",
                        file.display()
                    ),
                });
            }
            merge(&mut tree, read_section(&file)?);
        }
        let mut vars: Vec<&(String, String)> = self
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        // Sorted, so that index 0 of a list is created before index 1.
        vars.sort();
        let (indexed, keyed): (Vec<_>, Vec<_>) = vars
            .into_iter()
            .partition(|(k, _)| functions::is_indexed(k));
        for (name, value) in keyed {
            set_env(&mut tree, name, value)?;
        }
        functions::apply(&mut tree, &indexed)?;
        check_gaps(&tree, "")?;
        serde_path_to_error::deserialize::<_, CacheConfig>(tree).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let mut message = name_ranges(&e.into_inner().to_string(), &path);
            if message.starts_with(super::list::ONE_VALUE) {
                let name = env_var(&path);
                message.push_str(&format!(
                    "; in YAML write `[first, second]`; in variables set one element per \
                     variable: `{name}__0=...`, `{name}__1=...`"
                ));
            }
            super::invalid(path, message)
        })
    }
}

/// serde's "expected u16" (and its kin) as the range a user can act on.
fn name_ranges(message: &str, path: &str) -> String {
    let port = path.ends_with(".port");
    let mut out = message.to_owned();
    for (ty, range) in [
        ("u16", if port { "1 to 65535" } else { "0 to 65535" }),
        ("u32", "0 to 4294967295"),
        ("u64", "0 to 18446744073709551615"),
        ("usize", "0 to 18446744073709551615"),
    ] {
        out = out.replace(
            &format!("expected {ty}"),
            &format!("expected a whole number from {range}"),
        );
    }
    out
}

fn not_utf8(variable: &str) -> CacheError {
    CacheError::ConfigSource {
        origin: variable.into(),
        message: "is not valid UTF-8; configuration values must be text".into(),
    }
}

/// `application-{profile}.yaml` in the directory of `file`.
fn profile_file(file: &Path, profile: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("application");
    let ext = file.extension().and_then(|s| s.to_str()).unwrap_or("yaml");
    file.with_file_name(format!("{stem}-{profile}.{ext}"))
}

/// The `cache:` section of a YAML file. A file without one is an error, so that a misspelled
/// section cannot leave a service on the in-memory defaults unnoticed.
fn read_section(file: &Path) -> Result<Value, CacheError> {
    let bad = |message: String| CacheError::ConfigSource {
        origin: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let doc: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| bad(format!("is not valid YAML: {e}")))?;
    let no_section = |others: &str| {
        bad(format!(
            "has no `cache:` section{others}; add one (`cache: {{}}` selects the defaults: \
             one in-memory backend)"
        ))
    };
    match doc {
        Value::Null => Err(no_section(" (the file is empty)")),
        Value::Mapping(mut top) => match top.remove("cache") {
            None => {
                let keys: Vec<String> = top
                    .keys()
                    .filter_map(Value::as_str)
                    .map(|k| format!("`{k}:`"))
                    .collect();
                let near: Vec<&String> = keys
                    .iter()
                    .filter(|k| k.to_ascii_lowercase().contains("cach"))
                    .collect();
                Err(match near.as_slice() {
                    [] => no_section(""),
                    near => no_section(&format!(
                        " (did you mean `cache:` for {}?)",
                        near.iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                })
            }
            Some(Value::Null) => Ok(Value::Mapping(Mapping::new())),
            Some(section @ Value::Mapping(_)) => Ok(section),
            Some(_) => Err(bad("its `cache:` entry must be a mapping".into())),
        },
        _ => Err(bad("the top level must be a mapping".into())),
    }
}

/// Deep merge: mappings merge key by key; lists of mappings merge element by element (an
/// element with a `name` into the base element of that name, or appended when there is none;
/// one without into the element at its index); anything else in `over`, lists of plain values
/// included, replaces `base`.
pub(super) fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o))
            if o.iter().all(Value::is_mapping) && b.iter().all(Value::is_mapping) =>
        {
            for (i, v) in o.into_iter().enumerate() {
                let slot = match v.get("name") {
                    Some(name) => b
                        .iter()
                        .position(|e| name.as_str().is_some() && element_name(e) == name.as_str()),
                    None => (i < b.len()).then_some(i),
                };
                match slot {
                    Some(j) => merge(&mut b[j], v),
                    None => b.push(v),
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A list element's `name`; a backend without one is named `default`.
fn element_name(element: &Value) -> Option<&str> {
    element.get("name").map_or(Some("default"), Value::as_str)
}

/// Sets `LEX_CACHE__A__0__B=value` at `a[0].b`, creating mappings and list elements.
pub(super) fn set_env(tree: &mut Value, name: &str, value: &str) -> Result<(), CacheError> {
    let rest = &name[ENV_PREFIX.len()..];
    let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return Err(CacheError::ConfigSource {
            origin: name.into(),
            message:
                "the name has an empty segment; separate field names with exactly two underscores"
                    .into(),
        });
    }
    let mut node = tree;
    for segment in &segments {
        let index = if segment.bytes().all(|b| b.is_ascii_digit()) {
            match segment.parse::<usize>() {
                Ok(index) if index <= MAX_INDEX => Some(index),
                _ => {
                    return Err(CacheError::ConfigSource {
                        origin: name.into(),
                        message: format!(
                            "the list index {segment} is too large; indexed variables number \
                             list elements from 0 to {MAX_INDEX}"
                        ),
                    });
                }
            }
        } else {
            None
        };
        node = match index {
            Some(index) => {
                if !matches!(node, Value::Sequence(_)) {
                    *node = Value::Sequence(Vec::new());
                }
                let Value::Sequence(items) = node else {
                    unreachable!("just made a sequence")
                };
                if items.len() <= index {
                    // Gaps stay null until their own variables fill them; `check_gaps` reports
                    // any that stay empty.
                    items.resize(index + 1, Value::Null);
                }
                &mut items[index]
            }
            None => {
                if !matches!(node, Value::Mapping(_)) {
                    *node = Value::Mapping(Mapping::new());
                }
                let Value::Mapping(map) = node else {
                    unreachable!("just made a mapping")
                };
                map.entry(Value::String(segment.clone()))
                    .or_insert(Value::Null)
            }
        };
    }
    *node = scalar(value);
    Ok(())
}

/// An environment value as the YAML scalar it spells: `false` a bool, `60` a number, an empty
/// value unset, anything else (a URL, a duration, a name) a string. A number only when it
/// reads back as the same text, so that `0x1F`, `007` or `1e3` (a password, say) reach a
/// text field unchanged.
fn scalar(text: &str) -> Value {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    match serde_yaml_ng::from_str::<Value>(trimmed) {
        Ok(Value::Number(n)) if n.to_string() == trimmed => Value::Number(n),
        Ok(v @ Value::Bool(_)) => v,
        // A quoted value is the text inside the quotes.
        Ok(Value::String(s)) if trimmed.starts_with(['"', '\'']) => Value::String(s),
        _ => Value::String(text.to_owned()),
    }
}

/// A list element that no source filled (`BACKENDS__1__...` without `BACKENDS__0__...`).
pub(super) fn check_gaps(tree: &Value, path: &str) -> Result<(), CacheError> {
    match tree {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let child = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                check_gaps(v, &child)?;
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                if v.is_null() {
                    return Err(super::invalid(
                        child,
                        "is missing: indexed variables must number list elements from 0 \
                         without gaps",
                    ));
                }
                check_gaps(v, &child)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The environment variable that sets the field at `path` (`backends[0].type` →
/// `LEX_CACHE__BACKENDS__0__TYPE`). A function's override (`functions.<name>.ttl`) is set by a
/// numbered entry whose number the path does not tell: `LEX_CACHE__FUNCTIONS__<n>__TTL`.
pub(crate) fn env_var(path: &str) -> String {
    if let Some((_, field)) = function_field(path) {
        return format!(
            "{ENV_PREFIX}FUNCTIONS__<n>__{}",
            field.unwrap_or("name").to_ascii_uppercase()
        );
    }
    let mut out = String::from(ENV_PREFIX);
    let mut first = true;
    for part in path.split(['.', '[']) {
        let part = part.trim_end_matches(']');
        if part.is_empty() {
            continue;
        }
        if !first {
            out.push_str("__");
        }
        first = false;
        out.push_str(&part.to_ascii_uppercase());
    }
    out
}

/// How to set the field at `path` from the environment, for messages: its variable, and for a
/// function's override the variable that names the function too.
pub(crate) fn env_hint(path: &str) -> String {
    match function_field(path) {
        Some((name, Some(_))) => format!(
            "env `{}` with `{ENV_PREFIX}FUNCTIONS__<n>__NAME={name}`",
            env_var(path)
        ),
        Some((name, None)) => format!("env `{ENV_PREFIX}FUNCTIONS__<n>__NAME={name}`"),
        None => format!("env `{}`", env_var(path)),
    }
}

/// `functions.<name>.<field>` as the function's name and the field, if it is one.
fn function_field(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("functions.")?;
    Some(match rest.rsplit_once('.') {
        Some((name, field)) if functions::FIELDS.contains(&field) => (name, Some(field)),
        _ => (rest, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_field_paths() {
        assert_eq!(env_var("backends[0].type"), "LEX_CACHE__BACKENDS__0__TYPE");
        assert_eq!(
            env_var("service.fill_wait"),
            "LEX_CACHE__SERVICE__FILL_WAIT"
        );
        assert_eq!(env_var("enabled"), "LEX_CACHE__ENABLED");
        assert_eq!(env_var("functions[2].ttl"), "LEX_CACHE__FUNCTIONS__2__TTL");
        assert_eq!(
            env_hint("functions.shop::Catalog::load.ttl"),
            "env `LEX_CACHE__FUNCTIONS__<n>__TTL` with \
             `LEX_CACHE__FUNCTIONS__<n>__NAME=shop::Catalog::load`"
        );
        assert_eq!(
            env_hint("functions.app::f"),
            "env `LEX_CACHE__FUNCTIONS__<n>__NAME=app::f`"
        );
    }

    #[test]
    fn scalars_keep_their_type() {
        assert_eq!(scalar("false"), Value::Bool(false));
        assert!(matches!(scalar("60"), Value::Number(_)));
        for number in ["-5", "0.1", "1.0", "18446744073709551615"] {
            assert!(matches!(scalar(number), Value::Number(_)), "{number}");
        }
        for text in ["0x1F", "007", "1e3", "+5", ".5"] {
            assert_eq!(scalar(text), Value::String(text.into()));
        }
        assert_eq!(
            scalar("redis://:pw@h:6379/0"),
            Value::String("redis://:pw@h:6379/0".into())
        );
        assert_eq!(scalar("5m"), Value::String("5m".into()));
        assert_eq!(scalar("\"123\""), Value::String("123".into()));
        assert_eq!(scalar("a: b"), Value::String("a: b".into()));
        assert_eq!(scalar(""), Value::Null);
    }
}
