//! `#[instrument]` on `async fn`: every poll is a slice on the thread that
//! polled it, and the future's whole life (first poll to completion or
//! drop) is one async span, even when polls happen on different threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::callsite::Callsite;
use crate::format::kind;
use crate::record::{self, SpanGuard};

/// A future whose polls are recorded as spans of its callsite, and whose
/// life is recorded as an async span.
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F> {
    cs: &'static Callsite,
    /// Async span id: 0 before the first recorded poll, `u64::MAX` once
    /// ended.
    async_id: u64,
    inner: F,
}

/// Wraps `fut` so each poll and its whole life are recorded.
pub fn instrument_future<F: Future>(cs: &'static Callsite, fut: F) -> Instrumented<F> {
    Instrumented {
        cs,
        async_id: 0,
        inner: fut,
    }
}

/// Ids of async spans, unique in the process.
fn next_async_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Relaxed: only uniqueness matters.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<F> Instrumented<F> {
    fn end(&mut self) {
        if self.async_id != 0 && self.async_id != u64::MAX {
            record::record_with_payload(self.cs.id(), kind::ASYNC_END, [self.async_id, 0]);
        }
        self.async_id = u64::MAX;
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self` (Drop below only touches `cs` and `async_id`), and
        // `Instrumented` is not Unpin unless F is.
        let this = unsafe { self.get_unchecked_mut() };
        if this.async_id == 0 && record::maybe_on() {
            this.async_id = next_async_id();
            record::record_with_payload(this.cs.id(), kind::ASYNC_BEGIN, [this.async_id, 0]);
        }
        let poll = {
            let _g = SpanGuard::enter(this.cs);
            // SAFETY: see above; `this.inner` stays where it is.
            unsafe { Pin::new_unchecked(&mut this.inner) }.poll(cx)
        };
        if poll.is_ready() {
            this.end();
        }
        poll
    }
}

impl<F> Drop for Instrumented<F> {
    /// A future dropped before completion (cancelled) ends its async span
    /// here, on the dropping thread.
    fn drop(&mut self) {
        self.end();
    }
}
