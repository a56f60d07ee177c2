//! The cProfile-style summary as text: the whole tree, each process, the
//! threads that lost events, then the critical path.

use std::io::{self, Write};

use super::escape::terminal;
use crate::analysis::summary::{self, FuncKey, FuncStats, Summary};
use crate::trace::Session;

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn table(out: &mut dyn Write, funcs: &[(FuncKey, FuncStats)], limit: usize) -> io::Result<()> {
    // With resource samples: the share of cumtime on a CPU and waiting for
    // one (the rest: blocked or sleeping).
    let cpu = funcs.iter().any(|f| f.1.sampled_ns > 0);
    // With the profiler's context switches: the share of cumtime switched
    // out (blocked, sleeping, or preempted), exact.
    let off = funcs.iter().any(|f| f.1.profiled_ns > 0);
    writeln!(
        out,
        "   ncalls  tottime  percall  cumtime  percall {}{}filename:lineno(function)",
        if cpu { "  cpu%  runq% " } else { "" },
        if off { " offcpu% " } else { "" }
    )?;
    for (k, s) in funcs.iter().take(limit) {
        let ncalls = if s.ncalls == s.primitive {
            s.ncalls.to_string()
        } else {
            format!("{}/{}", s.ncalls, s.primitive)
        };
        let per_tot = secs(s.tottime_ns) / s.ncalls.max(1) as f64;
        let per_cum = secs(s.cumtime_ns) / s.primitive.max(1) as f64;
        let mark = if s.unfinished > 0 {
            format!("  [{} unfinished]", s.unfinished)
        } else {
            String::new()
        };
        let split = match (cpu, s.sampled_ns) {
            (false, _) => String::new(),
            (true, 0) => format!("{:>6} {:>6} ", "?", "?"),
            (true, n) => format!(
                "{:>6.1} {:>6.1} ",
                100.0 * s.on_cpu_ns as f64 / n as f64,
                100.0 * s.run_wait_ns as f64 / n as f64
            ),
        };
        let off = match (off, s.profiled_ns) {
            (false, _) => String::new(),
            (true, 0) => format!("{:>8} ", "?"),
            (true, n) => format!("{:>8.1} ", 100.0 * s.off_cpu_ns as f64 / n as f64),
        };
        writeln!(
            out,
            "{ncalls:>9} {:>8.3} {per_tot:>8.3} {:>8.3} {per_cum:>8.3} {split}{off}{}{mark}",
            secs(s.tottime_ns),
            secs(s.cumtime_ns),
            terminal(&k.location())
        )?;
    }
    if funcs.len() > limit {
        writeln!(out, "   ... {} more", funcs.len() - limit)?;
    }
    Ok(())
}

fn header(
    out: &mut dyn Write,
    title: &str,
    funcs: &[(FuncKey, FuncStats)],
    wall_ns: i64,
) -> io::Result<()> {
    let calls: u64 = funcs.iter().map(|f| f.1.ncalls).sum();
    let prim: u64 = funcs.iter().map(|f| f.1.primitive).sum();
    writeln!(out, "{title}")?;
    if calls == prim {
        writeln!(
            out,
            "         {calls} function calls in {:.3} seconds (wall)",
            secs(wall_ns)
        )?;
    } else {
        writeln!(
            out,
            "         {calls} function calls ({prim} primitive calls) in {:.3} seconds (wall)",
            secs(wall_ns)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "   Ordered by: cumulative time")?;
    writeln!(out)
}

/// Writes the summary as text: the whole tree first, then each process,
/// then the critical path.
/// `limit` rows per table.
pub fn write_text(s: &Summary, out: &mut dyn Write, limit: usize) -> io::Result<()> {
    header(
        out,
        &format!("== whole process tree: {} processes ==", s.processes.len()),
        &s.tree,
        s.wall_ns,
    )?;
    table(out, &s.tree, limit)?;
    if let Some(t) = &s.tree_samples {
        samples(out, "whole tree", t, limit)?;
    }
    for w in &s.symbol_warnings {
        writeln!(out, "   warning: {}", terminal(w))?;
    }
    resources(s, out, limit)?;
    for p in &s.processes {
        writeln!(out)?;
        let end = if p.clean { "" } else { " [ended abruptly]" };
        header(
            out,
            &format!("== {}{end} ==", terminal(&p.name)),
            &p.funcs,
            p.wall_ns,
        )?;
        table(out, &p.funcs, limit)?;
        if let Some(t) = &p.samples {
            samples(out, "this process", t, limit)?;
        }
        if !p.io.is_empty() {
            io(out, &p.io, limit)?;
        }
        if let Some(rows) = &p.syscalls {
            syscalls(out, rows, limit)?;
        }
        if let Some(e) = &p.syscalls_error {
            writeln!(out)?;
            writeln!(out, "   No system calls traced: {}", terminal(e))?;
        }
        let l = &p.losses;
        if !l.lanes.is_empty() || l.unattributed > 0 {
            writeln!(out)?;
            writeln!(out, "   Lost events by thread:")?;
            super::losses(out, "     ", l, limit)?;
        }
        if p.lost_meta > 0 {
            writeln!(out)?;
            writeln!(
                out,
                "   Lost {} metadata entries: callsites without a name show as #<id>",
                p.lost_meta
            )?;
        }
    }
    if !s.channel_links.is_empty() {
        links(s, out)?;
    }
    for n in &s.no_space {
        writeln!(out)?;
        writeln!(out, "== {} ==", terminal(n))?;
    }
    writeln!(out)?;
    super::critical_path::write(&s.critical_path, s.origin_ns, out, limit)?;
    let st = &s.stats;
    if st.closed_spans + st.unmatched_exits + st.bad_records + st.unreadable_chunks > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "note: {} spans closed by the merge (unfinished), {} exits without entry dropped, {} malformed records skipped, {} chunks unreadable",
            st.closed_spans, st.unmatched_exits, st.bad_records, st.unreadable_chunks
        )?;
    }
    Ok(())
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

