//! The streaming k-way merge: every thread of every process is a
//! time-ordered stream read a chunk at a time; a heap of stream heads yields
//! one global time order. Memory grows with the number of threads, not with
//! the number of events.
//!
//! Streams also repair what a crash or overflow leaves: an exit whose entry
//! is missing is dropped and counted, spans still open at the end of a
//! process are closed at its last timestamp and marked.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};

use mpprof_format::{counter, kind, FlowId, SiteKind};

use crate::read::{self, ChunkRef, RawEvent, RecordReader};
use crate::trace::{Process, Session, LINK_SITE};

/// [`Events`] adds to [`Session::events_merged`] once per this many events.
const PROGRESS_STEP: u64 = 1 << 16;

/// How a span ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Its exit was recorded.
    Normal,
    /// Still open when the process ended abruptly (killed, crashed):
    /// closed at the process's last timestamp.
    Abrupt,
    /// Still open when the process finished its file (a thread still
    /// running at exit): closed at the process's last timestamp.
    OpenAtExit,
    /// An inner span whose exit is missing, closed when an outer span
    /// exited.
    ExitMissing,
}

impl End {
    /// Text for trace arguments, `None` for a normal end.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            End::Normal => None,
            End::Abrupt => {
                Some("process ended abruptly (killed or crashed) while this span was open")
            }
            End::OpenAtExit => Some("still open when the process exited"),
            End::ExitMissing => Some("exit not recorded; closed with its enclosing span"),
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventKind {
    /// A span begins.
    Enter {
        /// Callsite id.
        site: u32,
    },
    /// A span ends.
    Exit {
        /// Callsite id.
        site: u32,
        /// How.
        end: End,
    },
    /// An instant event.
    Instant {
        /// Callsite id.
        site: u32,
    },
    /// A counter sample.
    Counter {
        /// Callsite id.
        site: u32,
        /// Value, as recorded.
        value: CounterValue,
    },
    /// A flow leaves this thread.
    FlowOut {
        /// Callsite id (the flow's name).
        site: u32,
        /// Flow id.
        flow: FlowId,
    },
    /// A flow arrives on this thread.
    FlowIn {
        /// Callsite id (the flow's name).
        site: u32,
        /// Flow id.
        flow: FlowId,
    },
    /// An async span (a future's life across polls and threads) begins.
    AsyncBegin {
        /// Callsite id.
        site: u32,
        /// Async span id, unique within the process.
        id: u64,
    },
    /// An async span ends (completed or dropped); may be on another thread
    /// than its beginning.
    AsyncEnd {
        /// Callsite id.
        site: u32,
        /// Async span id.
        id: u64,
    },
    /// A traced I/O call ended (`mpprof::io::Traced`, format 5).
    Io {
        /// The channel's id (see [`crate::read::ProcessFile::channels`]).
        channel: u32,
        /// When the call began, ns (the event's time is its end).
        start: i64,
        /// What it did.
        call: mpprof_format::io::Call,
    },
    /// Events were lost here: buffer budget used up or disk full, or (with
    /// `overwritten`) the flight recorder overwrote this thread's oldest
    /// events, which all came before this point.
    Lost {
        /// How many.
        count: u64,
        /// Overwritten by the flight recorder (keep-last) rather than never
        /// recorded.
        overwritten: bool,
    },
}

/// A counter sample's value, as the program recorded it: integers exactly,
/// floats with their NaN and infinities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CounterValue {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float (any: NaN and the infinities too).
    Float(f64),
}

impl CounterValue {
    /// The value as an `f64` (the nearest, for integers past 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            CounterValue::Int(i) => i as f64,
            CounterValue::UInt(u) => u as f64,
            CounterValue::Float(f) => f,
        }
    }

    /// Whether it is a number JSON can hold: not NaN, not infinite.
    pub fn is_finite(self) -> bool {
        match self {
            CounterValue::Float(f) => f.is_finite(),
            _ => true,
        }
    }
}

