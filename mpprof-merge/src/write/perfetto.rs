//! Perfetto protobuf trace (opens in ui.perfetto.dev and trace_processor).
//!
//! The file is a `perfetto.protos.Trace`: a run of `TracePacket`s (field 1),
//! all on one packet sequence (`trusted_packet_sequence_id` = 1), written as
//! the merge streams them, with a small hand-written encoder (no protobuf
//! crate). Field numbers are those of Perfetto's protos
//! (`protos/perfetto/trace/trace_packet.proto`, `track_event/*.proto`,
//! `interned_data/interned_data.proto` in google/perfetto); see [`field`].
//!
//! - A `TrackDescriptor` per process (`ProcessDescriptor` with pid and
//!   `"exe (pid N)"`), per thread (`ThreadDescriptor` with pid, tid and
//!   name) and, on first use, per counter (a `CounterDescriptor` track named
//!   after the counter, child of its process's track). Pids and tids come
//!   from [`Tracks`], as in the Chrome writer.
//! - Spans are `TYPE_SLICE_BEGIN`/`TYPE_SLICE_END` on the thread track. A
//!   span the merge closed carries the debug annotation `unfinished` (the
//!   reason) on its END, plus `ended_abruptly: true` if the process died.
//! - Instants are `TYPE_INSTANT`, counters `TYPE_COUNTER` (`counter_value`
//!   for integral values, exactly, else `double_counter_value`, NaN and
//!   infinities included), lost or overwritten
//!   events an instant named `"N events lost"`/`"N events overwritten"`, and
//!   a process that died gets a `process ended abruptly` instant on its
//!   process track.
//! - An async span (a future's whole life) is a BEGIN/END pair on a track of
//!   its own, named after it, child of its process's track (the UI shows
//!   sibling tracks of one name as one); one still open when its process
//!   ended is closed there and marked like an unfinished span.
//! - Flow endpoints are zero-length instants (`send X`, `recv X`, `process
//!   start`) on the thread, nested in whatever slice is open there: the
//!   sending one carries `flow_ids`, the receiving one
//!   `terminating_flow_ids`, both [`flow_key`] of the flow, so Perfetto
//!   draws the arrow between them. The full 128-bit id is kept in the
//!   `flow_id` annotation.
//! - Event names are interned (`interned_data.event_names`, referenced by
//!   `name_iid`; the first packet sets `SEQ_INCREMENTAL_STATE_CLEARED`), so a
//!   name repeated millions of times is written once. Memory is bounded by
//!   the number of tracks and distinct names.
//! - Timestamps are the merged timeline's CLOCK_MONOTONIC nanoseconds
//!   (shifted up if any were negative), in `TracePacket.timestamp` without a
//!   `timestamp_clock_id`, so Perfetto reads them on its default trace clock
//!   as they are: the file holds no other clock to relate them to, and a
//!   non-default clock id would need `ClockSnapshot` packets to convert.
//!
//! The tests read this output back with `mpprof-testkit`'s decoder (which
//! checks the promises above) and with `protoc` against Perfetto's own
//! protos.

use std::collections::HashMap;
use std::io::{self, Write};

use mpprof_format::flow_name;

use super::{flow_key, thread_label, Tracks};
use crate::hash::FastMap;
use crate::merge::{CounterValue, End, EventKind, MergeStats};
use crate::profile::Profile;
use crate::resources::{self, Resources};
use crate::trace::Session;

/// Field numbers and enum values used, as in Perfetto's `.proto` files
/// (package `perfetto.protos`).
pub mod field {
    /// `Trace.packet` (trace.proto): `repeated TracePacket packet = 1`.
    pub const TRACE_PACKET: u32 = 1;

    /// `TracePacket` (trace_packet.proto).
    pub mod packet {
        /// `optional uint64 timestamp = 8`.
        pub const TIMESTAMP: u32 = 8;
        /// `uint32 trusted_packet_sequence_id = 10`.
        pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
        /// `TrackEvent track_event = 11`.
        pub const TRACK_EVENT: u32 = 11;
        /// `optional InternedData interned_data = 12`.
        pub const INTERNED_DATA: u32 = 12;
        /// `optional uint32 sequence_flags = 13`.
        pub const SEQUENCE_FLAGS: u32 = 13;
        /// `TrackDescriptor track_descriptor = 60`.
        pub const TRACK_DESCRIPTOR: u32 = 60;
        /// `optional PerfSample perf_sample = 66`.
        pub const PERF_SAMPLE: u32 = 66;
        /// `SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
        pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
    }

    /// `TrackDescriptor` (track_event/track_descriptor.proto).
    pub mod track {
        /// `optional uint64 uuid = 1`.
        pub const UUID: u32 = 1;
        /// `optional string name = 2`.
        pub const NAME: u32 = 2;
        /// `optional ProcessDescriptor process = 3`.
        pub const PROCESS: u32 = 3;
        /// `optional ThreadDescriptor thread = 4`.
        pub const THREAD: u32 = 4;
        /// `optional uint64 parent_uuid = 5`.
        pub const PARENT_UUID: u32 = 5;
        /// `optional CounterDescriptor counter = 8`.
        pub const COUNTER: u32 = 8;
    }

    /// `ProcessDescriptor` (track_event/process_descriptor.proto).
    pub mod process {
        /// `optional int32 pid = 1`.
        pub const PID: u32 = 1;
        /// `optional string process_name = 6`.
        pub const PROCESS_NAME: u32 = 6;
    }

