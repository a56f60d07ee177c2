//! What `mpprof::io::Traced` adds to a call: one write of 64 bytes into a
//! pipe and one read of them back, on one thread (no blocking), per
//! iteration. See docs/PERFORMANCE.md, "Traced I/O".
//!
//! - `bare`: the two calls on the pipe's `File`s;
//! - `traced_off`: the same through `Traced` with recording off (the
//!   process decided on its first event, with no `MPPROF_DIR`, not to
//!   record);
//! - `bare_again`: the bare calls again, on `traced_off`'s pipe: the
//!   run's own noise between two measurements of the same thing;
//! - `traced_on`: the same with a session recording (each call: an
//!   `ioctl` for the queue depth, two timestamps, two records).
//!
//! The order is fixed: recording off first, then `mpprof::init()`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Duration;

use criterion::Criterion;
use mpprof::io::Traced;
use mpprof_testkit::pipe;

fn round_trip<R: Read, W: Write>(r: &mut R, w: &mut W, buf: &mut [u8; 64]) {
    w.write_all(black_box(&buf[..])).unwrap();
    r.read_exact(buf).unwrap();
}

#[mpprof::instrument]
fn first_event() {}

/// `IO_CALLS=N`: N round trips of each case outside criterion, for
/// `valgrind --tool=callgrind` (instructions per call, without the noise
/// of the system calls' time); each case in a function of its own.
fn count_mode(n: u64) {
    #[inline(never)]
    fn loop_bare(n: u64, r: &mut std::fs::File, w: &mut std::fs::File) {
        let mut buf = [5u8; 64];
        for _ in 0..n {
            round_trip(r, w, &mut buf);
        }
    }
    #[inline(never)]
    fn loop_traced(n: u64, r: &mut Traced<std::fs::File>, w: &mut Traced<std::fs::File>) {
        let mut buf = [5u8; 64];
        for _ in 0..n {
            round_trip(r, w, &mut buf);
        }
    }
    let (mut r, mut w) = pipe();
    loop_bare(n, &mut r, &mut w);
    first_event();
    let (mut r, mut w) = (Traced::new(r, "bench read"), Traced::new(w, "bench write"));
    loop_traced(n, &mut r, &mut w);
}

fn main() {
    std::env::remove_var("MPPROF_DIR");
    std::env::remove_var("MPPROF");
    std::env::set_var("MPPROF_SAMPLE_MS", "0");
    if let Some(n) = std::env::var("IO_CALLS").ok().and_then(|v| v.parse().ok()) {
        count_mode(n);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut g = c.benchmark_group("io");
    let mut buf = [5u8; 64];
    let (mut r, mut w) = pipe();
    g.bench_function("bare", |b| b.iter(|| round_trip(&mut r, &mut w, &mut buf)));
    // No session: the first event decides that nothing is recorded.
    first_event();
    let (r, w) = pipe();
    let (mut r, mut w) = (Traced::new(r, "bench read"), Traced::new(w, "bench write"));
    g.bench_function("traced_off", |b| {
        b.iter(|| round_trip(&mut r, &mut w, &mut buf))
    });
    // The bare calls again, on the traced case's pipe: how far two
    // measurements of the same thing differ in this run.
    g.bench_function("bare_again", |b| {
        b.iter(|| round_trip(r.get_mut(), w.get_mut(), &mut buf))
    });
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("MPPROF_DIR", dir.path());
    std::env::set_var("MPPROF_OVERFLOW", "keep-last");
    std::env::set_var("MPPROF_BUFFER_MB", "4");
    let session = mpprof::init().expect("mpprof::init");
    g.bench_function("traced_on", |b| {
        b.iter(|| round_trip(&mut r, &mut w, &mut buf))
    });
    g.finish();
    drop(session);
    c.final_summary();
}
