//! The cross-process critical path: the chain of causality that ends at the
//! end of the trace.
//!
//! It starts at the last event of the root process (the process without a
//! parent flow; if several, the one that ends last), at time `t` on its
//! lane `L`, and walks backwards:
//!
//! - find the latest `FLOW_IN` on `L` at a time `t_in <= t` whose flow has a
//!   `FLOW_OUT` in the session (unmatched receives are ignored);
//! - `[t_in, t]` on `L` is a segment of the path; continue on the sending
//!   lane with `t` = the `FLOW_OUT`'s time (clamped to `t_in` if clock
//!   alignment put the send after the receive);
//! - when `L` has no such `FLOW_IN`, `[first event of L, t]` is the first
//!   segment and the walk stops.
//!
//! Each `FLOW_IN` is used at most once, so the walk always ends (also on
//! cycles and zero-length hops), and it stops after [`MAX_HOPS`] hops.
//! Time on the path is attributed to the innermost span open on the
//! segment's lane (self time), or to "(no span)" between spans.
//!
//! Only causality the trace records is followed: a wait without a flow (a
//! lock, a shared-memory handshake, `waitpid` on a child other than through
//! `mpprof::wait`) is invisible, and the path goes on through the waiting
//! thread's own timeline. `mpprof::wait` records the end of a flow whose
//! start is the child's last event (`FlowId::child_exit` of the child's
//! parent flow), which the walk adds to the sends.
//!
//! Memory: one entry per flow end (the send of every flow, the receive
//! times per lane), not per event. The attribution is a second streaming
//! pass over [`Session::events`].

use std::collections::{HashMap, HashSet};

use mpprof_format::FlowId;

use super::key::{func_key, FuncKey};
use crate::hash::{FastMap, FastSet};
use crate::merge::{Event, EventKind};
use crate::profile::Profile;
use crate::resources::Resources;
use crate::trace::Session;

/// Hops after which the walk stops (and the path is marked truncated).
pub const MAX_HOPS: usize = 1 << 24;

/// Label of the time on the path when no span is open on the lane.
pub const NO_SPAN: &str = "(no span)";

/// One stretch of the critical path: a lane's timeline between two points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSegment {
    /// Index of the process in [`Session::processes`].
    pub proc: usize,
    /// Process display name (executable and pid).
    pub process: String,
    /// Process id.
    pub pid: u32,
    /// Lane (thread) within the process.
    pub lane: u32,
    /// Thread name ("" when unnamed).
    pub thread: String,
    /// Start, ns (aligned CLOCK_MONOTONIC, as [`crate::Event::ts`]).
    pub start_ns: i64,
    /// End, ns.
    pub end_ns: i64,
    /// The flow whose receive starts this segment, with the time it was
    /// sent (the end of the previous segment, before clamping); `None` for
    /// the first segment, which starts at the lane's first event.
    pub via: Option<(FlowId, i64)>,
    /// Time the segment's thread spent on a CPU during it, ns, from its
    /// resource samples (see [`crate::resources::ProcessResources::thread_cpu`]);
    /// `None` without samples of the thread.
    pub on_cpu_ns: Option<i64>,
    /// Time the segment's thread spent switched out during it (waiting:
    /// blocked or preempted), ns, from the profiler's context switches
    /// (see [`crate::profile`]); `None` where they were not recorded.
    pub off_cpu_ns: Option<i64>,
}

impl PathSegment {
    /// Length, ns.
    pub fn len_ns(&self) -> i64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Time on the critical path of one function in one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathFunc {
    /// Index of the process in [`Session::processes`].
    pub proc: usize,
    /// Process display name.
    pub process: String,
    /// The function; [`NO_SPAN`] as its label for time outside any span.
    pub key: FuncKey,
    /// Self time on the path, ns.
    pub ns: i64,
}

/// The cross-process critical path (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CriticalPath {
    /// The root process the walk started from; `None` without events.
    pub root: Option<usize>,
    /// Segments in time order; consecutive segments are joined by a flow
    /// (the later one's [`PathSegment::via`]).
    pub segments: Vec<PathSegment>,
    /// From the start of the first segment to the end of the last, ns.
    pub total_ns: i64,
    /// Of `total_ns`, the time between segments: messages in transit, ns.
    pub transit_ns: i64,
    /// Self time on the path per function and process, largest first.
    pub funcs: Vec<PathFunc>,
    /// Distinct processes on the path.
    pub processes: usize,
    /// The walk stopped after [`MAX_HOPS`] hops; the first segment is then
    /// cut short.
    pub truncated: bool,
}

