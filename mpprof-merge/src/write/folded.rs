//! Folded stacks (`frame;frame;frame value`), the input of flamegraph
//! tools, and an SVG flamegraph drawn from them with inferno.
//!
//! The root frame is the executable's name, so the same code in many
//! processes (a worker pool) adds up into one tower; values are self time in
//! microseconds. Names are escaped for the format ([`super::escape`]).
//!
//! With [`Options::samples`] (`--samples`) the stacks are the stack
//! samples' instead ([`collect_samples`]): un-instrumented code too, with
//! the instrumented spans that covered each sample as its outer frames.
//!
//! Stacks deeper than [`Options::max_stack`] frames are cut there: the
//! frames below are folded into one marker frame, which holds their self
//! time. Without the cap, one deep recursion makes the output quadratic in
//! its depth (each of its `n` stacks is a line of up to `n` frames).

use std::collections::HashMap;
use std::io::{self, Write};

use super::escape;
use crate::hash::FastMap;
use crate::merge::{EventKind, MergeStats};
use crate::profile::Profile;
use crate::trace::Session;

/// Default of [`Options::max_stack`] (`--max-stack`).
pub const DEFAULT_MAX_STACK: usize = 512;

/// How stacks are folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most frames of a stack printed below its root (at least 1): deeper
    /// frames are folded into one marker frame ([`marker`]).
    pub max_stack: usize,
    /// Stacks from the stack samples ([`collect_samples`]) instead of the
    /// spans' self time (`--samples`).
    pub samples: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_stack: DEFAULT_MAX_STACK,
            samples: false,
        }
    }
}

/// The frame that stands for the frames below `max_stack`.
pub fn marker(max_stack: usize) -> String {
    format!("[deeper frames folded: max stack {max_stack}]")
}

/// Self time per distinct stack, ns, with the default [`Options`].
pub fn collect(session: &Session) -> (Vec<(String, u64)>, MergeStats) {
    collect_with(session, Options::default())
}

