//! The arguments of `#[mpprof::instrument(...)]`.
//!
//! The only argument is `name = "display name"`. Each argument is read up to
//! the next top-level comma and then judged on its own, so that every bad
//! argument gets its own error, spanned at that argument.

use proc_macro2::{TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Lit, LitStr, Token};

/// What `#[mpprof::instrument(...)]` was given.
#[derive(Default)]
pub(crate) struct InstrumentArgs {
    /// `name = "..."`: the span's display name, used instead of the
    /// function's identifier.
    pub(crate) name: Option<LitStr>,
}

impl Parse for InstrumentArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = InstrumentArgs::default();
        let mut errors = Errors::default();
        while !input.is_empty() {
            if input.peek(Token![,]) {
                // An empty argument: `(,)` or `(name = "a",,)`.
                let comma: Token![,] = input.parse()?;
                errors.push(syn::Error::new_spanned(comma, EXPECTED));
                continue;
            }
            let mut arg = TokenStream::new();
            while !input.is_empty() && !input.peek(Token![,]) {
                arg.extend([input.parse::<TokenTree>()?]);
            }
            if let Err(error) = args.add(arg) {
                errors.push(error);
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        errors.finish()?;
        Ok(args)
    }
}

/// What a well-formed argument looks like, for error messages.
const EXPECTED: &str = "expected `name = \"...\"`";

impl InstrumentArgs {
    /// Records one argument (the tokens between two top-level commas).
    fn add(&mut self, arg: TokenStream) -> syn::Result<()> {
        let mut tokens = arg.clone().into_iter();
        let key = match tokens.next() {
            Some(TokenTree::Ident(ident)) if ident == "name" => ident,
            Some(TokenTree::Ident(ident)) => {
                return Err(syn::Error::new_spanned(
                    arg,
                    format!("unknown argument `{ident}`; {EXPECTED}"),
                ))
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &arg,
                    format!("unknown argument `{arg}`; {EXPECTED}"),
                ))
            }
        };
        let eq = match tokens.next() {
            Some(TokenTree::Punct(eq)) if eq.as_char() == '=' => eq,
            _ => return Err(syn::Error::new_spanned(arg, EXPECTED)),
        };
        let value: TokenStream = tokens.collect();
        if value.is_empty() {
            return Err(syn::Error::new_spanned(eq, NOT_A_STRING));
        }
        let name = match syn::parse2::<Expr>(value.clone()) {
            Ok(Expr::Lit(ExprLit {
                lit: Lit::Str(name),
                attrs,
            })) if attrs.is_empty() => name,
            _ => return Err(syn::Error::new_spanned(value, NOT_A_STRING)),
        };
        if self.name.is_some() {
            return Err(syn::Error::new_spanned(
                arg,
                format!("duplicate argument `{key}`; it may be given only once"),
            ));
        }
        self.name = Some(name);
        Ok(())
    }
}

const NOT_A_STRING: &str = "`name` must be a string literal";

/// Several errors reported together, so that one build shows them all.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(args: TokenStream) -> syn::Result<InstrumentArgs> {
        syn::parse2(args)
    }

    fn error(args: TokenStream) -> Vec<String> {
        match parse(args) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn no_arguments() {
        assert!(parse(quote!()).unwrap().name.is_none());
    }

    #[test]
    fn name() {
        let args = parse(quote!(name = "load config")).unwrap();
        assert_eq!(args.name.unwrap().value(), "load config");
    }

    #[test]
    fn name_with_trailing_comma_and_raw_string() {
        let args = parse(quote!(name = r"a \ b",)).unwrap();
        assert_eq!(args.name.unwrap().value(), "a \\ b");
    }

    #[test]
    fn unknown_arguments() {
        assert_eq!(
            error(quote!(foo)),
            ["unknown argument `foo`; expected `name = \"...\"`"]
        );
        assert_eq!(
            error(quote!(level = "x")),
            ["unknown argument `level`; expected `name = \"...\"`"]
        );
        assert_eq!(
            error(quote!("x")),
            ["unknown argument `\"x\"`; expected `name = \"...\"`"]
        );
    }

    #[test]
    fn name_must_be_a_string_literal() {
        for args in [
            quote!(name = 42),
            quote!(name = foo),
            quote!(name = b"x"),
            quote!(name = concat!("a", "b")),
            quote!(name =),
        ] {
            assert_eq!(error(args), ["`name` must be a string literal"]);
        }
        assert_eq!(error(quote!(name)), ["expected `name = \"...\"`"]);
    }

    #[test]
    fn duplicate_name() {
        assert_eq!(
            error(quote!(name = "a", name = "b")),
            ["duplicate argument `name`; it may be given only once"]
        );
    }

    #[test]
    fn every_bad_argument_is_reported() {
        assert_eq!(
            error(quote!(foo, name = 1, , bar = 2)),
            [
                "unknown argument `foo`; expected `name = \"...\"`",
                "`name` must be a string literal",
                "expected `name = \"...\"`",
                "unknown argument `bar`; expected `name = \"...\"`",
            ]
        );
    }
}
