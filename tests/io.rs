//! Traced I/O (`mpprof::io::Traced`) between real processes: a producer
//! that fills a pipe faster than its consumer drains it, a TCP ping-pong,
//! and a write into a pipe nobody reads. The summary's channel rows must
//! hold the exact bytes both ends moved, the queue depth must reach the
//! pipe's capacity, and the program must get its errors unchanged.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{child_role, pipe, self_command, session_dir};
use mpprof::io::Traced;
use mpprof_merge::analysis::summary;
use mpprof_merge::{EventKind, Session};

const BLOCK: usize = 64 * 1024;

const BLOCKS: usize = 64;

#[mpprof::instrument]
fn produce(to: &mut Traced<std::process::ChildStdin>) {
    let block = vec![7u8; BLOCK];
    for _ in 0..BLOCKS {
        to.write_all(&block).unwrap();
    }
}

#[mpprof::instrument]
fn consume(from: &mut Traced<std::fs::File>) -> usize {
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0;
    loop {
        // A slow consumer: the pipe fills.
        std::thread::sleep(Duration::from_millis(2));
        match from.read(&mut buf).unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

/// The row of process `pi` for `op` on the channel labelled `label`.
fn row<'a>(s: &'a summary::Summary, pi: usize, label: &str, op: &str) -> &'a summary::IoRow {
    s.processes[pi]
        .io
        .iter()
        .find(|r| r.label == label && r.op == op)
        .unwrap_or_else(|| panic!("{label} {op} in {:?}", s.processes[pi].io))
}

fn process_with(s: &Session, label: &str) -> usize {
    s.processes
        .iter()
        .position(|p| p.file.channels.values().any(|c| c.label == label))
        .unwrap_or_else(|| panic!("a process traced {label}"))
}

#[test]
fn a_fast_producer_fills_the_pipe_and_both_ends_agree_on_the_bytes() {
    const T: &str = "a_fast_producer_fills_the_pipe_and_both_ends_agree_on_the_bytes";
    child_role("consumer", || {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let mut from = Traced::new(std::fs::File::from(fd), "from producer");
        assert_eq!(consume(&mut from), BLOCK * BLOCKS);
    });
    child_role("producer", || {
        let mut child = common::spawn_role(T, "consumer", Stdio::piped());
        let mut to = Traced::new(child.stdin.take().unwrap(), "to consumer");
        assert_eq!(to.kind(), "pipe");
        produce(&mut to);
        drop(to);
        assert!(mpprof::wait(&mut child).unwrap().success());
    });
    let dir = session_dir();
    common::output_ok(&mut self_command(T, "producer", dir.path()));
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 2);
    let sum = summary::compute(&s);
    let (pp, cp) = (
        process_with(&s, "to consumer"),
        process_with(&s, "from producer"),
    );
    let w = row(&sum, pp, "to consumer", "write");
    let r = row(&sum, cp, "from producer", "read");
    eprintln!("{w:?}\n{r:?}");
    // Exactly what was written, on both ends.
    assert_eq!(w.bytes, (BLOCK * BLOCKS) as u64);
    assert_eq!(r.bytes, (BLOCK * BLOCKS) as u64);
    assert_eq!(w.errors + r.errors, 0);
    // The producer waited for room.
    assert!(w.blocked_calls > 0 && w.blocked_ns > 0, "{w:?}");
    // One channel, its two ends in two processes.
    let link = sum
        .channel_links
        .iter()
        .find(|l| l.name.starts_with("pipe"))
        .expect("the pipe links the two");
    let mut procs: Vec<usize> = link.ends.iter().map(|e| e.0).collect();
    procs.sort_unstable();
    let mut want = vec![pp, cp];
    want.sort_unstable();
    assert_eq!(procs, want);

    // The producer's queue depth reached the pipe's capacity.
    let ch = s.processes[pp]
        .file
        .channels
        .values()
        .find(|c| c.label == "to consumer")
        .unwrap();
    assert_eq!(ch.capacity, 65536);
    let depths: Vec<u64> = s
        .events()
        .filter(|e| e.proc == pp)
        .filter_map(|e| match e.kind {
            EventKind::Counter {
                site,
                value: mpprof_merge::CounterValue::UInt(v),
            } if site == ch.depth_site => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(depths.len(), w.calls as usize);
    assert_eq!(
        depths.iter().max().copied(),
        Some(ch.capacity),
        "{depths:?}"
    );
    assert_eq!(depths[0], 0, "empty at first");

    // The calls are slices in the Chrome output, with their bytes.
    let slices: Vec<_> = common::chrome_events(&s)
        .into_iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "io")
        .collect();
    assert_eq!(slices.len() as u64, w.calls + r.calls);
    assert!(slices.iter().any(|e| e["name"] == "write pipe to consumer"
        && e["args"]["bytes"] == BLOCK
        && e["args"]["blocked"] == true));
    // And the summary says so.
    let mut text = Vec::new();
    mpprof_merge::write::summary::write_text(&sum, &mut text, 20).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("I/O by channel"), "{text}");
    assert!(text.contains("== channels between processes"), "{text}");
}