impl std::fmt::Display for CounterValue {
    /// Integers in full; floats as Rust prints them (`NaN`, `inf`,
    /// `-inf` for those).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CounterValue::Int(i) => write!(f, "{i}"),
            CounterValue::UInt(u) => write!(f, "{u}"),
            CounterValue::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One event on the common timeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// CLOCK_MONOTONIC ns (of the reference clock domain).
    pub ts: i64,
    /// Index of the process in [`Session::processes`].
    pub proc: usize,
    /// Lane (thread) within the process.
    pub lane: u32,
    /// Open spans on this thread after the event.
    pub depth: u32,
    /// What.
    pub kind: EventKind,
}

impl Session {
    /// All events of all processes in time order, streamed.
    pub fn events(&self) -> Events<'_> {
        self.events_of(|_, _| true)
    }

    /// The events of the lanes `keep(process index, lane)` selects, in
    /// time order, streamed: what [`Session::events`] yields for them,
    /// without reading the other lanes. (Losses no lane accounts for come
    /// with the process's first lane.)
    pub fn events_of(&self, keep: impl Fn(usize, u32) -> bool) -> Events<'_> {
        // The spawn edges of processes linked to their parent by pid, for
        // the first threads of both: (process, time, event).
        let mut links: Vec<(usize, i64, EventKind)> = Vec::new();
        for (pi, p) in self.processes.iter().enumerate() {
            if let Some(l) = p.parent_link {
                let (site, flow) = (LINK_SITE, l.flow);
                links.push((l.parent, p.start_ns, EventKind::FlowOut { site, flow }));
                links.push((pi, p.start_ns, EventKind::FlowIn { site, flow }));
            }
        }
        links.sort_by_key(|&(pi, ts, _)| (pi, ts));
        let mut streams = Vec::new();
        for (pi, p) in self.processes.iter().enumerate() {
            // Losses no lane accounts for (a process killed before a thread
            // without a chunk wrote its `Lost` entry, or a file from before
            // such entries) are shown once, on the process's first lane, at
            // its end.
            let mut unattributed = p.file.unattributed_losses();
            let mut first = true;
            for (&lane, l) in &p.file.lanes {
                let unattributed = std::mem::take(&mut unattributed);
                let first = std::mem::take(&mut first);
                if !keep(pi, lane) {
                    continue;
                }
                let mut s = LaneStream::new(self, pi, lane, l, unattributed);
                if first {
                    let at = links.partition_point(|&(q, _, _)| q < pi);
                    let to = links.partition_point(|&(q, _, _)| q <= pi);
                    s.injected = links[at..to].iter().map(|&(_, ts, k)| (ts, k)).collect();
                }
                streams.push(s);
            }
        }
        let mut heads = Vec::with_capacity(streams.len());
        let mut heap = BinaryHeap::with_capacity(streams.len());
        for (i, s) in streams.iter_mut().enumerate() {
            let e = s.next_event();
            if let Some(e) = &e {
                heap.push(Reverse((e.ts, i)));
            }
            heads.push(e);
        }
        Events {
            streams,
            heads,
            heap,
            merged: &self.merged,
            unreported: 0,
        }
    }
}

/// What the merge repaired or could not read, per run of [`Events`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Events yielded.
    pub events: u64,
    /// Exits without a matching entry (dropped).
    pub unmatched_exits: u64,
    /// Spans closed by the merge (abrupt end, open at exit, missing exit).
    pub closed_spans: u64,
    /// Malformed records skipped.
    pub bad_records: u64,
    /// Chunks that could not be read (I/O errors).
    pub unreadable_chunks: u64,
    /// Timestamps that went backwards within a thread (clamped).
    pub clamped: u64,
    /// Counter samples that are NaN or infinite (kept as such; JSON, which
    /// cannot hold them as numbers, shows them otherwise).
    pub non_finite_counters: u64,
}