    /// `ThreadDescriptor` (track_event/thread_descriptor.proto).
    pub mod thread {
        /// `optional int32 pid = 1`.
        pub const PID: u32 = 1;
        /// `optional int32 tid = 2`.
        pub const TID: u32 = 2;
        /// `optional string thread_name = 5`.
        pub const THREAD_NAME: u32 = 5;
    }

    /// `TrackEvent` (track_event/track_event.proto).
    pub mod event {
        /// `repeated DebugAnnotation debug_annotations = 4`.
        pub const DEBUG_ANNOTATIONS: u32 = 4;
        /// `optional Type type = 9`.
        pub const TYPE: u32 = 9;
        /// `uint64 name_iid = 10` (interned `EventName`).
        pub const NAME_IID: u32 = 10;
        /// `optional uint64 track_uuid = 11`.
        pub const TRACK_UUID: u32 = 11;
        /// `repeated string categories = 22`.
        pub const CATEGORIES: u32 = 22;
        /// `string name = 23`.
        pub const NAME: u32 = 23;
        /// `int64 counter_value = 30`.
        pub const COUNTER_VALUE: u32 = 30;
        /// `double double_counter_value = 44`.
        pub const DOUBLE_COUNTER_VALUE: u32 = 44;
        /// `repeated fixed64 flow_ids = 47`.
        pub const FLOW_IDS: u32 = 47;
        /// `repeated fixed64 terminating_flow_ids = 48`.
        pub const TERMINATING_FLOW_IDS: u32 = 48;
        /// `Type.TYPE_SLICE_BEGIN`.
        pub const TYPE_SLICE_BEGIN: u64 = 1;
        /// `Type.TYPE_SLICE_END`.
        pub const TYPE_SLICE_END: u64 = 2;
        /// `Type.TYPE_INSTANT`.
        pub const TYPE_INSTANT: u64 = 3;
        /// `Type.TYPE_COUNTER`.
        pub const TYPE_COUNTER: u64 = 4;
    }

    /// `DebugAnnotation` (track_event/debug_annotation.proto).
    pub mod annotation {
        /// `bool bool_value = 2`.
        pub const BOOL_VALUE: u32 = 2;
        /// `uint64 uint_value = 3`.
        pub const UINT_VALUE: u32 = 3;
        /// `string string_value = 6`.
        pub const STRING_VALUE: u32 = 6;
        /// `string name = 10`.
        pub const NAME: u32 = 10;
    }

    /// `InternedData` (interned_data/interned_data.proto) and `EventName`
    /// (track_event/track_event.proto).
    pub mod interned {
        /// `InternedData`: `repeated EventName event_names = 2`.
        pub const EVENT_NAMES: u32 = 2;
        /// `EventName`: `optional uint64 iid = 1`.
        pub const IID: u32 = 1;
        /// `EventName`: `optional string name = 2`.
        pub const NAME: u32 = 2;
        /// `InternedData`: `repeated InternedString function_names = 5`.
        pub const FUNCTION_NAMES: u32 = 5;
        /// `InternedData`: `repeated Frame frames = 6`.
        pub const FRAMES: u32 = 6;
        /// `InternedData`: `repeated Callstack callstacks = 7`.
        pub const CALLSTACKS: u32 = 7;
        /// `InternedData`: `repeated InternedString build_ids = 16`.
        pub const BUILD_IDS: u32 = 16;
        /// `InternedData`: `repeated InternedString mapping_paths = 17`.
        pub const MAPPING_PATHS: u32 = 17;
        /// `InternedData`: `repeated Mapping mappings = 19`.
        pub const MAPPINGS: u32 = 19;
        /// `InternedString`: `optional bytes str = 2` (its `iid` is 1).
        pub const STR: u32 = 2;
    }

    /// `Frame`, `Mapping` and `Callstack` (profiling/profile_common.proto).
    pub mod profile {
        /// `Frame`: `optional uint64 function_name_id = 2` (its `iid` is 1).
        pub const FRAME_FUNCTION_NAME_ID: u32 = 2;
        /// `Frame`: `optional uint64 mapping_id = 3`.
        pub const FRAME_MAPPING_ID: u32 = 3;
        /// `Frame`: `optional uint64 rel_pc = 4`.
        pub const FRAME_REL_PC: u32 = 4;
        /// `Mapping`: `optional uint64 build_id = 2`.
        pub const MAPPING_BUILD_ID: u32 = 2;
        /// `Mapping`: `repeated uint64 path_string_ids = 7`.
        pub const MAPPING_PATH_STRING_IDS: u32 = 7;
        /// `Callstack`: `repeated uint64 frame_ids = 2`, the outermost
        /// frame first.
        pub const CALLSTACK_FRAME_IDS: u32 = 2;
    }

    /// `PerfSample` (profiling/profile_packet.proto).
    pub mod sample {
        /// `optional uint32 cpu = 1`.
        pub const CPU: u32 = 1;
        /// `optional uint32 pid = 2`.
        pub const PID: u32 = 2;
        /// `optional uint32 tid = 3`.
        pub const TID: u32 = 3;
        /// `optional uint64 callstack_iid = 4`.
        pub const CALLSTACK_IID: u32 = 4;
        /// `optional Profiling.CpuMode cpu_mode = 5`.
        pub const CPU_MODE: u32 = 5;
        /// `Profiling.CpuMode.MODE_USER`.
        pub const MODE_USER: u64 = 2;
        /// `optional uint64 kernel_records_lost = 17`.
        pub const KERNEL_RECORDS_LOST: u32 = 17;
    }
}

