//! The generated tokens.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::args::{Args, TtlArg};
use crate::key::{self, Segment};
use crate::signature::{self, Shape, Signature};

/// Everything checked; ready to expand.
pub struct Plan {
    pub args: Args,
    pub sig: Signature,
    pub template: Option<Vec<Segment>>,
    pub skip: Vec<syn::Ident>,
    /// The path of the runtime crate: `::lexigram_cache`, or the `crate = "..."` option.
    pub krate: TokenStream,
    /// The `tags` templates; empty without the option.
    pub tags: Vec<Vec<Segment>>,
}

/// The expansion's own bindings: `Span::mixed_site()` keeps them out of the user's namespace,
/// so a parameter named `__lex_key` is never shadowed by them, and they by it.
pub fn internal(name: &str) -> syn::Ident {
    syn::Ident::new(name, Span::mixed_site())
}

pub fn expand(plan: Plan, mut f: ItemFn) -> TokenStream {
    let k = &plan.krate;
    let ms = Span::mixed_site();
    let site = site(&plan, &f);
    let key = key_expr(&plan);
    let source = source_expr(&plan);
    let scope = scope_expr();
    let ret = &plan.sig.output;
    let adapter = adapter_method(&plan.args);
    let assertions = assertions(&plan, ret);
    let tagging = tagging(&plan);
    // A function without `request_scope` answers a hit before its body's future exists, with
    // the cache borrowed (`cache = self.cache` touches no reference count), and only a miss
    // holds a handle of its own across the body. With the option, the request scope is asked
    // first, so the handle is owned from the start.
    // The key is written on the stack, inside a block that ends before any `.await`, so that
    // it is no part of the function's future; only a miss copies it into a `String`.
    let (hit, run) = if plan.args.request_scope.0 {
        (
            quote_spanned! {ms=>
                let (__lex_source, __lex_key) = {
                    let mut __lex_k = #k::__private::KeyText::new();
                    let __lex_keyed: bool = #key;
                    #source
                    (
                        #k::__private::Source::owned(__lex_source),
                        #k::__private::owned_key(&__lex_k, __lex_keyed),
                    )
                };
            },
            format_ident!("run_in_request"),
        )
    } else {
        // An automatic key's hit is looked up from the encoded arguments; its text is written
        // only for a miss.
        let (keyed, hit) = match &plan.template {
            Some(_) => (
                quote_spanned! {ms=> let __lex_keyed: bool = #key; },
                quote_spanned! {ms=>
                    #k::__private::hit(&__LEX_SITE, __lex_scope, __lex_source, __lex_keyed.then_some(&__lex_k), __lex_adapter)
                },
            ),
            None => {
                let feeds = auto_feeds(&plan);
                (
                    quote_spanned! {ms=> #feeds let __lex_keyed: bool = __lex_ok; },
                    quote_spanned! {ms=>
                        #k::__private::hit_auto(&__LEX_SITE, __lex_scope, __lex_source, &__lex_h, __lex_ok, &mut __lex_k, __lex_adapter)
                    },
                )
            }
        };
        (
            quote_spanned! {ms=>
                let (__lex_source, __lex_key) = {
                    let mut __lex_k = #k::__private::KeyText::new();
                    #keyed
                    let __lex_hit = {
                        #source
                        #hit
                    };
                    match __lex_hit {
                        ::core::result::Result::Ok(__lex_out) => return __lex_out,
                        ::core::result::Result::Err(__lex_source) => {
                            (__lex_source, #k::__private::owned_key(&__lex_k, __lex_keyed))
                        }
                    }
                };
            },
            format_ident!("fill"),
        )
    };

    // The body's statements are spliced into the async block rather than its braces kept
    // around them: `{ id * 2 }` as a block's tail would warn `unused_braces` at the user's
    // braces.
    let wrap = |stmts: TokenStream| {
        quote_spanned! {ms=>
            #site
            let __lex_scope: &'static #k::__private::Scope = #scope;
            #[allow(unused_imports)]
            use #k::__private::{ProbeOption as _, ProbePlain as _, ProbeResult as _};
            #assertions
            let __lex_adapter = (&&&#k::__private::Probe::<#ret>::new()).#adapter();
            #tagging
            #hit
            let __lex_body = async move {
                // Tells inference the block's output type, so `?` in the body converts errors
                // into the function's error type as it would without the attribute.
                if let ::core::option::Option::Some(__lex_ret) = ::core::option::Option::None::<#ret> {
                    #[allow(unreachable_code)]
                    return __lex_ret;
                }
                #stmts
            };
            #k::__private::#run(&__LEX_SITE, __lex_scope, __lex_source, __lex_key, __lex_adapter, __lex_body).await
        }
    };

    let companions = match plan.sig.shape {
        Shape::Async if plan.args.companions.unwrap_or(true) => companions(&plan, &f),
        _ => TokenStream::new(),
    };

    match plan.sig.shape {
        Shape::Async => {
            let stmts = &f.block.stmts;
            let wrapped = wrap(quote!(#(#stmts)*));
            *f.block = syn::parse_quote!({ #wrapped });
        }
        Shape::AsyncTrait => {
            struct Replace<'a> {
                wrap: &'a dyn Fn(TokenStream) -> TokenStream,
                done: bool,
            }
            impl syn::visit_mut::VisitMut for Replace<'_> {
                fn visit_local_mut(&mut self, local: &mut syn::Local) {
                    if self.done {
                        return;
                    }
                    if signature::ret_type(local).is_some()
                        && let Some(init) = local.init.as_mut()
                    {
                        let body = match &*init.expr {
                            syn::Expr::Block(b) if b.attrs.is_empty() && b.label.is_none() => {
                                let stmts = &b.block.stmts;
                                quote!(#(#stmts)*)
                            }
                            other => quote!(#other),
                        };
                        let wrapped = (self.wrap)(body);
                        *init.expr = syn::parse_quote!({ #wrapped });
                        self.done = true;
                        return;
                    }
                    syn::visit_mut::visit_local_mut(self, local);
                }
            }
            if let Some(inner) = signature::async_block_of_mut(&mut f.block) {
                let mut replace = Replace {
                    wrap: &wrap,
                    done: false,
                };
                syn::visit_mut::VisitMut::visit_block_mut(&mut replace, inner);
            }
        }
    }
    quote!(#f #companions)
}

fn site(plan: &Plan, f: &ItemFn) -> TokenStream {
    let k = &plan.krate;
    let a = &plan.args;
    let name = f.sig.ident.to_string();
    let prefix = a.prefix.clone().unwrap_or_default();
    let version = a.version;
    let ttl = match a.ttl.as_ref().map(|t| **t) {
        None => quote!(#k::__private::SiteTtl::Default),
        Some(TtlArg::Never) => quote!(#k::__private::SiteTtl::Never),
        Some(TtlArg::Millis(ms)) => quote!(#k::__private::SiteTtl::Millis(#ms)),
    };
    let backend = opt(a.backend.as_ref().map(|b| (**b).clone()));
    let protect = opt(a.protect);
    let early = opt(a.early_refresh);
    let beta = opt(a.beta.as_ref().map(|b| **b));
    let stale = opt(a.stale_if_error.as_ref().map(|s| match **s {
        TtlArg::Millis(ms) => ms,
        TtlArg::Never => u64::MAX,
    }));
    quote_spanned! {Span::mixed_site()=>
        static __LEX_SITE: #k::__private::Site = #k::__private::Site {
            module: ::core::module_path!(),
            name: #name,
            scopes: #k::__private::Scopes::new(),
            prefix: #prefix,
            version: #version,
            ttl: #ttl,
            backend: #backend,
            protect: #protect,
            early_refresh: #early,
            beta: #beta,
            stale_if_error_ms: #stale,
        };
    }
}

/// The function's scope, from the `type_name` of a closure in its body, which names the
/// function with its Self type (per instantiation of a generic impl) and trait: the macro sees
/// only the function, not the impl around it, and a `static` in a generic impl is shared by
/// every instantiation.
fn scope_expr() -> TokenStream {
    quote_spanned!(Span::mixed_site()=> __LEX_SITE.scope_at(::core::any::type_name_of_val(&|| ())))
}

fn opt<T: quote::ToTokens>(v: Option<T>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn key_expr(plan: &Plan) -> TokenStream {
    let k = &plan.krate;
    if let Some(segments) = &plan.template {
        return key::expand(segments, &plan.sig, k);
    }
    let feeds = auto_feeds(plan);
    quote_spanned! {Span::mixed_site()=> {
        #feeds
        #k::__private::auto_key(&__LEX_SITE, __lex_scope, &__lex_h, __lex_ok, &mut __lex_k)
    }}
}

/// For an automatic key: statements binding `__lex_h`, the hasher fed every argument not
/// skipped, and `__lex_ok`, false if one failed to serialize.
fn auto_feeds(plan: &Plan) -> TokenStream {
    let k = &plan.krate;
    let (h, ok) = (internal("__lex_h"), internal("__lex_ok"));
    let feeds = plan
        .sig
        .params
        .iter()
        .filter(|p| !plan.skip.contains(&p.ident))
        .map(|p| {
            let ident = &p.ident;
            // Spanned at the parameter, so "not Serialize" points at it.
            let k = respan(k.clone(), p.ty.span());
            quote_spanned!(p.ty.span()=> #k::__private::feed(&mut #h, &mut #ok, &#ident);)
        });
    quote_spanned! {Span::mixed_site()=>
        let mut __lex_h = #k::__private::hasher();
        #[allow(unused_mut)]
        let mut __lex_ok = true;
        #(#feeds)*
    }
}

/// With `tags`: the tags built from their templates, and the adapter wrapped to carry them.
/// Nothing without the option, so untagged functions expand as before.
fn tagging(plan: &Plan) -> TokenStream {
    if plan.tags.is_empty() {
        return TokenStream::new();
    }
    let k = &plan.krate;
    let tags = plan
        .tags
        .iter()
        .map(|segments| tag_expr(segments, &plan.sig, k));
    quote_spanned! {Span::mixed_site()=>
        let __lex_tags: ::std::vec::Vec<::std::string::String> = ::std::vec![#(#tags),*];
        let __lex_adapter = #k::__private::tagged(__lex_adapter, &__lex_tags);
    }
}

/// A `String` expression building one tag from its template, values written with Display as
/// in key templates.
fn tag_expr(segments: &[Segment], sig: &Signature, krate: &TokenStream) -> TokenStream {
    let t = internal("__lex_t");
    let writes = crate::key::writes(segments, sig, krate, &t);
    quote_spanned! {Span::mixed_site()=> {
        let mut #t = #krate::__private::template_tag();
        #writes
        ::std::string::String::from(#t.as_str())
    }}
}

/// Statements binding `__lex_source`, borrowing the cache of `cache = expr` (a `let` of a
/// reference extends the life of a temporary such as `cache()`'s result to the block).
fn source_expr(plan: &Plan) -> TokenStream {
    let k = &plan.krate;
    match &plan.args.cache {
        Some(expr) => {
            let expr = rename_self(quote!(#expr), &plan.sig.self_ident);
            quote_spanned! {Span::mixed_site()=>
                let __lex_cache = &(#expr);
                let __lex_source = #k::__private::given(__lex_cache);
            }
        }
        None => quote_spanned! {Span::mixed_site()=>
            let __lex_source = #k::__private::Source::Registry;
        },
    }
}

/// `#[async_trait]` renames `self` to `__self` in the body; user expressions in the attribute
/// need the same.
fn rename_self(tokens: TokenStream, to: &syn::Ident) -> TokenStream {
    if to == "self" {
        return tokens;
    }
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Ident(i) if i == "self" => {
                TokenTree::Ident(syn::Ident::new("__self", i.span()))
            }
            TokenTree::Group(g) => {
                let mut ng = proc_macro2::Group::new(g.delimiter(), rename_self(g.stream(), to));
                ng.set_span(g.span());
                TokenTree::Group(ng)
            }
            other => other,
        })
        .collect()
}

fn adapter_method(a: &Args) -> syn::Ident {
    if *a.cache_err || *a.cache_none {
        format_ident!("__lex_adapter_whole")
    } else if a.skip_on_error == Some(false) {
        format_ident!("__lex_adapter_strict")
    } else {
        format_ident!("__lex_adapter")
    }
}

fn assertions(plan: &Plan, ret: &syn::Type) -> TokenStream {
    let (a, k) = (&plan.args, &plan.krate);
    let mut out = TokenStream::new();
    if *a.cache_none {
        let span = a.cache_none.span();
        out.extend(quote_spanned!(span=> #k::__private::assert_option::<#ret>();));
    }
    if *a.cache_err {
        let span = a.cache_err.span();
        out.extend(quote_spanned!(span=> #k::__private::assert_result::<#ret>();));
    }
    if a.skip_on_error == Some(false) {
        out.extend(quote_spanned!(ret.span()=> #k::__private::assert_result::<#ret>();));
    }
    out
}

/// Attributes of the function that its companions need too: `cfg` (two `cfg` alternatives of
/// one function would otherwise give two clashing companions), lint levels and `deprecated`.
fn shared_attrs(f: &ItemFn) -> impl Iterator<Item = &syn::Attribute> {
    const SHARED: &[&str] = &[
        "cfg",
        "allow",
        "expect",
        "warn",
        "deny",
        "forbid",
        "deprecated",
    ];
    f.attrs.iter().filter(|a| {
        matches!(a.style, syn::AttrStyle::Outer)
            && SHARED.iter().any(|name| a.path().is_ident(name))
    })
}

fn companions(plan: &Plan, f: &ItemFn) -> TokenStream {
    let k = &plan.krate;
    let vis = &f.vis;
    let name = &f.sig.ident;
    let key_fn = format_ident!("{}_cache_key", name);
    let inv_fn = format_ident!("{}_invalidate", name);
    let generics = &f.sig.generics;
    let where_clause = &generics.where_clause;
    let receiver = plan.sig.has_self.then(|| quote!(&self,));
    let params = plan.sig.params.iter().map(|p| {
        let (i, t) = (&p.ident, &p.ty);
        quote!(#i: #t)
    });
    let params2 = params.clone();
    let attrs: Vec<_> = shared_attrs(f).collect();
    let site = site(plan, f);
    let key = key_expr(plan);
    let source = source_expr(plan);
    let scope = scope_expr();
    let key_doc = format!(
        "The cache key [`{name}`](Self::{name}) uses for these arguments (empty if an argument fails to serialize). Generated by `#[cacheable]`."
    );
    let key_doc = if plan.sig.has_self {
        key_doc
    } else {
        key_doc.replace("(Self::", "(")
    };
    let inv_doc = format!(
        "Removes the value `{name}` cached for these arguments; `Ok(true)` if one was there. Generated by `#[cacheable]`."
    );
    let key_body = quote_spanned! {Span::mixed_site()=>
        #site
        let __lex_scope: &'static #k::__private::Scope = #scope;
        let mut __lex_k = #k::__private::KeyText::new();
        let __lex_keyed: bool = #key;
        #k::__private::owned_key(&__lex_k, __lex_keyed).unwrap_or_default()
    };
    let inv_body = quote_spanned! {Span::mixed_site()=>
        #site
        let __lex_scope: &'static #k::__private::Scope = #scope;
        let __lex_key = {
            let mut __lex_k = #k::__private::KeyText::new();
            let __lex_keyed: bool = #key;
            #k::__private::owned_key(&__lex_k, __lex_keyed)
        };
        #source
        #k::__private::invalidate(&__LEX_SITE, __lex_scope, __lex_source, __lex_key).await
    };
    quote! {
        #(#attrs)*
        #[doc = #key_doc]
        #[allow(unused_variables, clippy::needless_pass_by_value)]
        #vis fn #key_fn #generics (#receiver #(#params),*) -> ::std::string::String #where_clause {
            #key_body
        }

        #(#attrs)*
        #[doc = #inv_doc]
        #[allow(unused_variables, clippy::needless_pass_by_value)]
        #vis async fn #inv_fn #generics (#receiver #(#params2),*) -> ::core::result::Result<bool, #k::CacheError> #where_clause {
            #inv_body
        }
    }
}

/// `tokens` with every span set to `span`.
pub fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                tt = TokenTree::Group(ng);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}