impl CriticalPath {
    /// Start of the path, ns (0 when empty).
    pub fn start_ns(&self) -> i64 {
        self.segments.first().map_or(0, |s| s.start_ns)
    }

    /// End of the path, ns (0 when empty).
    pub fn end_ns(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.end_ns)
    }

    /// Whether the path crosses at least one flow.
    pub fn has_hops(&self) -> bool {
        self.segments.len() > 1
    }

    /// Self time on the path of the function whose label is `name` or ends
    /// with `::name`, summed over processes, ns.
    pub fn func_ns(&self, name: &str) -> i64 {
        self.funcs
            .iter()
            .filter(|f| f.key.label == name || f.key.label.ends_with(&format!("::{name}")))
            .map(|f| f.ns)
            .sum()
    }
}

#[derive(Default)]
struct LaneFlows {
    first: i64,
    /// Receives in time order.
    ins: Vec<(i64, FlowId)>,
}

/// What the walk needs from a first pass over the events: where each flow
/// was sent, each lane's receives and first event, each process's last
/// event. Fed one event at a time, so the summary's own pass can fill it.
#[derive(Default)]
pub(crate) struct FlowIndex {
    outs: HashMap<FlowId, (usize, u32, i64)>,
    lanes: FastMap<(usize, u32), LaneFlows>,
    /// Per process: time and lane of its last event.
    last: Vec<Option<(i64, u32)>>,
}

impl FlowIndex {
    pub(crate) fn new(processes: usize) -> FlowIndex {
        FlowIndex {
            last: vec![None; processes],
            ..FlowIndex::default()
        }
    }

    pub(crate) fn observe(&mut self, e: &Event) {
        let lane = self.lanes.entry((e.proc, e.lane)).or_insert(LaneFlows {
            first: e.ts,
            ins: Vec::new(),
        });
        match e.kind {
            EventKind::FlowIn { flow, .. } => lane.ins.push((e.ts, flow)),
            EventKind::FlowOut { flow, .. } => {
                self.outs.entry(flow).or_insert((e.proc, e.lane, e.ts));
            }
            _ => {}
        }
        if let Some(l) = self.last.get_mut(e.proc) {
            if l.is_none_or(|(ts, _)| e.ts >= ts) {
                *l = Some((e.ts, e.lane));
            }
        }
    }
}

/// Computes the critical path of a session: one pass to index the flows,
/// the walk, and a second pass to attribute the path's time to functions.
pub fn compute(session: &Session) -> CriticalPath {
    let mut idx = FlowIndex::new(session.processes.len());
    for e in session.events() {
        idx.observe(&e);
    }
    from_index(
        session,
        idx,
        &Resources::of(session),
        &Profile::read(session),
    )
}

