//! Checks the options against the function.

use proc_macro2::TokenStream;
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::args::{Args, TtlArg};
use crate::expand::Plan;
use crate::key;
use crate::signature;

pub fn plan(args: TokenStream, item: TokenStream) -> syn::Result<(Plan, ItemFn)> {
    let mut f: ItemFn = parse_fn(item)?;
    let args = Args::parse(args)?;
    let sig = signature::analyse(&mut f)?;
    if let Some(r) = signature::borrowed_in_stored(&sig.output, *args.cache_err) {
        return Err(syn::Error::new_spanned(
            r,
            "#[cacheable] stores the return value and hands out copies of it, so it cannot return a borrow; return an owned type instead (`String` for `&str`, `Vec<T>` for `&[T]`, `T` or `Arc<T>` for `&T`)",
        ));
    }

    if let Some(ttl) = &args.ttl
        && **ttl == TtlArg::Millis(0)
    {
        return Err(syn::Error::new(
            ttl.span(),
            "ttl must be greater than zero; leave it out for the backend's default, or write ttl = \"never\"",
        ));
    }
    if let Some(stale) = &args.stale_if_error
        && **stale == TtlArg::Millis(0)
    {
        return Err(syn::Error::new(
            stale.span(),
            "stale_if_error must be greater than zero; leave it out to return errors as they are",
        ));
    }
    if let (Some(cache), Some(backend)) = (&args.cache, &args.backend) {
        let mut e = syn::Error::new(
            backend.span(),
            "give either `cache = ...` or `backend = \"...\"`, not both: `cache` names the Cache to use, `backend` picks one from the installed registry",
        );
        e.combine(syn::Error::new(cache.span(), "`cache` given here"));
        return Err(e);
    }
    if let Some(beta) = &args.beta
        && !(**beta >= MIN_BETA && beta.is_finite())
    {
        return Err(syn::Error::new(
            beta.span(),
            format!(
                "beta must be a number from {MIN_BETA} up (1.0 is the usual choice; larger refreshes earlier, smaller later); to turn early refresh off write `early_refresh = false`"
            ),
        ));
    }

    let mut skip = Vec::new();
    if let Some(list) = &args.skip {
        for path in list.iter() {
            let Some(ident) = path.get_ident() else {
                return Err(syn::Error::new(path.span(), "skip takes parameter names"));
            };
            // `self` is never in an automatic key; `skip(self)` (a habit from
            // `#[tracing::instrument]`) says so and changes nothing.
            if ident == "self" && sig.has_self {
                continue;
            }
            if !sig.params.iter().any(|p| &p.ident == ident) {
                let names: Vec<String> = sig.params.iter().map(|p| p.ident.to_string()).collect();
                return Err(syn::Error::new(
                    ident.span(),
                    format!(
                        "skip names `{ident}`, which is not a parameter of this function; parameters: {}",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            }
            skip.push(ident.clone());
        }
    }

    let template = match &args.key {
        Some(lit) => {
            let segments = key::parse(lit)?;
            key::validate(&segments, &sig, lit.span())?;
            for ident in &skip {
                if key::uses(&segments, ident) {
                    return Err(syn::Error::new(
                        ident.span(),
                        format!(
                            "`{ident}` is both skipped and named in the key template; remove it from one of them"
                        ),
                    ));
                }
            }
            // A parameter left out of the template would share one value between all of its
            // values: say so, unless `skip` marks it as meant.
            if let Some(unused) = sig
                .params
                .iter()
                .find(|p| !key::uses(&segments, &p.ident) && !skip.contains(&p.ident))
            {
                let name = &unused.ident;
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "the key template leaves out the parameter `{name}`, so every `{name}` would share one cached value; name it in the template (`{{{name}}}`), or add `skip({name})` if it does not change the result"
                    ),
                ));
            }
            Some(segments)
        }
        None => {
            if let Some((tokens, what)) = &sig.generic {
                return Err(syn::Error::new_spanned(
                    tokens,
                    format!(
                        "{what} needs an explicit key (`key = \"...\"`): the automatic key cannot tell instantiations apart"
                    ),
                ));
            }
            None
        }
    };
    let tags = tag_templates(&args, &sig)?;
    let krate = match &args.krate {
        Some(path) => quote::quote!(#path),
        None => quote::quote!(::lexigram_cache),
    };

    Ok((
        Plan {
            args,
            sig,
            template,
            skip,
            krate,
            tags,
        },
        f,
    ))
}

/// The parsed `tags` templates, each checked like a key template: every name must be a
/// parameter (or `self`). A template need not name every parameter: a tag groups values.
fn tag_templates(args: &Args, sig: &signature::Signature) -> syn::Result<Vec<Vec<key::Segment>>> {
    let Some(tags) = &args.tags else {
        return Ok(Vec::new());
    };
    if tags.0.is_empty() {
        return Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "`tags = []` gives no tags; leave the option out, or name at least one tag",
        ));
    }
    let mut out = Vec::with_capacity(tags.0.len());
    for lit in &tags.0 {
        if lit.value().is_empty() {
            return Err(syn::Error::new(lit.span(), "a tag cannot be empty"));
        }
        let segments = key::parse(lit).map_err(|e| {
            syn::Error::new(
                lit.span(),
                e.to_string().replace("key template", "tag template"),
            )
        })?;
        key::validate(&segments, sig, lit.span()).map_err(|e| {
            syn::Error::new(
                lit.span(),
                e.to_string().replace("key template", "tag template"),
            )
        })?;
        out.push(segments);
    }
    Ok(out)
}

/// The smallest `beta`: the value is used as given, and below this early refresh would in
/// practice never start.
const MIN_BETA: f64 = 0.001;

/// The function, or a spanned error for a trait method declaration (syn alone would say
/// "expected curly braces").
fn parse_fn(item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => Ok(f),
        Err(e) => match syn::parse2::<syn::TraitItemFn>(item) {
            Ok(decl) if decl.default.is_none() => Err(syn::Error::new_spanned(
                &decl.sig,
                "#[cacheable] cannot go on a trait method declaration, which has no body to cache; put it on the method in each `impl` of the trait (with `companions = false`), or on a default body here",
            )),
            _ => Err(e),
        },
    }
}
