//! Per-function overrides from indexed variables. A function's path has `::` in it, which most
//! shells cannot put in a variable's name, so the path is a value:
//! `LEX_CACHE__FUNCTIONS__0__NAME=shop::catalog::load_product` with
//! `LEX_CACHE__FUNCTIONS__0__TTL=10m`, `..._ENABLED`, `..._BACKEND`. Each numbered entry is
//! merged into `functions.<name>`, over the files and the name-keyed variables.

use std::collections::HashMap;

use serde_yaml_ng::{Mapping, Value};

use super::FunctionConfig;
use super::load::{ENV_PREFIX, check_gaps, env_var, merge, set_env};
use crate::error::CacheError;

/// The fields an entry may set besides `name`.
pub(super) const FIELDS: [&str; 3] = ["ttl", "enabled", "backend"];

/// Whether `name` is one of these variables: `LEX_CACHE__FUNCTIONS__<digits>...`.
pub(super) fn is_indexed(name: &str) -> bool {
    let mut segments = name[ENV_PREFIX.len()..].split("__");
    segments
        .next()
        .is_some_and(|s| s.eq_ignore_ascii_case("functions"))
        && segments
            .next()
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

fn invalid(path: String, message: impl Into<String>) -> CacheError {
    super::invalid(path, message)
}

/// Merges the entries that `vars` (sorted, each [`is_indexed`]) spell into `tree`'s
/// `functions` mapping.
pub(super) fn apply(tree: &mut Value, vars: &[&(String, String)]) -> Result<(), CacheError> {
    if vars.is_empty() {
        return Ok(());
    }
    let mut list = Value::Null;
    for (name, value) in vars {
        set_env(&mut list, name, value)?;
    }
    check_gaps(&list, "")?;
    let Some(Value::Sequence(entries)) = list.get_mut("functions").map(std::mem::take) else {
        unreachable!("every variable here is FUNCTIONS__<index>__...")
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut overrides = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let name_path = format!("functions[{i}].name");
        let Value::Mapping(mut fields) = entry else {
            return Err(invalid(
                format!("functions[{i}]"),
                format!(
                    "is one value, but an override is a set of fields; name the function with \
                     `{}=shop::catalog::load_product` and set `..._TTL`, `..._ENABLED` or \
                     `..._BACKEND` beside it",
                    env_var(&name_path)
                ),
            ));
        };
        let name = match fields.remove("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(invalid(
                    name_path,
                    "is missing: each numbered function override names its function, e.g. \
                     `shop::catalog::load_product` (module path, then the function's name)",
                ));
            }
            Some(_) => {
                return Err(invalid(
                    name_path,
                    "is not a function's path; write the module path, then the function's \
                     name, e.g. `shop::catalog::load_product`",
                ));
            }
        };
        if let Some(key) = fields
            .keys()
            .filter_map(Value::as_str)
            .find(|k| !FIELDS.contains(k))
        {
            return Err(invalid(
                format!("functions[{i}].{key}"),
                "is not a function override field; the fields are name, ttl, enabled and backend",
            ));
        }
        // Checked here, so that a bad value is reported at the variable that set it.
        let value = Value::Mapping(fields);
        if let Err(e) = serde_path_to_error::deserialize::<_, FunctionConfig>(value.clone()) {
            let path = match e.path().to_string() {
                field if field == "." => format!("functions[{i}]"),
                field => format!("functions[{i}].{field}"),
            };
            return Err(invalid(path, e.into_inner().to_string()));
        }
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(invalid(
                name_path,
                format!(
                    "`{name}` is also named by `{}`; put all of a function's overrides under one \
                     index",
                    env_var(&format!("functions[{first}].name"))
                ),
            ));
        }
        overrides.push((name, value));
    }
    let Value::Mapping(root) = tree else {
        unreachable!("the loader's tree is a mapping")
    };
    let functions = root
        .entry(Value::String("functions".into()))
        .or_insert(Value::Null);
    if functions.is_null() {
        *functions = Value::Mapping(Mapping::new());
    }
    // Anything else is a mistake in a file, which deserializing reports.
    if let Value::Mapping(functions) = functions {
        for (name, value) in overrides {
            let slot = functions.entry(Value::String(name)).or_insert(Value::Null);
            merge(slot, value);
        }
    }
    Ok(())
}