use field::{annotation as da, event as te, interned, packet as pk, track as td};

/// The packet sequence every packet is written on.
const SEQUENCE_ID: u64 = 1;

/// Protobuf wire types (the low 3 bits of a field's tag).
pub mod wire {
    /// Varint: uint32, uint64, int32/int64 (two's complement), bool, enum.
    pub const VARINT: u8 = 0;
    /// 64-bit: fixed64, double.
    pub const I64: u8 = 1;
    /// Length-delimited: string, bytes, nested messages, packed fields.
    pub const LEN: u8 = 2;
    /// 32-bit: fixed32, float.
    pub const I32: u8 = 5;
}

use wire::{I64 as WT_I64, LEN as WT_LEN, VARINT as WT_VARINT};

/// Writes the whole session as a Perfetto protobuf trace.
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    let res = Resources::of(session);
    let tracks = Tracks::new(session, res.hosts.len());
    // `mpprof::wait` records only the receiving end of a flow from the
    // child's end; its start is written at that end, on the lane of the
    // child's last event, when the receive is (out of time order, which the
    // trace processor sorts).
    let mut exits = session.child_exits();
    let mut w = Pf {
        out,
        enc: Enc::default(),
        base: session.start_ns().min(0),
        first: true,
        next_uuid: 1,
        process_uuids: Vec::with_capacity(session.processes.len()),
        threads: FastMap::default(),
        bare_threads: HashMap::new(),
        counters: FastMap::default(),
        counter_names: HashMap::new(),
        open_async: FastMap::default(),
        names: FastMap::default(),
        strings: HashMap::new(),
        new_names: Vec::new(),
    };
    for (pi, p) in session.processes.iter().enumerate() {
        let uuid = w.process_track(tracks.pid(pi), &p.file.display_name())?;
        w.process_uuids.push(uuid);
        for &lane in p.file.lanes.keys() {
            w.thread_uuid(session, &tracks, pi, lane)?;
        }
    }
    let mut events = session.events();
    for e in events.by_ref() {
        let p = &session.processes[e.proc];
        let ev = match e.kind {
            EventKind::Enter { site } => TrackEvent {
                kind: te::TYPE_SLICE_BEGIN,
                track: w.thread_uuid(session, &tracks, e.proc, e.lane)?,
                name: Name::Iid(w.name_iid(session, e.proc, site, Label::Plain)),
                ..TrackEvent::default()
            },
            EventKind::Exit { end, .. } => {
                let track = w.thread_uuid(session, &tracks, e.proc, e.lane)?;
                TrackEvent {
                    kind: te::TYPE_SLICE_END,
                    track,
                    annotations: Annotations::end(end),
                    ..TrackEvent::default()
                }
            }
            EventKind::Instant { site } => TrackEvent {
                kind: te::TYPE_INSTANT,
                track: w.thread_uuid(session, &tracks, e.proc, e.lane)?,
                name: Name::Iid(w.name_iid(session, e.proc, site, Label::Plain)),
                ..TrackEvent::default()
            },
            EventKind::Counter { site, value } => TrackEvent {
                kind: te::TYPE_COUNTER,
                track: w.counter_uuid(session, e.proc, site)?,
                counter: Some(value),
                ..TrackEvent::default()
            },
            EventKind::Io {
                channel,
                start,
                call,
            } => {
                // A slice from the call's start to its end (here), on the
                // thread's track: begun out of time order, which the trace
                // processor sorts.
                let track = w.thread_uuid(session, &tracks, e.proc, e.lane)?;
                let begin = TrackEvent {
                    kind: te::TYPE_SLICE_BEGIN,
                    track,
                    name: Name::Str(super::io_name(p, channel, call)),
                    category: Some("io"),
                    annotations: Annotations::Io(call),
                    ..TrackEvent::default()
                };
                w.event(start, &begin)?;
                TrackEvent {
                    kind: te::TYPE_SLICE_END,
                    track,
                    ..TrackEvent::default()
                }
            }
            EventKind::Lost { count, overwritten } => {
                let (name, detail) = if overwritten {
                    ("events overwritten", "flight recorder (keep-last): this thread's events before this point were overwritten; what is left of its trace starts here")
                } else {
                    ("events lost", "buffer budget used up or disk full: this thread's events around here are missing")
                };
                TrackEvent {
                    kind: te::TYPE_INSTANT,
                    track: w.thread_uuid(session, &tracks, e.proc, e.lane)?,
                    name: Name::Str(format!("{count} {name}")),
                    category: Some("mpprof"),
                    annotations: Annotations::Lost(count, detail),
                    ..TrackEvent::default()
                }
            }
            EventKind::AsyncBegin { site, id } => TrackEvent {
                kind: te::TYPE_SLICE_BEGIN,
                track: w.async_track(session, e.proc, site, id)?,
                name: Name::Iid(w.name_iid(session, e.proc, site, Label::Plain)),
                ..TrackEvent::default()
            },
            EventKind::AsyncEnd { id, .. } => match w.open_async.remove(&(e.proc, id)) {
                Some(track) => TrackEvent {
                    kind: te::TYPE_SLICE_END,
                    track,
                    ..TrackEvent::default()
                },
                None => continue, // its beginning was not recorded (overwritten, lost)
            },
            EventKind::FlowOut { site, flow } | EventKind::FlowIn { site, flow } => {
                let out = matches!(e.kind, EventKind::FlowOut { .. });
                let label = match (out, &*p.site_name(site)) {
                    (false, n) if n == flow_name::SPAWN || n == flow_name::FORK => {
                        Label::ProcessStart
                    }
                    (true, _) => Label::Send,
                    (false, _) => Label::Recv,
                };
                let key = flow_key(flow);
                if let Some((cpi, lane, ts)) = exits.remove(&flow).filter(|_| !out) {
                    let start = TrackEvent {
                        kind: te::TYPE_INSTANT,
                        track: w.thread_uuid(session, &tracks, cpi, lane)?,
                        name: Name::Str("send exit".to_owned()),
                        flow: Some((true, key)),
                        annotations: Annotations::Flow(flow.to_string()),
                        ..TrackEvent::default()
                    };
                    w.event(ts, &start)?;
                }
                TrackEvent {
                    kind: te::TYPE_INSTANT,
                    track: w.thread_uuid(session, &tracks, e.proc, e.lane)?,
                    name: Name::Iid(w.name_iid(session, e.proc, site, label)),
                    flow: Some((out, key)),
                    annotations: Annotations::Flow(flow.to_string()),
                    ..TrackEvent::default()
                }
            }
        };
        w.event(e.ts, &ev)?;
    }
    let stats = events.stats();
    w.resources(session, &tracks, &res)?;
    w.profile(session, &tracks, &Profile::of(session))?;
    // Async spans still open when their process ended: closed there.
    let mut open: Vec<((usize, u64), u64)> = w.open_async.drain().collect();
    open.sort_unstable();
    for ((pi, _), track) in open {
        let p = &session.processes[pi];
        let end = if p.file.clean {
            End::OpenAtExit
        } else {
            End::Abrupt
        };
        let ev = TrackEvent {
            kind: te::TYPE_SLICE_END,
            track,
            annotations: Annotations::end(end),
            ..TrackEvent::default()
        };
        w.event(p.end_ns, &ev)?;
    }
    // Process-level markers: abrupt ends.
    for (pi, p) in session.processes.iter().enumerate() {
        if !p.file.clean {
            let ev = TrackEvent {
                kind: te::TYPE_INSTANT,
                track: w.process_uuids[pi],
                name: Name::Str("process ended abruptly".to_owned()),
                category: Some("mpprof"),
                annotations: Annotations::Detail("the process did not finish its buffer file (killed or crashed); open spans are closed here"),
                ..TrackEvent::default()
            };
            w.event(p.end_ns, &ev)?;
        }
    }
    w.out.flush()?;
    Ok(stats)
}

