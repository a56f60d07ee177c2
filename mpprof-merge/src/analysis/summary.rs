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
use crate::profile::Profile;
use crate::resources::{self, ProcessResources};
use crate::trace::Session;
use mpprof_format::resource::key;
use mpprof_format::Scope;

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
    /// Of `cumtime_ns`, the part on threads with resource samples (see
    /// [`crate::resources`]): the time `on_cpu_ns` and `run_wait_ns` split.
    pub sampled_ns: i64,
    /// Time on a CPU during the calls (outermost activations), ns,
    /// attributed from the thread's samples.
    pub on_cpu_ns: i64,
    /// Time runnable but waiting for a CPU during the calls, ns.
    pub run_wait_ns: i64,
    /// Of `cumtime_ns`, the part on threads whose context switches the
    /// profiler recorded (see [`crate::profile`]): the time `off_cpu_ns`
    /// is a part of.
    pub profiled_ns: i64,
    /// Time switched out (blocked, or preempted) during the calls
    /// (outermost activations), ns, exact from the context switches.
    pub off_cpu_ns: i64,
}

impl FuncStats {
    fn add(&mut self, o: &FuncStats) {
        self.ncalls += o.ncalls;
        self.primitive += o.primitive;
        self.tottime_ns = self.tottime_ns.saturating_add(o.tottime_ns);
        self.cumtime_ns = self.cumtime_ns.saturating_add(o.cumtime_ns);
        self.unfinished += o.unfinished;
        self.sampled_ns = self.sampled_ns.saturating_add(o.sampled_ns);
        self.on_cpu_ns = self.on_cpu_ns.saturating_add(o.on_cpu_ns);
        self.run_wait_ns = self.run_wait_ns.saturating_add(o.run_wait_ns);
        self.profiled_ns = self.profiled_ns.saturating_add(o.profiled_ns);
        self.off_cpu_ns = self.off_cpu_ns.saturating_add(o.off_cpu_ns);
    }
}

/// The functions most often on the stack in a set of stack samples,
/// instrumented or not (see [`crate::profile`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleTable {
    /// Samples.
    pub samples: u64,
    /// Samples per second asked for (the largest, for the tree).
    pub hz: u32,
    /// Kernel records lost (full rings) and samples dropped (buffer
    /// budget).
    pub lost: u64,
    /// Why the profiler was off, if it was.
    pub error: String,
    /// Functions by self samples (the leaf frame), most first.
    pub funcs: Vec<SampledFunc>,
}

/// One function of a [`SampleTable`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampledFunc {
    /// Function name (or `module+0xoffset`).
    pub function: String,
    /// Object file name.
    pub module: String,
    /// Samples with it as the leaf frame.
    pub self_samples: u64,
    /// Samples with it anywhere on the stack (once per sample).
    pub total_samples: u64,
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
    /// Its row of the process table, from its resource samples.
    pub resources: Option<ProcessRow>,
    /// Its stack samples' top functions, when it ran the profiler.
    pub samples: Option<SampleTable>,
    /// Its traced I/O (`mpprof::io::Traced`), per channel and operation,
    /// most time first.
    pub io: Vec<IoRow>,
    /// Its system calls (`MPPROF_SYSCALLS=1`), like `strace -c`, most
    /// time first; `None` when not traced.
    pub syscalls: Option<Vec<SyscallRow>>,
    /// Why system calls were not traced although asked for.
    pub syscalls_error: Option<String>,
}

/// One system call's row: like `strace -c`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallRow {
    /// Its name (`write`).
    pub name: String,
    /// Calls.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Time in the calls, ns.
    pub total_ns: i64,
    /// Longest call, ns.
    pub max_ns: i64,
}