struct LaneStream<'a> {
    proc: usize,
    lane: u32,
    p: &'a Process,
    chunks: &'a [ChunkRef],
    /// The lane's events the flight recorder overwrote, and (for a lane
    /// with no surviving chunk) when the last of them went.
    overwritten: u64,
    overwritten_until: Option<u64>,
    /// The lane's losses that only `Meta::Lost` entries count, and when the
    /// last entry was written.
    lost_noted: u64,
    lost_noted_until: Option<u64>,
    next_chunk: usize,
    reader: Option<RecordReader>,
    /// Open spans: callsite ids.
    stack: Vec<u32>,
    last_ts: i64,
    /// Events pending before the next record (lost markers, synthetic exits).
    pending: std::collections::VecDeque<Event>,
    /// Events the merge adds to the lane at given times, in time order (the
    /// spawn edges of [`crate::trace::ParentLink`]s).
    injected: std::collections::VecDeque<(i64, EventKind)>,
    unattributed_lost: u64,
    done: bool,
    stats: MergeStats,
    /// Events read from the lane's records (before repairs and markers).
    recorded: u64,
}

impl<'a> LaneStream<'a> {
    fn new(
        s: &'a Session,
        proc: usize,
        lane: u32,
        l: &'a read::Lane,
        unattributed_lost: u64,
    ) -> LaneStream<'a> {
        let p = &s.processes[proc];
        LaneStream {
            proc,
            lane,
            p,
            chunks: &l.chunks,
            overwritten: l.overwritten,
            overwritten_until: l.overwritten_until,
            lost_noted: l.lost_noted,
            lost_noted_until: l.lost_noted_until,
            next_chunk: 0,
            reader: None,
            stack: Vec::new(),
            last_ts: i64::MIN,
            pending: Default::default(),
            injected: Default::default(),
            unattributed_lost,
            done: false,
            stats: MergeStats::default(),
            recorded: 0,
        }
    }

    fn ev(&self, ts: i64, kind: EventKind) -> Event {
        Event {
            ts,
            proc: self.proc,
            lane: self.lane,
            depth: self.stack.len() as u32,
            kind,
        }
    }

    /// Pushes a loss marker at `ts`.
    fn lost(&mut self, ts: i64, count: u64, overwritten: bool) {
        if count > 0 {
            let e = self.ev(ts, EventKind::Lost { count, overwritten });
            self.pending.push_back(e);
        }
    }

    /// Next raw record, loading chunks (a block at a time) as needed.
    fn next_raw(&mut self) -> Option<RawEvent> {
        let file = &self.p.file.file;
        loop {
            if let Some(r) = &mut self.reader {
                if let Some(e) = r.next_event(file) {
                    self.recorded += 1;
                    return Some(e);
                }
                self.stats.bad_records += r.bad;
                self.stats.unreadable_chunks += u64::from(r.io_errors > 0);
                self.reader = None;
            }
            let Some(&c) = self.chunks.get(self.next_chunk) else {
                if self.next_chunk == 0 {
                    // Nothing of the lane survives: its overwritten events
                    // all came before the reuse that took the last of them.
                    self.next_chunk = 1;
                    if self.overwritten > 0 {
                        let ts = self
                            .overwritten_until
                            .map_or(self.p.start_ns, |t| self.p.ns(t));
                        self.lost(ts, self.overwritten, true);
                        self.last_ts = self.last_ts.max(ts);
                    }
                }
                return None;
            };
            self.next_chunk += 1;
            let mut r = RecordReader::new(c);
            let first = r.next_event(file);
            self.reader = Some(r);
            // Gap markers before the chunk's first record; queued ahead of
            // it, since the caller drains `pending` in order.
            let ts = first
                .map(|f| self.p.ns(f.ts))
                .unwrap_or(self.last_ts)
                .max(self.last_ts);
            if self.next_chunk == 1 {
                self.lost(ts, self.overwritten, true);
            }
            self.lost(ts, c.lost_before, false);
            if first.is_some() {
                self.recorded += 1;
                return first;
            }
        }
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.stats.events += 1;
                return Some(e);
            }
            if self.done {
                return None;
            }
            let Some(r) = self.next_raw() else {
                self.finish();
                continue;
            };
            let mut ts = self.p.ns(r.ts);
            if ts < self.last_ts {
                self.stats.clamped += 1;
                ts = self.last_ts;
            }
            if self.injected.front().is_some_and(|&(t, _)| t <= ts) {
                self.inject_until(ts);
            }
            self.last_ts = ts;
            let flow = || {
                let p = r.payload.unwrap_or_default();
                FlowId::from_payload(p)
            };
            let kind = match r.kind {
                kind::ENTER => {
                    self.stack.push(r.site);
                    EventKind::Enter { site: r.site }
                }
                kind::EXIT => {
                    match self.stack.iter().rposition(|&s| s == r.site) {
                        None => {
                            self.stats.unmatched_exits += 1;
                            continue;
                        }
                        Some(at) => {
                            // Close inner spans whose exit is missing first.
                            while self.stack.len() > at + 1 {
                                let site = self.stack.pop().expect("len > at + 1");
                                self.stats.closed_spans += 1;
                                let e = self.ev(
                                    ts,
                                    EventKind::Exit {
                                        site,
                                        end: End::ExitMissing,
                                    },
                                );
                                self.pending.push_back(e);
                            }
                            self.stack.pop();
                            EventKind::Exit {
                                site: r.site,
                                end: End::Normal,
                            }
                        }
                    }
                }
                kind::INSTANT => EventKind::Instant { site: r.site },
                kind::COUNTER => {
                    if self.p.file.resources.contains_key(&r.site) {
                        // A resource sample: see `crate::resources`.
                        continue;
                    }
                    let p = r.payload.unwrap_or_default();
                    let value = match p[1] {
                        counter::INT => CounterValue::Int(p[0] as i64),
                        counter::UINT => CounterValue::UInt(p[0]),
                        counter::FLOAT => CounterValue::Float(f64::from_bits(p[0])),
                        _ => {
                            self.stats.bad_records += 1;
                            continue;
                        }
                    };
                    self.stats.non_finite_counters += u64::from(!value.is_finite());
                    EventKind::Counter {
                        site: r.site,
                        value,
                    }
                }
                kind::FLOW_OUT => EventKind::FlowOut {
                    site: r.site,
                    flow: flow(),
                },
                kind::ASYNC_BEGIN | kind::ASYNC_END => {
                    let id = r.payload.unwrap_or_default()[0];
                    if r.kind == kind::ASYNC_BEGIN {
                        EventKind::AsyncBegin { site: r.site, id }
                    } else {
                        EventKind::AsyncEnd { site: r.site, id }
                    }
                }
                kind::FLOW_IN => EventKind::FlowIn {
                    site: r.site,
                    flow: flow(),
                },
                // Stack samples and off-CPU intervals: see `crate::profile`.
                kind::SAMPLE | kind::OFF_CPU | kind::SYSCALL => continue,
                kind::IO => {
                    let [start, call] = r.payload.unwrap_or_default();
                    let Some(call) = mpprof_format::io::Call::unpack(call) else {
                        self.stats.bad_records += 1;
                        continue;
                    };
                    // Never after its end (a clock step between the two).
                    let start = self.p.ns(start).min(ts);
                    EventKind::Io {
                        channel: r.site,
                        start,
                        call,
                    }
                }
                _ => {
                    self.stats.bad_records += 1;
                    continue;
                }
            };
            let e = self.ev(ts, kind);
            if self.pending.is_empty() {
                // The common case: nothing queued ahead of it.
                self.stats.events += 1;
                return Some(e);
            }
            self.pending.push_back(e);
        }
    }

    /// Queues the injected events up to `ts` (the next record's time)
    /// ahead of what is pending: only loss markers at `ts` can be.
    fn inject_until(&mut self, ts: i64) {
        self.inject(ts, 0);
    }

    /// Queues the injected events up to `ts` at position `at` of the
    /// pending queue, each no earlier than the lane's last event.
    fn inject(&mut self, ts: i64, mut at: usize) {
        while let Some(&(t, kind)) = self.injected.front().filter(|&&(t, _)| t <= ts) {
            self.injected.pop_front();
            let t = t.max(self.last_ts);
            self.last_ts = t;
            let e = self.ev(t, kind);
            self.pending.insert(at, e);
            at += 1;
        }
    }

    /// End of the lane: injected events still to come, unattributed losses,
    /// then close the open spans at the process's end.
    fn finish(&mut self) {
        self.done = true;
        // After what is pending: all of it is at or before `last_ts`.
        self.inject(i64::MAX, self.pending.len());
        let end_ts = self.p.end_ns.max(self.last_ts);
        let after = self.chunks.last().map_or(0, |c| c.lost_after);
        self.lost(end_ts, after, false);
        // A lane with no record (a thread that never had a chunk) shows the
        // losses its entries count when the last entry was written (its
        // exit), if the clock places that before the end; any other at its
        // end.
        let noted_ts = match self.lost_noted_until {
            Some(t) if self.recorded == 0 => self.p.ns(t).clamp(self.last_ts, end_ts),
            _ => end_ts,
        };
        self.lost(noted_ts, self.lost_noted, false);
        self.lost(end_ts, self.unattributed_lost, false);
        let end = if self.p.file.clean {
            End::OpenAtExit
        } else {
            End::Abrupt
        };
        while let Some(site) = self.stack.pop() {
            self.stats.closed_spans += 1;
            let e = self.ev(end_ts, EventKind::Exit { site, end });
            self.pending.push_back(e);
        }
    }
}

