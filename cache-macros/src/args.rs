//! Parsing the attribute's options with darling.

use darling::FromMeta;
use darling::util::{PathList, SpannedValue};
use proc_macro2::Span;

/// `#[cacheable(...)]`, as written.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub struct Args {
    pub ttl: Option<SpannedValue<TtlArg>>,
    pub key: Option<syn::LitStr>,
    pub prefix: Option<String>,
    pub cache: Option<syn::Expr>,
    pub backend: Option<SpannedValue<String>>,
    pub skip: Option<PathList>,
    pub cache_err: SpannedValue<bool>,
    pub cache_none: SpannedValue<bool>,
    pub protect: Option<bool>,
    pub early_refresh: Option<bool>,
    pub beta: Option<SpannedValue<f64>>,
    pub stale_if_error: Option<SpannedValue<TtlArg>>,
    pub version: u32,
    pub skip_on_error: Option<bool>,
    pub companions: Option<bool>,
    /// `request_scope`: also answer repeated calls from the current request scope.
    pub request_scope: RequestScopeArg,
    /// `tags = ["user:{id}", "users"]`: templates of the tags a stored value carries.
    pub tags: Option<TagsArg>,
    /// `crate = "path"`: where lexigram-cache is, for a crate that renamed the dependency.
    #[darling(rename = "crate")]
    pub krate: Option<syn::Path>,
}

/// `request_scope` or `request_scope = true|false`. Its own type for the message: darling's
/// `bool` says only "Unknown literal value" for `request_scope = "yes"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestScopeArg(pub bool);

impl FromMeta for RequestScopeArg {
    fn from_word() -> darling::Result<Self> {
        Ok(RequestScopeArg(true))
    }

    fn from_value(value: &syn::Lit) -> darling::Result<Self> {
        match value {
            syn::Lit::Bool(b) => Ok(RequestScopeArg(b.value)),
            other => Err(darling::Error::custom(
                "`request_scope` is a switch: write `request_scope` (or `request_scope = false`); the scope itself is opened at run time with `lexigram_cache::request_scope(async { ... })`",
            )
            .with_span(other)),
        }
    }
}

/// `tags = ["...", ...]`: an array of string literals, each a template like `key`'s.
#[derive(Debug, Clone)]
pub struct TagsArg(pub Vec<syn::LitStr>);

const TAGS_HINT: &str =
    "`tags` takes an array of string templates, such as `tags = [\"user:{id}\", \"users\"]`";

impl FromMeta for TagsArg {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        let syn::Expr::Array(array) = expr else {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(one),
                ..
            }) = expr
            {
                return Err(darling::Error::custom(format!(
                    "{TAGS_HINT}; for one tag write `tags = [\"{}\"]`",
                    one.value()
                ))
                .with_span(expr));
            }
            return Err(darling::Error::custom(TAGS_HINT).with_span(expr));
        };
        array
            .elems
            .iter()
            .map(|e| match e {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Ok(s.clone()),
                other => Err(darling::Error::custom(TAGS_HINT).with_span(other)),
            })
            .collect::<darling::Result<Vec<_>>>()
            .map(TagsArg)
    }
}

/// A duration option: integer seconds, a humantime string, or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TtlArg {
    Millis(u64),
    Never,
}

impl FromMeta for TtlArg {
    fn from_value(value: &syn::Lit) -> darling::Result<Self> {
        match value {
            syn::Lit::Int(i) => {
                let secs: u64 = i.base10_parse().map_err(|e| {
                    darling::Error::custom(format!("ttl must be whole seconds: {e}")).with_span(i)
                })?;
                Ok(TtlArg::Millis(secs.saturating_mul(1000)))
            }
            syn::Lit::Str(s) => parse_text(&s.value(), s.span()),
            other => Err(darling::Error::custom(
                "expected seconds (`ttl = 60`) or a duration (`ttl = \"5m\"`)",
            )
            .with_span(other)),
        }
    }
}

fn parse_text(text: &str, span: Span) -> darling::Result<TtlArg> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(TtlArg::Never);
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        darling::Error::custom(format!(
            "`{text}` is not a duration ({e}); write seconds (`60`), a duration such as \"90s\", \"5m\" or \"1h30m\", or \"never\""
        ))
        .with_span(&span)
    })?;
    Ok(TtlArg::Millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}

impl Args {
    pub fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Self> {
        let metas = darling::ast::NestedMeta::parse_meta_list(tokens)?;
        Args::from_list(&metas).map_err(|e| {
            let mut message = e.to_string();
            let unknown = message
                .strip_prefix("Unknown field: `")
                .and_then(|rest| rest.split('`').next());
            if unknown == Some("scope") {
                // `scope = "request"` is a natural guess, but here a function's scope is its name.
                message = "unknown option `scope`; to answer repeated calls within one request, write `request_scope` (a function's scope is the name its keys and statistics use, and is not set by an option)".to_owned();
            } else if let Some(unknown) = unknown
                && let Some(best) = closest(unknown)
            {
                message = format!("unknown option `{unknown}`; did you mean `{best}`?");
            } else if message.starts_with("Unknown field") {
                message = format!("{message}; the options are: {}", OPTIONS.join(", "));
            }
            syn::Error::new(e.span(), message)
        })
    }
}

const OPTIONS: &[&str] = &[
    "ttl",
    "key",
    "prefix",
    "cache",
    "backend",
    "skip",
    "cache_err",
    "cache_none",
    "protect",
    "early_refresh",
    "beta",
    "stale_if_error",
    "version",
    "skip_on_error",
    "companions",
    "request_scope",
    "tags",
    "crate",
];

/// The known option nearest to `word` by edit distance, if it is near enough to be a typo.
fn closest(word: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .map(|o| (edit_distance(word, o), *o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
