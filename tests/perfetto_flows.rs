//! The Perfetto protobuf writer on real recordings: the pipeline example's
//! message flows (every arrow has one sending and one receiving end), and
//! async spans and spans left open at exit. Decoded with the writer's own
//! reader (`mpprof_testkit::perfetto`), which also checks the
//! sequence and interning rules.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use common::perfetto as decode;
use common::{child_role, self_command, session_dir};
use mpprof_merge::write::perfetto::field::event as te;
use mpprof_merge::{EventKind, Session};

/// A slice of the decoded trace: a BEGIN paired with its END.
#[derive(Debug)]
struct Slice {
    name: String,
    track: u64,
    begin: u64,
    end: u64,
    end_annotations: Vec<(String, String)>,
}

/// Writes and decodes `s`, checks the invariants Perfetto's importer relies
/// on, and returns the trace and its slices. Every event is on a described
/// track of the right kind; BEGIN/END balance per track, never an END
/// without a BEGIN; flow ids are unique per direction, each terminating id
/// was sent earlier (or at the same time), on a slice-carrying instant.
fn write_and_check(s: &Session) -> (decode::Trace, Vec<Slice>) {
    let mut buf = Vec::new();
    mpprof_merge::write::perfetto::write(s, &mut buf).unwrap();
    let t = decode::trace(&buf).unwrap();
    let tracks: HashMap<u64, &decode::Track> = t.tracks.iter().map(|t| (t.uuid, t)).collect();
    assert_eq!(tracks.len(), t.tracks.len(), "track uuids are unique");
    let mut open: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
    let mut slices = Vec::new();
    let mut sent: HashMap<u64, u64> = HashMap::new();
    let mut received: HashMap<u64, u64> = HashMap::new();
    for e in &t.events {
        let track = tracks
            .get(&e.track_uuid)
            .expect("event on a described track");
        if e.kind == te::TYPE_COUNTER {
            assert!(track.counter && e.counter.is_some(), "{e:?}");
        } else {
            assert!(!track.counter, "{e:?} on a counter track");
        }
        match e.kind {
            te::TYPE_SLICE_BEGIN => open
                .entry(e.track_uuid)
                .or_default()
                .push((e.name.clone().expect("named BEGIN"), e.ts)),
            te::TYPE_SLICE_END => {
                let (name, begin) = open
                    .get_mut(&e.track_uuid)
                    .and_then(Vec::pop)
                    .unwrap_or_else(|| panic!("END without BEGIN: {e:?}"));
                assert!(begin <= e.ts);
                slices.push(Slice {
                    name,
                    track: e.track_uuid,
                    begin,
                    end: e.ts,
                    end_annotations: e.annotations.clone(),
                });
            }
            te::TYPE_INSTANT | te::TYPE_COUNTER => {}
            k => panic!("unexpected type {k}"),
        }
        if !e.flow_ids.is_empty() || !e.terminating_flow_ids.is_empty() {
            assert_eq!(e.kind, te::TYPE_INSTANT, "{e:?}");
            assert!(track.tid.is_some(), "flow endpoint on a thread track");
        }
        for &id in &e.flow_ids {
            assert!(sent.insert(id, e.ts).is_none(), "flow id {id:x} sent twice");
        }
        for &id in &e.terminating_flow_ids {
            assert!(
                received.insert(id, e.ts).is_none(),
                "flow id {id:x} received twice"
            );
            let at = sent
                .get(&id)
                .unwrap_or_else(|| panic!("flow {id:x} received before it was sent"));
            assert!(*at <= e.ts);
        }
    }
    assert!(
        open.values().all(Vec::is_empty),
        "unbalanced slices: {open:?}"
    );
    (t, slices)
}

/// The flow ids the trace sends and the ones it terminates, each sorted.
fn flow_ends(t: &decode::Trace) -> (Vec<u64>, Vec<u64>) {
    let mut sent: Vec<u64> = t.events.iter().flat_map(|e| e.flow_ids.clone()).collect();
    let mut received: Vec<u64> = t
        .events
        .iter()
        .flat_map(|e| e.terminating_flow_ids.clone())
        .collect();
    sent.sort_unstable();
    received.sort_unstable();
    (sent, received)
}