/// Iterator over all events in time order. See [`Session::events`].
pub struct Events<'a> {
    streams: Vec<LaneStream<'a>>,
    heads: Vec<Option<Event>>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    /// The session's progress counter, and the events not yet added to it.
    merged: &'a AtomicU64,
    unreported: u64,
}

impl Events<'_> {
    /// Repairs and problems seen so far, summed over all threads.
    pub fn stats(&self) -> MergeStats {
        let mut t = MergeStats::default();
        for s in &self.streams {
            t.events += s.stats.events;
            t.unmatched_exits += s.stats.unmatched_exits;
            t.closed_spans += s.stats.closed_spans;
            t.bad_records += s.stats.bad_records;
            t.unreadable_chunks += s.stats.unreadable_chunks;
            t.clamped += s.stats.clamped;
            t.non_finite_counters += s.stats.non_finite_counters;
        }
        t
    }

    /// Events read so far from the records of process `proc` (its index in
    /// [`Session::processes`]), before repairs and loss markers. Once the
    /// iterator has ended, this is [`ProcessFile::recorded_events`], counted
    /// without reading the file again.
    pub fn recorded_events(&self, proc: usize) -> u64 {
        self.streams
            .iter()
            .filter(|s| s.proc == proc)
            .map(|s| s.recorded)
            .sum()
    }
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let Some(mut top) = self.heap.peek_mut() else {
            self.merged.fetch_add(self.unreported, Ordering::Relaxed);
            self.unreported = 0;
            return None;
        };
        self.unreported += 1;
        if self.unreported == PROGRESS_STEP {
            self.merged.fetch_add(PROGRESS_STEP, Ordering::Relaxed);
            self.unreported = 0;
        }
        let Reverse((_, i)) = *top;
        let next = self.streams[i].next_event();
        // The stream's next event replaces its head in place: one sift
        // down (when it is still the earliest, none) instead of a pop and
        // a push.
        match &next {
            Some(n) => *top = Reverse((n.ts, i)),
            None => drop(std::collections::binary_heap::PeekMut::pop(top)),
        }
        std::mem::replace(&mut self.heads[i], next)
    }
}

/// Whether a callsite id names a flow endpoint (for writers that label them).
pub fn is_flow_site(p: &Process, site: u32) -> bool {
    p.site(site).is_some_and(|s| s.kind == SiteKind::Flow)
}
