//! Compile-time behaviour of `#[mpprof::instrument]`, with trybuild:
//! `tests/ui/pass/*.rs` compile and run (every supported kind of function);
//! `tests/ui/fail/*.rs` fail with exactly the errors in their `.stderr`
//! files (regenerate those with `TRYBUILD=overwrite cargo test --test
//! macro_ui`, then read the diff: each error must point at the offending
//! tokens).

#[test]
fn instrument_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