/// Self time per distinct stack, ns, sorted by stack. Memory grows with the
/// number of distinct stacks (each at most `max_stack` frames), not with
/// the number of events.
///
/// Stacks are interned as nodes of a tree (parent node, process, callsite)
/// while the events stream by, so an exit costs a map look-up and an
/// addition; the text of each stack that has time is built once at the end,
/// from its node up. Stacks of different processes with the same text (a
/// worker pool) add up.
pub fn collect_with(session: &Session, opts: Options) -> (Vec<(String, u64)>, MergeStats) {
    if opts.samples {
        return collect_samples(session, opts);
    }
    /// A stack: its parent (NO_PARENT at the root), process and callsite
    /// (`None`: the marker of the frames below the cap).
    struct Node {
        parent: u32,
        proc: usize,
        site: Option<u32>,
    }
    const NO_PARENT: u32 = u32::MAX;
    let max_stack = opts.max_stack.max(1);
    // Per thread: open frames as (node, start, time in children).
    type Frames = Vec<(u32, i64, i64)>;
    let mut stacks: FastMap<(usize, u32), Frames> = FastMap::default();
    let mut nodes: Vec<Node> = Vec::new();
    let mut ids: FastMap<(u32, usize, Option<u32>), u32> = FastMap::default();
    // Self time per node; None until a span with that stack has ended.
    let mut self_ns: Vec<Option<u64>> = Vec::new();
    let mut events = session.events();
    for e in events.by_ref() {
        match e.kind {
            EventKind::Enter { site } => {
                let stack = stacks.entry((e.proc, e.lane)).or_default();
                let parent = stack.last().map_or(NO_PARENT, |f| f.0);
                let site = (stack.len() < max_stack).then_some(site);
                let node = if site.is_none() && nodes[parent as usize].site.is_none() {
                    // Below the marker: folded into it.
                    parent
                } else {
                    *ids.entry((parent, e.proc, site)).or_insert_with(|| {
                        nodes.push(Node {
                            parent,
                            proc: e.proc,
                            site,
                        });
                        self_ns.push(None);
                        (nodes.len() - 1) as u32
                    })
                };
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
    let roots = roots(session);
    let marker = marker(max_stack);
    let mut totals: HashMap<String, u64> = HashMap::new();
    let mut path = Vec::new();
    for (i, t) in self_ns.iter().enumerate() {
        let Some(t) = t else { continue };
        // The node's frames, from it up to the root.
        path.clear();
        let mut n = i as u32;
        while n != NO_PARENT {
            path.push(n);
            n = nodes[n as usize].parent;
        }
        let proc = nodes[i].proc;
        let mut key = roots[proc].clone();
        for &n in path.iter().rev() {
            key.push(';');
            match nodes[n as usize].site {
                Some(site) => {
                    key.push_str(&escape::folded(&session.processes[proc].site_name(site)))
                }
                None => key.push_str(&marker),
            }
        }
        let total = totals.entry(key).or_default();
        *total = total.saturating_add(*t);
    }
    let mut v: Vec<(String, u64)> = totals.into_iter().collect();
    v.sort();
    (v, events.stats())
}

/// CPU time per distinct stack from the stack samples (see
/// [`crate::profile`]), ns (each sample stands for `1/hz` s): the
/// process's root frame, then the instrumented spans open on the sampled
/// thread at the sample (outermost first), then the sampled stack below
/// the innermost span's own function (the whole stack when that function
/// is not on it), outermost first. So un-instrumented code shows under the
/// span that called it, and the spans' names keep the tower readable.
pub fn collect_samples(session: &Session, opts: Options) -> (Vec<(String, u64)>, MergeStats) {
    let prof = Profile::of(session);
    let max_stack = opts.max_stack.max(1);
    let roots = roots(session);
    // Every process's samples in time order, to replay with the events.
    let mut samples: Vec<(i64, usize, usize)> = Vec::new();
    for (pi, pp) in prof.processes.iter().enumerate() {
        if let Some(pp) = pp {
            samples.extend((0..pp.samples.len()).map(|i| (pp.samples[i].t, pi, i)));
        }
    }
    samples.sort_unstable();
    let mut next = 0;
    // Open spans per (process, lane), and each thread's lane.
    let mut open: FastMap<(usize, u32), Vec<u32>> = FastMap::default();
    let mut lane_of: FastMap<(usize, u32), u32> = FastMap::default();
    for (pi, p) in session.processes.iter().enumerate() {
        for (&lane, l) in &p.file.lanes {
            lane_of.insert((pi, l.tid), lane);
        }
    }
    let mut totals: HashMap<String, u64> = HashMap::new();
    let marker = marker(max_stack);
    let mut fold = |pi: usize, i: usize, open: &FastMap<(usize, u32), Vec<u32>>| {
        let Some(pp) = &prof.processes[pi] else {
            return;
        };
        let smp = &pp.samples[i];
        let p = &session.processes[pi];
        let spans: &[u32] = lane_of
            .get(&(pi, smp.tid))
            .and_then(|lane| open.get(&(pi, *lane)))
            .map_or(&[], Vec::as_slice);
        let frames = prof.stack(pi, smp.stack);
        // The sampled frames below the innermost span's function.
        let below = spans
            .last()
            .and_then(|&site| {
                let path = &p.site(site)?.path;
                frames.iter().position(|&f| {
                    let name = &prof.frames[f as usize].function;
                    name == path
                        || name
                            .strip_prefix(path.as_str())
                            .is_some_and(|r| r.starts_with("::"))
                })
            })
            .unwrap_or(frames.len());
        let mut key = roots[pi].clone();
        let mut depth = 0;
        let names = spans
            .iter()
            .map(|&site| p.site_name(site).into_owned())
            .chain(
                frames[..below]
                    .iter()
                    .rev()
                    .map(|&f| prof.frames[f as usize].function.clone()),
            );
        for name in names {
            key.push(';');
            depth += 1;
            if depth > max_stack {
                key.push_str(&marker);
                break;
            }
            key.push_str(&escape::folded(&name));
        }
        let ns = 1_000_000_000 / u64::from(pp.info.hz.max(1));
        *totals.entry(key).or_default() += ns;
    };
    let mut events = session.events();
    for e in events.by_ref() {
        while let Some(&(t, pi, i)) = samples.get(next) {
            if t > e.ts {
                break;
            }
            fold(pi, i, &open);
            next += 1;
        }
        match e.kind {
            EventKind::Enter { site } => open.entry((e.proc, e.lane)).or_default().push(site),
            EventKind::Exit { .. } => {
                open.entry((e.proc, e.lane)).or_default().pop();
            }
            _ => {}
        }
    }
    for &(_, pi, i) in &samples[next..] {
        fold(pi, i, &open);
    }
    let mut v: Vec<(String, u64)> = totals.into_iter().collect();
    v.sort();
    (v, events.stats())
}

/// Each process's root frame: its executable's file name.
fn roots(session: &Session) -> Vec<String> {
    session
        .processes
        .iter()
        .map(|p| {
            let exe = p.file.info.as_ref().map(|i| i.exe.as_str()).unwrap_or("");
            let short = exe.rsplit('/').next().filter(|s| !s.is_empty());
            escape::folded(short.unwrap_or("?")).into_owned()
        })
        .collect()
}

/// Writes folded stacks with the default [`Options`].
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    write_with(session, out, Options::default())
}

/// Writes folded stacks, values in microseconds (stacks under 1 µs of self
/// time are kept with value 1 so nothing called disappears).
pub fn write_with(session: &Session, out: &mut dyn Write, opts: Options) -> io::Result<MergeStats> {
    let (stacks, stats) = collect_with(session, opts);
    for (stack, ns) in stacks {
        writeln!(out, "{stack} {}", (ns / 1000).max(1))?;
    }
    Ok(stats)
}

/// Writes an SVG flamegraph of the whole process tree with the default
/// [`Options`].
pub fn write_svg(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    write_svg_with(session, out, Options::default())
}

/// Writes an SVG flamegraph of the whole process tree.
pub fn write_svg_with(
    session: &Session,
    out: &mut dyn Write,
    opts: Options,
) -> io::Result<MergeStats> {
    let (stacks, stats) = collect_with(session, opts);
    let lines: Vec<String> = stacks
        .into_iter()
        .map(|(s, ns)| format!("{s} {}", (ns / 1000).max(1)))
        .collect();
    let samples = opts.samples;
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = if samples {
        "mpprof: whole process tree, stack samples (CPU time)".to_owned()
    } else {
        "mpprof: whole process tree".to_owned()
    };
    opts.count_name = "us".to_owned();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)?;
    Ok(stats)
}
