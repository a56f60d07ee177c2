//! mpprof in the Rust ecosystem, on real child processes: `Traced<T>` over
//! a pipe (postcard) and a Unix socket (JSON), the `tracing` layer in a
//! process that only uses `#[tracing::instrument]`, and the tokio example.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;

use common::{child_role, self_command, session_dir, site_name, span_sequence};
use mpprof::Traced;
use mpprof_merge::{EventKind, Session};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Ping {
    n: u32,
    text: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Pong {
    n: u32,
}

const MESSAGES: u32 = 5;

/// Every matched flow of a session as (name, sending process index,
/// receiving process index).
fn flows(s: &Session) -> Vec<(String, usize, usize)> {
    let mut outs = HashMap::new();
    let mut ins = Vec::new();
    for e in s.events() {
        match e.kind {
            EventKind::FlowOut { flow, .. } => {
                outs.insert(flow, (site_name(s, &e).unwrap(), e.proc));
            }
            EventKind::FlowIn { flow, .. } => ins.push((flow, e.proc)),
            _ => {}
        }
    }
    ins.into_iter()
        .map(|(flow, to)| {
            let (name, from) = outs.remove(&flow).expect("flow in without flow out");
            (name, from, to)
        })
        .collect()
}

/// Checks a two-process session: `n` flows named `req` from the parent to
/// the child, `n` named `resp` back, one spawn arrow, and a clean health
/// report (every flow matched, no receive before its send).
fn check_two_way(dir: &std::path::Path, req: &str, resp: &str, n: usize) {
    let s = Session::open(&[dir]).unwrap();
    assert_eq!(s.processes.len(), 2, "{:?}", s.unreadable);
    let fl = flows(&s);
    let spawn: Vec<_> = fl.iter().filter(|f| f.0 == "spawn").collect();
    assert_eq!(spawn.len(), 1, "{fl:?}");
    let (parent, child) = (spawn[0].1, spawn[0].2);
    assert_ne!(parent, child);
    let count = |name: &str, from, to| {
        fl.iter()
            .filter(|f| f.0 == name && f.1 == from && f.2 == to)
            .count()
    };
    assert_eq!(count(req, parent, child), n, "{fl:?}");
    assert_eq!(count(resp, child, parent), n, "{fl:?}");
    assert_eq!(fl.len(), 2 * n + 1, "{fl:?}");
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(
        (
            h.flows_matched,
            h.flows_unmatched_out,
            h.flows_unmatched_in,
            h.causality_violations
        ),
        (2 * n as u64 + 1, 0, 0, 0)
    );
    assert!(!h.imperfect(), "a clean run is reported as clean");
}

// ------------------------------------------------------ postcard over a pipe

fn write_frame(w: &mut impl Write, bytes: &[u8]) {
    w.write_all(&(bytes.len() as u32).to_le_bytes()).unwrap();
    w.write_all(bytes).unwrap();
    w.flush().unwrap();
}

/// Written by the child before its first frame: the test harness of the
/// child (this same binary) prints its own lines on stdout first.
const FRAMES_START: &[u8] = b"<<frames>>";

fn skip_to_frames(r: &mut impl Read) {
    let mut seen = Vec::new();
    let mut b = [0];
    while !seen.ends_with(FRAMES_START) {
        r.read_exact(&mut b)
            .expect("child closed stdout before its frames");
        seen.push(b[0]);
    }
}

fn read_frame(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0; 4];
    r.read_exact(&mut len).ok()?;
    let mut buf = vec![0; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf).unwrap();
    Some(buf)
}

