//! The sampling profiler (`MPPROF_SAMPLE_HZ`): run by the sampler thread
//! (`sampler.rs`), which calls [`Profiler::drain`] every tick. It opens
//! the process's `perf_event_open` events (see `crate::perf`), and turns
//! what the kernel wrote since the last tick into records on the sampler's
//! own lane: a `SAMPLE` per stack sample, an `OFF_CPU` per interval a
//! thread spent switched out, with the stacks interned as `Meta::Stack`
//! entries and the loaded objects as `Meta::Module` entries (see
//! `mpprof_format::profile`). Like every record they survive SIGKILL: a
//! killed process keeps what its last tick copied (the kernel's ring holds
//! the rest of a tick, up to 20 ms, which is lost with it).
//!
//! Nothing of this runs on the application's threads: the kernel takes
//! the samples, and this thread copies them out. Where the kernel refuses
//! (paranoid 3, seccomp, a container), one warning, a `Meta::Profiler`
//! entry that says why, and no samples.

use std::collections::HashMap;

use crate::chunks::Chunks;
use crate::format::profile::{MAX_FRAMES, PREEMPTED};
use crate::format::{kind, MetaRef, ProfilerInfo};
use crate::perf::{self, Perf, Record};
use crate::record;
use crate::unwind::{self, Unwinder};

use super::syscalls::Syscalls;

/// Bytes of stack copied per sample, KiB (`MPPROF_SAMPLE_STACK_KB`): the
/// innermost frames of deeper stacks.
const DEFAULT_STACK_KB: u64 = 16;

/// The sampler thread reads the rings this often when profiling (ms).
pub(crate) const TICK_MS: u64 = 10;

/// The sampling profiler's state, owned by the sampler thread.
pub(crate) struct Profiler {
    chunks: &'static Chunks,
    perf: Option<Perf>,
    /// System call tracing, when asked for and allowed.
    syscalls: Option<Syscalls>,
    unwinder: Unwinder,
    /// The sample being unwound's frames.
    frames: Vec<u64>,
    info: ProfilerInfo,
    /// The `info` last written.
    written: ProfilerInfo,
    stacks: HashMap<Box<[u64]>, u32>,
    /// Executable mappings known (start, end), sorted.
    modules: Vec<(u64, u64)>,
    /// Threads switched out: when, and whether preempted.
    out: HashMap<u32, (u64, bool)>,
    /// This drain's records, sorted by time before they are written.
    batch: Vec<Item>,
    /// The loader's generation at the last scan of the loaded objects.
    generation: Option<(u64, u64)>,
}

#[derive(Clone, Copy)]
enum Item {
    Sample {
        time: u64,
        tid: u32,
        cpu: u32,
        stack: u32,
    },
    Switch {
        time: u64,
        tid: u32,
        out: bool,
        preempt: bool,
    },
}

impl Item {
    fn time(&self) -> u64 {
        match *self {
            Item::Sample { time, .. } | Item::Switch { time, .. } => time,
        }
    }
}