/// Which name a callsite's event shows: flow endpoints are labelled like the
/// Chrome writer's host slices.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Label {
    Plain,
    Send,
    Recv,
    ProcessStart,
}

#[derive(Default)]
enum Name {
    #[default]
    None,
    Iid(u64),
    Str(String),
}

#[derive(Default)]
enum Annotations {
    #[default]
    None,
    Unfinished(&'static str),
    Abrupt(&'static str),
    Lost(u64, &'static str),
    Flow(String),
    Detail(&'static str),
    Io(mpprof_format::io::Call),
}

impl Annotations {
    /// The annotations of the END of a span that ended this way.
    fn end(end: End) -> Annotations {
        match end.reason() {
            None => Annotations::None,
            Some(r) if end == End::Abrupt => Annotations::Abrupt(r),
            Some(r) => Annotations::Unfinished(r),
        }
    }
}

#[derive(Default)]
struct TrackEvent {
    kind: u64,
    track: u64,
    name: Name,
    category: Option<&'static str>,
    counter: Option<CounterValue>,
    /// (outgoing, id): `flow_ids` if outgoing, else `terminating_flow_ids`.
    flow: Option<(bool, u64)>,
    annotations: Annotations,
}

struct Pf<'a> {
    out: &'a mut dyn Write,
    enc: Enc,
    /// Subtracted from every timestamp (≤ 0) so that none is negative.
    base: i64,
    first: bool,
    next_uuid: u64,
    process_uuids: Vec<u64>,
    threads: FastMap<(usize, u32), u64>,
    /// (process, OS thread id) to the track of a thread without a lane
    /// (sampled, but it recorded no event).
    bare_threads: HashMap<(usize, u32), u64>,
    /// (process, counter callsite) to counter track.
    counters: FastMap<(usize, u32), u64>,
    /// (process, counter name) to counter track: callsites sharing a name
    /// share a track, as they share a series in the Chrome output.
    counter_names: HashMap<(usize, String), u64>,
    /// Open async spans: (process, async id) to their track.
    open_async: FastMap<(usize, u64), u64>,
    /// (process, callsite, label) to interned name.
    names: FastMap<(usize, u32, Label), u64>,
    strings: HashMap<String, u64>,
    /// Names interned since the last packet, emitted with the next one.
    new_names: Vec<(u64, String)>,
}

impl Pf<'_> {
    fn uuid(&mut self) -> u64 {
        let u = self.next_uuid;
        self.next_uuid += 1;
        u
    }

    /// Writes one `TracePacket` on the sequence: `body` adds its payload;
    /// the timestamp, sequence id, flags and new interned names are added
    /// here.
    fn packet(&mut self, ts: Option<i64>, body: impl FnOnce(&mut Enc)) -> io::Result<()> {
        let first = std::mem::replace(&mut self.first, false);
        let ts = ts.map(|t| t.saturating_sub(self.base).max(0) as u64);
        let new_names = std::mem::take(&mut self.new_names);
        let e = &mut self.enc;
        e.buf.clear();
        e.msg(field::TRACE_PACKET, |e| {
            if let Some(ts) = ts {
                e.uint(pk::TIMESTAMP, ts);
            }
            e.uint(pk::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE_ID);
            if first {
                e.uint(pk::SEQUENCE_FLAGS, pk::SEQ_INCREMENTAL_STATE_CLEARED);
            }
            if !new_names.is_empty() {
                e.msg(pk::INTERNED_DATA, |e| {
                    for (iid, name) in &new_names {
                        e.msg(interned::EVENT_NAMES, |e| {
                            e.uint(interned::IID, *iid);
                            e.str(interned::NAME, name);
                        });
                    }
                });
            }
            body(e);
        });
        self.out.write_all(&self.enc.buf)
    }

    /// The thread track of a lane, described on first use.
    fn thread_uuid(
        &mut self,
        s: &Session,
        tracks: &Tracks,
        pi: usize,
        lane: u32,
    ) -> io::Result<u64> {
        if let Some(&u) = self.threads.get(&(pi, lane)) {
            return Ok(u);
        }
        let uuid = self.uuid();
        self.threads.insert((pi, lane), uuid);
        let parent = self.process_uuids[pi];
        let (pid, tid) = (tracks.pid(pi), tracks.tid(pi, lane));
        let name = match s.processes[pi].file.lanes.get(&lane) {
            Some(l) if !l.name.is_empty() => l.name.clone(),
            _ => format!("thread {lane}"),
        };
        self.packet(None, |e| {
            e.msg(pk::TRACK_DESCRIPTOR, |e| {
                e.uint(td::UUID, uuid);
                e.uint(td::PARENT_UUID, parent);
                e.msg(td::THREAD, |e| {
                    e.int32(field::thread::PID, pid);
                    e.int32(field::thread::TID, tid);
                    e.str(field::thread::THREAD_NAME, &name);
                });
            });
        })?;
        Ok(uuid)
    }

    /// The resource tracks (after the events, out of time order, which
    /// the trace processor sorts): counter tracks of each process (a
    /// thread's on-CPU % under its thread's track when it recorded), and a
    /// "system" process per host with its own.
    fn resources(&mut self, session: &Session, tracks: &Tracks, res: &Resources) -> io::Result<()> {
        for (pi, r) in res.processes.iter().enumerate() {
            let Some(r) = r else { continue };
            let p = &session.processes[pi];
            for t in resources::process_tracks(r, |tid, comm| thread_label(p, tid, comm)) {
                let lane = t.tid.and_then(|tid| p.file.lane_of_tid(tid));
                let parent = match lane {
                    Some(lane) => self.thread_uuid(session, tracks, pi, lane)?,
                    None => self.process_uuids[pi],
                };
                self.counter_track(parent, &t)?;
            }
        }
        for (hi, h) in res.hosts.iter().enumerate() {
            let uuid = self.process_track(tracks.host_pid(hi), &h.label())?;
            for t in &h.tracks {
                self.counter_track(uuid, t)?;
            }
        }
        Ok(())
    }

    /// The stack samples (`PerfSample` packets, which ui.perfetto.dev
    /// shows as a flame chart per thread and per process) and the off-CPU
    /// intervals (slices on an "off CPU" track under each thread's track),
    /// after the events, out of time order, which the trace processor sorts.
    fn profile(&mut self, session: &Session, tracks: &Tracks, prof: &Profile) -> io::Result<()> {
        if !prof
            .processes
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| !p.samples.is_empty()))
        {
            return self.off_cpu(session, tracks, prof);
        }
        // Every frame and function once, for all processes: frame i is
        // iid i + 1; a mapping per module file name.
        let mut functions: HashMap<&str, u64> = HashMap::new();
        let mut modules: HashMap<&str, u64> = HashMap::new();
        for f in &prof.frames {
            let n = functions.len() as u64 + 1;
            functions.entry(&f.function).or_insert(n);
            let n = modules.len() as u64 + 1;
            modules.entry(&f.module).or_insert(n);
        }
        self.packet(None, |e| {
            e.msg(pk::INTERNED_DATA, |e| {
                let mut names: Vec<(&str, u64)> = functions.iter().map(|(k, v)| (*k, *v)).collect();
                names.sort_unstable_by_key(|x| x.1);
                for (name, iid) in names {
                    e.msg(interned::FUNCTION_NAMES, |e| {
                        e.uint(interned::IID, iid);
                        e.str(interned::STR, name);
                    });
                }
                let mut mods: Vec<(&str, u64)> = modules.iter().map(|(k, v)| (*k, *v)).collect();
                mods.sort_unstable_by_key(|x| x.1);
                for &(name, iid) in &mods {
                    e.msg(interned::MAPPING_PATHS, |e| {
                        e.uint(interned::IID, iid);
                        e.str(interned::STR, name);
                    });
                    e.msg(interned::BUILD_IDS, |e| {
                        e.uint(interned::IID, iid);
                        e.str(interned::STR, "");
                    });
                    e.msg(interned::MAPPINGS, |e| {
                        e.uint(interned::IID, iid);
                        e.uint(field::profile::MAPPING_BUILD_ID, iid);
                        e.uint(field::profile::MAPPING_PATH_STRING_IDS, iid);
                    });
                }
                for (i, f) in prof.frames.iter().enumerate() {
                    e.msg(interned::FRAMES, |e| {
                        e.uint(interned::IID, i as u64 + 1);
                        e.uint(
                            field::profile::FRAME_FUNCTION_NAME_ID,
                            functions[f.function.as_str()],
                        );
                        e.uint(field::profile::FRAME_MAPPING_ID, modules[f.module.as_str()]);
                        e.uint(field::profile::FRAME_REL_PC, 0);
                    });
                }
            });
        })?;
        let mut next_stack = 1u64;
        for (pi, pp) in prof.processes.iter().enumerate() {
            let Some(pp) = pp else { continue };
            let pid = tracks.pid(pi);
            // This process's stacks as callstack iids.
            let mut ids: HashMap<u32, u64> = HashMap::new();
            for smp in &pp.samples {
                ids.entry(smp.stack).or_insert_with(|| {
                    next_stack += 1;
                    next_stack - 1
                });
            }
            let mut order: Vec<(u32, u64)> = ids.iter().map(|(k, v)| (*k, *v)).collect();
            order.sort_unstable_by_key(|x| x.1);
            self.packet(None, |e| {
                e.msg(pk::INTERNED_DATA, |e| {
                    for &(stack, iid) in &order {
                        e.msg(interned::CALLSTACKS, |e| {
                            e.uint(interned::IID, iid);
                            for &f in prof.stack(pi, stack).iter().rev() {
                                e.uint(field::profile::CALLSTACK_FRAME_IDS, u64::from(f) + 1);
                            }
                        });
                    }
                });
            })?;
            for smp in &pp.samples {
                let tid = tracks.thread_tid(pi, &session.processes[pi], smp.tid);
                let iid = ids[&smp.stack];
                self.packet(Some(smp.t), |e| {
                    e.msg(pk::PERF_SAMPLE, |e| {
                        e.uint(field::sample::CPU, u64::from(smp.cpu));
                        e.uint(field::sample::PID, u64::from(pid));
                        e.uint(field::sample::TID, u64::from(tid));
                        e.uint(field::sample::CPU_MODE, field::sample::MODE_USER);
                        e.uint(field::sample::CALLSTACK_IID, iid);
                    });
                })?;
            }
            if pp.info.lost_records > 0 {
                let end = session.processes[pi].end_ns;
                self.packet(Some(end), |e| {
                    e.msg(pk::PERF_SAMPLE, |e| {
                        e.uint(field::sample::PID, u64::from(pid));
                        e.uint(field::sample::KERNEL_RECORDS_LOST, pp.info.lost_records);
                    });
                })?;
            }
        }
        self.off_cpu(session, tracks, prof)
    }

