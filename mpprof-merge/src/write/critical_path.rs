//! The critical path section of the summary as text.

use std::io::{self, Write};

use super::escape::terminal;
use crate::analysis::critical_path::{CriticalPath, MAX_HOPS};

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Writes the critical path section: the header line
/// (`Critical path: X ms over N segments in M processes`), the segments
/// (times in ms from `origin_ns`) and the top functions by time on the
/// path. `limit` rows per table.
pub fn write(
    cp: &CriticalPath,
    origin_ns: i64,
    out: &mut dyn Write,
    limit: usize,
) -> io::Result<()> {
    writeln!(out, "== critical path ==")?;
    if cp.segments.is_empty() {
        return writeln!(out, "Critical path: none (no events)");
    }
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    writeln!(
        out,
        "Critical path: {:.3} ms over {} {} in {} {}",
        ms(cp.total_ns),
        cp.segments.len(),
        plural(cp.segments.len(), "segment", "segments"),
        cp.processes,
        plural(cp.processes, "process", "processes"),
    )?;
    if cp.has_hops() {
        writeln!(
            out,
            "         the chain of messages that ends at the end of the trace; {:.3} ms in transit between segments",
            ms(cp.transit_ns)
        )?;
    } else {
        writeln!(
            out,
            "         no flow reaches the end of the trace: the critical path is the root process's own timeline"
        )?;
    }
    if cp.truncated {
        writeln!(
            out,
            "         (walk stopped after {MAX_HOPS} hops; the path starts later than it should)"
        )?;
    }
    writeln!(out)?;
    // With resource samples: how much of each segment its thread was on a
    // CPU (the rest it waited: for a CPU, for I/O, for a lock or a message).
    let cpu = cp.segments.iter().any(|s| s.on_cpu_ns.is_some());
    // With the profiler's context switches: how much of it the thread was
    // switched out (waiting), exactly.
    let off = cp.segments.iter().any(|s| s.off_cpu_ns.is_some());
    writeln!(
        out,
        "   start_ms     end_ms     len_ms{}{}  process / thread",
        if cpu { "  on_cpu_ms" } else { "" },
        if off { " off_cpu_ms" } else { "" }
    )?;
    for s in cp.segments.iter().take(limit) {
        let thread = if s.thread.is_empty() {
            format!("lane {}", s.lane)
        } else {
            format!("{} (lane {})", terminal(&s.thread), s.lane)
        };
        let on_cpu = match (cpu, s.on_cpu_ns) {
            (false, _) => String::new(),
            (true, Some(ns)) => format!(" {:>10.3}", ms(ns)),
            (true, None) => format!(" {:>10}", "?"),
        };
        let off_cpu = match (off, s.off_cpu_ns) {
            (false, _) => String::new(),
            (true, Some(ns)) => format!(" {:>10.3}", ms(ns)),
            (true, None) => format!(" {:>10}", "?"),
        };
        writeln!(
            out,
            "{:>11.3} {:>10.3} {:>10.3}{on_cpu}{off_cpu}  {} / {thread}",
            ms(s.start_ns.saturating_sub(origin_ns)),
            ms(s.end_ns.saturating_sub(origin_ns)),
            ms(s.len_ns()),
            terminal(&s.process),
        )?;
    }
    if cp.segments.len() > limit {
        writeln!(out, "   ... {} more", cp.segments.len() - limit)?;
    }
    writeln!(out)?;
    writeln!(out, "   Top functions by critical-path time (self time)")?;
    writeln!(out)?;
    writeln!(
        out,
        "    path_ms      %  process  filename:lineno(function)"
    )?;
    for f in cp.funcs.iter().take(limit) {
        let share = if cp.total_ns > 0 {
            100.0 * f.ns as f64 / cp.total_ns as f64
        } else {
            0.0
        };
        writeln!(
            out,
            "{:>11.3} {share:>6.1}  {}  {}",
            ms(f.ns),
            terminal(&f.process),
            terminal(&f.key.location())
        )?;
    }
    if cp.funcs.len() > limit {
        writeln!(out, "   ... {} more", cp.funcs.len() - limit)?;
    }
    Ok(())
}