impl Profiler {
    /// Starts profiling at `hz` samples a second (with context switches
    /// unless `MPPROF_OFF_CPU=0`), from the sampler thread `own_tid`.
    /// `hz` 0: no samples (only system calls, when `syscalls`).
    pub(crate) fn start(
        chunks: &'static Chunks,
        hz: u32,
        syscalls: bool,
        own_tid: u32,
    ) -> Profiler {
        let switches = crate::env::choice("MPPROF_OFF_CPU", &["1", "0", "on", "off"], "1");
        let switches = matches!(switches, "1" | "on");
        let stack_kb = crate::env::number("MPPROF_SAMPLE_STACK_KB", DEFAULT_STACK_KB, 1, 63) as u32;
        let stack = stack_kb * 1024;
        // Twice what a tick's samples take on one CPU (a CPU runs one
        // thread at a time: at most `hz` samples a second), so a late tick
        // loses nothing.
        let per_tick = u64::from(hz) * TICK_MS / 1000 * (u64::from(stack) + 256);
        let ring = (2 * per_tick).next_power_of_two().clamp(64 << 10, 1 << 20) as usize;
        let cfg = perf::Config {
            hz,
            switches,
            stack,
            ring,
            tracepoint: None,
        };
        let mut info = ProfilerInfo {
            hz,
            switches,
            tid: own_tid,
            ..ProfilerInfo::default()
        };
        let perf = match Perf::open(cfg, own_tid) {
            _ if hz == 0 => {
                info.switches = false;
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                info.error = refusal(&e);
                crate::warn::warn(format_args!(
                    "sampling (MPPROF_SAMPLE_HZ={hz}) is off in this process: {}; the trace has its spans but no stack samples or off-CPU time from it",
                    info.error
                ));
                None
            }
        };
        let syscalls = if syscalls {
            match Syscalls::open(own_tid) {
                Ok(s) => {
                    info.syscalls = true;
                    Some(s)
                }
                Err(e) => {
                    crate::warn::warn(format_args!(
                        "system call tracing (MPPROF_SYSCALLS=1) is off in this process: {e}"
                    ));
                    info.syscalls_error = e;
                    None
                }
            }
        } else {
            None
        };
        let mut p = Profiler {
            chunks,
            perf,
            syscalls,
            unwinder: Unwinder::new(),
            frames: Vec::with_capacity(MAX_FRAMES),
            info,
            written: ProfilerInfo::default(),
            stacks: HashMap::new(),
            modules: Vec::new(),
            out: HashMap::new(),
            batch: Vec::new(),
            generation: None,
        };
        if p.perf.is_some() {
            p.scan_modules();
        }
        p.declare();
        p
    }

    /// Copies what the kernel wrote since the last call into records; at
    /// the `last` call, also the off-CPU intervals still open (threads
    /// blocked when the recording ends, until now). `room`: whether the
    /// buffer budget leaves room for samples (else they are counted as
    /// dropped).
    pub(crate) fn drain(&mut self, last: bool, room: bool) {
        if let Some(sys) = self.syscalls.as_mut() {
            let (lost, dropped) = sys.drain(room);
            self.info.lost_records += lost;
            self.info.dropped += dropped;
        }
        let Some(perf) = self.perf.as_mut() else {
            self.declare();
            return;
        };
        let mut lost = 0;
        let mut unknown = false;
        let (batch, stacks, modules, chunks) = (
            &mut self.batch,
            &mut self.stacks,
            &self.modules,
            self.chunks,
        );
        let (unwinder, frames) = (&mut self.unwinder, &mut self.frames);
        perf.drain(|r| match r {
            Record::Sample {
                tid,
                time,
                cpu,
                regs,
                stack,
            } => {
                let Some(regs) = regs else {
                    return; // not in user space: nothing of ours to show
                };
                // A library loaded since (dlopen) unwinds by frame pointer
                // until the scan below adds it.
                unknown |= !known(modules, regs.ip);
                unwinder.unwind(regs, stack, MAX_FRAMES, frames);
                let stack = intern(stacks, chunks, frames);
                batch.push(Item::Sample {
                    time,
                    tid,
                    cpu,
                    stack,
                });
            }
            Record::Switch {
                tid,
                time,
                out,
                preempt,
            } => batch.push(Item::Switch {
                time,
                tid,
                out,
                preempt,
            }),
            Record::Lost(n) => lost += n,
            Record::Raw { .. } => {}
        });
        self.info.lost_records += lost;
        if unknown && unwind::generation() != self.generation {
            // A library loaded since (dlopen): recorded and unwound from
            // now on. (An address in no object at all, JIT code, changes
            // no generation and costs no scan.)
            self.scan_modules();
        }
        // The rings interleave; a switch out on one CPU may come after the
        // switch in on another in reading order.
        self.batch.sort_by_key(Item::time);
        let mut dropped = 0;
        for it in std::mem::take(&mut self.batch) {
            match it {
                Item::Sample {
                    time,
                    tid,
                    cpu,
                    stack,
                } => {
                    if room {
                        let p = [time, u64::from(stack) | u64::from(cpu) << 32];
                        record::record_with_payload(tid, kind::SAMPLE, p);
                    } else {
                        dropped += 1;
                    }
                }
                Item::Switch {
                    time,
                    tid,
                    out: true,
                    preempt,
                } => {
                    self.out.insert(tid, (time, preempt));
                }
                Item::Switch { time, tid, .. } => {
                    if let Some((from, preempt)) = self.out.remove(&tid) {
                        if room {
                            off_cpu(tid, from, time, preempt);
                        } else {
                            dropped += 1;
                        }
                    }
                }
            }
        }
        if last {
            let now = crate::clock::monotonic_ns();
            for (tid, (from, preempt)) in self.out.drain() {
                if from < now {
                    off_cpu(tid, from, now, preempt);
                }
            }
        }
        self.info.dropped += dropped;
        self.declare();
    }

