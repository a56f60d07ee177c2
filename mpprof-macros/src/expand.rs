//! The code that `#[mpprof::instrument]` puts in place of a function's body.
//!
//! A sync function keeps its signature and attributes; its body becomes
//!
//! ```text
//! {
//!     static __MPPROF_CALLSITE: ::mpprof::__private::Callsite = /* const fn */;
//!     let __mpprof_guard = ::mpprof::__private::SpanGuard::enter(&__MPPROF_CALLSITE);
//!     /* the original statements */
//! }
//! ```
//!
//! so the span is exited when the guard drops: on every `return`, `?` and
//! panic. An `async fn`'s body becomes
//!
//! ```text
//! {
//!     static __MPPROF_CALLSITE: ::mpprof::__private::Callsite = /* const fn */;
//!     return ::mpprof::__private::instrument_future(&__MPPROF_CALLSITE, async move {
//!         /* a `return` of the declared type that is never taken */
//!         /* the original statements */
//!     }).await;
//! }
//! ```
//!
//! so the span is entered and exited around each poll of the body. (`return
//! ...;` rather than a tail expression keeps `clippy::implicit_return` quiet.)
//! Items at the start of the body (`use`, `fn`, `const`...) stay before the
//! generated statements.
//!
//! Spans: the generated tokens are located at the function's name, so that
//! an error in them (say, `mpprof` is not a dependency) points there, but
//! with mixed-site hygiene: the guard's binding cannot clash with the user's
//! names, `::mpprof` resolves as in the 2021 edition, and lints see the
//! tokens as macro-generated, not as the user's code. Only `::core::file!()`
//! and `::core::line!()` get the name's own span, which makes them expand to
//! the function's file and line (with a mixed-site span they would give the
//! attribute's line). The original statements keep their own spans.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::{AttrStyle, Item, ItemFn, LitStr, ReturnType, Stmt, Type};

use crate::attr::InstrumentArgs;

/// The instrumented function.
pub(crate) fn gen_function(args: &InstrumentArgs, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    // syn moves the body's inner attributes (`#![...]`) into `attrs`.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let ident = &sig.ident;
    let span = Span::mixed_site().located_at(ident.span());
    let callsite = gen_callsite(args, ident, span);

    // Items at the start of the body stay first, before our statements
    // (items can be used anywhere in their block, so the order does not
    // matter to the compiler), so that `clippy::items_after_statements` does
    // not fire in the user's code because of ours.
    let leading_items = block
        .stmts
        .iter()
        .take_while(|stmt| matches!(stmt, Stmt::Item(item) if !matches!(item, Item::Macro(_))))
        .count();
    let (items, stmts) = block.stmts.split_at(leading_items);
    let braces = block.brace_token.span.join();

    let body = if sig.asyncness.is_some() {
        let return_edge = gen_return_edge(&sig.output, span);
        let future_body = with_span(
            braces,
            quote_spanned! {span=>
                #(#items)*
                #return_edge
                #(#stmts)*
            },
        );
        quote_spanned! {span=>
            #(#inner_attrs)*
            #callsite
            return ::mpprof::__private::instrument_future(&__MPPROF_CALLSITE, async move #future_body).await;
        }
    } else {
        quote_spanned! {span=>
            #(#inner_attrs)*
            #(#items)*
            #callsite
            let __mpprof_guard = ::mpprof::__private::SpanGuard::enter(&__MPPROF_CALLSITE);
            #(#stmts)*
        }
    };
    // The body keeps the span of the user's braces.
    let body = with_span(braces, body);

    quote!(#(#outer_attrs)* #vis #sig #body)
}

/// `{ tokens }`, the braces at `span`.
fn with_span(span: Span, tokens: TokenStream) -> Group {
    let mut group = Group::new(Delimiter::Brace, tokens);
    group.set_span(span);
    group
}

/// For an `async fn`, a `return` of the declared type that is never taken,
/// put first in the async block: the block's return type is then the
/// declared one, not the type of the first `return` or of the tail, so that
/// `return Box::new(x)` coerces to `Box<dyn Trait>` as it does in the
/// function itself. (tracing-attributes does the same.)
///
/// Not for `()` (nothing to coerce), `!` (`Option<!>` is unstable) and types
/// that contain `impl Trait` (cannot be named in the body).
fn gen_return_edge(output: &ReturnType, span: Span) -> Option<TokenStream> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    if matches!(**ty, Type::Never(_)) || contains_impl(ty.to_token_stream()) {
        return None;
    }
    Some(quote_spanned! {span=>
        match ::core::option::Option::<#ty>::None {
            ::core::option::Option::Some(__mpprof_return) => return __mpprof_return,
            ::core::option::Option::None => {}
        }
    })
}

/// Whether a type mentions `impl Trait`.
fn contains_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => contains_impl(group.stream()),
        _ => false,
    })
}

