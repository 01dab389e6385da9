//! Key templates: `"user:{id}"`, `"t:{self.tenant}:{query.page}"`, `{{`/`}}` for braces.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};

use crate::signature::Signature;

pub enum Segment {
    Text(String),
    /// `name` or `name.field.field`; the head may be `self`.
    Value(Vec<syn::Ident>),
}

pub fn parse(template: &syn::LitStr) -> syn::Result<Vec<Segment>> {
    let text = template.value();
    let err = |msg: String| syn::Error::new(template.span(), msg);
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(err(format!(
                        "unclosed `{{` in key template: `{{{name}` has no `}}`; write `{{{{` for a literal brace"
                    )));
                }
                let path = value_path(&name, template.span()).map_err(err)?;
                if !literal.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut literal)));
                }
                out.push(Segment::Value(path));
            }
            '}' => {
                return Err(err(
                    "unmatched `}` in key template; write `}}` for a literal brace".into(),
                ));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        out.push(Segment::Text(literal));
    }
    Ok(out)
}

/// `{name}`'s contents as identifiers spanned at the template, or why they are not a path.
fn value_path(name: &str, span: Span) -> Result<Vec<syn::Ident>, String> {
    if let Some((value, spec)) = name.split_once(':') {
        return Err(format!(
            "`{{{name}}}`: format specs (`:{spec}`) are not supported in key templates; values are written with Display, as `{{{value}}}`"
        ));
    }
    let not_a_path = || {
        format!(
            "`{{{name}}}` in key template is not a parameter name or a field path such as `{{user.id}}`"
        )
    };
    let mut path = Vec::new();
    for (i, part) in name.split('.').enumerate() {
        if part.is_empty() || part.trim() != part {
            return Err(not_a_path());
        }
        let ident = if i == 0 && part == "self" {
            syn::Ident::new("self", span)
        } else if let Some(raw) = part.strip_prefix("r#") {
            match syn::parse_str::<syn::Ident>(part) {
                Ok(_) => syn::Ident::new_raw(raw, span),
                Err(_) => return Err(not_a_path()),
            }
        } else {
            match syn::parse_str::<syn::Ident>(part) {
                Ok(mut ident) => {
                    ident.set_span(span);
                    ident
                }
                Err(_) => return Err(not_a_path()),
            }
        };
        path.push(ident);
    }
    Ok(path)
}

/// Checks every name against the parameters.
pub fn validate(segments: &[Segment], sig: &Signature, span: Span) -> syn::Result<()> {
    for seg in segments {
        let Segment::Value(path) = seg else { continue };
        let head = &path[0];
        let known = if head == "self" {
            sig.has_self
        } else {
            sig.params.iter().any(|p| p.ident == *head)
        };
        if !known {
            let mut names: Vec<String> = sig.params.iter().map(|p| p.ident.to_string()).collect();
            if sig.has_self {
                names.push("self".into());
            }
            let list = if names.is_empty() {
                "the function has no parameters".to_string()
            } else {
                format!("known names: {}", names.join(", "))
            };
            return Err(syn::Error::new(
                span,
                format!("unknown name `{head}` in key template; {list}"),
            ));
        }
    }
    Ok(())
}

/// Whether the template names the parameter `param`.
pub fn uses(segments: &[Segment], param: &syn::Ident) -> bool {
    segments
        .iter()
        .any(|s| matches!(s, Segment::Value(path) if path[0] == *param))
}

/// An expression of type `bool` (always `true`) writing the key into `__lex_k`.
pub fn expand(segments: &[Segment], sig: &Signature, krate: &TokenStream) -> TokenStream {
    let pushes = writes(segments, sig, krate, &crate::expand::internal("__lex_k"));
    quote_spanned! {Span::mixed_site()=> {
        #krate::__private::template_key(&__LEX_SITE, &mut __lex_k);
        #pushes
        true
    }}
}

/// Statements appending a template's text and values (with Display) to the `KeyText` named
/// `into`: the key, or one tag.
pub fn writes(
    segments: &[Segment],
    sig: &Signature,
    krate: &TokenStream,
    into: &syn::Ident,
) -> TokenStream {
    let pushes = segments.iter().map(|seg| match seg {
        Segment::Text(t) => quote!(#into.push_str(#t);),
        Segment::Value(path) => {
            let span = path[0].span();
            let idents = path.iter().enumerate().map(|(i, p)| {
                if i == 0 && p == "self" {
                    syn::Ident::new(&sig.self_ident.to_string(), span)
                } else {
                    p.clone()
                }
            });
            // Spanned at the template, so "not Display" points at it.
            let krate = crate::expand::respan(krate.clone(), span);
            quote_spanned!(span=> {
                #[allow(unused_imports)]
                use #krate::__private::{PushAny as _, PushFast as _};
                (&#krate::__private::part(&(#(#idents).*))).push_part(&mut #into);
            })
        }
    });
    quote!(#(#pushes)*)
}
