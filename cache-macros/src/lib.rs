//! The `#[cacheable]` attribute of lexigram-cache. Use it through `lexigram_cache::cacheable`,
//! where it is documented.

// The work is split as serde_derive and thiserror split theirs: `args` parses the options,
// `signature` reads the function, `key` reads key templates, `validate` checks them against
// each other (every error a `syn::Error` with a span), and `expand` writes the tokens.

use proc_macro::TokenStream;

mod args;
mod expand;
mod key;
mod signature;
mod validate;

/// Caches an async function's result. Documented in `lexigram_cache`.
#[proc_macro_attribute]
pub fn cacheable(args: TokenStream, item: TokenStream) -> TokenStream {
    match validate::plan(args.into(), item.clone().into()) {
        Ok((plan, f)) => expand::expand(plan, f).into(),
        Err(e) => {
            // Emit the function unchanged beside the error, so the rest of the crate still
            // type-checks and the user sees one error, not a cascade.
            let mut out: proc_macro2::TokenStream = e.to_compile_error();
            out.extend(proc_macro2::TokenStream::from(item));
            out.into()
        }
    }
}