#[mpprof::instrument]
fn postcard_parent(dir: &std::path::Path) {
    let mut child = mpprof::spawn(
        self_command("traced_postcard_over_a_pipe", "postcard-child", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = child.stdout.take().unwrap();
    skip_to_frames(&mut from);
    for n in 0..MESSAGES {
        let msg = Traced::new(Ping {
            n,
            text: format!("ping {n}"),
        });
        write_frame(&mut to, &postcard::to_stdvec(&msg).unwrap());
        let back: Traced<Pong> = postcard::from_bytes(&read_frame(&mut from).unwrap()).unwrap();
        assert_eq!(back.receive(), Pong { n });
    }
    drop(to);
    assert!(child.wait().unwrap().success());
}

#[mpprof::instrument]
fn postcard_child() {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(FRAMES_START).unwrap();
    stdout.flush().unwrap();
    while let Some(frame) = read_frame(&mut stdin) {
        let msg: Traced<Ping> = postcard::from_bytes(&frame).unwrap();
        let ping = msg.receive();
        assert_eq!(ping.text, format!("ping {}", ping.n));
        let reply = Traced::new(Pong { n: ping.n });
        write_frame(&mut stdout, &postcard::to_stdvec(&reply).unwrap());
    }
}

#[test]
fn traced_postcard_over_a_pipe() {
    child_role("postcard-child", postcard_child);
    child_role("postcard-parent", || {
        postcard_parent(std::path::Path::new(&std::env::var("MPPROF_DIR").unwrap()))
    });
    let dir = session_dir();
    let st = self_command("traced_postcard_over_a_pipe", "postcard-parent", dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    check_two_way(dir.path(), "Ping", "Pong", MESSAGES as usize);
}

// ------------------------------------------------- JSON over a Unix socket

#[mpprof::instrument]
fn socket_parent(dir: &std::path::Path, sock: &std::path::Path) {
    let listener = UnixListener::bind(sock).unwrap();
    let mut child = mpprof::spawn(
        self_command("traced_json_over_a_unix_socket", "socket-child", dir)
            .env("MPPROF_TEST_SOCKET", sock),
    )
    .unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
    let mut out = stream;
    for n in 0..MESSAGES {
        let msg = Traced::named(
            "ping",
            Ping {
                n,
                text: "hello".into(),
            },
        );
        serde_json::to_writer(&mut out, &msg).unwrap();
        out.write_all(b"\n").unwrap();
        let line = lines.next().unwrap().unwrap();
        let back: Traced<Pong> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.receive(), Pong { n });
    }
    drop(out);
    drop(lines);
    assert!(child.wait().unwrap().success());
}

#[mpprof::instrument]
fn socket_child() {
    let stream = UnixStream::connect(std::env::var("MPPROF_TEST_SOCKET").unwrap()).unwrap();
    let mut out = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap();
        // JSON carries the flow id as its 32-digit text form.
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["flow"].as_str().unwrap().len(), 32, "{line}");
        let msg: Traced<Ping> = serde_json::from_str(&line).unwrap();
        let ping = msg.receive();
        serde_json::to_writer(&mut out, &Traced::named("pong", Pong { n: ping.n })).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

#[test]
fn traced_json_over_a_unix_socket() {
    child_role("socket-child", socket_child);
    child_role("socket-parent", || {
        socket_parent(
            std::path::Path::new(&std::env::var("MPPROF_DIR").unwrap()),
            std::path::Path::new(&std::env::var("MPPROF_TEST_SOCKET").unwrap()),
        )
    });
    let dir = session_dir();
    // The socket lives outside the session directory, which holds only
    // the processes' files.
    let sockdir = tempfile::tempdir().unwrap();
    let st = self_command(
        "traced_json_over_a_unix_socket",
        "socket-parent",
        dir.path(),
    )
    .env("MPPROF_TEST_SOCKET", sockdir.path().join("s"))
    .status()
    .unwrap();
    assert!(st.success());
    check_two_way(dir.path(), "ping", "pong", MESSAGES as usize);
}

// ---------------------------------------------------------- tracing layer

#[tracing::instrument]
fn t_outer(n: u32) {
    for i in 0..n {
        t_inner(i);
    }
    tracing::info!("outer done");
}

#[tracing::instrument]
fn t_inner(i: u32) {
    tracing::info!("inner {}", i);
    tracing::debug!(answer = 42);
}

#[tracing::instrument]
fn t_threaded() {
    let _s = tracing::info_span!("manual span", k = 1).entered();
    tracing::warn!("from a thread");
}

/// A process that uses only `tracing`: the mpprof layer next to a `fmt`
/// layer (writing to stderr), no `#[mpprof::instrument]`, no `init()`.
fn tracing_only(fields: bool) {
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(mpprof::tracing_layer().with_fields(fields))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .init();
    t_outer(2);
    std::thread::Builder::new()
        .name("helper".into())
        .spawn(t_threaded)
        .unwrap()
        .join()
        .unwrap();
}

/// Runs `tracing_only` in a child, returns its session and its stderr.
fn run_tracing_child(test: &str, role: &str) -> (tempfile::TempDir, Session, String) {
    let dir = session_dir();
    let out = self_command(test, role, dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 1, "{:?}", s.unreadable);
    assert!(s.processes[0].file.clean, "the child exited normally");
    (dir, s, stderr)
}

/// Lanes of process 0: the one of the thread named "helper", and the
/// other one (the test's thread).
fn helper_and_main_lanes(s: &Session) -> (u32, u32) {
    let sampler = s.processes[0].file.sampler_lane();
    let lanes: BTreeMap<String, u32> = s.processes[0]
        .file
        .lanes
        .iter()
        .filter(|(&lane, _)| Some(lane) != sampler)
        .map(|(&lane, l)| (l.name.clone(), lane))
        .collect();
    assert_eq!(lanes.len(), 2, "{lanes:?}");
    let helper = lanes["helper"];
    let main = *lanes.values().find(|&&l| l != helper).unwrap();
    (helper, main)
}

fn instants(s: &Session, lane: u32) -> Vec<String> {
    s.events()
        .filter(|e| e.proc == 0 && e.lane == lane)
        .filter(|e| matches!(e.kind, EventKind::Instant { .. }))
        .map(|e| site_name(s, &e).unwrap())
        .collect()
}

#[test]
fn tracing_layer_records_spans_and_events_in_a_tracing_only_child() {
    let test = "tracing_layer_records_spans_and_events_in_a_tracing_only_child";
    child_role("tracing-only", || tracing_only(false));
    let (_dir, s, stderr) = run_tracing_child(test, "tracing-only");
    // The fmt layer saw the same events: the layers compose.
    assert!(stderr.contains("inner 1"), "{stderr}");
    assert!(stderr.contains("from a thread"), "{stderr}");

    let (helper, main) = helper_and_main_lanes(&s);
    assert_eq!(
        span_sequence(&s, 0, main),
        ["+t_outer", "+t_inner", "-t_inner", "+t_inner", "-t_inner", "-t_outer"]
    );
    let ev = instants(&s, main);
    assert_eq!(ev.len(), 5, "{ev:?}");
    assert_eq!(
        [&ev[0], &ev[2], &ev[4]],
        ["inner 0", "inner 1", "outer done"]
    );
    // An event without a message is named by its callsite.
    assert!(ev[1].starts_with("event tests/ecosystem.rs:"), "{ev:?}");
    assert_eq!(ev[1], ev[3], "one site for both");

    assert_eq!(
        span_sequence(&s, 0, helper),
        ["+t_threaded", "+manual span", "-manual span", "-t_threaded"]
    );
    assert_eq!(instants(&s, helper), ["from a thread"]);

    // Callsites carry the tracing metadata: path target::name, file, line.
    let sites = &s.processes[0].file.sites;
    let outer = sites.values().find(|c| c.name == "t_outer").unwrap();
    assert_eq!(outer.path, "ecosystem::t_outer");
    assert_eq!(outer.file, "tests/ecosystem.rs");
    assert!(outer.line > 0);

    let h = mpprof_merge::analysis::check::check(&s);
    assert!(!h.imperfect(), "a clean run is reported as clean");
}

#[test]
fn tracing_layer_names_spans_with_their_fields_when_asked() {
    let test = "tracing_layer_names_spans_with_their_fields_when_asked";
    child_role("tracing-fields", || tracing_only(true));
    let (_dir, s, _) = run_tracing_child(test, "tracing-fields");
    let (helper, main) = helper_and_main_lanes(&s);
    assert_eq!(
        span_sequence(&s, 0, main),
        [
            "+t_outer{n=2}",
            "+t_inner{i=0}",
            "-t_inner{i=0}",
            "+t_inner{i=1}",
            "-t_inner{i=1}",
            "-t_outer{n=2}"
        ]
    );
    assert_eq!(
        span_sequence(&s, 0, helper),
        [
            "+t_threaded",
            "+manual span{k=1}",
            "-manual span{k=1}",
            "-t_threaded"
        ]
    );
}

// ------------------------------------------------------ the tokio example

#[test]
fn tokio_service_shows_request_and_response_arrows() {
    let common::ExampleRun { cwd, out } = common::run_example("tokio_service");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The fmt layer printed its lines next to the mpprof layer.
    assert!(stderr.contains("server done"), "{stderr}");
    assert!(stderr.contains("client done"), "{stderr}");

    // Chrome JSON: every flow end has its start, and each binds to a slice.
    let v: Value =
        serde_json::from_slice(&std::fs::read(cwd.path().join("trace.json")).unwrap()).unwrap();
    let evs = v["traceEvents"].as_array().unwrap();
    let mut depth: HashMap<(u64, u64), i64> = HashMap::new();
    let mut starts = HashMap::new();
    let mut ends = Vec::new();
    for e in evs {
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap_or(0));
        let d = depth.entry(key).or_default();
        match e["ph"].as_str().unwrap() {
            "B" => *d += 1,
            "E" => *d -= 1,
            "s" => {
                assert!(*d > 0, "flow start outside a slice: {e}");
                starts.insert(e["id"].as_str().unwrap().to_owned(), e);
            }
            "f" => {
                assert!(*d > 0, "flow end outside a slice: {e}");
                ends.push(e);
            }
            _ => {}
        }
    }
    let mut by_name: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for f in &ends {
        let s = starts[f["id"].as_str().unwrap()];
        assert!(s["ts"].as_f64() <= f["ts"].as_f64(), "received before sent");
        by_name
            .entry(f["args"]["flow"].as_str().unwrap().to_owned())
            .or_default()
            .push((s["pid"].as_u64().unwrap(), f["pid"].as_u64().unwrap()));
    }
    let (req, resp) = (&by_name["Req"], &by_name["Resp"]);
    assert_eq!((req.len(), resp.len(), by_name["spawn"].len()), (32, 32, 1));
    let (client, server) = by_name["spawn"][0];
    assert_ne!(client, server);
    assert!(
        req.iter().all(|&x| x == (client, server)),
        "client -> server"
    );
    assert!(
        resp.iter().all(|&x| x == (server, client)),
        "server -> client"
    );

    // Spans from #[tracing::instrument] and #[mpprof::instrument] side by
    // side, and the layer's events (debug level: the fmt layer's INFO
    // filter does not hide them from mpprof).
    // (Slices counted by their `B`: each `E` carries its slice's name too.)
    let named = |name: &str, pid: u64| {
        evs.iter()
            .filter(|e| e["name"] == name && e["pid"].as_u64() == Some(pid) && e["ph"] != "E")
            .count()
    };
    for span in [
        "worker",
        "handle",
        "connection",
        "server_main",
        "count_primes",
    ] {
        assert!(named(span, server) > 0, "{span} in the server");
    }
    for span in ["client", "client_connection", "call"] {
        assert!(named(span, client) > 0, "{span} in the client");
    }
    assert_eq!(named("handling request", server), 32);
    assert_eq!(named("count_primes", server), 32, "one slice per request");

    let dir = common::recorded_session(cwd.path());
    let s = Session::open(&[dir]).unwrap();
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!((h.flows_matched, h.causality_violations), (65, 0));
    assert!(!h.imperfect(), "a clean run is reported as clean");

    // The connections' traced I/O (tokio's AsyncRead/AsyncWrite): each of
    // the 4 connections links the two processes, and what one end wrote
    // the other read, byte for byte.
    let sum = mpprof_merge::analysis::summary::compute(&s);
    let tcp: Vec<_> = sum
        .channel_links
        .iter()
        .filter(|l| l.name.starts_with("tcp 127.0.0.1:"))
        .collect();
    assert_eq!(tcp.len(), 4, "{:?}", sum.channel_links);
    for l in tcp {
        let rows: Vec<&mpprof_merge::analysis::summary::IoRow> = l
            .ends
            .iter()
            .flat_map(|&(pi, ch)| sum.processes[pi].io.iter().filter(move |r| r.channel == ch))
            .collect();
        let bytes = |op: &str, label: &str| {
            rows.iter()
                .filter(|r| r.op == op && r.label == label)
                .map(|r| r.bytes)
                .sum::<u64>()
        };
        assert!(bytes("write", "requests") > 0);
        assert_eq!(
            bytes("write", "requests"),
            bytes("read", "requests"),
            "{rows:?}"
        );
        assert_eq!(
            bytes("write", "responses"),
            bytes("read", "responses"),
            "{rows:?}"
        );
    }
    // Each call a slice of category io.
    assert!(evs
        .iter()
        .any(|e| e["cat"] == "io" && e["name"] == "read tcp requests"));
}