    /// The off-CPU intervals and the traced system calls: an "off CPU" and
    /// a "syscalls" track under each thread's.
    fn off_cpu(&mut self, session: &Session, tracks: &Tracks, prof: &Profile) -> io::Result<()> {
        for (pi, pp) in prof.processes.iter().enumerate() {
            let Some(pp) = pp else { continue };
            let off = pp.off_cpu.iter().map(|o| {
                let name = if o.preempted {
                    "off CPU (preempted)"
                } else {
                    "off CPU (blocked)"
                };
                (o.tid, o.start, o.end, name.to_owned())
            });
            self.slice_tracks(session, tracks, pi, "off CPU", "sched", off)?;
            let calls = pp
                .syscalls
                .iter()
                .map(|c| (c.tid, c.start, c.end, crate::profile::syscall_name(c.nr)));
            self.slice_tracks(session, tracks, pi, "syscalls", "syscall", calls)?;
        }
        Ok(())
    }

    /// Slices (thread, start, end, name), grouped by thread (consecutive),
    /// on a track named `track` under each thread's track.
    fn slice_tracks(
        &mut self,
        session: &Session,
        tracks: &Tracks,
        pi: usize,
        track: &str,
        category: &'static str,
        slices: impl Iterator<Item = (u32, i64, i64, String)>,
    ) -> io::Result<()> {
        let mut current: Option<(u32, u64)> = None;
        for (tid, start, end, name) in slices {
            let uuid = match current {
                Some((t, u)) if t == tid => u,
                _ => {
                    let parent = self.tid_track(session, tracks, pi, tid)?;
                    let uuid = self.uuid();
                    self.packet(None, |e| {
                        e.msg(pk::TRACK_DESCRIPTOR, |e| {
                            e.uint(td::UUID, uuid);
                            e.uint(td::PARENT_UUID, parent);
                            e.str(td::NAME, track);
                        });
                    })?;
                    current = Some((tid, uuid));
                    uuid
                }
            };
            let begin = TrackEvent {
                kind: te::TYPE_SLICE_BEGIN,
                track: uuid,
                name: Name::Str(name),
                category: Some(category),
                ..TrackEvent::default()
            };
            self.event(start, &begin)?;
            let end_ev = TrackEvent {
                kind: te::TYPE_SLICE_END,
                track: uuid,
                ..TrackEvent::default()
            };
            self.event(end, &end_ev)?;
        }
        Ok(())
    }

