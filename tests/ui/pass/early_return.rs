//! Early `return`, `?` on `Result` and `Option`, and `break` out of loops.
#![deny(warnings)]

use std::num::ParseIntError;

#[mpprof::instrument]
fn classify(x: i32) -> &'static str {
    if x < 0 {
        return "negative";
    }
    if x == 0 {
        return "zero";
    }
    "positive"
}

#[mpprof::instrument]
fn parse_sum(a: &str, b: &str) -> Result<i64, ParseIntError> {
    let a: i64 = a.parse()?;
    let b: i64 = b.parse()?;
    Ok(a + b)
}

#[derive(Debug)]
struct MyError;

impl From<ParseIntError> for MyError {
    fn from(_: ParseIntError) -> Self {
        MyError
    }
}

#[mpprof::instrument]
fn parse_converted(a: &str) -> Result<u8, MyError> {
    Ok(a.parse::<u8>()?)
}

#[mpprof::instrument]
fn boxed_error(a: &str) -> Result<u8, Box<dyn std::error::Error>> {
    if a.is_empty() {
        return Err("empty".into());
    }
    Ok(a.parse()?)
}

#[mpprof::instrument]
fn first_even(xs: &[u32]) -> Option<u32> {
    let first = *xs.first()?;
    for &x in xs {
        if x % 2 == 0 {
            return Some(x);
        }
    }
    Some(first)
}

#[mpprof::instrument]
fn find(xs: &[u32], wanted: u32) -> Option<usize> {
    let mut i = 0;
    let found = loop {
        if i == xs.len() {
            break None;
        }
        if xs[i] == wanted {
            break Some(i);
        }
        i += 1;
    };
    found
}

fn main() {
    assert_eq!(classify(-1), "negative");
    assert_eq!(classify(0), "zero");
    assert_eq!(classify(1), "positive");
    assert_eq!(parse_sum("1", "2"), Ok(3));
    assert!(parse_sum("x", "2").is_err());
    assert!(parse_converted("300").is_err());
    assert_eq!(parse_converted("3").unwrap(), 3);
    assert!(boxed_error("").is_err());
    assert_eq!(boxed_error("4").unwrap(), 4);
    assert_eq!(first_even(&[1, 3, 4]), Some(4));
    assert_eq!(first_even(&[]), None);
    assert_eq!(find(&[1, 2, 3], 3), Some(2));
}
