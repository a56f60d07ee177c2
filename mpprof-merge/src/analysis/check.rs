//! Session health: per process (events, losses and the threads that lost
//! them, clean or abrupt end, clock domain and fit) and for the session
//! (flows matched, causality violations). [`crate::write::check`] renders
//! it as text.

use std::collections::HashMap;

use mpprof_format::{flow_name, FlowId};

use crate::align::FitMethod;
use crate::merge::{EventKind, MergeStats};
use crate::resources::ProcessResources;
use crate::trace::Session;
use mpprof_format::resource::key;
use mpprof_format::Scope;

/// Health of one process.
#[derive(Clone, Debug)]
pub struct ProcessHealth {
    /// Display name.
    pub name: String,
    /// Pid.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Clock domain: host id and time namespace.
    pub domain: String,
    /// Threads (lanes) that recorded.
    pub threads: usize,
    /// Events recorded in the file.
    pub events: u64,
    /// Of them, resource samples' counter records (see
    /// [`crate::resources`]).
    pub resource_events: u64,
    /// Events the process could not record.
    pub lost_events: u64,
    /// Why events were lost.
    pub lost_reason: Option<String>,
    /// Who lost them: the threads, most first, and what no thread accounts
    /// for.
    pub losses: crate::read::Losses,
    /// Finished cleanly.
    pub clean: bool,
    /// Time span, ns.
    pub span_ns: i64,
    /// Clock fit method and its worst anchor residual, ns.
    pub clock_fit: String,
    /// Torn records skipped.
    pub torn_records: u64,
    /// Metadata entries the process could not store (names, threads,
    /// hand-offs): what they would have said is missing.
    pub lost_meta: u32,
    /// Reader warnings.
    pub warnings: Vec<String>,
    /// The parent it was linked to by parent pid (display name), for a
    /// process started without `mpprof::spawn`.
    pub linked_by_ppid: Option<String>,
    /// Resource sampling, in a few words: how often and how many samples,
    /// or that it was off; `None` for a file from before it.
    pub sampling: Option<String>,
    /// The resource counters the process lacks, each with why (a `/proc`
    /// file it could not read: a container, `hidepid`).
    pub lacks: Vec<String>,
    /// The sampling profiler, in a few words (rate, samples, off-CPU
    /// intervals, losses); `None` when it was not asked for.
    pub profiler: Option<String>,
    /// Why the profiler was off although asked for (the kernel refused).
    pub profiler_refused: Option<String>,
}

/// Health of the session.
#[derive(Clone, Debug)]
pub struct Health {
    /// Per process.
    pub processes: Vec<ProcessHealth>,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<String>,
    /// Processes that recorded nothing for lack of space (see
    /// [`crate::trace::NoSpace`]), said in a sentence each.
    pub no_space: Vec<String>,
    /// Paths named like buffer files that are not regular files, and what
    /// they are.
    pub ignored: Vec<String>,
    /// Flows whose both ends were found.
    pub flows_matched: u64,
    /// Flow starts without an end (fork points excluded).
    pub flows_unmatched_out: u64,
    /// Fork points whose child did not record (it exec'd another program,
    /// or made no instrumented call): expected, not counted as damage.
    pub forks_without_recording_child: u64,
    /// Flow ends without a start.
    pub flows_unmatched_in: u64,
    /// Matched flows whose end precedes its start on the merged timeline
    /// (after clock-domain alignment).
    pub causality_violations: u64,
    /// Cross-domain flows received before sent with REALTIME placement
    /// only, i.e. before alignment.
    pub violations_before_alignment: u64,
    /// The clock-domain alignment.
    pub alignment: crate::align::domains::Alignment,
    /// Merge repairs.
    pub stats: MergeStats,
    /// What symbolizing the stack samples could not do, a line per binary.
    pub symbol_warnings: Vec<String>,
}

impl Health {
    /// Damage that makes the trace incomplete or wrong: unreadable files,
    /// corrupt data, causality violations.
    pub fn damaged(&self) -> bool {
        !self.unreadable.is_empty()
            || self.processes.iter().any(|p| !p.warnings.is_empty())
            || self.causality_violations > 0
            || self.stats.bad_records > 0
            || self.stats.unreadable_chunks > 0
    }

    /// Anything short of perfect: damage, abrupt ends, lost events,
    /// unmatched flows, repaired spans.
    pub fn imperfect(&self) -> bool {
        self.damaged()
            || !self.no_space.is_empty()
            || self
                .processes
                .iter()
                .any(|p| !p.clean || p.lost_events > 0 || p.lost_meta > 0)
            || self.flows_unmatched_in + self.flows_unmatched_out > 0
            || self.stats.unmatched_exits > 0
    }
}

