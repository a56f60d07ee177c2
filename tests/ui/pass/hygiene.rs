//! The expansion uses absolute paths and hygienic names: it works under
//! `no_implicit_prelude`, next to user items that shadow `core`, `std` or the
//! prelude, and with user bindings named like the generated ones.
#![deny(warnings)]
#![allow(non_camel_case_types)]

mod no_prelude {
    #![no_implicit_prelude]

    #[::mpprof::instrument]
    pub fn f(x: u32) -> ::core::option::Option<u32> {
        ::core::option::Option::Some(x)
    }
}

mod shadowing {
    #[allow(dead_code)]
    pub struct file;
    #[allow(dead_code)]
    pub struct line;
    #[allow(dead_code)]
    pub struct Callsite;
    #[allow(dead_code)]
    pub struct SpanGuard;
    #[allow(dead_code)]
    pub struct Option;

    #[mpprof::instrument]
    pub fn g() -> u32 {
        let __mpprof_guard = 4;
        __mpprof_guard
    }
}

fn main() {
    assert_eq!(no_prelude::f(1), Some(1));
    assert_eq!(shadowing::g(), 4);
}
