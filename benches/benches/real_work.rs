//! Slowdown of a function doing about 1 µs of arithmetic when it is
//! instrumented with `#[mpprof::instrument]` and recording is on. See
//! docs/PERFORMANCE.md.
//!
//! Besides the criterion cases, prints the slowdown in percent from an
//! interleaved A/B measurement (alternating rounds, median of the per-round
//! ratios), which is less sensitive to a busy machine than two separate runs.
//!
//! Each case runs two ways: independent calls (each on its own input, so
//! the CPU may overlap the end of one call's chain with the start of the
//! next) and dependent calls (each call's input is the previous call's
//! result, so nothing overlaps). Timestamps limit that overlap; the
//! dependent baseline shows what the recording adds to a call's latency
//! when there is no overlap to lose.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;

/// Rounds of a dependent multiply-rotate-xor chain: about 1 µs here.
const ROUNDS: u32 = 850;

#[inline(always)]
fn arithmetic(x: u64) -> u64 {
    let mut h = black_box(x) | 1;
    for i in 0..ROUNDS {
        h = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)) ^ i as u64;
    }
    h
}

#[inline(never)]
fn work(x: u64) -> u64 {
    arithmetic(x)
}

#[mpprof::instrument]
#[inline(never)]
fn work_instrumented(x: u64) -> u64 {
    arithmetic(x)
}

/// Two bare timestamps around the work and nothing recorded: the floor of
/// any instrumentation that times the call.
#[inline(never)]
fn work_rdtsc(x: u64) -> u64 {
    black_box(mpprof::clock::counter_parts());
    let r = arithmetic(x);
    black_box(mpprof::clock::counter_parts());
    r
}

fn run(iters: u64, f: fn(u64) -> u64) -> Duration {
    let t = Instant::now();
    for i in 0..iters {
        black_box(f(black_box(i)));
    }
    t.elapsed()
}

/// As [`run`], each call taking the previous call's result.
fn run_dependent(iters: u64, f: fn(u64) -> u64) -> Duration {
    let t = Instant::now();
    let mut x = black_box(0u64);
    for _ in 0..iters {
        x = f(x);
    }
    black_box(x);
    t.elapsed()
}

/// A way of calling `f` `iters` times, timed.
type Runner = fn(u64, fn(u64) -> u64) -> Duration;

/// Both ways of calling: independent, then dependent.
const WAYS: [(&str, Runner); 2] = [("independent", run), ("dependent", run_dependent)];

/// Interleaved A/B: alternating rounds of plain calls and calls of `f`,
/// median of the per-round ratios (in test mode, one short round just to
/// run the code).
fn ab(label: &str, f: fn(u64) -> u64) {
    let bench = std::env::args().any(|a| a == "--bench");
    let (rounds, calls) = if bench { (31, 20_000) } else { (1, 100) };
    for (way, run) in WAYS {
        let mut ratios = Vec::with_capacity(rounds);
        let mut plain_ns = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let a = run(calls, work);
            let b = run(calls, f);
            ratios.push(b.as_secs_f64() / a.as_secs_f64());
            plain_ns.push(a.as_secs_f64() * 1e9 / calls as f64);
        }
        ratios.sort_by(f64::total_cmp);
        plain_ns.sort_by(f64::total_cmp);
        let median = ratios[rounds / 2];
        println!(
            "real_work, {label}, {way} calls: plain call {:.0} ns (median); slowdown {:+.2} % \
             (median of the per-round ratios; min {:+.2} %, max {:+.2} %, {} rounds)",
            plain_ns[rounds / 2],
            (median - 1.0) * 100.0,
            (ratios[0] - 1.0) * 100.0,
            (ratios[rounds - 1] - 1.0) * 100.0,
            rounds
        );
    }
}

/// Starts a session in `dir` with the given overflow policy and budget.
fn start(dir: &std::path::Path, policy: &str, budget_mb: &str) -> mpprof::Session {
    std::fs::create_dir(dir).expect("session dir");
    std::env::set_var("MPPROF_DIR", dir);
    std::env::set_var("MPPROF_BUFFER_MB", budget_mb);
    // Explicit: a small budget would otherwise get smaller chunks.
    std::env::set_var("MPPROF_CHUNK_KB", "256");
    std::env::set_var("MPPROF_OVERFLOW", policy);
    mpprof::init().expect("mpprof::init")
}

/// Lost events of the session's process file (keep-last counts what it
/// overwrote as lost).
fn lost(dir: &std::path::Path) -> u64 {
    let files = mpprof_merge::read::list_session(dir).expect("list session");
    let f = mpprof_merge::read::open(&files[0]).expect("read the process file");
    println!(
        "mpprof session {:?}: {} record words, lost events {}",
        f.policy,
        f.committed_records(),
        f.lost_events
    );
    f.lost_events
}

fn main() {
    std::env::remove_var("MPPROF");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Criterion::default().configure_from_args();

    let mut g = c.benchmark_group("real_work");
    g.bench_function("two_rdtsc", |b| b.iter_custom(|n| run(n, work_rdtsc)));
    g.bench_function("two_rdtsc_dependent", |b| {
        b.iter_custom(|n| run_dependent(n, work_rdtsc))
    });
    g.finish();
    ab("two rdtsc, nothing recorded", work_rdtsc);

    // Keep-first (the default): every record goes to a fresh page of the
    // file. About 30 MB a second of records at this call rate; 4 GiB of
    // sparse budget is far more than a run writes.
    let first = dir.path().join("keep-first");
    let session = start(&first, "keep-first", "4096");
    let mut g = c.benchmark_group("real_work");
    g.bench_function("plain", |b| b.iter_custom(|n| run(n, work)));
    g.bench_function("instrumented", |b| {
        b.iter_custom(|n| run(n, work_instrumented))
    });
    g.bench_function("plain_dependent", |b| {
        b.iter_custom(|n| run_dependent(n, work))
    });
    g.bench_function("instrumented_dependent", |b| {
        b.iter_custom(|n| run_dependent(n, work_instrumented))
    });
    g.finish();
    ab("keep-first", work_instrumented);
    drop(session);
    assert_eq!(lost(&first), 0, "events were lost: the numbers are wrong");

    // Keep-last with the smallest budget: the flight recorder cycles
    // through two chunks that stay mapped, so no page faults.
    let last = dir.path().join("keep-last");
    let session = start(&last, "keep-last", "1");
    let mut g = c.benchmark_group("real_work");
    g.bench_function("instrumented_flight_recorder", |b| {
        b.iter_custom(|n| run(n, work_instrumented))
    });
    g.finish();
    ab("keep-last", work_instrumented);
    drop(session);
    lost(&last);

    c.final_summary();
}
