//! `#[instrument]` on `async fn`: every poll is a slice on the thread that
//! polled it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::__private::SpanGuard;
use crate::callsite::Callsite;

/// A future whose polls are recorded as spans of its callsite.
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F> {
    cs: &'static Callsite,
    inner: F,
}

/// Wraps `fut` so each poll is recorded.
pub fn instrument_future<F: Future>(cs: &'static Callsite, fut: F) -> Instrumented<F> {
    Instrumented { cs, inner: fut }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self`, `Instrumented` has no Drop impl and is not Unpin unless F is.
        let this = unsafe { self.get_unchecked_mut() };
        let _g = SpanGuard::enter(this.cs);
        // SAFETY: see above; `this.inner` stays where it is.
        unsafe { Pin::new_unchecked(&mut this.inner) }.poll(cx)
    }
}
