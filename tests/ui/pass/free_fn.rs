//! Free functions: plain, public, with attributes around the macro, with inner
//! attributes and items in the body, diverging, and `main` itself.
#![deny(warnings)]

use mpprof::instrument;

#[mpprof::instrument]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[inline]
#[instrument]
#[must_use]
pub fn double(x: u64) -> u64 {
    x * 2
}

#[mpprof::instrument]
fn unit() {}

#[mpprof::instrument]
fn with_items(x: u32) -> u32 {
    #![allow(clippy::items_after_statements)]
    use std::ops::Add;
    const ONE: u32 = 1;
    fn helper(y: u32) -> u32 {
        y.add(ONE)
    }
    let z = helper(x);
    fn late() -> u32 {
        3
    }
    z + late()
}

#[mpprof::instrument]
fn r#match(x: u32) -> bool {
    x == 1
}

#[mpprof::instrument]
#[allow(unreachable_code)]
fn diverges() -> ! {
    std::process::exit(0);
}

#[mpprof::instrument]
fn mutable_args(mut v: Vec<u32>, (a, b): (u32, u32)) -> Vec<u32> {
    v.push(a);
    v.push(b);
    v
}

#[mpprof::instrument]
fn main() {
    assert_eq!(add(1, 2), 3);
    assert_eq!(double(4), 8);
    unit();
    assert_eq!(with_items(1), 5);
    assert!(r#match(1));
    assert_eq!(mutable_args(vec![0], (1, 2)), [0, 1, 2]);
    if add(0, 0) == 1 {
        diverges();
    }
}
