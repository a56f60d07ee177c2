//! A long run under the flight-recorder policy: records `N` million events
//! (default 200) with `MPPROF_OVERFLOW=keep-last` and a 64 MiB budget, then
//! reports the file size, the peak resident memory and whether the last
//! events are in the trace.
//!
//! ```text
//! cargo run --release --example flight_recorder -- 200
//! ```

use std::time::Instant;

#[mpprof::instrument]
fn tick(i: u64) -> u64 {
    std::hint::black_box(i ^ 0x5555)
}

#[mpprof::instrument]
fn the_very_last_call() {}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let millions: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    // SAFETY (for the reader): set before any thread exists and before
    // recording starts, which reads them.
    std::env::set_var("MPPROF_OVERFLOW", "keep-last");
    if std::env::var_os("MPPROF_BUFFER_MB").is_none() {
        std::env::set_var("MPPROF_BUFFER_MB", "64");
    }
    let session = mpprof::init()?;
    let dir = session.dir().expect("recording is on").to_owned();
    let calls = millions * 1_000_000 / 2;
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..calls {
        acc ^= tick(i);
    }
    the_very_last_call();
    let secs = t.elapsed().as_secs_f64();
    let hwm = status_kib("VmHWM:");
    drop(session);
    std::hint::black_box(acc);

    let merged = mpprof_merge::Session::open(&[&dir])?;
    let p = &merged.processes[0];
    let size = std::fs::metadata(&p.file.path)?.len();
    let mut last_seen = false;
    let mut kept = 0u64;
    for e in merged.events() {
        if let mpprof_merge::EventKind::Exit { site, .. } = e.kind {
            kept += 1;
            last_seen |= p.site_name(site) == "the_very_last_call";
        }
    }
    println!(
        "events recorded:  {} million in {secs:.1} s ({:.1} ns per event)",
        millions,
        secs * 1e9 / (2 * calls) as f64
    );
    println!(
        "events kept:      {} (the newest), overwritten: {} (counted exactly)",
        p.file.recorded_events(),
        p.file.lost_events
    );
    println!("spans in trace:   {kept}; last call present: {last_seen}");
    println!(
        "buffer file:      {:.1} MiB (budget {} MiB)",
        size as f64 / 1048576.0,
        std::env::var("MPPROF_BUFFER_MB")?
    );
    println!("peak RSS:         {:.1} MiB", hwm as f64 / 1024.0);
    assert!(last_seen && p.file.recorded_events() + p.file.lost_events == 2 * calls + 2);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
