//! Folded stacks (`frame;frame;frame value`), the input of flamegraph
//! tools, and an SVG flamegraph drawn from them with inferno.
//!
//! The root frame is the executable's name, so the same code in many
//! processes (a worker pool) adds up into one tower; values are self time in
//! microseconds.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::merge::{EventKind, MergeStats, Session};

/// Self time per distinct stack, ns. Memory grows with the number of
/// distinct stacks, not with the number of events.
pub fn collect(session: &Session) -> (Vec<(String, u64)>, MergeStats) {
    // Per thread: open frames as (callsite, start, time in children).
    type Frames = Vec<(u32, i64, i64)>;
    let mut stacks: HashMap<(usize, u32), Frames> = HashMap::new();
    let mut totals: HashMap<String, u64> = HashMap::new();
    let roots: Vec<String> = session
        .processes
        .iter()
        .map(|p| {
            let exe = p.file.info.as_ref().map(|i| i.exe.as_str()).unwrap_or("");
            exe.rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("?")
                .replace(';', ":")
        })
        .collect();
    let mut events = session.events();
    for e in events.by_ref() {
        match e.kind {
            EventKind::Enter { site } => stacks
                .entry((e.proc, e.lane))
                .or_default()
                .push((site, e.ts, 0)),
            EventKind::Exit { .. } => {
                let stack = stacks.entry((e.proc, e.lane)).or_default();
                let Some((site, start, child)) = stack.pop() else {
                    continue;
                };
                let dur = e.ts.saturating_sub(start);
                if let Some(parent) = stack.last_mut() {
                    parent.2 = parent.2.saturating_add(dur);
                }
                let p = &session.processes[e.proc];
                let mut key = roots[e.proc].clone();
                for (s, _, _) in stack.iter() {
                    key.push(';');
                    key.push_str(&p.site_name(*s).replace(';', ":"));
                }
                key.push(';');
                key.push_str(&p.site_name(site).replace(';', ":"));
                *totals.entry(key).or_default() += dur.saturating_sub(child).max(0) as u64;
            }
            _ => {}
        }
    }
    let mut v: Vec<(String, u64)> = totals.into_iter().collect();
    v.sort();
    (v, events.stats())
}

/// Writes folded stacks, values in microseconds (stacks under 1 µs of self
/// time are kept with value 1 so nothing called disappears).
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    let (stacks, stats) = collect(session);
    for (stack, ns) in stacks {
        writeln!(out, "{stack} {}", (ns / 1000).max(1))?;
    }
    Ok(stats)
}

/// Writes an SVG flamegraph of the whole process tree.
pub fn write_svg(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    let (stacks, stats) = collect(session);
    let lines: Vec<String> = stacks
        .into_iter()
        .map(|(s, ns)| format!("{s} {}", (ns / 1000).max(1)))
        .collect();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = "mpprof: whole process tree".to_owned();
    opts.count_name = "us".to_owned();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)?;
    Ok(stats)
}
