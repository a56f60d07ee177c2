//! `#[mpprof::instrument]` on `async fn`: each poll is a slice on the
//! thread that polled it, and the future's whole life is one async span,
//! even when it moves between threads or is dropped before completion.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use common::child_role;
use mpprof_merge::EventKind;

use common::YieldOnce;

#[mpprof::instrument]
async fn travelling(x: u32) -> u32 {
    YieldOnce(false).await;
    x + 1
}

#[mpprof::instrument]
async fn abandoned() {
    YieldOnce(false).await;
    YieldOnce(false).await;
}

fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn an_async_fn_is_one_async_span_across_threads_and_cancellation() {
    child_role("async", || {
        // Polled first on this thread, then finished on another.
        let mut fut = Box::pin(travelling(41));
        assert!(poll_once(fut.as_mut()).is_pending());
        let out = std::thread::Builder::new()
            .name("second".into())
            .spawn(move || match poll_once(fut.as_mut()) {
                Poll::Ready(v) => v,
                Poll::Pending => panic!("ready on the second poll"),
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(out, 42);
        // Polled once, then dropped (cancelled).
        let mut gone = Box::pin(abandoned());
        assert!(poll_once(gone.as_mut()).is_pending());
        drop(gone);
    });
    let (_dir, s) = common::record(
        "an_async_fn_is_one_async_span_across_threads_and_cancellation",
        "async",
    );
    let p = &s.processes[0];
    let name = |site| p.site_name(site).into_owned();
    let mut begins = Vec::new();
    let mut ends = Vec::new();
    let mut poll_lanes = std::collections::HashMap::<String, Vec<u32>>::new();
    for e in s.events() {
        match e.kind {
            EventKind::AsyncBegin { site, id } => begins.push((name(site), id, e.lane)),
            EventKind::AsyncEnd { site, id } => ends.push((name(site), id, e.lane)),
            EventKind::Enter { site } => poll_lanes.entry(name(site)).or_default().push(e.lane),
            _ => {}
        }
    }
    assert_eq!(begins.len(), 2, "{begins:?}");
    assert_eq!(ends.len(), 2, "{ends:?}");
    let (t_begin, t_end) = (
        &begins[0],
        ends.iter().find(|e| e.0 == "travelling").unwrap(),
    );
    assert_eq!(
        (t_begin.0.as_str(), t_begin.1),
        ("travelling", t_end.1),
        "one async span, same id"
    );
    assert_ne!(
        t_begin.2, t_end.2,
        "it began on one thread and ended on another"
    );
    let polls = &poll_lanes["travelling"];
    assert_eq!(polls.len(), 2, "two polls, each a slice");
    assert_ne!(polls[0], polls[1], "on the thread that polled");
    assert_eq!(poll_lanes["abandoned"].len(), 1);
    assert!(
        ends.iter().any(|e| e.0 == "abandoned"),
        "a dropped future ends its async span"
    );

    // In Chrome JSON: one `b`/`e` pair per future with the same id.
    let evs = common::chrome_events(&s);
    for fut in ["travelling", "abandoned"] {
        let b: Vec<_> = evs
            .iter()
            .filter(|e| e["ph"] == "b" && e["name"] == fut)
            .collect();
        let e: Vec<_> = evs
            .iter()
            .filter(|e| e["ph"] == "e" && e["name"] == fut)
            .collect();
        assert_eq!((b.len(), e.len()), (1, 1), "{fut}");
        assert_eq!(b[0]["id"], e[0]["id"]);
        assert_eq!(b[0]["cat"], e[0]["cat"]);
        assert!(b[0]["ts"].as_f64() <= e[0]["ts"].as_f64());
    }
}