/// One channel and operation of a process's I/O table: like a row of
/// `strace -c`, with bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoRow {
    /// The channel's id in its process's file.
    pub channel: u32,
    /// `pipe`, `tcp`, ...
    pub kind: String,
    /// The program's label for it.
    pub label: String,
    /// `read` or `write`.
    pub op: &'static str,
    /// Calls.
    pub calls: u64,
    /// Calls that failed, and the errors by name with their counts.
    pub errors: u64,
    /// Failed calls by error.
    pub error_kinds: Vec<(String, u64)>,
    /// Bytes moved.
    pub bytes: u64,
    /// Time in the calls, ns.
    pub total_ns: i64,
    /// Longest call, ns.
    pub max_ns: i64,
    /// Calls that had to wait (nothing to read, no room to write), and
    /// their time, ns.
    pub blocked_calls: u64,
    /// See `blocked_calls`.
    pub blocked_ns: i64,
}

/// A channel that connects processes: the ends of one pipe, socket pair
/// or connection, traced in each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelLink {
    /// What it is (`pipe`, `tcp 127.0.0.1:4000 <-> 127.0.0.1:51234`).
    pub name: String,
    /// Each traced end: (process index, channel id).
    pub ends: Vec<(usize, u32)>,
}

/// A process's row of the `top`-like table: totals from its last resource
/// sample (for the process's whole life, from `getrusage` and
/// `/proc/self/io`), CPU % over the time it was sampled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessRow {
    /// Pid.
    pub pid: u32,
    /// CPU time over the sampled time, percent of one core; `None` with
    /// fewer than two samples.
    pub cpu_pct: Option<f64>,
    /// User CPU time, ns.
    pub user_ns: Option<f64>,
    /// System CPU time, ns.
    pub system_ns: Option<f64>,
    /// Peak resident set size, bytes.
    pub peak_rss: Option<f64>,
    /// Minor and major page faults.
    pub faults: Option<(f64, f64)>,
    /// Voluntary and involuntary context switches.
    pub switches: Option<(f64, f64)>,
    /// Bytes read from and written to storage (`read_bytes`,
    /// `write_bytes`).
    pub storage: Option<(f64, f64)>,
    /// Bytes through read and write calls (`rchar`, `wchar`).
    pub calls: Option<(f64, f64)>,
    /// Most threads at once.
    pub threads: Option<f64>,
    /// Samples taken, and the interval, ns.
    pub samples: usize,
    /// Sampling interval, ns (0: off).
    pub interval_ns: u64,
    /// The sampler thread's own CPU time, ns.
    pub sampler_cpu_ns: Option<f64>,
    /// First to last sample, ns.
    pub sampled_ns: i64,
    /// What the sampler could not read.
    pub unavailable: Vec<String>,
}