/// The process table (like top) and each host's section (like vmstat and
/// iostat), when the session has resource samples.
fn resources(s: &Summary, out: &mut dyn Write, limit: usize) -> io::Result<()> {
    let rows: Vec<(&str, &summary::ProcessRow)> = s
        .processes
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.resources.as_ref()?)))
        .filter(|(_, r)| r.samples > 0)
        .collect();
    if !rows.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "== processes (like top: CPU % over the sampled time, 100 = one core; totals for each process's life) =="
        )?;
        writeln!(
            out,
            "     pid   CPU%   user_s    sys_s  peakRSS_MiB   minflt  majflt     vcsw    ivcsw  disk_rd_MiB  disk_wr_MiB  rd_calls_MiB  wr_calls_MiB  thr  sampled_s  name"
        )?;
        let f = |v: Option<f64>, scale: f64, w: usize, prec: usize| match v {
            Some(v) => format!("{:>w$.prec$}", v * scale),
            None => format!("{:>w$}", "-"),
        };
        for (name, r) in rows.iter().take(limit) {
            writeln!(
                out,
                "{:>8} {} {} {} {} {} {} {} {} {} {} {} {} {} {:>10.3}  {}",
                r.pid,
                f(r.cpu_pct, 1.0, 6, 1),
                f(r.user_ns, 1e-9, 8, 3),
                f(r.system_ns, 1e-9, 8, 3),
                f(r.peak_rss.map(mib), 1.0, 12, 1),
                f(r.faults.map(|x| x.0), 1.0, 8, 0),
                f(r.faults.map(|x| x.1), 1.0, 7, 0),
                f(r.switches.map(|x| x.0), 1.0, 8, 0),
                f(r.switches.map(|x| x.1), 1.0, 8, 0),
                f(r.storage.map(|x| mib(x.0)), 1.0, 12, 1),
                f(r.storage.map(|x| mib(x.1)), 1.0, 12, 1),
                f(r.calls.map(|x| mib(x.0)), 1.0, 13, 1),
                f(r.calls.map(|x| mib(x.1)), 1.0, 13, 1),
                f(r.threads, 1.0, 4, 0),
                secs(r.sampled_ns),
                terminal(name)
            )?;
        }
        if rows.len() > limit {
            writeln!(out, "   ... {} more", rows.len() - limit)?;
        }
        let samples: usize = rows.iter().map(|r| r.1.samples).sum();
        let cost: f64 = rows.iter().filter_map(|r| r.1.sampler_cpu_ns).sum();
        let span: i64 = rows
            .iter()
            .fold(0i64, |a, r| a.saturating_add(r.1.sampled_ns));
        let interval = rows.iter().map(|r| r.1.interval_ns).max().unwrap_or(0);
        writeln!(
            out,
            "   sampler: {samples} samples every {:.0} ms; its own CPU time {:.3} ms over {:.3} s of process time ({:.3} % of one core, its start included: 0.1-0.2 ms a process, which weighs on short ones)",
            interval as f64 / 1e6,
            cost / 1e6,
            secs(span),
            if span > 0 { 100.0 * cost / span as f64 } else { 0.0 }
        )?;
    }
    for h in &s.hosts {
        writeln!(out)?;
        writeln!(
            out,
            "== {} (like vmstat and iostat: mean over the sampled time, and peak) ==",
            terminal(&h.name)
        )?;
        writeln!(out, "   {:<32} {:>12} {:>12}", "track", "mean", "peak")?;
        for (name, mean, peak) in h.rows.iter().take(limit.max(40)) {
            writeln!(out, "   {:<32} {mean:>12.2} {peak:>12.2}", terminal(name))?;
        }
        if h.rows.len() > limit.max(40) {
            writeln!(out, "   ... {} more", h.rows.len() - limit.max(40))?;
        }
    }
    Ok(())
}

