//! Folded stacks (`frame;frame;frame value`), the input of flamegraph
//! tools, and an SVG flamegraph drawn from them with inferno.
//!
//! The root frame is the executable's name, so the same code in many
//! processes (a worker pool) adds up into one tower; values are self time in
//! microseconds.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::hash::FastMap;
use crate::merge::{EventKind, MergeStats};
use crate::trace::Session;

/// Self time per distinct stack, ns. Memory grows with the number of
/// distinct stacks, not with the number of events.
///
/// Stacks are interned as nodes of a tree (parent node, process, callsite)
/// while the events stream by, so an exit costs a map look-up and an
/// addition; the text of each stack is built once at the end. Stacks of
/// different processes with the same text (a worker pool) add up.
pub fn collect(session: &Session) -> (Vec<(String, u64)>, MergeStats) {
    /// A stack: its parent (NO_PARENT at the root), process and callsite.
    struct Node {
        parent: u32,
        proc: usize,
        site: u32,
    }
    const NO_PARENT: u32 = u32::MAX;
    // Per thread: open frames as (node, start, time in children).
    type Frames = Vec<(u32, i64, i64)>;
    let mut stacks: FastMap<(usize, u32), Frames> = FastMap::default();
    let mut nodes: Vec<Node> = Vec::new();
    let mut ids: FastMap<(u32, usize, u32), u32> = FastMap::default();
    // Self time per node; None until a span with that stack has ended.
    let mut self_ns: Vec<Option<u64>> = Vec::new();
    let mut events = session.events();
    for e in events.by_ref() {
        match e.kind {
            EventKind::Enter { site } => {
                let stack = stacks.entry((e.proc, e.lane)).or_default();
                let parent = stack.last().map_or(NO_PARENT, |f| f.0);
                let node = *ids.entry((parent, e.proc, site)).or_insert_with(|| {
                    nodes.push(Node {
                        parent,
                        proc: e.proc,
                        site,
                    });
                    self_ns.push(None);
                    (nodes.len() - 1) as u32
                });
                stack.push((node, e.ts, 0));
            }
            EventKind::Exit { .. } => {
                let stack = stacks.entry((e.proc, e.lane)).or_default();
                let Some((node, start, child)) = stack.pop() else {
                    continue;
                };
                let dur = e.ts.saturating_sub(start);
                if let Some(parent) = stack.last_mut() {
                    parent.2 = parent.2.saturating_add(dur);
                }
                let t = self_ns[node as usize].get_or_insert(0);
                *t = t.saturating_add(dur.saturating_sub(child).max(0) as u64);
            }
            _ => {}
        }
    }
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
    // A parent is interned before its children, so its text is ready.
    let mut text: Vec<String> = Vec::with_capacity(nodes.len());
    let mut totals: HashMap<String, u64> = HashMap::new();
    for (n, t) in nodes.iter().zip(&self_ns) {
        let mut key = match n.parent {
            NO_PARENT => roots[n.proc].clone(),
            p => text[p as usize].clone(),
        };
        key.push(';');
        key.push_str(
            &session.processes[n.proc]
                .site_name(n.site)
                .replace(';', ":"),
        );
        if let Some(t) = t {
            let total = totals.entry(key.clone()).or_default();
            *total = total.saturating_add(*t);
        }
        text.push(key);
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
