//! `async fn`: free, generic, methods with `&self`, `&mut self` and `self`,
//! early `return`, `?`, a borrowed return, an `impl Trait` return, and a trait
//! method. Driven by a minimal executor.
#![deny(warnings)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

fn block_on<F: Future>(fut: F) -> F::Output {
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions do nothing and never read the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Pending once, then ready: makes the instrumented future be polled twice.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[mpprof::instrument]
async fn add(a: u32, b: u32) -> u32 {
    YieldOnce(false).await;
    a + b
}

#[mpprof::instrument(name = "parse two")]
async fn parse_two(a: &str, b: &str) -> Result<u32, std::num::ParseIntError> {
    let a: u32 = a.parse()?;
    YieldOnce(false).await;
    let b: u32 = b.parse()?;
    Ok(a + b)
}

#[mpprof::instrument]
async fn generic<T: std::fmt::Debug + Send>(t: T) -> String {
    format!("{t:?}")
}

#[mpprof::instrument]
async fn first<'a>(xs: &'a [u32]) -> Option<&'a u32> {
    xs.first()
}

#[mpprof::instrument]
async fn boxed(n: usize) -> Box<dyn Iterator<Item = usize>> {
    if n == 0 {
        return Box::new(std::iter::empty());
    }
    Box::new(0..n)
}

#[mpprof::instrument]
async fn opaque() -> impl std::fmt::Display {
    42
}

struct Service {
    ready: bool,
    calls: u32,
}

impl Service {
    #[mpprof::instrument]
    async fn status(&self) -> &'static str {
        if !self.ready {
            return "not ready";
        }
        YieldOnce(false).await;
        "ready"
    }

    #[mpprof::instrument]
    async fn call(&mut self) -> Result<u32, String> {
        if !self.ready {
            return Err("not ready".to_string());
        }
        self.calls += 1;
        Ok(self.calls)
    }

    #[mpprof::instrument]
    async fn shutdown(self) -> u32 {
        self.calls
    }
}

trait Handler {
    async fn handle(&self, x: u32) -> u32;
}

impl Handler for Service {
    #[mpprof::instrument]
    async fn handle(&self, x: u32) -> u32 {
        x + self.calls
    }
}

fn main() {
    assert_eq!(block_on(add(1, 2)), 3);
    assert_eq!(block_on(parse_two("1", "2")), Ok(3));
    assert!(block_on(parse_two("1", "x")).is_err());
    assert_eq!(block_on(generic(5)), "5");
    assert_eq!(block_on(first(&[7, 8])), Some(&7));
    assert_eq!(block_on(boxed(2)).count(), 2);
    assert_eq!(block_on(opaque()).to_string(), "42");
    let mut s = Service {
        ready: false,
        calls: 0,
    };
    assert_eq!(block_on(s.status()), "not ready");
    assert!(block_on(s.call()).is_err());
    s.ready = true;
    assert_eq!(block_on(s.status()), "ready");
    assert_eq!(block_on(s.call()), Ok(1));
    assert_eq!(block_on(s.handle(1)), 2);
    assert_eq!(block_on(s.shutdown()), 1);
}