#[test]
fn pipeline_flows_have_one_sending_and_one_receiving_end() {
    let common::ExampleRun { cwd, out } = common::run_example("pipeline");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = common::recorded_session(cwd.path());
    let s = Session::open(&[dir]).unwrap();
    let (t, slices) = write_and_check(&s);

    // Every flow the merge yields is in the trace once per end.
    let (mut outs, mut ins) = (Vec::new(), Vec::new());
    for e in s.events() {
        match e.kind {
            EventKind::FlowOut { flow, .. } => outs.push(mpprof_merge::write::flow_key(flow)),
            EventKind::FlowIn { flow, .. } => ins.push(mpprof_merge::write::flow_key(flow)),
            _ => {}
        }
    }
    let (sent, received) = flow_ends(&t);
    outs.sort_unstable();
    ins.sort_unstable();
    assert_eq!(sent, outs);
    assert_eq!(received, ins);
    // 20 requests, 20 responses, 1 spawn: all matched.
    assert_eq!(sent.len(), 41);
    assert_eq!(
        sent, received,
        "every flow id once in flow_ids and once in terminating_flow_ids"
    );

    // Named like the Chrome writer's host slices, full id kept.
    let count = |name: &str| {
        t.events
            .iter()
            .filter(|e| e.name.as_deref() == Some(name))
            .count()
    };
    assert_eq!((count("send Request"), count("recv Request")), (20, 20));
    assert_eq!((count("send Response"), count("recv Response")), (20, 20));
    assert_eq!((count("send spawn"), count("process start")), (1, 1));
    assert!(t.events.iter().filter(|e| !e.flow_ids.is_empty()).all(|e| e
        .annotations
        .iter()
        .any(|(k, v)| k == "flow_id" && v.len() == 32)));

    // Two processes, each thread described with its process as parent.
    let procs: Vec<_> = t
        .tracks
        .iter()
        .filter(|t| {
            t.process_name
                .as_deref()
                .is_some_and(|n| !n.starts_with("system"))
        })
        .collect();
    assert_eq!(procs.len(), 2, "and the host's system process");
    for th in t.tracks.iter().filter(|t| t.tid.is_some()) {
        let parent = procs
            .iter()
            .find(|p| Some(p.uuid) == th.parent_uuid)
            .expect("thread under a process");
        assert_eq!(parent.pid, th.pid);
    }
    // The client's counter: one track, 20 samples.
    let primes = t
        .tracks
        .iter()
        .find(|t| t.counter && t.name.as_deref() == Some("primes"))
        .expect("primes counter track");
    assert_eq!(
        t.events
            .iter()
            .filter(|e| e.track_uuid == primes.uuid)
            .count(),
        20
    );
    assert_eq!(slices.iter().filter(|s| s.name == "request").count(), 20);
    assert!(slices.iter().all(|s| s.end_annotations.is_empty()));
}

use common::YieldOnce;

#[mpprof::instrument]
async fn pf_travelling(x: u32) -> u32 {
    YieldOnce(false).await;
    x + 1
}

#[mpprof::instrument]
async fn pf_leaked() {
    YieldOnce(false).await;
}

fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn async_spans_get_their_own_tracks_and_open_spans_are_marked_unfinished() {
    child_role("pf-async", || {
        let mut fut = Box::pin(pf_travelling(1));
        assert!(poll_once(fut.as_mut()).is_pending());
        let out = std::thread::spawn(move || match poll_once(fut.as_mut()) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("ready on the second poll"),
        })
        .join()
        .unwrap();
        assert_eq!(out, 2);
        // Polled once and never completed nor dropped: its async span and
        // a plain span are still open when the process exits.
        let mut leaked = Box::pin(pf_leaked());
        assert!(poll_once(leaked.as_mut()).is_pending());
        std::mem::forget(leaked);
        std::mem::forget(mpprof::scope!("left open"));
    });
    let (_dir, s) = common::record(
        "async_spans_get_their_own_tracks_and_open_spans_are_marked_unfinished",
        "pf-async",
    );
    let (t, slices) = write_and_check(&s);
    let tracks: HashMap<u64, &decode::Track> = t.tracks.iter().map(|t| (t.uuid, t)).collect();

    // The travelling future: two poll slices on two thread tracks, and one
    // async slice on a track of its own, named after it, under the process.
    let named = |n: &'static str| slices.iter().filter(move |s| s.name == n);
    let polls: Vec<_> = named("pf_travelling")
        .filter(|s| tracks[&s.track].tid.is_some())
        .collect();
    assert_eq!(polls.len(), 2, "{slices:?}");
    assert_ne!(polls[0].track, polls[1].track);
    let spans: Vec<_> = named("pf_travelling")
        .filter(|s| tracks[&s.track].tid.is_none())
        .collect();
    assert_eq!(spans.len(), 1, "{slices:?}");
    let async_track = tracks[&spans[0].track];
    assert_eq!(async_track.name.as_deref(), Some("pf_travelling"));
    assert!(!async_track.counter && async_track.process_name.is_none());
    assert!(tracks[&async_track.parent_uuid.unwrap()]
        .process_name
        .is_some());
    assert!(spans[0].begin <= polls[0].begin && polls[1].end <= spans[0].end);
    assert!(spans[0].end_annotations.is_empty());

    // Left open: closed at the process end and marked.
    for name in ["pf_leaked", "left open"] {
        let closed: Vec<_> = named(name)
            .filter(|s| s.end_annotations.iter().any(|(k, _)| k == "unfinished"))
            .collect();
        assert_eq!(closed.len(), 1, "{name}: {slices:?}");
    }
    // The leaked future's async span is on its own track.
    assert!(named("pf_leaked").any(|s| tracks[&s.track].tid.is_none()
        && s.end_annotations.iter().any(|(k, _)| k == "unfinished")));
}

