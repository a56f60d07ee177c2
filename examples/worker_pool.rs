//! The classic worker pool: a parent spawns 10 worker processes, each runs
//! `worker_function` (about 10 ms of arithmetic), and the parent waits for
//! them with `mpprof::wait`. A single-process profiler of the parent sees
//! only waiting; mpprof sees the whole tree, with arrows from each spawn to
//! the worker and from each worker's end to the parent's wait, and a
//! critical path that runs through a worker.
//!
//! ```text
//! cargo run --release --example worker_pool
//! ```
//!
//! records the session under `./mpprof-out/`, merges it into `trace.json`
//! (open it in https://ui.perfetto.dev) and prints the summary.

use std::process::Command;
use std::time::{Duration, Instant};

const WORKERS: u32 = 10;

/// About 10 ms of real work (no sleeping: the profile should show CPU time).
#[mpprof::instrument]
fn worker_function(id: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_millis(10);
    let mut x = u64::from(id) + 1;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
    }
    std::hint::black_box(x)
}

#[mpprof::instrument]
fn run_worker(id: u32) {
    let r = worker_function(id);
    std::hint::black_box(r);
}

#[mpprof::instrument]
fn spawn_workers(exe: &std::path::Path) -> std::io::Result<Vec<std::process::Child>> {
    (0..WORKERS)
        .map(|i| mpprof::spawn(Command::new(exe).arg("--worker").arg(i.to_string())))
        .collect()
}

#[mpprof::instrument]
fn wait_for_workers(children: Vec<std::process::Child>) -> std::io::Result<()> {
    for mut c in children {
        let status = mpprof::wait(&mut c)?;
        if !status.success() {
            eprintln!("worker failed: {status}");
        }
    }
    Ok(())
}

#[mpprof::instrument]
fn parent() -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let children = spawn_workers(&exe)?;
    wait_for_workers(children)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(id) = mpprof_workspace::arg_value("--worker") {
        // A child: records into the parent's session without any setup.
        run_worker(id.parse().unwrap_or(0));
        return Ok(());
    }
    let trace = mpprof_workspace::arg_value("--trace").unwrap_or_else(|| "trace.json".into());

    let session = mpprof::init()?;
    let dir = session.dir().map(|d| d.to_owned());
    parent()?;
    drop(session); // finish this process's file before merging

    match dir {
        Some(dir) => mpprof_workspace::merge_and_report(&dir, trace.as_ref(), 15),
        None => {
            eprintln!("recording is off (MPPROF=off): nothing to merge");
            Ok(())
        }
    }
}
