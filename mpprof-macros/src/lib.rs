//! `#[mpprof::instrument]`, the attribute that records a span around every
//! call of a function.
//!
//! Use it through the `mpprof` crate, which re-exports it and documents it:
//! the code it generates names `::mpprof::__private`, so a crate that uses it
//! depends on `mpprof`.
//!
//! - `lib.rs` (this file): the entry point; checks that the item is a
//!   function that can be instrumented.
//! - `attr.rs`: the attribute's arguments (`name = "..."`).
//! - `expand.rs`: the generated code.

mod attr;
mod expand;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{ForeignItemFn, Item, ItemFn};

use crate::attr::InstrumentArgs;

/// Records a span, named after the function (or `name = "..."`), from each
/// call of the function until it returns or panics. For an `async fn`, each
/// poll of its future is a span on the thread that polled it.
///
/// See the `mpprof` crate for the documentation.
#[proc_macro_attribute]
pub fn instrument(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    instrument2(args.into(), item.into()).into()
}

/// `#[instrument]` on `proc_macro2` tokens, so that unit tests can run it.
fn instrument2(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse2::<InstrumentArgs>(args);
    let function = parse_function(item.clone());
    match (args, function) {
        (Ok(args), Ok(function)) => expand::gen_function(&args, function),
        (args, function) => {
            let mut errors = args.err();
            if let Err(error) = function {
                match &mut errors {
                    Some(first) => first.combine(error),
                    None => errors = Some(error),
                }
            }
            let mut out = errors.map_or_else(TokenStream::new, syn::Error::into_compile_error);
            // Give the item back unchanged so that the only errors are ours,
            // not "cannot find function" at every caller.
            out.extend(item);
            out
        }
    }
}

const NOT_A_FUNCTION: &str = "`#[mpprof::instrument]` can only be applied to functions";
const NO_BODY: &str = "`#[mpprof::instrument]` can only be applied to functions with a body";
const CONST_FN: &str = "`#[mpprof::instrument]` cannot be applied to a `const fn` \
                        (recording is a runtime side effect)";

/// The function that the attribute is on, or an error spanned at what it is
/// on instead.
fn parse_function(item: TokenStream) -> syn::Result<ItemFn> {
    if let Ok(function) = syn::parse2::<ItemFn>(item.clone()) {
        if let Some(constness) = &function.sig.constness {
            return Err(syn::Error::new_spanned(constness, CONST_FN));
        }
        return Ok(function);
    }
    // A declaration in a trait or an `extern` block: `fn f();`.
    if let Ok(declaration) = syn::parse2::<ForeignItemFn>(item.clone()) {
        return Err(syn::Error::new_spanned(declaration.sig, NO_BODY));
    }
    let at = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item_head(&item),
        Err(_) => item,
    };
    Err(syn::Error::new_spanned(at, NOT_A_FUNCTION))
}

/// The tokens that name an item, e.g. `struct Foo` or `impl<T> Trait for
/// Foo<T>`: where an error about the item as a whole points. (An error
/// spanned at tokens covers the first to the last of them.)
fn item_head(item: &Item) -> TokenStream {
    fn span(first: &dyn ToTokens, last: &dyn ToTokens) -> TokenStream {
        let mut tokens = first.to_token_stream();
        last.to_tokens(&mut tokens);
        tokens
    }
    match item {
        Item::Const(i) => span(&i.const_token, &i.ident),
        Item::Enum(i) => span(&i.enum_token, &i.ident),
        Item::ExternCrate(i) => span(&i.extern_token, &i.ident),
        Item::ForeignMod(i) => i.abi.to_token_stream(),
        Item::Impl(i) => span(&i.impl_token, &i.self_ty),
        Item::Macro(i) => match &i.ident {
            Some(ident) => span(&i.mac.path, ident),
            None => i.mac.path.to_token_stream(),
        },
        Item::Mod(i) => span(&i.mod_token, &i.ident),
        Item::Static(i) => span(&i.static_token, &i.ident),
        Item::Struct(i) => span(&i.struct_token, &i.ident),
        Item::Trait(i) => span(&i.trait_token, &i.ident),
        Item::TraitAlias(i) => span(&i.trait_token, &i.ident),
        Item::Type(i) => span(&i.type_token, &i.ident),
        Item::Union(i) => span(&i.union_token, &i.ident),
        Item::Use(i) => span(&i.use_token, &i.semi_token),
        other => other.to_token_stream(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
        let out = instrument2(args, item).to_string();
        out.match_indices("compile_error !")
            .map(|(at, _)| {
                let message = &out[at..];
                let start = message.find('"').unwrap();
                let end = message.find("\" }").unwrap();
                message[start + 1..end].replace("\\\"", "\"")
            })
            .collect()
    }

    #[test]
    fn not_a_function() {
        for item in [
            quote!(
                struct Foo {
                    a: u32,
                }
            ),
            quote!(
                const X: u32 = 1;
            ),
            quote!(
                static X: u32 = 1;
            ),
            quote!(
                mod m {}
            ),
            quote!(impl Foo { fn f() {} }),
            quote!(
                trait T {
                    fn f();
                }
            ),
            quote!(
                enum E {
                    A,
                }
            ),
            quote!(
                type T = u32;
            ),
            quote!(
                use std::io;
            ),
        ] {
            assert_eq!(errors(quote!(), item), [NOT_A_FUNCTION]);
        }
    }

    #[test]
    fn function_without_body() {
        assert_eq!(
            errors(
                quote!(),
                quote!(
                    fn f(&self) -> u32;
                )
            ),
            [NO_BODY]
        );
    }

    #[test]
    fn const_fn() {
        assert_eq!(
            errors(
                quote!(),
                quote!(
                    const fn f() {}
                )
            ),
            [CONST_FN]
        );
        assert_eq!(
            errors(
                quote!(),
                quote!(
                    pub const unsafe fn f() {}
                )
            ),
            [CONST_FN]
        );
    }

    #[test]
    fn bad_arguments_and_bad_item_are_both_reported() {
        assert_eq!(
            errors(
                quote!(foo),
                quote!(
                    struct S;
                )
            ),
            [
                "unknown argument `foo`; expected `name = \"...\"`",
                NOT_A_FUNCTION
            ]
        );
    }

    #[test]
    fn the_item_is_given_back_after_an_error() {
        let out = instrument2(
            quote!(foo),
            quote!(
                fn f() -> u32 {
                    1
                }
            ),
        )
        .to_string();
        assert!(
            out.ends_with(
                &quote!(
                    fn f() -> u32 {
                        1
                    }
                )
                .to_string()
            ),
            "{out}"
        );
    }
}