/// A host's section, like vmstat and iostat: each of its tracks' mean
/// (over time) and peak.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSection {
    /// "system (hostname)".
    pub name: String,
    /// (track, mean, peak).
    pub rows: Vec<(String, f64, f64)>,
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
    /// Each host's resource section.
    pub hosts: Vec<HostSection>,
    /// Every process's stack samples together, when any process sampled.
    pub tree_samples: Option<SampleTable>,
    /// What symbolizing the samples could not do (one line per binary).
    pub symbol_warnings: Vec<String>,
    /// Channels whose ends more than one process traced (or one process
    /// twice: both ends of a pipe).
    pub channel_links: Vec<ChannelLink>,
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
    let res = &resources::Resources::of(session);
    let prof = Profile::of(session);
    // Each lane's thread samples, found at its first call's exit.
    let mut thread_cpu: FastMap<(usize, u32), Option<resources::ThreadCpu>> = FastMap::default();
    let mut io: Vec<FastMap<(u32, u8), IoAcc>> = vec![FastMap::default(); n];
    let mut events = session.events();
    for e in events.by_ref() {
        flows.observe(&e);
        match e.kind {
            EventKind::Io {
                channel,
                start,
                call,
            } => {
                let a = io[e.proc].entry((channel, call.op as u8)).or_default();
                let d = e.ts.saturating_sub(start).max(0);
                a.calls += 1;
                a.bytes += u64::from(call.bytes);
                a.total_ns = a.total_ns.saturating_add(d);
                a.max_ns = a.max_ns.max(d);
                if call.errno != 0 {
                    *a.errors.entry(call.errno).or_default() += 1;
                }
                if call.blocked {
                    a.blocked_calls += 1;
                    a.blocked_ns = a.blocked_ns.saturating_add(d);
                }
            }
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
                    let cpu = *thread_cpu.entry((e.proc, e.lane)).or_insert_with(|| {
                        let tid = session.processes[e.proc].file.lanes.get(&e.lane)?.tid;
                        res.processes[e.proc].as_ref()?.thread(tid)
                    });
                    if let Some((on, wait)) = cpu.map(|c| c.between(f.start, e.ts)) {
                        st.sampled_ns = st.sampled_ns.saturating_add(dur);
                        st.on_cpu_ns = st.on_cpu_ns.saturating_add(on.round() as i64);
                        st.run_wait_ns = st.run_wait_ns.saturating_add(wait.round() as i64);
                    }
                    if let Some(pp) = prof.processes[e.proc].as_ref().filter(|p| p.info.switches) {
                        let tid = session.processes[e.proc]
                            .file
                            .lanes
                            .get(&e.lane)
                            .map_or(0, |l| l.tid);
                        let (off, _) = pp.off_cpu_within(tid, f.start, e.ts);
                        st.profiled_ns = st.profiled_ns.saturating_add(dur);
                        st.off_cpu_ns = st.off_cpu_ns.saturating_add(off);
                    }
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
    let critical_path = critical_path::from_index(session, flows, res, &prof);
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
            resources: res.processes[pi].as_ref().map(|r| process_row(p, r)),
            samples: prof.processes[pi]
                .as_ref()
                .map(|pp| sample_table(&prof, &[pi], pp.info.hz)),
            io: io_rows(p, &io[pi]),
            syscalls: prof.processes[pi]
                .as_ref()
                .filter(|pp| pp.info.syscalls)
                .map(|pp| syscall_rows(&pp.syscalls)),
            syscalls_error: prof.processes[pi]
                .as_ref()
                .filter(|pp| !pp.info.syscalls_error.is_empty())
                .map(|pp| pp.info.syscalls_error.clone()),
        });
    }
    let sampled: Vec<usize> = (0..n).filter(|&i| prof.processes[i].is_some()).collect();
    let tree_samples = (!sampled.is_empty()).then(|| {
        let hz = sampled
            .iter()
            .filter_map(|&i| prof.processes[i].as_ref())
            .map(|p| p.info.hz)
            .max()
            .unwrap_or(0);
        sample_table(&prof, &sampled, hz)
    });
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
        hosts: res
            .hosts
            .iter()
            .map(|h| HostSection {
                name: h.label(),
                rows: h
                    .tracks
                    .iter()
                    .filter_map(|t| {
                        let (mean, peak) = resources::mean_and_peak(&t.points)?;
                        Some((t.name.clone(), mean, peak))
                    })
                    .collect(),
            })
            .collect(),
        tree_samples,
        symbol_warnings: prof.warnings.clone(),
        channel_links: channel_links(session),
    }
}

fn syscall_rows(calls: &[crate::profile::SyscallEvent]) -> Vec<SyscallRow> {
    let mut by: std::collections::BTreeMap<u16, SyscallRow> = std::collections::BTreeMap::new();
    for c in calls {
        let r = by.entry(c.nr).or_insert_with(|| SyscallRow {
            name: crate::profile::syscall_name(c.nr),
            ..SyscallRow::default()
        });
        let d = c.end.saturating_sub(c.start).max(0);
        r.calls += 1;
        r.errors += u64::from(c.errno != 0);
        r.total_ns = r.total_ns.saturating_add(d);
        r.max_ns = r.max_ns.max(d);
    }
    let mut rows: Vec<SyscallRow> = by.into_values().collect();
    rows.sort_by(|a, b| (b.total_ns, &a.name).cmp(&(a.total_ns, &b.name)));
    rows
}