    /// The thread track of thread `tid` of process `pi`: its lane's, or a
    /// track of its own for a thread that recorded no event.
    fn tid_track(&mut self, s: &Session, tracks: &Tracks, pi: usize, tid: u32) -> io::Result<u64> {
        if let Some(lane) = s.processes[pi].file.lane_of_tid(tid) {
            return self.thread_uuid(s, tracks, pi, lane);
        }
        if let Some(&u) = self.bare_threads.get(&(pi, tid)) {
            return Ok(u);
        }
        let uuid = self.uuid();
        self.bare_threads.insert((pi, tid), uuid);
        let parent = self.process_uuids[pi];
        let pid = tracks.pid(pi);
        self.packet(None, |e| {
            e.msg(pk::TRACK_DESCRIPTOR, |e| {
                e.uint(td::UUID, uuid);
                e.uint(td::PARENT_UUID, parent);
                e.msg(td::THREAD, |e| {
                    e.int32(field::thread::PID, pid);
                    e.int32(field::thread::TID, tid);
                    e.str(field::thread::THREAD_NAME, &format!("thread {tid}"));
                });
            });
        })?;
        Ok(uuid)
    }

    /// A new process track (pid, name); returns its uuid.
    fn process_track(&mut self, pid: u32, name: &str) -> io::Result<u64> {
        let uuid = self.uuid();
        self.packet(None, |e| {
            e.msg(pk::TRACK_DESCRIPTOR, |e| {
                e.uint(td::UUID, uuid);
                e.msg(td::PROCESS, |e| {
                    e.int32(field::process::PID, pid);
                    e.str(field::process::PROCESS_NAME, name);
                });
            });
        })?;
        Ok(uuid)
    }

