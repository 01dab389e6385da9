//! What the function looks like: receiver, parameters, return type, and whether
//! `#[async_trait]` has already rewritten it.

use syn::spanned::Spanned;
use syn::{Block, Expr, FnArg, ItemFn, Pat, ReturnType, Stmt, Type};

pub struct Param {
    pub ident: syn::Ident,
    pub ty: Type,
}

/// How the body is reached.
pub enum Shape {
    /// A plain `async fn`: the body is the fn's block.
    Async,
    /// A fn that `#[async_trait]` turned into `Box::pin(async move { ...; let __ret: R = BODY; __ret })`,
    /// possibly with that `let` nested one level deeper by `#[tracing::instrument]`.
    AsyncTrait,
}

pub struct Signature {
    pub has_self: bool,
    /// `self`, or `__self` once `#[async_trait]` renamed it.
    pub self_ident: syn::Ident,
    pub params: Vec<Param>,
    pub output: Type,
    pub shape: Shape,
    /// Where the function is generic (type parameters or `impl Trait` parameters), if it is,
    /// and what to call it.
    pub generic: Option<(proc_macro2::TokenStream, &'static str)>,
}

pub fn analyse(f: &mut ItemFn) -> syn::Result<Signature> {
    let (shape, output) = match (&f.sig.asyncness, &f.sig.output) {
        (Some(_), ReturnType::Type(_, ty)) => (Shape::Async, (**ty).clone()),
        (Some(_), ReturnType::Default) => {
            return Err(syn::Error::new(
                f.sig.ident.span(),
                "#[cacheable] needs a return type: a function returning `()` has nothing to cache",
            ));
        }
        (None, _) => match async_trait_body(&f.block) {
            Some(ty) => (Shape::AsyncTrait, ty),
            None => {
                return Err(syn::Error::new(
                    f.sig.fn_token.span,
                    "#[cacheable] works on `async fn` only; make this function async",
                ));
            }
        },
    };
    if let Type::ImplTrait(it) = &output {
        return Err(syn::Error::new(
            it.span(),
            "#[cacheable] needs a concrete return type to store; `impl Trait` cannot be cached",
        ));
    }
    let async_trait = matches!(shape, Shape::AsyncTrait);
    let mut has_self = false;
    let mut impl_trait_param = None;
    let mut params = Vec::new();
    for arg in &f.sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                check_receiver(r)?;
                has_self = true;
            }
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                    if let Some(it) = impl_trait_in(&pt.ty) {
                        impl_trait_param.get_or_insert(it);
                    }
                    params.push(Param {
                        ident: pi.ident.clone(),
                        ty: (*pt.ty).clone(),
                    })
                }
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "#[cacheable] needs plain parameter names (`id: u64`), not patterns",
                    ));
                }
            },
        }
    }
    let self_ident = if async_trait {
        syn::Ident::new("__self", proc_macro2::Span::call_site())
    } else {
        syn::Ident::new("self", proc_macro2::Span::call_site())
    };
    // `x: impl Trait` is a type parameter by another name.
    let generic = f
        .sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
        .map(|_| {
            let g = &f.sig.generics;
            (quote::quote!(#g), "a generic function")
        })
        .or(impl_trait_param.map(|t| (quote::quote!(#t), "an `impl Trait` parameter")));

    Ok(Signature {
        has_self,
        self_ident,
        params,
        output,
        shape,
        generic,
    })
}

/// `&self`, `self: &Self`, `self: &Arc<Self>`, `self: Arc<Self>`, `self: Rc<Self>` and
/// `self: Pin<&Self>` share the value; `&mut self` and by-value `self` are rejected.
fn check_receiver(r: &syn::Receiver) -> syn::Result<()> {
    const FORMS: &str = "`&self`, `self: &Self`, `self: &Arc<Self>`, `self: Arc<Self>`, `self: Rc<Self>` or `self: Pin<&Self>`";
    let mutable = || {
        syn::Error::new_spanned(
            r,
            "#[cacheable] methods cannot take `self` mutably: a cache hit would skip the mutation",
        )
    };
    let by_value = || {
        syn::Error::new_spanned(
            r,
            format!(
                "#[cacheable] methods take {FORMS}: a method that consumes `self` cannot share a cached value"
            ),
        )
    };
    match &r.kind {
        syn::ReceiverKind::Reference(_, _, None) => Ok(()),
        syn::ReceiverKind::Reference(_, _, Some(_)) => Err(mutable()),
        syn::ReceiverKind::Typed(_, ty) => match &**ty {
            Type::Reference(re) if re.mutability.is_some() => Err(mutable()),
            Type::Reference(_) => Ok(()),
            Type::Path(tp) => {
                let Some(last) = tp.path.segments.last() else {
                    return Err(by_value());
                };
                if last.ident == "Arc" || last.ident == "Rc" {
                    return Ok(());
                }
                if last.ident == "Pin"
                    && let syn::PathArguments::AngleBracketed(args) = &last.arguments
                    && let Some(syn::GenericArgument::Type(Type::Reference(re))) = args.args.first()
                {
                    return if re.mutability.is_some() {
                        Err(mutable())
                    } else {
                        Ok(())
                    };
                }
                Err(by_value())
            }
            _ => Err(by_value()),
        },
        _ => Err(by_value()),
    }
}

/// The first `impl Trait` in a parameter's type.
fn impl_trait_in(ty: &Type) -> Option<Type> {
    find_type(ty, &|t| matches!(t, Type::ImplTrait(_)))
}

/// The first reference in the part of a return type that is stored: a `Result`'s error
/// type is stored only with `cache_err`, so `Result<T, &'static str>` is fine without it.
pub fn borrowed_in_stored(output: &Type, cache_err: bool) -> Option<Type> {
    struct Finder {
        cache_err: bool,
        found: Option<Type>,
    }
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type(&mut self, t: &'ast Type) {
            if self.found.is_some() {
                return;
            }
            if let Type::Reference(_) = t {
                self.found = Some(t.clone());
                return;
            }
            if !self.cache_err
                && let Type::Path(tp) = t
                && let Some(last) = tp.path.segments.last()
                && last.ident == "Result"
                && let syn::PathArguments::AngleBracketed(args) = &last.arguments
            {
                if let Some(syn::GenericArgument::Type(ok)) = args.args.first() {
                    self.visit_type(ok);
                }
                return;
            }
            syn::visit::visit_type(self, t);
        }
    }
    let mut finder = Finder {
        cache_err,
        found: None,
    };
    syn::visit::Visit::visit_type(&mut finder, output);
    finder.found
}

fn find_type(ty: &Type, pred: &dyn Fn(&Type) -> bool) -> Option<Type> {
    struct Finder<'a> {
        pred: &'a dyn Fn(&Type) -> bool,
        found: Option<Type>,
    }
    impl<'ast> syn::visit::Visit<'ast> for Finder<'_> {
        fn visit_type(&mut self, t: &'ast Type) {
            if self.found.is_none() && (self.pred)(t) {
                self.found = Some(t.clone());
            }
            syn::visit::visit_type(self, t);
        }
    }
    let mut finder = Finder { pred, found: None };
    syn::visit::Visit::visit_type(&mut finder, ty);
    finder.found
}

/// Recognises the body `#[async_trait]` writes and returns `R` of its `let __ret: R = ...;`.
/// The `let` is found anywhere inside the boxed async block, first in source order, so a
/// `#[tracing::instrument]` that already wrapped the block in its own future is seen through.
fn async_trait_body(block: &Block) -> Option<Type> {
    struct Find(Option<Type>);
    impl<'ast> syn::visit::Visit<'ast> for Find {
        fn visit_local(&mut self, local: &'ast syn::Local) {
            if self.0.is_some() {
                return;
            }
            if let Some(ty) = ret_type(local) {
                self.0 = Some(ty.clone());
                return;
            }
            syn::visit::visit_local(self, local);
        }
    }
    let inner = async_block_of(block)?;
    let mut find = Find(None);
    syn::visit::Visit::visit_block(&mut find, inner);
    find.0
}

/// `R` when `local` is async_trait's `let __ret: R = ...;`.
pub fn ret_type(local: &syn::Local) -> Option<&Type> {
    let Pat::Type(pt) = &local.pat else {
        return None;
    };
    match &*pt.pat {
        Pat::Ident(pi) if pi.ident == "__ret" && local.init.is_some() => Some(&pt.ty),
        _ => None,
    }
}

/// The `async move { ... }` inside `Box::pin(...)`.
pub fn async_block_of(block: &Block) -> Option<&Block> {
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let [Expr::Async(a)] = call.args.iter().collect::<Vec<_>>().as_slice() else {
        return None;
    };
    Some(&a.block)
}

pub fn async_block_of_mut(block: &mut Block) -> Option<&mut Block> {
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_mut_slice() else {
        return None;
    };
    match call.args.first_mut() {
        Some(Expr::Async(a)) => Some(&mut a.block),
        _ => None,
    }
}
