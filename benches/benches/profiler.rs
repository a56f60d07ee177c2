//! What the sampling profiler (`MPPROF_SAMPLE_HZ`) costs a program doing
//! real work: the CPU time of the whole process (every thread: the
//! program's, the kernel's sampling interrupts charged to them, and the
//! sampler thread that copies and unwinds the samples) for the same work,
//! with the profiler off and on, measured in the same run. See
//! docs/PERFORMANCE.md, "Sampling profiler".
//!
//! Two workloads, a unit of work each:
//!
//! - `profiler_cpu`: an instrumented function hashing 64 KiB (about 40 µs
//!   here), CPU-bound, hardly a context switch;
//! - `profiler_ipc`: the same, then a ping-pong with a helper thread over a
//!   pair of pipes (two blocking reads: four context switches a unit, some
//!   35,000 a second): a worst case for anything that acts at each
//!   context switch.
//!
//! Each measurement runs `iters`
//! units in a fresh child process (the bench binary itself, in a role), so
//! each case has its own recording session and environment; the child
//! reports its CPU time from the start of its session to the end of its
//! work, after its session finished (the profiler's final copy included).
//!
//! - `recording`: the session records the spans; no profiler (the
//!   baseline);
//! - `sampling_1khz`: the same with stack samples at 1 kHz and context
//!   switches (`MPPROF_SAMPLE_HZ=1000`);
//! - `sampling_1khz_no_switches`: samples without context switches
//!   (`MPPROF_OFF_CPU=0`);
//! - `switches_only_1hz`: context switches with samples at 1 Hz (nearly
//!   none): the cost of the switch records alone.
//!
//! The "time" criterion reports is process CPU time per unit of work, so
//! `sampling_1khz / recording - 1` is the profiler's overhead.

use std::hint::black_box;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use mpprof_testkit::pipe;

const ROLE: &str = "MPPROF_BENCH_PROFILER_ROLE";

#[mpprof::instrument]
#[inline(never)]
fn hash_block(block: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for &b in block {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The child: `units` units of work in a session (with the ping-pong if
/// `ipc`); prints its CPU time.
fn child(units: u64, ipc: bool) {
    let session = mpprof::init().expect("a session");
    let start = cpu_ns();
    let (mut to_r, mut to_w) = pipe();
    let (mut back_r, mut back_w) = pipe();
    let helper = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while to_r.read_exact(&mut b).is_ok() && b[0] != 0 {
            back_w.write_all(&b).unwrap();
        }
    });
    let block: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
    let mut h = 0;
    let mut b = [1u8; 1];
    for i in 0..units {
        h = hash_block(black_box(&block), h ^ i);
        if ipc {
            to_w.write_all(&[1]).unwrap();
            back_r.read_exact(&mut b).unwrap();
        }
    }
    to_w.write_all(&[0]).unwrap();
    helper.join().unwrap();
    black_box(h);
    drop(session);
    println!("{}", cpu_ns() - start);
}

/// Runs `units` in a child with `env`; its CPU time.
fn run(units: u64, ipc: bool, env: &[(&str, &str)], dir: &std::path::Path) -> Duration {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, format!("{units} {ipc}"))
        .env("MPPROF_DIR", dir)
        .env("MPPROF_SAMPLE_MS", "0")
        .env_remove("MPPROF_SAMPLE_HZ")
        .env_remove("MPPROF_OFF_CPU")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run the child");
    assert!(out.status.success(), "{:?}", out.status);
    let ns: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child's CPU time");
    Duration::from_nanos(ns)
}

fn bench(c: &mut Criterion, ipc: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group(if ipc { "profiler_ipc" } else { "profiler_cpu" });
    g.sampling_mode(SamplingMode::Flat);
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("recording", &[]),
        ("sampling_1khz", &[("MPPROF_SAMPLE_HZ", "1000")]),
        (
            "sampling_1khz_no_switches",
            &[("MPPROF_SAMPLE_HZ", "1000"), ("MPPROF_OFF_CPU", "0")],
        ),
        ("switches_only_1hz", &[("MPPROF_SAMPLE_HZ", "1")]),
    ];
    for (name, env) in cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // A session per measurement: its files go when it is merged
                // by no one; the directory is emptied as we go.
                let sub = dir.path().join(format!("{name}-{iters}"));
                let t = run(iters, ipc, env, &sub);
                let _ = std::fs::remove_dir_all(&sub);
                t
            })
        });
    }
    g.finish();
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let (units, ipc) = role.split_once(' ').expect("units and ipc");
        child(units.parse().expect("a number of units"), ipc == "true");
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c, false);
    bench(&mut c, true);
    c.final_summary();
}