    /// A counter track under `parent` and its values.
    fn counter_track(&mut self, parent: u64, t: &resources::Track) -> io::Result<()> {
        let uuid = self.uuid();
        self.packet(None, |e| {
            e.msg(pk::TRACK_DESCRIPTOR, |e| {
                e.uint(td::UUID, uuid);
                e.uint(td::PARENT_UUID, parent);
                e.str(td::NAME, &t.name);
                e.msg(td::COUNTER, |_| {});
            });
        })?;
        for &(ts, v) in &t.points {
            let ev = TrackEvent {
                kind: te::TYPE_COUNTER,
                track: uuid,
                counter: Some(CounterValue::Float(v)),
                ..TrackEvent::default()
            };
            self.event(ts, &ev)?;
        }
        Ok(())
    }

    /// The counter track of a counter callsite, described on first use.
    fn counter_uuid(&mut self, s: &Session, pi: usize, site: u32) -> io::Result<u64> {
        if let Some(&u) = self.counters.get(&(pi, site)) {
            return Ok(u);
        }
        let name = s.processes[pi].site_name(site).into_owned();
        if let Some(&u) = self.counter_names.get(&(pi, name.clone())) {
            self.counters.insert((pi, site), u);
            return Ok(u);
        }
        let uuid = self.uuid();
        let parent = self.process_uuids[pi];
        self.packet(None, |e| {
            e.msg(pk::TRACK_DESCRIPTOR, |e| {
                e.uint(td::UUID, uuid);
                e.uint(td::PARENT_UUID, parent);
                e.str(td::NAME, &name);
                e.msg(td::COUNTER, |_| {});
            });
        })?;
        self.counters.insert((pi, site), uuid);
        self.counter_names.insert((pi, name), uuid);
        Ok(uuid)
    }

    /// A new track for an async span, named after it, under its process (the
    /// UI shows sibling tracks of the same name as one).
    fn async_track(&mut self, s: &Session, pi: usize, site: u32, id: u64) -> io::Result<u64> {
        let uuid = self.uuid();
        let parent = self.process_uuids[pi];
        let name = s.processes[pi].site_name(site);
        self.packet(None, |e| {
            e.msg(pk::TRACK_DESCRIPTOR, |e| {
                e.uint(td::UUID, uuid);
                e.uint(td::PARENT_UUID, parent);
                e.str(td::NAME, &name);
            });
        })?;
        self.open_async.insert((pi, id), uuid);
        Ok(uuid)
    }

    /// The interned id of an event name; a new name goes out with the next
    /// packet.
    fn name_iid(&mut self, s: &Session, pi: usize, site: u32, label: Label) -> u64 {
        if let Some(&iid) = self.names.get(&(pi, site, label)) {
            return iid;
        }
        let base = s.processes[pi].site_name(site);
        let name = match label {
            Label::Plain => base.into_owned(),
            Label::Send => format!("send {base}"),
            Label::Recv => format!("recv {base}"),
            Label::ProcessStart => "process start".to_owned(),
        };
        let iid = match self.strings.get(&name) {
            Some(&iid) => iid,
            None => {
                // Interning ids start at 1: 0 means "not set".
                let iid = self.strings.len() as u64 + 1;
                self.strings.insert(name.clone(), iid);
                self.new_names.push((iid, name));
                iid
            }
        };
        self.names.insert((pi, site, label), iid);
        iid
    }