#[mpprof::instrument]
fn ping(s: &mut Traced<std::net::TcpStream>, rounds: usize) {
    let mut b = [0u8; 8];
    for i in 0..rounds {
        s.write_all(&(i as u64).to_le_bytes()).unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), i as u64 + 1);
    }
}

#[mpprof::instrument]
fn pong(s: &mut Traced<std::net::TcpStream>, rounds: usize) {
    let mut b = [0u8; 8];
    for _ in 0..rounds {
        s.read_exact(&mut b).unwrap();
        s.write_all(&(u64::from_le_bytes(b) + 1).to_le_bytes())
            .unwrap();
    }
}

/// A TCP ping-pong between two processes: matched rows on both sides; and
/// a write into a pipe whose reader is gone fails with EPIPE for the
/// program as without tracing, and shows as an error in the table.
#[test]
fn a_socket_ping_pong_matches_both_ends_and_errors_reach_the_program() {
    const T: &str = "a_socket_ping_pong_matches_both_ends_and_errors_reach_the_program";
    const ROUNDS: usize = 100;
    child_role("pong", || {
        let addr = std::env::var("IO_TEST_ADDR").unwrap();
        let mut s = Traced::new(std::net::TcpStream::connect(addr).unwrap(), "to pinger");
        assert_eq!(s.kind(), "tcp");
        pong(&mut s, ROUNDS);
        // A pipe nobody reads any more.
        let (r, w) = pipe();
        drop(r);
        let mut w = Traced::new(w, "closed pipe");
        let e = w.write(b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    });
    child_role("ping", || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([T, "--exact", "--nocapture", "--test-threads=1"])
            .env(common::ROLE, "pong")
            .env("IO_TEST_ADDR", l.local_addr().unwrap().to_string())
            .stdout(Stdio::null());
        let mut child = mpprof::spawn(&mut c).unwrap();
        let (conn, _) = l.accept().unwrap();
        let mut s = Traced::new(conn, "to ponger");
        ping(&mut s, ROUNDS);
        assert!(mpprof::wait(&mut child).unwrap().success());
    });
    let dir = session_dir();
    common::output_ok(&mut self_command(T, "ping", dir.path()));
    let s = Session::open(&[dir.path()]).unwrap();
    let sum = summary::compute(&s);
    let (a, b) = (process_with(&s, "to ponger"), process_with(&s, "to pinger"));
    for (pi, label) in [(a, "to ponger"), (b, "to pinger")] {
        for op in ["read", "write"] {
            let r = row(&sum, pi, label, op);
            assert_eq!((r.bytes, r.errors), (8 * ROUNDS as u64, 0), "{r:?}");
            assert!(r.calls >= ROUNDS as u64, "{r:?}");
        }
    }
    let link = sum
        .channel_links
        .iter()
        .find(|l| l.name.starts_with("tcp 127.0.0.1:"))
        .expect("the connection links the two");
    assert_eq!(link.ends.len(), 2);
    assert!(link.ends.iter().any(|e| e.0 == a) && link.ends.iter().any(|e| e.0 == b));
    // The failed write: an error in the table, with its name.
    let e = row(&sum, b, "closed pipe", "write");
    assert_eq!((e.calls, e.errors, e.bytes), (1, 1, 0));
    assert!(e.error_kinds[0].0.starts_with("Broken pipe"), "{e:?}");
}

/// With recording off the wrapper only passes the calls through.
#[test]
fn without_recording_the_wrapper_is_the_stream() {
    let (mut r, w) = pipe();
    let mut w = Traced::new(w, "plain");
    w.write_all(b"hello").unwrap();
    drop(w);
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
}
