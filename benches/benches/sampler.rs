//! What the resource sampler costs: the CPU time its thread uses per
//! sampling interval, next to the floor measured in the same run, a thread
//! that wakes at the same interval and does nothing (on a VM the wake-up
//! itself costs tens of µs). See docs/PERFORMANCE.md, "Resource sampler".
//!
//! The "time" criterion reports for each case is CPU time of one thread
//! per interval of wall time (`iter_custom` returns the thread's
//! `schedstat` on-CPU delta over `iters` intervals), so
//! `sampler / interval` is its share of one core:
//!
//! - `floor_wake`: the do-nothing thread;
//! - `sampler`: this process's sampler while another holds the session's
//!   host lock (what most processes of a tree pay; the bench holds the
//!   lock itself, through a descriptor of its own);
//! - `sampler_host`: the same sampler once it took the host lock, so it
//!   also reads the host every fifth sample (one process per host pays
//!   this);
//! - `sampler_host_20_threads`: the same with 20 more threads, asleep (the
//!   per-thread part).
//!
//! The interval is `MPPROF_SAMPLE_MS` (default 20), read here as by the
//! recorder.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};

fn interval() -> Duration {
    let ms = std::env::var("MPPROF_SAMPLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64);
    Duration::from_millis(ms.max(1))
}

/// On-CPU ns of thread `tid` of this process.
fn on_cpu(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The thread named `name`.
fn thread_named(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| e.file_name().to_str()?.parse().ok())?
    })
}

/// The CPU time thread `tid` uses while `iters` intervals of wall time pass.
fn measure(tid: u32, iters: u64) -> Duration {
    let before = on_cpu(tid);
    std::thread::sleep(interval() * iters as u32);
    Duration::from_nanos(on_cpu(tid) - before)
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// A thread that wakes every interval (absolute deadlines, a timed wait on
/// a condvar, as the sampler does) and does nothing else. Returns its tid.
fn floor_thread(stop: Arc<(Mutex<bool>, Condvar)>) -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let start = Instant::now();
        let (m, cv) = &*stop;
        let mut k = 1u32;
        let mut g = m.lock().unwrap();
        while !*g {
            let deadline = start + interval() * k;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                k += 1;
                continue;
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    });
    rx.recv().unwrap()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let dir = tempfile::tempdir().expect("temp dir");
    std::env::set_var("MPPROF_DIR", dir.path());
    // The host lock, held here first (a known host id names its file).
    std::env::set_var("MPPROF_HOST_ID", "bench");
    let lock = std::fs::File::create(dir.path().join(".host-bench.lock")).expect("lock file");
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(locked, 0, "the bench takes the host lock first");
    let session = mpprof::init().expect("mpprof::init");
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let floor = floor_thread(stop.clone());
    // Let the sampler start.
    std::thread::sleep(interval() * 3);
    let sampler = thread_named("mpprof-sample").expect("the sampler thread runs");

    let mut g = c.benchmark_group("sampler");
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("floor_wake", |b| b.iter_custom(|n| measure(floor, n)));
    g.bench_function("sampler", |b| b.iter_custom(|n| measure(sampler, n)));
    // Let go of the host lock: the sampler takes it at its next host
    // sample.
    drop(lock);
    std::thread::sleep(interval() * 10);
    g.bench_function("sampler_host", |b| b.iter_custom(|n| measure(sampler, n)));
    let sleepers: Vec<_> = (0..20)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (m, cv) = &*stop;
                let mut g = m.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
            })
        })
        .collect();
    g.bench_function("sampler_host_20_threads", |b| {
        b.iter_custom(|n| measure(sampler, n))
    });
    g.finish();
    *stop.0.lock().unwrap() = true;
    stop.1.notify_all();
    for s in sleepers {
        s.join().unwrap();
    }
    drop(session);
    c.final_summary();
}
