//! The session as a Firefox Profiler profile (profiler.firefox.com, "Load
//! a profile from file"), written with `fxprof-processed-profile`, the
//! Firefox Profiler team's own crate for its processed format.
//!
//! Every process a process and every lane a thread, with the real pids
//! and tids. The stack samples (`MPPROF_SAMPLE_HZ`) are the threads'
//! samples, their frames the merge's symbolized function names, so the
//! call tree, flame graph and stack chart work on them. Spans are interval
//! markers on their thread (the marker chart shows them as the timeline
//! does), with traced I/O calls, off-CPU intervals and system calls as
//! markers of their own kinds. A session without samples still opens: its
//! threads have markers and no samples.

use std::collections::HashMap;
use std::io::{self, Write};

use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CpuDelta, Frame, FrameFlags, FrameInfo, MarkerFieldFlags,
    MarkerFieldFormat, MarkerTiming, Profile as Fx, ReferenceTimestamp, SamplingInterval,
    StaticSchemaMarker, StaticSchemaMarkerField, StringHandle, ThreadHandle, Timestamp,
};

use crate::merge::{EventKind, MergeStats};
use crate::profile::Profile;
use crate::trace::Session;

/// A span, an I/O call, an off-CPU interval or a system call: a marker
/// with its name, category and one number (bytes for I/O, else 0).
struct Mark {
    name: StringHandle,
    category: CategoryHandle,
    bytes: f64,
}

impl StaticSchemaMarker for Mark {
    const UNIQUE_MARKER_TYPE_NAME: &'static str = "mpprof";
    const DESCRIPTION: Option<&'static str> =
        Some("mpprof: a span, a traced I/O call, an off-CPU interval or a system call");
    const CHART_LABEL: Option<&'static str> = Some("{marker.name}");
    const TOOLTIP_LABEL: Option<&'static str> = Some("{marker.name}");
    const TABLE_LABEL: Option<&'static str> = Some("{marker.name}");
    const FIELDS: &'static [StaticSchemaMarkerField] = &[StaticSchemaMarkerField {
        key: "bytes",
        label: "Bytes",
        format: MarkerFieldFormat::Bytes,
        flags: MarkerFieldFlags::empty(),
    }];

    fn name(&self, _: &mut Fx) -> StringHandle {
        self.name
    }

    fn category(&self, _: &mut Fx) -> CategoryHandle {
        self.category
    }

    fn string_field_value(&self, _: u32) -> StringHandle {
        unreachable!("no string fields")
    }

    fn number_field_value(&self, _: u32) -> f64 {
        self.bytes
    }
}