#[test]
fn a_killed_process_is_marked_on_its_track_and_its_open_spans() {
    child_role("pf-killed", || {
        let _g = mpprof::scope!("doomed");
        // SAFETY: kill(2) on this very process; nothing to uphold.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        unreachable!("SIGKILL is not caught");
    });
    let dir = session_dir();
    let st = self_command(
        "a_killed_process_is_marked_on_its_track_and_its_open_spans",
        "pf-killed",
        dir.path(),
    )
    .status()
    .unwrap();
    assert!(!st.success());
    let s = Session::open(&[dir.path()]).unwrap();
    let (t, slices) = write_and_check(&s);
    let doomed: Vec<_> = slices.iter().filter(|s| s.name == "doomed").collect();
    assert_eq!(doomed.len(), 1, "{slices:?}");
    let keys: Vec<&str> = doomed[0]
        .end_annotations
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["unfinished", "ended_abruptly"]);
    let process = t.tracks.iter().find(|t| t.process_name.is_some()).unwrap();
    let marker = t
        .events
        .iter()
        .find(|e| e.name.as_deref() == Some("process ended abruptly"))
        .expect("marker");
    assert_eq!(
        (marker.kind, marker.track_uuid),
        (te::TYPE_INSTANT, process.uuid)
    );
    assert_eq!(marker.ts, doomed[0].end);
}

#[mpprof::instrument]
fn pf_child_work() {
    std::thread::sleep(std::time::Duration::from_millis(2));
}

/// The child: its work, then a last event on a thread of its own, after
/// everything on its main thread. The wait's arrow starts there, at the
/// child's last event, not on its first lane.
fn pf_child() {
    pf_child_work();
    std::thread::Builder::new()
        .name("pf-last".into())
        .spawn(|| {
            let _s = mpprof::scope!("last words");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[mpprof::instrument]
fn pf_waiting_parent() {
    let mut c = mpprof::spawn(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([WAIT_TEST, "--exact"])
            .env(common::ROLE, "pf-child")
            .stdout(std::process::Stdio::null()),
    )
    .unwrap();
    assert!(mpprof::wait(&mut c).unwrap().success());
}

const WAIT_TEST: &str = "a_wait_is_an_arrow_from_the_childs_end";

/// `mpprof::wait` records only the receive; the writer adds the send on
/// the child's track at its last event, so the arrow has both ends (and
/// the spawn's arrow too): every flow id once sent, once received.
#[test]
fn a_wait_is_an_arrow_from_the_childs_end() {
    child_role("pf-child", pf_child);
    child_role("pf-parent", pf_waiting_parent);
    let (_dir, s) = common::record(WAIT_TEST, "pf-parent");
    assert_eq!(s.processes.len(), 2);
    let (t, _) = write_and_check(&s);
    let (sent, received) = flow_ends(&t);
    assert_eq!(sent.len(), 2, "the spawn and the wait");
    assert_eq!(sent, received);
    let child = s
        .processes
        .iter()
        .find(|p| {
            p.file
                .info
                .as_ref()
                .is_some_and(|i| i.parent_flow.is_some())
        })
        .unwrap();
    let exit = t
        .events
        .iter()
        .find(|e| e.name.as_deref() == Some("send exit"))
        .expect("the wait's start");
    let tracks: HashMap<u64, &decode::Track> = t.tracks.iter().map(|t| (t.uuid, t)).collect();
    let track = tracks[&exit.track_uuid];
    assert_eq!(track.pid, Some(child.file.pid as i32));
    assert_eq!(
        track.thread_name.as_deref(),
        Some("pf-last"),
        "the arrow starts at the child's last event, on its thread"
    );
}