/// A process's calls on one channel and operation, added up.
#[derive(Clone, Default)]
struct IoAcc {
    calls: u64,
    bytes: u64,
    total_ns: i64,
    max_ns: i64,
    blocked_calls: u64,
    blocked_ns: i64,
    errors: std::collections::BTreeMap<u16, u64>,
}

fn io_rows(p: &crate::trace::Process, acc: &FastMap<(u32, u8), IoAcc>) -> Vec<IoRow> {
    let mut rows: Vec<IoRow> = acc
        .iter()
        .map(|(&(channel, op), a)| {
            let c = p.file.channels.get(&channel);
            IoRow {
                channel,
                kind: c.map_or("?", |c| c.kind.name()).to_owned(),
                label: c.map_or_else(|| format!("channel #{channel}"), |c| c.label.clone()),
                op: if op == 0 { "read" } else { "write" },
                calls: a.calls,
                errors: a.errors.values().sum(),
                error_kinds: a
                    .errors
                    .iter()
                    .map(|(&e, &n)| (crate::write::io_error(e), n))
                    .collect(),
                bytes: a.bytes,
                total_ns: a.total_ns,
                max_ns: a.max_ns,
                blocked_calls: a.blocked_calls,
                blocked_ns: a.blocked_ns,
            }
        })
        .collect();
    rows.sort_by(|a, b| (b.total_ns, &a.label, a.op).cmp(&(a.total_ns, &b.label, b.op)));
    rows
}

/// The channels traced at more than one end: a pipe's ends share its
/// inode, a socket pair's ends name each other's inode, a TCP
/// connection's ends each other's address (on one host; a connection
/// between hosts by its addresses alone).
fn channel_links(session: &Session) -> Vec<ChannelLink> {
    use mpprof_format::ChannelKind;
    let mut groups: std::collections::BTreeMap<(String, String), Vec<(usize, u32)>> =
        std::collections::BTreeMap::new();
    for (pi, p) in session.processes.iter().enumerate() {
        let host = p
            .file
            .info
            .as_ref()
            .map(|i| i.host_id.clone())
            .unwrap_or_default();
        for c in p.file.channels.values() {
            let key = match c.kind {
                ChannelKind::Pipe => format!("{host} pipe {}:{}", c.dev, c.inode),
                ChannelKind::Unix if c.peer_inode != 0 => {
                    let (a, b) = (c.inode.min(c.peer_inode), c.inode.max(c.peer_inode));
                    format!("{host} unix {a}:{b}")
                }
                ChannelKind::Tcp | ChannelKind::Udp if !c.peer.is_empty() => {
                    let (a, b) = if c.local <= c.peer {
                        (&c.local, &c.peer)
                    } else {
                        (&c.peer, &c.local)
                    };
                    format!("{} {a} <-> {b}", c.kind.name())
                }
                _ => continue,
            };
            let name = match c.kind {
                ChannelKind::Pipe => format!("pipe (inode {})", c.inode),
                ChannelKind::Unix => "unix socket pair".to_owned(),
                _ => key.clone(),
            };
            groups.entry((key, name)).or_default().push((pi, c.id));
        }
    }
    groups
        .into_iter()
        .filter(|(_, ends)| ends.len() > 1)
        .map(|((_, name), ends)| ChannelLink { name, ends })
        .collect()
}

