//! cProfile-style summary: per process and for the whole process tree,
//! `ncalls tottime percall cumtime percall filename:lineno(function)`.
//! As in cProfile, recursive calls count once in `cumtime` (only the
//! outermost activation of a function adds to it) and `ncalls` shows
//! `total/primitive` when they differ.

use std::collections::HashMap;

use super::critical_path::{self, CriticalPath};
use super::key::func_key;
pub use super::key::FuncKey;
use crate::hash::FastMap;
use crate::merge::{EventKind, MergeStats};
use crate::trace::Session;

/// Statistics of one function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuncStats {
    /// Calls.
    pub ncalls: u64,
    /// Calls that were not recursive (the outermost activation).
    pub primitive: u64,
    /// Time in the function itself, excluding callees, ns.
    pub tottime_ns: i64,
    /// Time in the function including callees, recursion counted once, ns.
    pub cumtime_ns: i64,
    /// Calls that did not end normally (closed by the merge).
    pub unfinished: u64,
}

impl FuncStats {
    fn add(&mut self, o: &FuncStats) {
        self.ncalls += o.ncalls;
        self.primitive += o.primitive;
        self.tottime_ns = self.tottime_ns.saturating_add(o.tottime_ns);
        self.cumtime_ns = self.cumtime_ns.saturating_add(o.cumtime_ns);
        self.unfinished += o.unfinished;
    }
}

/// One process's table.
#[derive(Clone, Debug)]
pub struct ProcessSummary {
    /// Display name (executable and pid).
    pub name: String,
    /// Wall time from first to last event, ns.
    pub wall_ns: i64,
    /// Whether the process finished cleanly.
    pub clean: bool,
    /// Functions, by cumulative time.
    pub funcs: Vec<(FuncKey, FuncStats)>,
    /// Events the process lost, by thread.
    pub losses: crate::read::Losses,
    /// Metadata entries it could not store (see
    /// [`crate::read::ProcessFile::lost_meta`]).
    pub lost_meta: u32,
}

/// The whole summary.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Per process, in start order.
    pub processes: Vec<ProcessSummary>,
    /// All processes together, by cumulative time.
    pub tree: Vec<(FuncKey, FuncStats)>,
    /// Wall time of the whole tree, ns.
    pub wall_ns: i64,
    /// Merge repairs.
    pub stats: MergeStats,
    /// The cross-process critical path (see [`critical_path`]).
    pub critical_path: CriticalPath,
    /// Start of the session, ns: the origin of the critical path's times
    /// in the text.
    pub origin_ns: i64,
    /// Processes that recorded nothing for lack of space, in a sentence
    /// each (see [`crate::trace::NoSpace`]).
    pub no_space: Vec<String>,
}

impl Summary {
    /// Statistics of the function whose label ends with `name` in the tree.
    pub fn tree_func(&self, name: &str) -> Option<&FuncStats> {
        self.tree
            .iter()
            .find(|(k, _)| k.label == name || k.label.ends_with(&format!("::{name}")))
            .map(|(_, s)| s)
    }
}

struct Frame {
    site: u32,
    start: i64,
    child: i64,
}

/// Computes the summary from the merged event stream.
pub fn compute(session: &Session) -> Summary {
    let n = session.processes.len();
    let mut per: Vec<FastMap<u32, FuncStats>> = vec![FastMap::default(); n];
    let mut stacks: FastMap<(usize, u32), Vec<Frame>> = FastMap::default();
    let mut flows = critical_path::FlowIndex::new(n);
    let mut events = session.events();
    for e in events.by_ref() {
        flows.observe(&e);
        match e.kind {
            EventKind::Enter { site } => stacks.entry((e.proc, e.lane)).or_default().push(Frame {
                site,
                start: e.ts,
                child: 0,
            }),
            EventKind::Exit { site, end } => {
                let stack = stacks.entry((e.proc, e.lane)).or_default();
                let Some(f) = stack.pop() else { continue };
                debug_assert_eq!(f.site, site, "the merge keeps exits nested");
                let dur = e.ts.saturating_sub(f.start);
                let recursive = stack.iter().any(|g| g.site == f.site);
                if let Some(parent) = stack.last_mut() {
                    parent.child = parent.child.saturating_add(dur);
                }
                let st = per[e.proc].entry(f.site).or_default();
                st.ncalls += 1;
                st.tottime_ns = st.tottime_ns.saturating_add(dur.saturating_sub(f.child));
                if !recursive {
                    st.primitive += 1;
                    st.cumtime_ns = st.cumtime_ns.saturating_add(dur);
                }
                if end.reason().is_some() {
                    st.unfinished += 1;
                }
            }
            _ => {}
        }
    }
    let stats = events.stats();
    drop(events);
    let critical_path = critical_path::from_index(session, flows);
    let mut tree: HashMap<FuncKey, FuncStats> = HashMap::new();
    let mut processes = Vec::new();
    for (pi, p) in session.processes.iter().enumerate() {
        let mut funcs: Vec<(FuncKey, FuncStats)> = per[pi]
            .iter()
            .map(|(&site, st)| (func_key(p, site), *st))
            .collect();
        for (k, st) in &funcs {
            tree.entry(k.clone()).or_default().add(st);
        }
        sort(&mut funcs);
        processes.push(ProcessSummary {
            name: p.file.display_name(),
            wall_ns: p.end_ns.saturating_sub(p.start_ns),
            clean: p.file.clean,
            funcs,
            losses: p.file.losses(),
            lost_meta: p.file.lost_meta,
        });
    }
    let mut tree: Vec<_> = tree.into_iter().collect();
    sort(&mut tree);
    Summary {
        processes,
        tree,
        wall_ns: session.end_ns().saturating_sub(session.start_ns()),
        stats,
        critical_path,
        origin_ns: session.start_ns(),
        no_space: session.no_space.iter().map(|n| n.to_string()).collect(),
    }
}

fn sort(v: &mut [(FuncKey, FuncStats)]) {
    v.sort_by(|a, b| {
        b.1.cumtime_ns
            .cmp(&a.1.cumtime_ns)
            .then_with(|| a.0.cmp(&b.0))
    });
}