/// The walk and the attribution, from a filled [`FlowIndex`].
pub(crate) fn from_index(
    session: &Session,
    mut idx: FlowIndex,
    res: &Resources,
    prof: &Profile,
) -> CriticalPath {
    let has_parent = |pi: usize| {
        session.processes[pi]
            .file
            .info
            .as_ref()
            .is_some_and(|i| i.parent_flow.is_some())
    };
    // A parent's `mpprof::wait` records the end of a flow from its child's
    // last event (`FlowId::child_exit`); the start is that event.
    for (pi, p) in session.processes.iter().enumerate() {
        let parent = p.file.info.as_ref().and_then(|i| i.parent_flow);
        if let (Some(flow), Some(Some((ts, lane)))) = (parent, idx.last.get(pi)) {
            idx.outs
                .entry(flow.child_exit())
                .or_insert((pi, *lane, *ts));
        }
    }
    let Some((root, segs, truncated)) = walk(&mut idx, has_parent, MAX_HOPS) else {
        return CriticalPath::default();
    };
    drop(idx);

    let segments: Vec<PathSegment> = segs
        .into_iter()
        .map(|(pi, lane, start_ns, end_ns, via)| {
            let p = &session.processes[pi];
            PathSegment {
                proc: pi,
                process: p.file.display_name(),
                pid: p.file.pid,
                lane,
                thread: p
                    .file
                    .lanes
                    .get(&lane)
                    .map(|l| l.name.clone())
                    .unwrap_or_default(),
                on_cpu_ns: res.processes[pi].as_ref().and_then(|r| {
                    let tid = p.file.lanes.get(&lane)?.tid;
                    Some(r.thread_cpu(tid, start_ns, end_ns)?.0.round() as i64)
                }),
                off_cpu_ns: prof.processes[pi]
                    .as_ref()
                    .filter(|pp| pp.info.switches && pp.info.error.is_empty())
                    .and_then(|pp| {
                        let tid = p.file.lanes.get(&lane)?.tid;
                        Some(pp.off_cpu_within(tid, start_ns, end_ns).0)
                    }),
                start_ns,
                end_ns,
                via,
            }
        })
        .collect();
    let funcs = attribute(session, &segments);
    let start = segments.first().map_or(0, |s| s.start_ns);
    let end = segments.last().map_or(0, |s| s.end_ns);
    let total_ns = end.saturating_sub(start);
    let in_segments = segments
        .iter()
        .fold(0i64, |a, s| a.saturating_add(s.len_ns()));
    let processes = segments
        .iter()
        .map(|s| s.proc)
        .collect::<HashSet<_>>()
        .len();
    CriticalPath {
        root: Some(root),
        total_ns,
        transit_ns: total_ns.saturating_sub(in_segments).max(0),
        funcs,
        processes,
        truncated,
        segments,
    }
}

/// A segment before names are attached: process, lane, start, end, via.
type RawSegment = (usize, u32, i64, i64, Option<(FlowId, i64)>);

/// The walk back from the root's last event: the root, the segments in
/// time order, and whether `max_hops` stopped it. `None` without events.
fn walk(
    idx: &mut FlowIndex,
    has_parent: impl Fn(usize) -> bool,
    max_hops: usize,
) -> Option<(usize, Vec<RawSegment>, bool)> {
    // The lanes' receives are in time order already (the merge yields each
    // lane's events in order); sort anyway, stably, to be safe.
    for l in idx.lanes.values_mut() {
        l.ins.sort_by_key(|x| x.0);
    }
    let ended: Vec<usize> = (0..idx.last.len())
        .filter(|&p| idx.last[p].is_some())
        .collect();
    let roots: Vec<usize> = ended.iter().copied().filter(|&p| !has_parent(p)).collect();
    let candidates = if roots.is_empty() { &ended } else { &roots };
    let root = candidates
        .iter()
        .copied()
        .max_by_key(|&p| (idx.last[p].map(|x| x.0), std::cmp::Reverse(p)))?;
    let (mut t, mut lane) = idx.last[root]?;
    let mut proc = root;

    let mut segs = Vec::new();
    // Per lane, the receives at and after this index are used: each is
    // used at most once, so the walk ends even on cycles and zero-length
    // hops.
    let mut used: HashMap<(usize, u32), usize> = HashMap::new();
    let mut truncated = false;
    while let Some(lf) = idx.lanes.get(&(proc, lane)) {
        let mut hi = lf.ins.partition_point(|x| x.0 <= t);
        if let Some(&u) = used.get(&(proc, lane)) {
            hi = hi.min(u);
        }
        let found = (0..hi).rev().find(|&i| idx.outs.contains_key(&lf.ins[i].1));
        let first = lf.first.min(t);
        let Some(i) = found else {
            segs.push((proc, lane, first, t, None));
            break;
        };
        if segs.len() >= max_hops {
            truncated = true;
            segs.push((proc, lane, first, t, None));
            break;
        }
        let (t_in, flow) = lf.ins[i];
        used.insert((proc, lane), i);
        let (sp, sl, t_out) = idx.outs[&flow];
        segs.push((proc, lane, t_in, t, Some((flow, t_out))));
        proc = sp;
        lane = sl;
        // A send after its receive (clock alignment): continue from the
        // receive, so time never goes forward.
        t = t_out.min(t_in);
    }
    segs.reverse();
    Some((root, segs, truncated))
}

