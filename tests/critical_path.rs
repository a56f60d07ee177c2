//! The cross-process critical path of the summary, on real recordings
//! whose answer is known: a client sends one request to a server process
//! over a pipe, the server works ~20 ms and replies, the client works
//! ~5 ms more and ends. The path must go through the server's work.
//! Without flows, the path is the root process's own timeline.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{child_role, site_name, ROLE};
use mpprof::flow;
use mpprof_merge::analysis::{self, critical_path};
use mpprof_merge::write::summary;
use mpprof_merge::{EventKind, Session};

const TEST: &str = "critical_path_runs_through_the_servers_work";

#[mpprof::instrument]
fn cp_server_work() {
    std::thread::sleep(Duration::from_millis(20));
}

#[mpprof::instrument]
fn cp_client_finish() {
    std::thread::sleep(Duration::from_millis(5));
}

#[mpprof::instrument]
fn cp_serve() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let tok = line.trim().strip_prefix("req ").expect("a request");
    flow::recv(tok.parse().unwrap(), "request");
    cp_server_work();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "resp {}", flow::send("response")).unwrap();
    out.flush().unwrap();
}

#[mpprof::instrument]
fn cp_client() {
    let mut c = mpprof::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact"])
            .env(ROLE, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .unwrap();
    let mut to = c.stdin.take().unwrap();
    writeln!(to, "req {}", flow::send("request")).unwrap();
    to.flush().unwrap();
    // Skip what the child's test harness prints to stdout (which may
    // share the response's line).
    let line = BufReader::new(c.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|l| l.contains("resp "))
        .expect("a response");
    let tok = line.split("resp ").nth(1).unwrap().trim();
    flow::recv(tok.parse().unwrap(), "response");
    cp_client_finish();
    drop(to);
    assert!(c.wait().unwrap().success());
}

/// Enter and exit times of the (only) span named `name`.
fn span(s: &Session, name: &str) -> (usize, i64, i64) {
    let evs: Vec<_> = s
        .events()
        .filter(|e| site_name(s, e).as_deref() == Some(name))
        .collect();
    let enter = evs
        .iter()
        .find(|e| matches!(e.kind, EventKind::Enter { .. }))
        .expect("enter");
    let exit = evs
        .iter()
        .find(|e| matches!(e.kind, EventKind::Exit { .. }))
        .expect("exit");
    (enter.proc, enter.ts, exit.ts)
}

#[test]
fn critical_path_runs_through_the_servers_work() {
    child_role("server", cp_serve);
    child_role("client", cp_client);
    let (_dir, s) = common::record(TEST, "client");
    assert_eq!(s.processes.len(), 2);
    let root = (0..2)
        .find(|&p| {
            s.processes[p]
                .file
                .info
                .as_ref()
                .is_some_and(|i| i.parent_flow.is_none())
        })
        .expect("a root process");
    let server = 1 - root;

    let cp = critical_path::compute(&s);
    eprintln!("{cp:#?}");
    assert_eq!(cp.root, Some(root));
    assert!(!cp.truncated);
    assert_eq!(cp.processes, 2);
    let segs = &cp.segments;
    assert!(segs.len() >= 3, "client, server, client: {segs:#?}");
    assert!(segs.iter().all(|g| g.start_ns <= g.end_ns));

    // Time order, and each hop is a flow sent at the end of the previous
    // segment, on its lane, and received at the start of the next.
    assert!(segs[0].via.is_none());
    let outs: Vec<_> = s
        .events()
        .filter_map(|e| match e.kind {
            EventKind::FlowOut { flow, .. } => Some((flow, e.proc, e.lane, e.ts)),
            _ => None,
        })
        .collect();
    let ins: Vec<_> = s
        .events()
        .filter_map(|e| match e.kind {
            EventKind::FlowIn { flow, .. } => Some((flow, e.proc, e.lane, e.ts)),
            _ => None,
        })
        .collect();
    for w in segs.windows(2) {
        assert!(w[0].end_ns <= w[1].start_ns, "{w:#?}");
        let (flow, sent) = w[1].via.expect("a hop has a flow");
        assert_eq!(w[0].end_ns, sent.min(w[1].start_ns));
        assert!(outs.contains(&(flow, w[0].proc, w[0].lane, sent)), "{w:#?}");
        assert!(
            ins.contains(&(flow, w[1].proc, w[1].lane, w[1].start_ns)),
            "{w:#?}"
        );
    }

    // It ends at the root's last event and fits in the root's span.
    let last = s.events().filter(|e| e.proc == root).last().unwrap();
    let end = segs.last().unwrap();
    assert_eq!((end.proc, end.lane, end.end_ns), (root, last.lane, last.ts));
    let r = &s.processes[root];
    assert!(cp.total_ns > 0 && cp.total_ns <= r.end_ns - r.start_ns);
    assert_eq!(cp.total_ns, cp.end_ns() - cp.start_ns());

    // A server segment covers the server's work, which tops the path.
    let (wp, w0, w1) = span(&s, "cp_server_work");
    assert_eq!(wp, server);
    assert!(
        segs.iter()
            .any(|g| g.proc == server && g.start_ns <= w0 && w1 <= g.end_ns),
        "{segs:#?}"
    );
    let top = &cp.funcs[0];
    assert!(top.key.label.ends_with("cp_server_work"), "{:#?}", cp.funcs);
    assert_eq!(top.proc, server);
    assert!(top.ns >= 15_000_000 && top.ns < cp.total_ns, "{top:?}");
    assert_eq!(top.ns, cp.func_ns("cp_server_work"));
    // The client's final work is on the path too, in the client.
    let fin = cp
        .funcs
        .iter()
        .find(|f| f.key.label.ends_with("cp_client_finish"))
        .expect("cp_client_finish on the path");
    assert_eq!(fin.proc, root);
    assert!(fin.ns >= 4_000_000, "{fin:?}");
    // Attribution never exceeds the time in segments.
    let in_segments: i64 = segs.iter().map(|g| g.len_ns()).sum();
    assert_eq!(cp.funcs.iter().map(|f| f.ns).sum::<i64>(), in_segments);
    assert_eq!(cp.transit_ns, cp.total_ns - in_segments);

    // The summary carries the same path and prints the section.
    let sum = analysis::summary::compute(&s);
    assert_eq!(sum.critical_path, cp);
    let mut text = Vec::new();
    summary::write_text(&sum, &mut text, 30).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("== critical path =="), "{text}");
    let header = text
        .lines()
        .find(|l| l.starts_with("Critical path: "))
        .expect("header line");
    assert!(header.ends_with("segments in 2 processes"), "{header}");
    assert!(text.contains("cp_server_work"), "{text}");
    assert!(text.contains("== whole process tree: 2 processes =="));
}