/// Resource sampling of a process in a few words.
fn sampling(r: &ProcessResources) -> String {
    if r.interval_ns == 0 && r.ticks.is_empty() {
        return "off (MPPROF_SAMPLE_MS=0)".to_owned();
    }
    format!(
        "{} samples every {} ms",
        r.ticks.len(),
        r.interval_ns as f64 / 1e6
    )
}

/// The groups of process counters a sampled process has no series of,
/// with the reasons the sampler gave.
fn lacks(r: &ProcessResources) -> Vec<String> {
    if r.interval_ns == 0 && r.ticks.is_empty() {
        return Vec::new();
    }
    let has = |k: &str| r.get(Scope::Process, k, "").is_some();
    let why = |src: &str| {
        r.unavailable
            .iter()
            .find(|u| u.starts_with(src))
            .map_or(String::new(), |u| format!(" ({u})"))
    };
    let mut out = Vec::new();
    for (k, what, src) in [
        (
            key::CPU_USER,
            "CPU time, faults, context switches, peak RSS",
            "getrusage",
        ),
        (key::RSS, "RSS", "/proc/self/statm"),
        (key::WRITE_BYTES, "read/write bytes", "/proc/self/io"),
        (
            key::THREADS,
            "threads and their on-CPU time",
            "/proc/self/task",
        ),
    ] {
        if !has(k) && !r.ticks.is_empty() {
            out.push(format!("{what}{}", why(src)));
        }
    }
    if r.ticks.is_empty() {
        out.push("every resource counter: no sample survived".to_owned());
    }
    // Host files (only the process holding the host lock reads them),
    // and anything else the sampler said (a budget it left to the
    // program).
    for u in &r.unavailable {
        if u.starts_with("/proc/self") || u.starts_with("getrusage") {
            continue; // said above, with the counters
        }
        if u.starts_with("/proc/") || u.starts_with("host lock") {
            out.push(format!("host counters: {u}"));
        } else {
            out.push(u.clone());
        }
    }
    out
}

