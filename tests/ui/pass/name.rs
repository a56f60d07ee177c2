//! `name = "..."`: plain, raw, with a trailing comma, unicode and escapes.
#![deny(warnings)]

#[mpprof::instrument(name = "load config")]
fn load() -> u32 {
    1
}

#[mpprof::instrument(name = r"raw \ name")]
fn raw() -> u32 {
    2
}

#[mpprof::instrument(name = "trailing comma")]
fn trailing() -> u32 {
    3
}

#[mpprof::instrument(name = "étape \"deux\"\n")]
fn escaped() -> u32 {
    4
}

struct S;

impl S {
    #[mpprof::instrument(name = "S::method")]
    fn method(&self) -> u32 {
        5
    }
}

fn main() {
    assert_eq!(load() + raw() + trailing() + escaped() + S.method(), 15);
}
