//! Generic functions and methods: type, lifetime and const parameters, where
//! clauses, `impl Trait` arguments, generic impls.
#![deny(warnings)]

use std::fmt::Display;

#[mpprof::instrument]
fn largest<T: PartialOrd + Copy>(items: &[T]) -> T {
    let mut max = items[0];
    for &item in items {
        if item > max {
            max = item;
        }
    }
    max
}

#[mpprof::instrument]
fn longest<'a, 'b: 'a>(a: &'a str, b: &'b str) -> &'a str {
    if a.len() >= b.len() {
        a
    } else {
        b
    }
}

#[mpprof::instrument]
fn sum<const N: usize>(xs: [u32; N]) -> u32 {
    xs.iter().sum()
}

#[mpprof::instrument]
fn show(x: impl Display) -> String {
    x.to_string()
}

#[mpprof::instrument]
fn convert<T, U>(t: T) -> U
where
    T: Into<U>,
{
    t.into()
}

struct Wrapper<T>(T);

impl<T: Clone + Default> Wrapper<T> {
    #[mpprof::instrument]
    fn get(&self) -> T {
        self.0.clone()
    }

    #[mpprof::instrument]
    fn map<U, F: FnOnce(T) -> U>(self, f: F) -> Wrapper<U> {
        Wrapper(f(self.0))
    }

    #[mpprof::instrument]
    fn reset(&mut self) -> T {
        std::mem::take(&mut self.0)
    }
}

fn main() {
    assert_eq!(largest(&[1, 5, 2]), 5);
    assert_eq!(largest(&[1.5, 0.5]), 1.5);
    assert_eq!(longest("ab", "abc"), "abc");
    assert_eq!(sum([1, 2, 3]), 6);
    assert_eq!(show(7), "7");
    let x: u64 = convert(3u32);
    assert_eq!(x, 3);
    let mut w = Wrapper(4);
    assert_eq!(w.get(), 4);
    assert_eq!(w.reset(), 4);
    assert_eq!(Wrapper(2).map(|v| v * 10).0, 20);
}