/// Writes the Firefox Profiler profile of `session`.
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    let prof = Profile::of(session);
    let t0 = session.start_ns();
    let ts = |ns: i64| Timestamp::from_nanos_since_reference(ns.saturating_sub(t0).max(0) as u64);
    let hz = prof
        .processes
        .iter()
        .flatten()
        .map(|p| p.info.hz)
        .max()
        .filter(|&h| h > 0)
        .unwrap_or(1000);
    let product = session
        .processes
        .first()
        .map(|p| format!("mpprof: {}", p.file.display_name()))
        .unwrap_or_else(|| "mpprof".to_owned());
    // The reference: the session's start as wall-clock time, from the first
    // process's anchors when it has one.
    let reference = session
        .processes
        .first()
        .and_then(|p| p.file.anchors.first())
        .map_or(0.0, |a| a.real_ns as f64 / 1e6);
    let mut fx = Fx::new(
        &product,
        ReferenceTimestamp::from_millis_since_unix_epoch(reference),
        SamplingInterval::from_hz(hz as f32),
    );
    let span = fx.add_category("Span", CategoryColor::Blue);
    let io_cat = fx.add_category("I/O", CategoryColor::Green);
    let sched = fx.add_category("Off CPU", CategoryColor::Gray);
    let sys = fx.add_category("System call", CategoryColor::Orange);
    let code = fx.add_category("Code", CategoryColor::Yellow);

    // Threads: every lane, and every sampled thread without one.
    let mut threads: HashMap<(usize, u32), ThreadHandle> = HashMap::new();
    for (pi, p) in session.processes.iter().enumerate() {
        let ph = fx.add_process(&p.file.display_name(), p.file.pid, ts(p.start_ns));
        fx.set_process_end_time(ph, ts(p.end_ns));
        let mut tids: Vec<(u32, String)> = p
            .file
            .lanes
            .values()
            .map(|l| (l.tid, l.name.clone()))
            .collect();
        if let Some(pp) = &prof.processes[pi] {
            tids.extend(pp.samples.iter().map(|s| (s.tid, String::new())));
            tids.extend(pp.off_cpu.iter().map(|o| (o.tid, String::new())));
            tids.extend(pp.syscalls.iter().map(|c| (c.tid, String::new())));
        }
        for (tid, name) in tids {
            if threads.contains_key(&(pi, tid)) {
                continue;
            }
            let th = fx.add_thread(ph, tid, ts(p.start_ns), tid == p.file.pid);
            let name = if name.is_empty() {
                format!("thread {tid}")
            } else {
                name
            };
            fx.set_thread_name(th, &name);
            threads.insert((pi, tid), th);
        }
    }
    let thread_of = |threads: &HashMap<(usize, u32), ThreadHandle>, pi: usize, tid: u32| {
        threads.get(&(pi, tid)).copied()
    };

    // Spans and I/O calls, from the merged events.
    let mut open: HashMap<(usize, u32), Vec<(u32, i64)>> = HashMap::new();
    let mut names: HashMap<(usize, u32), StringHandle> = HashMap::new();
    let mut events = session.events();
    for e in events.by_ref() {
        let p = &session.processes[e.proc];
        let Some(tid) = p.file.lanes.get(&e.lane).map(|l| l.tid) else {
            continue;
        };
        let Some(th) = thread_of(&threads, e.proc, tid) else {
            continue;
        };
        match e.kind {
            EventKind::Enter { site } => {
                open.entry((e.proc, e.lane)).or_default().push((site, e.ts))
            }
            EventKind::Exit { .. } => {
                if let Some((site, start)) = open.entry((e.proc, e.lane)).or_default().pop() {
                    let name = *names
                        .entry((e.proc, site))
                        .or_insert_with(|| fx.intern_string(&p.site_name(site)));
                    let m = Mark {
                        name,
                        category: span,
                        bytes: 0.0,
                    };
                    fx.add_marker(th, MarkerTiming::Interval(ts(start), ts(e.ts)), m);
                }
            }
            EventKind::Io {
                channel,
                start,
                call,
            } => {
                let m = Mark {
                    name: fx.intern_string(&super::io_name(p, channel, call)),
                    category: io_cat,
                    bytes: f64::from(call.bytes),
                };
                fx.add_marker(th, MarkerTiming::Interval(ts(start), ts(e.ts)), m);
            }
            _ => {}
        }
    }
    let stats = events.stats();

    // Samples, off-CPU intervals and system calls.
    let mut frame_names: HashMap<u32, StringHandle> = HashMap::new();
    for (pi, pp) in prof.processes.iter().enumerate() {
        let Some(pp) = pp else { continue };
        let period = 1_000_000_000 / u64::from(pp.info.hz.max(1));
        for smp in &pp.samples {
            let Some(th) = thread_of(&threads, pi, smp.tid) else {
                continue;
            };
            let frames: Vec<FrameInfo> = prof
                .stack(pi, smp.stack)
                .iter()
                .rev()
                .map(|&f| {
                    let name = *frame_names
                        .entry(f)
                        .or_insert_with(|| fx.intern_string(&prof.frames[f as usize].function));
                    FrameInfo {
                        frame: Frame::Label(name),
                        category_pair: code.into(),
                        flags: FrameFlags::empty(),
                    }
                })
                .collect();
            let stack = fx.intern_stack_frames(th, frames.into_iter());
            fx.add_sample(th, ts(smp.t), stack, CpuDelta::from_nanos(period), 1);
        }
        let blocked = fx.intern_string("off CPU (blocked)");
        let preempted = fx.intern_string("off CPU (preempted)");
        for o in &pp.off_cpu {
            if let Some(th) = thread_of(&threads, pi, o.tid) {
                let m = Mark {
                    name: if o.preempted { preempted } else { blocked },
                    category: sched,
                    bytes: 0.0,
                };
                fx.add_marker(th, MarkerTiming::Interval(ts(o.start), ts(o.end)), m);
            }
        }
        for c in &pp.syscalls {
            if let Some(th) = thread_of(&threads, pi, c.tid) {
                let m = Mark {
                    name: fx.intern_string(&crate::profile::syscall_name(c.nr)),
                    category: sys,
                    bytes: 0.0,
                };
                fx.add_marker(th, MarkerTiming::Interval(ts(c.start), ts(c.end)), m);
            }
        }
    }
    fx.set_symbolicated(true);
    serde_json::to_writer(&mut *out, &fx).map_err(io::Error::other)?;
    out.flush()?;
    Ok(stats)
}
