//! Key templates: `"user:{id}"`, `"t:{self.tenant}:{query.page}"`, `{{`/`}}` for braces.

use proc_macro2::{Span, TokenStream};
use quote::quote;

use crate::signature::Signature;

pub enum Segment {
    Text(String),
    /// `name` or `name.field.field`.
    Value(Vec<String>),
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
                let path: Vec<String> = name.trim().split('.').map(str::to_owned).collect();
                if path
                    .iter()
                    .any(|p| syn::parse_str::<syn::Ident>(p).is_err() && p != "self")
                {
                    return Err(err(format!(
                        "`{{{name}}}` in key template is not a parameter name or a field path such as `{{user.id}}`"
                    )));
                }
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

/// Checks every name against the parameters.
pub fn validate(segments: &[Segment], sig: &Signature, span: Span) -> syn::Result<()> {
    for seg in segments {
        let Segment::Value(path) = seg else { continue };
        let head = &path[0];
        let known = if head == "self" {
            sig.has_self
        } else {
            sig.params.iter().any(|p| p.ident == head)
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

/// An expression of type `Option<String>` building the key.
pub fn expand(segments: &[Segment], sig: &Signature) -> TokenStream {
    let capacity: usize = segments
        .iter()
        .map(|s| match s {
            Segment::Text(t) => t.len(),
            Segment::Value(_) => 16,
        })
        .sum();
    let pushes = segments.iter().map(|seg| match seg {
        Segment::Text(t) => quote!(__lex_k.push_str(#t);),
        Segment::Value(path) => {
            let idents = path.iter().enumerate().map(|(i, p)| {
                if i == 0 && p == "self" {
                    sig.self_ident.clone()
                } else {
                    syn::Ident::new(p, Span::call_site())
                }
            });
            quote!(::lexigram_cache::__private::push_display(&mut __lex_k, &(#(#idents).*));)
        }
    });
    quote! {{
        let mut __lex_k = ::lexigram_cache::__private::template_key(&__LEX_SITE, #capacity);
        #(#pushes)*
        ::core::option::Option::Some(__lex_k)
    }}
}