/// Computes and writes the summary.
pub fn write(session: &Session, out: &mut dyn Write, limit: usize) -> io::Result<Summary> {
    let s = summary::compute(session);
    write_text(&s, out, limit)?;
    Ok(s)
}

/// The top functions of stack samples: instrumented or not, by self
/// samples (the leaf frame, like `perf report --no-children`), with the
/// share of samples each was on the stack at all.
fn samples(
    out: &mut dyn Write,
    whose: &str,
    t: &summary::SampleTable,
    limit: usize,
) -> io::Result<()> {
    writeln!(out)?;
    if !t.error.is_empty() && t.samples == 0 {
        return writeln!(out, "   No stack samples ({whose}): {}", terminal(&t.error));
    }
    let secs = t.samples as f64 / f64::from(t.hz.max(1));
    writeln!(
        out,
        "   Top functions by stack samples ({whose}): {} samples at {} Hz, about {secs:.3} s on CPU{}",
        t.samples,
        t.hz,
        if t.lost > 0 {
            format!("; {} samples or switches lost (full kernel ring or buffer budget)", t.lost)
        } else {
            String::new()
        }
    )?;
    writeln!(out)?;
    writeln!(out, "     self%   total%  function (object)")?;
    let n = t.samples.max(1) as f64;
    for f in t.funcs.iter().take(limit) {
        writeln!(
            out,
            "    {:>6.1} {:>8.1}  {} ({})",
            100.0 * f.self_samples as f64 / n,
            100.0 * f.total_samples as f64 / n,
            terminal(&f.function),
            terminal(&f.module)
        )?;
    }
    if t.funcs.len() > limit {
        writeln!(out, "    ... {} more", t.funcs.len() - limit)?;
    }
    Ok(())
}

/// A process's traced I/O, like `strace -c` with bytes.
fn io(out: &mut dyn Write, rows: &[summary::IoRow], limit: usize) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "   I/O by channel (traced calls; blocked: had to wait for data or room)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "      calls  errors          bytes   total_ms     max_ms  blocked  blocked_ms  op     channel"
    )?;
    for r in rows.iter().take(limit) {
        writeln!(
            out,
            "   {:>8} {:>7} {:>14} {:>10.3} {:>10.3} {:>8} {:>11.3}  {:<6} {} {}",
            r.calls,
            r.errors,
            r.bytes,
            r.total_ns as f64 / 1e6,
            r.max_ns as f64 / 1e6,
            r.blocked_calls,
            r.blocked_ns as f64 / 1e6,
            r.op,
            r.kind,
            terminal(&r.label)
        )?;
        for (e, n) in &r.error_kinds {
            writeln!(out, "            {n} x {}", terminal(e))?;
        }
    }
    if rows.len() > limit {
        writeln!(out, "   ... {} more", rows.len() - limit)?;
    }
    Ok(())
}

/// The channels that connect processes, with each end's traffic.
fn links(s: &Summary, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out)?;
    writeln!(out, "== channels between processes (both ends traced) ==")?;
    for l in &s.channel_links {
        writeln!(out, "   {}", terminal(&l.name))?;
        for &(pi, ch) in &l.ends {
            let p = &s.processes[pi];
            for r in p.io.iter().filter(|r| r.channel == ch) {
                writeln!(
                    out,
                    "     {:<30} {:<5} {:>8} calls {:>14} bytes  {:>10.3} ms blocked  ({} {})",
                    terminal(&p.name),
                    r.op,
                    r.calls,
                    r.bytes,
                    r.blocked_ns as f64 / 1e6,
                    r.kind,
                    terminal(&r.label)
                )?;
            }
        }
    }
    Ok(())
}

/// A process's system calls, like `strace -c`.
fn syscalls(out: &mut dyn Write, rows: &[summary::SyscallRow], limit: usize) -> io::Result<()> {
    writeln!(out)?;
    let calls: u64 = rows.iter().map(|r| r.calls).sum();
    writeln!(out, "   System calls (like strace -c): {calls} calls")?;
    writeln!(out)?;
    writeln!(out, "      calls  errors   total_ms     max_ms  syscall")?;
    for r in rows.iter().take(limit) {
        writeln!(
            out,
            "   {:>8} {:>7} {:>10.3} {:>10.3}  {}",
            r.calls,
            r.errors,
            r.total_ns as f64 / 1e6,
            r.max_ns as f64 / 1e6,
            r.name
        )?;
    }
    if rows.len() > limit {
        writeln!(out, "   ... {} more", rows.len() - limit)?;
    }
    Ok(())
}
