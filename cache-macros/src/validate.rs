//! Checks the options against the function.

use proc_macro2::TokenStream;
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::args::{Args, TtlArg};
use crate::expand::Plan;
use crate::key;
use crate::signature;

pub fn plan(args: TokenStream, item: TokenStream) -> syn::Result<(Plan, ItemFn)> {
    let mut f: ItemFn = syn::parse2(item)?;
    let args = Args::parse(args)?;
    let sig = signature::analyse(&mut f)?;

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
        && !(**beta > 0.0 && beta.is_finite())
    {
        return Err(syn::Error::new(
            beta.span(),
            "beta must be a positive number (1.0 is the usual choice; larger refreshes earlier)",
        ));
    }

    let mut skip = Vec::new();
    if let Some(list) = &args.skip {
        for path in list.iter() {
            let Some(ident) = path.get_ident() else {
                return Err(syn::Error::new(path.span(), "skip takes parameter names"));
            };
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
            if let Some(list) = &args.skip
                && let Some(first) = list.first()
            {
                return Err(syn::Error::new(
                    first.span(),
                    "skip only applies to automatic keys; with `key = \"...\"` the template decides what is in the key",
                ));
            }
            Some(segments)
        }
        None => {
            if sig.is_generic {
                return Err(syn::Error::new(
                    f.sig.generics.span(),
                    "a generic function needs an explicit key (`key = \"...\"`): the automatic key cannot tell instantiations apart",
                ));
            }
            None
        }
    };

    Ok((
        Plan {
            args,
            sig,
            template,
            skip,
        },
        f,
    ))
}