/// The top functions of the samples of processes `procs`.
fn sample_table(prof: &Profile, procs: &[usize], hz: u32) -> SampleTable {
    let mut t = SampleTable {
        hz,
        ..SampleTable::default()
    };
    // Per frame index: (self, total).
    let mut counts: FastMap<u32, (u64, u64)> = FastMap::default();
    let mut seen: Vec<u32> = Vec::new();
    for &pi in procs {
        let Some(pp) = prof.processes[pi].as_ref() else {
            continue;
        };
        t.lost += pp.info.lost_records + pp.info.dropped;
        if t.error.is_empty() {
            t.error = pp.info.error.clone();
        }
        // Samples per stack first: a stack's frames are walked once.
        let mut per_stack: FastMap<u32, u64> = FastMap::default();
        for smp in &pp.samples {
            *per_stack.entry(smp.stack).or_default() += 1;
            t.samples += 1;
        }
        for (stack, n) in per_stack {
            let frames = prof.stack(pi, stack);
            if let Some(&leaf) = frames.first() {
                counts.entry(leaf).or_default().0 += n;
            }
            seen.clear();
            for &f in frames {
                // Once per sample, though recursion repeats it.
                if !seen.contains(&f) {
                    seen.push(f);
                    counts.entry(f).or_default().1 += n;
                }
            }
        }
    }
    // Frames of one function (its lines) add up.
    let mut by_name: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for (f, (own, total)) in counts {
        let fr = &prof.frames[f as usize];
        let e = by_name.entry((&fr.function, &fr.module)).or_default();
        e.0 += own;
        e.1 += total;
    }
    t.funcs = by_name
        .into_iter()
        .map(|((function, module), (own, total))| SampledFunc {
            function: function.to_owned(),
            module: module.to_owned(),
            self_samples: own,
            total_samples: total,
        })
        .collect();
    t.funcs.sort_by(|a, b| {
        (b.self_samples, b.total_samples, &a.function).cmp(&(
            a.self_samples,
            a.total_samples,
            &b.function,
        ))
    });
    t
}

/// The process table row of `p`.
fn process_row(p: &crate::trace::Process, r: &ProcessResources) -> ProcessRow {
    let pair = |a: &str, b: &str| Some((r.last(a)?, r.last(b)?));
    let window = match (r.ticks.first(), r.ticks.last()) {
        (Some(&a), Some(&b)) if b > a => Some((a, b)),
        _ => None,
    };
    // CPU % over the sampled window (the process's CPU time before it
    // started recording is in the totals, not in the rate).
    let cpu_pct = window.and_then(|(a, b)| {
        let cpu = |k: &str| {
            let s = r.get(Scope::Process, k, "")?;
            let v = r.at_ticks(s);
            Some(v.last().copied()?? - v.first().copied().flatten().unwrap_or(0.0))
        };
        let used = cpu(key::CPU_USER)? + cpu(key::CPU_SYSTEM)?;
        Some(100.0 * used / (b as f64 - a as f64))
    });
    // The sampler thread's whole CPU time: its cost.
    let sampler_cpu_ns = r
        .thread_series(r.sampler_tid)
        .filter(|_| r.sampler_tid != 0)
        .and_then(|(s, _)| Some(s.points.last()?.1));
    ProcessRow {
        pid: p.file.pid,
        cpu_pct,
        user_ns: r.last(key::CPU_USER),
        system_ns: r.last(key::CPU_SYSTEM),
        peak_rss: r.max(key::PEAK_RSS).or_else(|| r.max(key::RSS)),
        faults: pair(key::MINOR_FAULTS, key::MAJOR_FAULTS),
        switches: pair(key::CTX_VOLUNTARY, key::CTX_INVOLUNTARY),
        storage: pair(key::READ_BYTES, key::WRITE_BYTES),
        calls: pair(key::READ_CHARS, key::WRITE_CHARS),
        threads: r.max(key::THREADS),
        samples: r.ticks.len(),
        interval_ns: r.interval_ns,
        sampler_cpu_ns,
        sampled_ns: window.map_or(0, |(a, b)| b.saturating_sub(a)),
        unavailable: r.unavailable.clone(),
    }
}

fn sort(v: &mut [(FuncKey, FuncStats)]) {
    v.sort_by(|a, b| {
        b.1.cumtime_ns
            .cmp(&a.1.cumtime_ns)
            .then_with(|| a.0.cmp(&b.0))
    });
}