    /// Writes `Meta::Profiler` if it changed since it was last written.
    fn declare(&mut self) {
        if self.info != self.written {
            self.chunks
                .using(|c| c.write_meta(&MetaRef::Profiler(&self.info)));
            self.written = self.info.clone();
        }
    }

    /// Records every executable mapping of a loaded object not recorded
    /// yet.
    fn scan_modules(&mut self) {
        self.generation = unwind::generation();
        for mut o in unwind::loaded_objects() {
            let new: Vec<_> = o
                .segments
                .iter()
                .filter(|m| {
                    !self
                        .modules
                        .iter()
                        .any(|&(s, e)| s == m.start && e == m.end)
                })
                .collect();
            if new.is_empty() {
                continue;
            }
            for m in new {
                self.chunks.using(|c| c.write_meta(&MetaRef::Module(m)));
                self.modules.push((m.start, m.end));
            }
            self.unwinder.add(&mut o);
        }
        self.modules.sort_unstable();
    }
}

fn off_cpu(tid: u32, from: u64, to: u64, preempt: bool) {
    let back = to | if preempt { PREEMPTED } else { 0 };
    record::record_with_payload(tid, kind::OFF_CPU, [from, back]);
}

/// Whether `addr` is inside a known mapping.
fn known(modules: &[(u64, u64)], addr: u64) -> bool {
    let i = modules.partition_point(|&(s, _)| s <= addr);
    i > 0 && addr < modules[i - 1].1
}

/// The id of stack `ips` (leaf first), writing its `Meta::Stack` entry on
/// first sight. Ids count from 1; 0 is the empty stack.
fn intern(stacks: &mut HashMap<Box<[u64]>, u32>, chunks: &Chunks, ips: &[u64]) -> u32 {
    if ips.is_empty() {
        return 0;
    }
    let ips = &ips[..ips.len().min(MAX_FRAMES)];
    if let Some(&id) = stacks.get(ips) {
        return id;
    }
    let id = stacks.len() as u32 + 1;
    chunks.using(|c| c.write_meta(&MetaRef::Stack { id, frames: ips }));
    stacks.insert(ips.into(), id);
    id
}

/// What the refusal means, for the warning and `Meta::Profiler`.
fn refusal(e: &std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into());
            format!(
                " (kernel.perf_event_paranoid is {paranoid}; sampling one's own threads needs 2 or less, and no seccomp filter or container policy that denies perf_event_open)"
            )
        }
        Some(libc::ENOSYS) => " (the kernel has no perf events)".into(),
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            " (the kernel has no software task-clock event)".into()
        }
        Some(libc::EINVAL) => " (the kernel is too old: inherit_thread needs Linux 5.13)".into(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => " (out of file descriptors)".into(),
        _ => String::new(),
    };
    format!("perf_event_open: {e}{why}")
}
