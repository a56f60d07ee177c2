//! The workspace's root package: it owns `examples/` and `tests/`. This
//! library only holds what the examples share; its
//! documentation is the README, whose Rust snippets are compiled as doc
//! tests so they stay true.
#![doc = include_str!("../README.md")]

use std::path::Path;

/// Merges the session in `dir` into a Chrome trace at `trace`, prints the
/// summary (`limit` rows per table) to stdout and tells the user where
/// things are on stderr: the last step of every example.
pub fn merge_and_report(
    dir: &Path,
    trace: &Path,
    limit: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let merged = mpprof_merge::Session::open(&[dir])?;
    for (p, e) in &merged.unreadable {
        eprintln!("warning: skipped {}: {e}", p.display());
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(trace)?);
    mpprof_merge::write::chrome::write(&merged, &mut out)?;
    std::io::Write::flush(&mut out)?;
    mpprof_merge::write::summary::write(&merged, &mut std::io::stdout().lock(), limit)?;
    eprintln!();
    eprintln!("session: {}", dir.display());
    eprintln!(
        "trace:   {} ({} processes) -- open it in https://ui.perfetto.dev",
        trace.display(),
        merged.processes.len()
    );
    eprintln!(
        "again:   cargo run -p mpprof-merge -- summary {}",
        dir.display()
    );
    Ok(())
}

/// The value following `flag` on the command line, if any.
pub fn arg_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
