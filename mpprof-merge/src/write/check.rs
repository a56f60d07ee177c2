//! The health report (`mpprof-merge check`) as text.

use std::io::{self, Write};

use super::escape::terminal;
use crate::analysis::check::Health;

/// Writes the report as text.
pub fn write_text(h: &Health, out: &mut dyn Write) -> io::Result<()> {
    for p in &h.processes {
        let end = if p.clean {
            "clean exit"
        } else {
            "ENDED ABRUPTLY (killed or crashed; open spans closed at its last event)"
        };
        writeln!(
            out,
            "{} on {}: {end}",
            terminal(&p.name),
            if p.host.is_empty() {
                "?".into()
            } else {
                terminal(&p.host)
            }
        )?;
        let samples = if p.resource_events > 0 {
            format!(" ({} of them resource samples)", p.resource_events)
        } else {
            String::new()
        };
        writeln!(
            out,
            "  threads {}, events {}{samples}, span {:.3} ms, clock domain {}",
            p.threads,
            p.events,
            p.span_ns as f64 / 1e6,
            p.domain
        )?;
        writeln!(out, "  clock: {}", p.clock_fit)?;
        if let Some(s) = &p.sampling {
            writeln!(out, "  resources: {s}")?;
        }
        for l in &p.lacks {
            writeln!(out, "  LACKS resource counters: {}", terminal(l))?;
        }
        if let Some(s) = &p.profiler {
            writeln!(out, "  profiler: {s}")?;
        }
        if let Some(e) = &p.profiler_refused {
            writeln!(out, "  NO SAMPLES: {}", terminal(e))?;
        }
        if let Some(parent) = &p.linked_by_ppid {
            writeln!(
                out,
                "  started by {} without mpprof::spawn: linked to it by parent pid",
                terminal(parent)
            )?;
        }
        if p.lost_events > 0 {
            writeln!(
                out,
                "  LOST {} events: {}",
                p.lost_events,
                p.lost_reason.as_deref().unwrap_or("unknown")
            )?;
            super::losses(out, "    ", &p.losses, 10)?;
        }
        if p.torn_records > 0 {
            writeln!(
                out,
                "  {} record(s) being written at the end were torn or uncommitted; skipped",
                p.torn_records
            )?;
        }
        if p.lost_meta > 0 {
            writeln!(
                out,
                "  LOST {} metadata entries (the file could not hold them): callsites without a name show as #<id>, threads without one unnamed",
                p.lost_meta
            )?;
        }
        for w in &p.warnings {
            writeln!(out, "  warning: {}", terminal(w))?;
        }
    }
    for n in &h.no_space {
        writeln!(out, "{}", terminal(n))?;
    }
    for u in &h.unreadable {
        writeln!(out, "UNREADABLE {}", terminal(u))?;
    }
    for w in &h.symbol_warnings {
        writeln!(out, "symbols: {}", terminal(w))?;
    }
    for i in &h.ignored {
        writeln!(out, "ignored {}", terminal(i))?;
    }
    writeln!(
        out,
        "flows: {} matched, {} sent but not received, {} received but not sent; causality violations: {}",
        h.flows_matched, h.flows_unmatched_out, h.flows_unmatched_in, h.causality_violations
    )?;
    if h.forks_without_recording_child > 0 {
        writeln!(
            out,
            "  ({} fork points without a recording child: exec'd or not instrumented)",
            h.forks_without_recording_child
        )?;
    }
    if h.alignment.domains.len() > 1 {
        writeln!(
            out,
            "clock domains: {} (reference {}); {} cross-domain flows, min latency {} ns",
            h.alignment.domains.len(),
            h.alignment.domains[0].domain,
            h.alignment.cross_flows,
            h.alignment.min_latency_ns
        )?;
        for d in &h.alignment.domains[1..] {
            let b =
                |v: Option<i64>| v.map_or("-".to_owned(), |x| format!("{:.6} s", x as f64 / 1e9));
            writeln!(
                out,
                "  {}: offset {:.6} s [{} .. {}] from {} messages; REALTIME said {:.6} s; drift {:+.1} ppm; {}",
                d.domain,
                d.offset_ns as f64 / 1e9,
                b(d.lower_ns),
                b(d.upper_ns),
                d.messages,
                d.realtime_offset_ns as f64 / 1e9,
                d.drift_ppm,
                d.quality.label()
            )?;
        }
        writeln!(
            out,
            "  causality violations: {} before alignment, {} after",
            h.alignment.violations_before, h.alignment.violations_after
        )?;
    }
    let s = &h.stats;
    writeln!(
        out,
        "merge: {} events, {} spans closed by the merge, {} exits without entry, {} malformed records, {} unreadable chunks",
        s.events, s.closed_spans, s.unmatched_exits, s.bad_records, s.unreadable_chunks
    )?;
    if s.non_finite_counters > 0 {
        writeln!(
            out,
            "counters: {} samples are NaN or infinite (kept in Perfetto output; Chrome JSON, which cannot hold them, shows each as an instant)",
            s.non_finite_counters
        )?;
    }
    writeln!(
        out,
        "{}",
        if h.damaged() {
            "status: DAMAGED"
        } else if h.imperfect() {
            "status: ok with losses or abrupt ends"
        } else {
            "status: ok"
        }
    )
}