#[mpprof::instrument]
fn cp_alone_inner() {
    std::thread::sleep(Duration::from_millis(2));
}

#[mpprof::instrument]
fn cp_alone() {
    cp_alone_inner();
    cp_alone_inner();
}

#[test]
fn critical_path_without_flows_is_the_roots_timeline() {
    child_role("alone", cp_alone);
    let (_dir, s) = common::record("critical_path_without_flows_is_the_roots_timeline", "alone");
    assert_eq!(s.processes.len(), 1);
    let cp = critical_path::compute(&s);
    assert_eq!(cp.root, Some(0));
    assert_eq!(cp.segments.len(), 1, "{cp:#?}");
    assert_eq!(cp.processes, 1);
    let g = &cp.segments[0];
    assert!(g.via.is_none());
    let lane: Vec<_> = s.events().filter(|e| e.lane == g.lane).collect();
    assert_eq!(g.start_ns, lane.first().unwrap().ts);
    let last = s.events().last().unwrap();
    assert_eq!((g.lane, g.end_ns), (last.lane, last.ts));
    assert_eq!(cp.transit_ns, 0);
    assert!(cp.func_ns("cp_alone_inner") >= 4_000_000, "{:#?}", cp.funcs);

    let mut text = Vec::new();
    summary::write(&s, &mut text, 30).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("Critical path: ") && text.contains("over 1 segment in 1 process"),
        "{text}"
    );
    assert!(text.contains("root process's own timeline"), "{text}");
}

const WAIT_TEST: &str = "critical_path_goes_through_the_child_a_parent_waits_for";

/// A worker's work: `CP_WORK_MS` milliseconds.
#[mpprof::instrument]
fn cp_worker_work() {
    let ms = std::env::var("CP_WORK_MS").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(ms));
}

/// Spawns a quick worker (5 ms) and a slow one (40 ms) and waits for both
/// with `mpprof::wait`: the parent's end depends on the slow one's.
#[mpprof::instrument]
fn cp_waiting_parent() {
    let start = |ms: &str| {
        mpprof::spawn(
            Command::new(std::env::current_exe().unwrap())
                .args([WAIT_TEST, "--exact"])
                .env(ROLE, "worker")
                .env("CP_WORK_MS", ms)
                .stdout(Stdio::null()),
        )
        .unwrap()
    };
    let mut quick = start("5");
    let mut slow = start("40");
    assert!(mpprof::wait(&mut quick).unwrap().success());
    assert!(mpprof::wait(&mut slow).unwrap().success());
}

/// `mpprof::wait` records the end of a flow from the child's last event, so
/// the critical path crosses from the parent's wait into the slow worker,
/// and `check` counts the waits as matched flows.
#[test]
fn critical_path_goes_through_the_child_a_parent_waits_for() {
    child_role("worker", cp_worker_work);
    child_role("parent", cp_waiting_parent);
    let (_dir, s) = common::record(WAIT_TEST, "parent");
    assert_eq!(s.processes.len(), 3);
    let slow = (0..3)
        .find(|&p| {
            s.events().any(|e| {
                e.proc == p
                    && site_name(&s, &e).as_deref() == Some("cp_worker_work")
                    && matches!(e.kind, EventKind::Exit { .. })
                    && s.events()
                        .filter(|x| x.proc == p)
                        .any(|x| x.ts + 30_000_000 < e.ts)
            })
        })
        .expect("the slow worker");
    let cp = critical_path::compute(&s);
    assert_eq!(cp.processes, 2, "{cp:#?}");
    let top = &cp.funcs[0];
    assert!(top.key.label.ends_with("cp_worker_work"), "{:#?}", cp.funcs);
    assert_eq!(top.proc, slow);
    assert!(top.ns >= 30_000_000, "{top:?}");
    // The hop into the worker is the exit flow of the worker's spawn.
    let spawn_flow = s.processes[slow].file.info.as_ref().unwrap().parent_flow;
    assert!(
        cp.segments
            .iter()
            .any(|g| g.via.map(|v| v.0) == spawn_flow.map(|f| f.child_exit())),
        "{cp:#?}"
    );
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(h.flows_unmatched_in, 0);
    assert_eq!(h.flows_unmatched_out, 0);
    assert_eq!(h.flows_matched, 4, "two spawns and two waits");
    assert_eq!(h.causality_violations, 0);
}
