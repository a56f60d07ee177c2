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
    writeln!(
        out,
        "   ncalls  tottime  percall  cumtime  percall filename:lineno(function)"
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
        writeln!(
            out,
            "{ncalls:>9} {:>8.3} {per_tot:>8.3} {:>8.3} {per_cum:>8.3} {}{mark}",
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

/// Computes and writes the summary.
pub fn write(session: &Session, out: &mut dyn Write, limit: usize) -> io::Result<Summary> {
    let s = summary::compute(session);
    write_text(&s, out, limit)?;
    Ok(s)
}
