//! Merge throughput: events per second from a real session's buffer files
//! to each output, against the k-way merge alone (`merge/events`, the floor
//! every writer stands on) measured in the same run.
//!
//! The session is recorded once, before measuring, by real child processes
//! (this bench binary run again with `MERGE_BENCH_ROLE` set): a root that
//! spawns `PROCS` workers with `mpprof::spawn` and waits for them with
//! `mpprof::wait`; each worker runs `THREADS` threads making nested
//! instrumented calls, with a counter sample and a flow every 64 calls, so
//! every kind of record the writers handle is there. The files sit in the
//! page cache, so this is the merge's CPU cost, not the disk's. Outputs go
//! to a sink that counts bytes.
//!
//! ```sh
//! cargo bench --bench merge
//! ```
//!
//! Figures and how to read them: docs/PERFORMANCE.md ("Merge").

use std::hint::black_box;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use mpprof_merge::{write, Session};
use mpprof_testkit::Counting;

const ROLE: &str = "MERGE_BENCH_ROLE";
const PROCS: usize = 4;
const THREADS: usize = 2;
/// Outer calls per thread; each makes 3 nested calls (8 events), and every
/// 64th also a counter sample and a flow out and in. Fewer in criterion's
/// test mode (`cargo test --all-targets`, a debug build), which only checks
/// that every case runs.
const CALLS: u64 = 100_000;
const TEST_MODE_CALLS: u64 = 2_000;
/// The calls per thread, passed down to the recording processes.
const CALLS_VAR: &str = "MERGE_BENCH_CALLS";

#[mpprof::instrument]
#[inline(never)]
fn leaf(i: u64) -> u64 {
    black_box(i.wrapping_mul(0x9e37_79b9))
}

#[mpprof::instrument]
#[inline(never)]
fn middle(i: u64) -> u64 {
    leaf(i) ^ leaf(i + 1)
}

#[mpprof::instrument]
#[inline(never)]
fn outer(i: u64) -> u64 {
    let x = middle(i);
    if i & 63 == 0 {
        mpprof::counter!("progress", i as i64);
        let f = mpprof::flow::send("batch");
        mpprof::flow::recv(f, "batch");
    }
    x
}

fn worker() {
    let calls: u64 = std::env::var(CALLS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CALLS);
    let threads: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut x = t;
                for i in 0..calls {
                    x ^= outer(i);
                }
                black_box(x);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
}

fn root() {
    let exe = std::env::current_exe().expect("bench binary path");
    let children: Vec<_> = (0..PROCS)
        .map(|_| {
            mpprof::spawn(std::process::Command::new(&exe).env(ROLE, "worker"))
                .expect("spawn a worker")
        })
        .collect();
    for mut c in children {
        assert!(
            mpprof::wait(&mut c).expect("wait").success(),
            "worker failed"
        );
    }
}

/// Records the session into `dir`: the root is a child process too, so
/// that this process (which measures) records nothing.
fn record(dir: &Path, calls: u64) {
    let status = std::process::Command::new(std::env::current_exe().expect("bench binary path"))
        .env(ROLE, "root")
        .env(CALLS_VAR, calls.to_string())
        .env("MPPROF_DIR", dir)
        .env_remove("MPPROF")
        .status()
        .expect("run the root");
    assert!(status.success(), "the recording failed");
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("root") => {
            let _s = mpprof::init().expect("mpprof::init");
            root();
            return;
        }
        Ok("worker") => return worker(),
        _ => {}
    }
    // Criterion measures when given `--bench` (as `cargo bench` does), and
    // runs each case once otherwise.
    let measuring = std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().expect("temp dir");
    record(dir.path(), if measuring { CALLS } else { TEST_MODE_CALLS });
    let session = Session::open(&[dir.path()]).expect("open the session");
    let events = session.events().count() as u64;
    let bytes = |f: fn(&Session, &mut dyn Write) -> io::Result<mpprof_merge::merge::MergeStats>| {
        let mut out = Counting::default();
        let stats = f(&session, &mut out).expect("write");
        assert_eq!(stats.events, events, "every event written");
        out.0
    };
    println!(
        "session: {} processes, {} events; bytes per event: chrome {:.1}, perfetto {:.1}, folded {:.2}",
        session.processes.len(),
        events,
        bytes(write::chrome::write) as f64 / events as f64,
        bytes(write::perfetto::write) as f64 / events as f64,
        bytes(write::folded::write) as f64 / events as f64,
    );

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(events));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("events", |b| b.iter(|| session.events().count()));
    g.bench_function("perfetto", |b| {
        b.iter(|| write::perfetto::write(&session, &mut Counting::default()).expect("write"))
    });
    g.bench_function("chrome", |b| {
        b.iter(|| write::chrome::write(&session, &mut Counting::default()).expect("write"))
    });
    g.bench_function("summary", |b| {
        b.iter(|| mpprof_merge::analysis::summary::compute(&session))
    });
    g.bench_function("folded", |b| {
        b.iter(|| write::folded::write(&session, &mut Counting::default()).expect("write"))
    });
    g.finish();
    c.final_summary();
}