/// The call site's `static`, named `__MPPROF_CALLSITE`.
fn gen_callsite(args: &InstrumentArgs, ident: &Ident, span: Span) -> TokenStream {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => LitStr::new(&ident.unraw().to_string(), ident.span()),
    };
    let file = quote_spanned!(ident.span()=> ::core::file!());
    let line = quote_spanned!(ident.span()=> ::core::line!());
    quote_spanned! {span=>
        static __MPPROF_CALLSITE: ::mpprof::__private::Callsite = ::mpprof::__private::Callsite::new(
            #name,
            {
                fn __mpprof_path() -> &'static str {
                    fn __mpprof_here() {}
                    ::mpprof::__private::fn_path(__mpprof_here)
                }
                __mpprof_path
            },
            #file,
            #line,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        let args = syn::parse2(args).unwrap();
        gen_function(&args, syn::parse2(item).unwrap()).to_string()
    }

    fn callsite(name: &str) -> String {
        quote! {
            static __MPPROF_CALLSITE: ::mpprof::__private::Callsite = ::mpprof::__private::Callsite::new(
                #name,
                {
                    fn __mpprof_path() -> &'static str {
                        fn __mpprof_here() {}
                        ::mpprof::__private::fn_path(__mpprof_here)
                    }
                    __mpprof_path
                },
                ::core::file!(),
                ::core::line!(),
            );
        }
        .to_string()
    }

    const GUARD: &str =
        "let __mpprof_guard = :: mpprof :: __private :: SpanGuard :: enter (& __MPPROF_CALLSITE) ;";

    #[test]
    fn sync_fn() {
        let out = expand(
            quote!(),
            quote! {
                #[inline]
                pub(crate) fn step(i: u32) -> u32 {
                    let j = i + 1;
                    j * 2
                }
            },
        );
        let expected = format!(
            "# [inline] pub (crate) fn step (i : u32) -> u32 {{ {} {GUARD} let j = i + 1 ; j * 2 }}",
            callsite("step"),
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn name_argument() {
        let out = expand(quote!(name = "load config"), quote! { fn load() {} });
        assert!(out.contains(&callsite("load config")), "{out}");
    }

    #[test]
    fn raw_identifier() {
        let out = expand(quote!(), quote! { fn r#type() {} });
        assert!(out.contains(&callsite("type")), "{out}");
        assert!(out.starts_with("fn r#type ()"), "{out}");
    }

    #[test]
    fn inner_attributes_stay_inside_the_body() {
        let out = expand(
            quote!(),
            quote!(
                #[cold]
                fn f() {
                    #![allow(unused)]
                    1;
                }
            ),
        );
        let expected = format!(
            "# [cold] fn f () {{ # ! [allow (unused)] {} {GUARD} 1 ; }}",
            callsite("f")
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn leading_items_stay_before_the_guard() {
        let out = expand(
            quote!(),
            quote!(
                fn f() {
                    use std::io;
                    fn g() {}
                    g();
                    fn h() {}
                }
            ),
        );
        let expected = format!(
            "fn f () {{ use std :: io ; fn g () {{ }} {} {GUARD} g () ; fn h () {{ }} }}",
            callsite("f")
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn async_fn() {
        let out = expand(
            quote!(),
            quote!(
                async fn get(&self) -> u32 {
                    if self.0 {
                        return 1;
                    }
                    2
                }
            ),
        );
        let expected = format!(
            "async fn get (& self) -> u32 {{ {} return :: mpprof :: __private :: instrument_future \
             (& __MPPROF_CALLSITE , async move {{ {} if self . 0 {{ return 1 ; }} 2 }}) . await ; }}",
            callsite("get"),
            return_edge(&quote!(u32)),
        );
        assert_eq!(out, expected);
    }

    fn return_edge(ty: &TokenStream) -> String {
        quote! {
            match ::core::option::Option::<#ty>::None {
                ::core::option::Option::Some(__mpprof_return) => return __mpprof_return,
                ::core::option::Option::None => {}
            }
        }
        .to_string()
    }

    #[test]
    fn async_return_edge_only_for_nameable_types() {
        let edge = quote!(::core::option::Option::<).to_string();
        for (item, has_edge) in [
            (
                quote!(
                    async fn f() -> Box<dyn Fn()> {
                        todo!()
                    }
                ),
                true,
            ),
            (
                quote!(
                    async fn f(&self) -> Result<&str, E> {
                        todo!()
                    }
                ),
                true,
            ),
            (
                quote!(
                    async fn f() {}
                ),
                false,
            ),
            (
                quote!(
                    async fn f() -> ! {
                        loop {}
                    }
                ),
                false,
            ),
            (
                quote!(
                    async fn f() -> impl Fn() {
                        || ()
                    }
                ),
                false,
            ),
            (
                quote!(
                    async fn f() -> Box<dyn Iterator<Item = impl Copy>> {
                        todo!()
                    }
                ),
                false,
            ),
        ] {
            let out = expand(quote!(), item);
            assert_eq!(out.contains(&edge), has_edge, "{out}");
        }
    }

    #[test]
    fn async_leading_items_stay_first() {
        let out = expand(
            quote!(),
            quote!(
                async fn f() -> u8 {
                    fn g() -> u8 {
                        1
                    }
                    g()
                }
            ),
        );
        assert!(
            out.contains(&format!(
                "async move {{ fn g () -> u8 {{ 1 }} {} g () }}",
                return_edge(&quote!(u8))
            )),
            "{out}"
        );
    }
}