    fn event(&mut self, ts: i64, ev: &TrackEvent) -> io::Result<()> {
        self.packet(Some(ts), |e| {
            e.msg(pk::TRACK_EVENT, |e| {
                e.uint(te::TYPE, ev.kind);
                e.uint(te::TRACK_UUID, ev.track);
                match &ev.name {
                    Name::None => {}
                    Name::Iid(iid) => e.uint(te::NAME_IID, *iid),
                    Name::Str(s) => e.str(te::NAME, s),
                }
                if let Some(c) = ev.category {
                    e.str(te::CATEGORIES, c);
                }
                match ev.counter {
                    None => {}
                    // Integers exactly (a u64 past i64::MAX as the nearest
                    // double: the field is an int64).
                    Some(CounterValue::Int(i)) => e.uint(te::COUNTER_VALUE, i as u64),
                    Some(CounterValue::UInt(u)) if u <= i64::MAX as u64 => {
                        e.uint(te::COUNTER_VALUE, u)
                    }
                    Some(CounterValue::UInt(u)) => e.double(te::DOUBLE_COUNTER_VALUE, u as f64),
                    // A float with an integral value as an integer, as
                    // exact; NaN and the infinities as they are.
                    Some(CounterValue::Float(v)) if v.fract() == 0.0 && v.abs() < 9.0e15 => {
                        e.uint(te::COUNTER_VALUE, v as i64 as u64)
                    }
                    Some(CounterValue::Float(v)) => e.double(te::DOUBLE_COUNTER_VALUE, v),
                }
                match ev.flow {
                    Some((true, id)) => e.fixed64(te::FLOW_IDS, id),
                    Some((false, id)) => e.fixed64(te::TERMINATING_FLOW_IDS, id),
                    None => {}
                }
                match &ev.annotations {
                    Annotations::None => {}
                    Annotations::Unfinished(r) => e.annotation_str("unfinished", r),
                    Annotations::Abrupt(r) => {
                        e.annotation_str("unfinished", r);
                        e.msg(te::DEBUG_ANNOTATIONS, |e| {
                            e.str(da::NAME, "ended_abruptly");
                            e.uint(da::BOOL_VALUE, 1);
                        });
                    }
                    Annotations::Lost(count, detail) => {
                        e.msg(te::DEBUG_ANNOTATIONS, |e| {
                            e.str(da::NAME, "lost_events");
                            e.uint(da::UINT_VALUE, *count);
                        });
                        e.annotation_str("detail", detail);
                    }
                    Annotations::Flow(id) => e.annotation_str("flow_id", id),
                    Annotations::Detail(d) => e.annotation_str("detail", d),
                    Annotations::Io(call) => {
                        e.msg(te::DEBUG_ANNOTATIONS, |e| {
                            e.str(da::NAME, "bytes");
                            e.uint(da::UINT_VALUE, u64::from(call.bytes));
                        });
                        if call.blocked {
                            e.msg(te::DEBUG_ANNOTATIONS, |e| {
                                e.str(da::NAME, "blocked");
                                e.uint(da::BOOL_VALUE, 1);
                            });
                        }
                        if call.errno != 0 {
                            e.annotation_str("error", &super::io_error(call.errno));
                        }
                    }
                }
            });
        })
    }
}

/// A protobuf encoder into a reusable buffer.
#[derive(Default)]
struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    /// A varint field (uint32/uint64/int64 as two's complement/bool/enum).
    fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, WT_VARINT);
        self.varint(v);
    }

    /// An `int32` field from an id: sign-extended, as protobuf encodes
    /// int32 (ids above `i32::MAX` would read back negative).
    fn int32(&mut self, field: u32, v: u32) {
        self.uint(field, v as i32 as i64 as u64);
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, WT_I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn double(&mut self, field: u32, v: f64) {
        self.fixed64(field, v.to_bits());
    }

    fn str(&mut self, field: u32, s: &str) {
        self.tag(field, WT_LEN);
        self.varint(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A nested message: `body` writes it in place after a one-byte
    /// length, filled in afterwards; a message of 128 bytes or more (rare
    /// here) shifts its bytes to make room for a longer length.
    fn msg(&mut self, field: u32, body: impl FnOnce(&mut Enc)) {
        self.tag(field, WT_LEN);
        let start = self.buf.len();
        self.buf.push(0);
        body(self);
        let len = (self.buf.len() - start - 1) as u64;
        if len < 0x80 {
            self.buf[start] = len as u8;
            return;
        }
        let mut tmp = [0u8; 10];
        let (mut v, mut n) = (len, 0);
        while v >= 0x80 {
            tmp[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        tmp[n] = v as u8;
        self.buf[start] = tmp[0];
        self.buf
            .splice(start + 1..start + 1, tmp[1..=n].iter().copied());
    }

    fn annotation_str(&mut self, name: &str, value: &str) {
        self.msg(te::DEBUG_ANNOTATIONS, |e| {
            e.str(da::NAME, name);
            e.str(da::STRING_VALUE, value);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder's bytes, checked by hand: varints of every length, int32
    /// sign extension, fixed64, and nested messages whose length needs one,
    /// two or three bytes (the length is patched in after the body).
    #[test]
    fn the_encoder_writes_protobuf_wire_format() {
        let mut e = Enc::default();
        e.uint(1, 0);
        e.uint(2, 300);
        e.uint(3, u64::MAX);
        e.int32(4, u32::MAX); // -1 as int32: ten bytes
        e.fixed64(5, 0x0102_0304_0506_0708);
        let mut want = vec![0x08, 0x00, 0x10, 0xac, 0x02, 0x18];
        want.extend([0xff; 9]);
        want.push(0x01);
        want.push(0x20);
        want.extend([0xff; 9]);
        want.push(0x01);
        want.push(0x29);
        want.extend([8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(e.buf, want);
        for (len, prefix) in [
            (0usize, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (20_000, vec![0xa0, 0x9c, 0x01]),
        ] {
            let mut e = Enc::default();
            e.msg(6, |e| e.buf.extend(std::iter::repeat_n(b'x', len)));
            let mut want = vec![0x32];
            want.extend(&prefix);
            want.extend(std::iter::repeat_n(b'x', len));
            assert_eq!(e.buf, want, "a body of {len} bytes");
        }
        let mut e = Enc::default();
        e.msg(9, |e| e.msg(10, |e| e.str(11, &"y".repeat(200))));
        let mut want = vec![0x4a, 0xce, 0x01, 0x52, 0xcb, 0x01, 0x5a, 0xc8, 0x01];
        want.extend(std::iter::repeat_n(b'y', 200));
        assert_eq!(e.buf, want);
    }
}