/// Examines a session.
pub fn check(session: &Session) -> Health {
    // Send time and whether the flow is a fork point (a forked child that
    // execs another program never records the other end: not a defect).
    let mut sends: HashMap<FlowId, (i64, bool)> = HashMap::new();
    let mut recvs: Vec<(FlowId, i64)> = Vec::new();
    // `mpprof::wait` receives a flow that starts at the child's last event
    // (no send is recorded; one that no parent waited for is no defect).
    let exits = session.child_exits();
    let res = crate::resources::Resources::of(session);
    let prof = crate::profile::Profile::of(session);
    let mut events = session.events();
    for e in events.by_ref() {
        match e.kind {
            EventKind::FlowOut { flow, site } => {
                let fork = session.processes[e.proc].site_name(site) == flow_name::FORK;
                sends.insert(flow, (e.ts, fork));
            }
            EventKind::FlowIn { flow, .. } => recvs.push((flow, e.ts)),
            _ => {}
        }
    }
    // Per process; its events are counted while the merge above reads them,
    // so every record is read once.
    let mut processes = Vec::new();
    for (pi, p) in session.processes.iter().enumerate() {
        let f = &p.file;
        let info = f.info.as_ref();
        let lost_reason = (f.lost_events > 0).then(|| {
            let why = if f.lost_chunks > 0 {
                format!(
                    "the file could not grow {} times (disk full or file size limit)",
                    f.lost_chunks
                )
            } else {
                "buffer budget used up (MPPROF_BUFFER_MB)".to_owned()
            };
            // Saturating: the counts are untrusted.
            let overwritten = f
                .lanes
                .values()
                .fold(0u64, |a, l| a.saturating_add(l.overwritten));
            if overwritten == 0 {
                why
            } else if overwritten >= f.lost_events {
                format!("{why}; the flight recorder (keep-last) overwrote each thread's oldest events")
            } else {
                format!(
                    "{why}; {overwritten} overwritten by the flight recorder (keep-last), {} not recorded",
                    f.lost_events - overwritten
                )
            }
        });
        let method = match p.clock.method {
            FitMethod::Identity => "monotonic clock".to_owned(),
            FitMethod::Fit => format!(
                "TSC fit of {} anchors, residual {:.0} ns",
                f.anchors.len(),
                p.clock.residual_ns
            ),
            FitMethod::Estimate => format!(
                "TSC at the writer's frequency estimate ({} anchors, too close to fit)",
                f.anchors.len()
            ),
            FitMethod::Assumed => {
                "no anchors: timestamps assumed to be ns (placement unreliable)".to_owned()
            }
        };
        processes.push(ProcessHealth {
            name: f.display_name(),
            pid: f.pid,
            host: info.map(|i| i.hostname.clone()).unwrap_or_default(),
            domain: info
                .map(|i| format!("{}/time:{}", i.host_id, i.time_ns))
                .unwrap_or_else(|| "unknown".into()),
            threads: f.lanes.len(),
            events: events.recorded_events(pi),
            resource_events: res.processes[pi].as_ref().map_or(0, |r| r.records),
            lost_events: f.lost_events,
            lost_reason,
            losses: f.losses(),
            clean: f.clean,
            span_ns: p.end_ns.saturating_sub(p.start_ns),
            clock_fit: method,
            torn_records: f.torn_records,
            lost_meta: f.lost_meta,
            warnings: f.warnings.clone(),
            linked_by_ppid: p
                .parent_link
                .map(|l| session.processes[l.parent].file.display_name()),
            sampling: res.processes[pi].as_ref().map(sampling),
            lacks: res.processes[pi].as_ref().map(lacks).unwrap_or_default(),
            profiler: prof.processes[pi].as_ref().map(profiler),
            profiler_refused: prof.processes[pi]
                .as_ref()
                .filter(|pp| !pp.info.error.is_empty())
                .map(|pp| pp.info.error.clone()),
        });
    }
    let (mut matched, mut violations, mut unmatched_in) = (0, 0, 0);
    for (flow, ts) in &recvs {
        match sends
            .get(flow)
            .map(|s| s.0)
            .or_else(|| exits.get(flow).map(|&(_, _, end)| end))
        {
            Some(s) => {
                matched += 1;
                if *ts < s {
                    violations += 1;
                }
            }
            None => unmatched_in += 1,
        }
    }
    let received: std::collections::HashSet<FlowId> = recvs.iter().map(|r| r.0).collect();
    let (mut unmatched_out, mut forks_unmatched) = (0, 0);
    for (f, (_, fork)) in &sends {
        if !received.contains(f) {
            if *fork {
                forks_unmatched += 1;
            } else {
                unmatched_out += 1;
            }
        }
    }
    Health {
        processes,
        unreadable: session
            .unreadable
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect(),
        no_space: session.no_space.iter().map(|n| n.to_string()).collect(),
        ignored: session.ignored.iter().map(|(_, e)| e.clone()).collect(),
        flows_matched: matched,
        flows_unmatched_out: unmatched_out,
        forks_without_recording_child: forks_unmatched,
        flows_unmatched_in: unmatched_in,
        causality_violations: violations,
        violations_before_alignment: session.alignment.violations_before,
        alignment: session.alignment.clone(),
        stats: events.stats(),
        symbol_warnings: prof.warnings.clone(),
    }
}

/// The profiler's line of a process.
fn profiler(pp: &crate::profile::ProcessProfile) -> String {
    let i = &pp.info;
    if !i.error.is_empty() && !i.syscalls {
        return format!("asked for at {} Hz but off: no samples", i.hz);
    }
    let mut threads: Vec<u32> = pp.samples.iter().map(|s| s.tid).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut s = format!(
        "{} Hz, {} stack samples of {} threads",
        i.hz,
        pp.samples.len(),
        threads.len()
    );
    if i.switches {
        s.push_str(&format!(", {} off-CPU intervals", pp.off_cpu.len()));
    } else if i.hz > 0 {
        s.push_str(", context switches off (MPPROF_OFF_CPU=0)");
    }
    if i.syscalls {
        s.push_str(&format!(", {} system calls traced", pp.syscalls.len()));
    } else if !i.syscalls_error.is_empty() {
        s.push_str(&format!("; system calls NOT traced: {}", i.syscalls_error));
    }
    if i.lost_records > 0 {
        s.push_str(&format!(
            "; {} kernel records LOST (its ring was full: samples or switches missing)",
            i.lost_records
        ));
    }
    if i.dropped > 0 {
        s.push_str(&format!(
            "; {} samples or intervals DROPPED (buffer budget)",
            i.dropped
        ));
    }
    if pp.unknown_stacks > 0 {
        s.push_str(&format!(
            "; {} samples with a stack not stored (shown without frames)",
            pp.unknown_stacks
        ));
    }
    s
}