/// Second pass, over the path's lanes only: the innermost open span of each
/// segment's lane, over the segment. Segments are disjoint and in time
/// order, so one cursor walks them along the merged stream.
fn attribute(session: &Session, segs: &[PathSegment]) -> Vec<PathFunc> {
    let on_path: FastSet<(usize, u32)> = segs.iter().map(|s| (s.proc, s.lane)).collect();
    let mut stacks: FastMap<(usize, u32), Vec<u32>> = FastMap::default();
    let mut acc: FastMap<(usize, Option<u32>), i64> = FastMap::default();
    let mut cur = 0;
    let mut last = i64::MIN;
    let mut advance = |to: i64, cur: &mut usize, stacks: &FastMap<(usize, u32), Vec<u32>>| {
        while let Some(s) = segs.get(*cur) {
            let a = last.max(s.start_ns);
            let b = to.min(s.end_ns);
            if b > a {
                let top = stacks
                    .get(&(s.proc, s.lane))
                    .and_then(|v| v.last().copied());
                let e = acc.entry((s.proc, top)).or_default();
                *e = e.saturating_add(b.saturating_sub(a));
            }
            if to >= s.end_ns {
                *cur += 1;
            } else {
                break;
            }
        }
        last = last.max(to);
    };
    // Only the path's lanes: the stacks change only there, so the times
    // of other lanes' events would only split the intervals.
    for e in session.events_of(|pi, lane| on_path.contains(&(pi, lane))) {
        if cur >= segs.len() {
            break;
        }
        advance(e.ts, &mut cur, &stacks);
        match e.kind {
            EventKind::Enter { site } => stacks.entry((e.proc, e.lane)).or_default().push(site),
            EventKind::Exit { .. } => {
                stacks.entry((e.proc, e.lane)).or_default().pop();
            }
            _ => {}
        }
    }
    advance(i64::MAX, &mut cur, &stacks);
    let mut funcs: Vec<PathFunc> = acc
        .into_iter()
        .map(|((pi, site), ns)| {
            let p = &session.processes[pi];
            let key = match site {
                Some(site) => func_key(p, site),
                None => FuncKey {
                    label: NO_SPAN.to_owned(),
                    file: String::new(),
                    line: 0,
                },
            };
            PathFunc {
                proc: pi,
                process: p.file.display_name(),
                key,
                ns,
            }
        })
        .collect();
    funcs.sort_by(|a, b| {
        b.ns.cmp(&a.ns)
            .then_with(|| a.proc.cmp(&b.proc))
            .then_with(|| a.key.cmp(&b.key))
    });
    funcs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(proc: usize, lane: u32, ts: i64, kind: EventKind) -> Event {
        Event {
            ts,
            proc,
            lane,
            depth: 0,
            kind,
        }
    }

    fn enter(proc: usize, lane: u32, ts: i64) -> Event {
        ev(proc, lane, ts, EventKind::Enter { site: 1 })
    }

    fn out(proc: usize, lane: u32, ts: i64, seq: u64) -> Event {
        let flow = FlowId::from_parts(9, seq);
        ev(proc, lane, ts, EventKind::FlowOut { site: 2, flow })
    }

    fn inn(proc: usize, lane: u32, ts: i64, seq: u64) -> Event {
        let flow = FlowId::from_parts(9, seq);
        ev(proc, lane, ts, EventKind::FlowIn { site: 2, flow })
    }

    fn run(
        procs: usize,
        mut evs: Vec<Event>,
        parents: &[usize],
        hops: usize,
    ) -> (usize, Vec<RawSegment>, bool) {
        evs.sort_by_key(|e| e.ts);
        let mut idx = FlowIndex::new(procs);
        for e in &evs {
            idx.observe(e);
        }
        walk(&mut idx, |p| parents.contains(&p), hops).expect("events")
    }

    fn spans(segs: &[RawSegment]) -> Vec<(usize, u32, i64, i64)> {
        segs.iter().map(|s| (s.0, s.1, s.2, s.3)).collect()
    }

    #[test]
    fn request_reply_goes_through_the_server() {
        // Process 0 (root) sends at 10, 1 receives at 12, works, replies at
        // 40, 0 receives at 41 and ends at 50. An unmatched receive at 45
        // is ignored.
        let evs = vec![
            enter(0, 1, 0),
            out(0, 1, 10, 1),
            enter(1, 1, 5),
            inn(1, 1, 12, 1),
            out(1, 1, 40, 2),
            inn(0, 1, 41, 2),
            inn(0, 1, 45, 77),
            enter(0, 1, 50),
        ];
        let (root, segs, truncated) = run(2, evs, &[1], MAX_HOPS);
        assert_eq!(root, 0);
        assert!(!truncated);
        assert_eq!(
            spans(&segs),
            [(0, 1, 0, 10), (1, 1, 12, 40), (0, 1, 41, 50)]
        );
        assert_eq!(segs[1].4, Some((FlowId::from_parts(9, 1), 10)));
    }

    #[test]
    fn a_root_is_a_process_without_parent_flow_that_ends_last() {
        let evs = vec![
            enter(0, 1, 0),
            enter(1, 2, 5),
            enter(2, 1, 9),
            enter(1, 3, 7),
        ];
        // 2 ends last but has a parent: 1, whose last event is on lane 3.
        let (root, segs, _) = run(3, evs, &[2], MAX_HOPS);
        assert_eq!(root, 1);
        assert_eq!(spans(&segs), [(1, 3, 7, 7)]);
    }

    #[test]
    fn cycles_and_late_sends_end_the_walk() {
        // A send that alignment put after its receive (1 at 30, 0 at 25:
        // clamped to 25), then a flow sent and received on the same lane at
        // the same time (used once, not forever).
        let evs = vec![
            enter(0, 1, 0),
            enter(1, 1, 1),
            out(1, 1, 25, 3),
            inn(1, 1, 25, 3),
            inn(0, 1, 25, 2),
            out(1, 1, 30, 2),
            enter(0, 1, 50),
        ];
        let (_, segs, truncated) = run(2, evs, &[1], MAX_HOPS);
        assert!(!truncated);
        assert_eq!(
            spans(&segs),
            [(1, 1, 1, 25), (1, 1, 25, 25), (0, 1, 25, 50)]
        );
        assert_eq!(segs[2].4, Some((FlowId::from_parts(9, 2), 30)));
        assert!(segs.windows(2).all(|w| w[0].3 <= w[1].2));
    }

    #[test]
    fn the_hop_bound_stops_the_walk() {
        let mut evs = vec![enter(0, 1, 0), enter(1, 1, 0)];
        for k in 0..10u64 {
            let t = 10 * k as i64 + 1;
            let (from, to) = if k % 2 == 0 { (1, 0) } else { (0, 1) };
            evs.push(out(from, 1, t, k));
            evs.push(inn(to, 1, t + 2, k));
        }
        evs.push(enter(0, 1, 200));
        let (_, all, truncated) = run(2, evs.clone(), &[1], MAX_HOPS);
        assert!(!truncated);
        assert_eq!(all.len(), 10, "the last flow, 0 to 1, is not on the path");
        let (_, cut, truncated) = run(2, evs, &[1], 3);
        assert!(truncated);
        assert_eq!(cut.len(), 4);
        assert_eq!(cut[1..], all[all.len() - 3..]);
    }
}
