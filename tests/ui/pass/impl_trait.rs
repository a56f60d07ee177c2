//! `-> impl Trait` returns: iterators, closures, and `dyn` boxes.
#![deny(warnings)]

use std::fmt::Debug;

#[mpprof::instrument]
fn evens(limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(|x| x % 2 == 0)
}

#[mpprof::instrument]
fn adder(n: i32) -> impl Fn(i32) -> i32 {
    move |x| x + n
}

#[mpprof::instrument]
fn borrowing<'a>(items: &'a [u8]) -> impl Iterator<Item = &'a u8> + 'a {
    items.iter().rev()
}

#[mpprof::instrument]
fn debug_value(early: bool) -> impl Debug {
    if early {
        return 1;
    }
    2
}

#[mpprof::instrument]
fn boxed(n: usize) -> Box<dyn Iterator<Item = usize>> {
    if n == 0 {
        return Box::new(std::iter::empty());
    }
    Box::new(0..n)
}

fn main() {
    assert_eq!(evens(5).collect::<Vec<_>>(), [0, 2, 4]);
    assert_eq!(adder(2)(3), 5);
    assert_eq!(borrowing(&[1, 2]).copied().collect::<Vec<_>>(), [2, 1]);
    assert_eq!(format!("{:?}", debug_value(true)), "1");
    assert_eq!(boxed(3).count(), 3);
    assert_eq!(boxed(0).count(), 0);
}
