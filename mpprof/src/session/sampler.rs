//! The resource sampler: a thread per recording process that reads, every
//! `MPPROF_SAMPLE_MS` (default [`DEFAULT_MS`]), what the process, its
//! threads and (one process per host at a time) the host did with the
//! machine, and records it as counter samples on its own lane, declared
//! by `Meta::Resources` entries (see `mpprof_format::resource`). Samples
//! are ordinary records: they survive SIGKILL, and the flight recorder
//! keeps the newest. When the session finishes, the sampler takes a final
//! sample and stops; the finishing thread waits for it (at most
//! [`STOP_WAIT`]).
//!
//! Per sample: `getrusage` (CPU user/system, peak RSS, faults, context
//! switches), `/proc/self/statm` (RSS) and `/proc/self/io` (bytes), kept
//! open and re-read with `pread`; the thread list of `/proc/self/task` and
//! each thread's `schedstat` (on-CPU and run-queue wait). The host's
//! `/proc/stat`, `/proc/loadavg`, `/proc/meminfo`, `/proc/diskstats` and
//! `/proc/net/dev` are read every [`HOST_EVERY`] samples by whichever process of the session holds the
//! host's lock file (`.host-<id>.lock` in the session directory, a
//! `flock` that the kernel drops when its holder dies, so another process
//! takes over at its next sample). A file that cannot be read costs its
//! counters, with one warning; the rest is sampled.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Condvar, Mutex as StdMutex, MutexGuard as StdMutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::callsite;
use crate::chunks::{any_cpu, Chunks};
use crate::format::resource::{key, KEYFRAME};
use crate::format::{Clipped, MetaRef, Resource, SamplerInfo, Scope, SiteKind, MAX_NAME};
use crate::procfs::{self, ProcFile};
use crate::record::{self, CounterValue};

/// Default interval (ms): a 40 ms run gets three samples (its start, its
/// middle, its end); the cost is in docs/PERFORMANCE.md.
pub(crate) const DEFAULT_MS: u64 = 20;

/// The host's files are read every this many samples (200 ms at the
/// default interval, and in the final sample): they cost more than the
/// process's (about 90 µs a read here, cold), and a host overview needs
/// less than a process's 20 ms.
const HOST_EVERY: u64 = 10;

/// Every thread's `schedstat` is read every this many samples, even if it
/// did not run (a thread that waits for a CPU without getting one).
const THREADS_EVERY: u64 = 5;

/// Longest the start waits for the sampler's first sample.
const FIRST_WAIT: Duration = Duration::from_millis(20);

/// Longest the finish waits for the sampler's final sample.
const STOP_WAIT: Duration = Duration::from_millis(250);

/// Longest time between two reads of the profiler's rings (ms).
const PROFILE_TICK_MS: u64 = super::profiler::TICK_MS;

/// Highest `MPPROF_SAMPLE_HZ` accepted (the kernel's own limit,
/// `perf_event_max_sample_rate`, is usually lower and throttles).
const MAX_HZ: u64 = 10_000;

/// Threads sampled one by one at most (each has two counter callsites,
/// which live as long as the process); more are counted in
/// `threads.unsampled`.
const MAX_THREADS: usize = 1024;

/// Most resources per `Meta::Resources` entry (so it stays far below the
/// entry size limit).
const DECLARE_BATCH: usize = 24;

/// A recorder's sampler: its thread and how to stop it.
pub(crate) struct Sampler {
    ctl: StdMutex<Ctl>,
    cv: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The host lock's descriptor while held (-1: none), closed by a forked
    /// child (which shares the lock otherwise).
    host_lock: AtomicI32,
    /// Set in a forked child: this sampler's thread is in the parent. Its
    /// `ctl` mutex may have been copied locked, so nothing here may wait
    /// on it.
    forked_away: AtomicBool,
}

#[derive(Default)]
struct Ctl {
    stop: bool,
    /// The first sample is taken.
    first: bool,
    /// The thread is gone (or never started): its final sample is taken.
    done: bool,
}

impl Sampler {
    pub(crate) fn new() -> Sampler {
        Sampler {
            ctl: StdMutex::new(Ctl::default()),
            cv: Condvar::new(),
            thread: Mutex::new(None),
            host_lock: AtomicI32::new(-1),
            forked_away: AtomicBool::new(false),
        }
    }

    /// Starts sampling `chunks`' process (a session in `dir` on host
    /// `host_id`), unless `MPPROF_SAMPLE_MS=0`, which the file says.
    pub(crate) fn start(&'static self, chunks: &'static Chunks, dir: &Path, host_id: &str) {
        let ms = crate::env::number("MPPROF_SAMPLE_MS", DEFAULT_MS, 0, 60_000);
        let hz = crate::env::number("MPPROF_SAMPLE_HZ", 0, 0, MAX_HZ) as u32;
        let syscalls = crate::env::choice("MPPROF_SYSCALLS", &["0", "1", "off", "on"], "0");
        let syscalls = matches!(syscalls, "1" | "on");
        if ms == 0 {
            chunks.write_meta(&MetaRef::Sampler(&SamplerInfo {
                interval_ns: 0,
                tid: 0,
                unavailable: Vec::new(),
            }));
            if hz == 0 && !syscalls {
                self.set_done();
                return;
            }
        }
        let lock_path = dir.join(format!(".host-{}.lock", file_safe(host_id)));
        let spawned = std::thread::Builder::new()
            .name("mpprof-sample".into())
            .spawn(move || {
                any_cpu();
                // A bug here must not leave the finish waiting: whatever
                // happens, the sampler is done when its thread ends.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.run(chunks, ms, hz, syscalls, lock_path)
                }));
                if r.is_err() {
                    self.set_done();
                }
            });
        match spawned {
            Ok(h) => {
                *self.thread.lock() = Some(h);
                // Wait for the first sample (a few hundred µs; at most
                // FIRST_WAIT): a process that lives 10 ms on a busy machine
                // would otherwise end before its sampler ran, with its
                // final sample as its only one and no CPU % to show.
                drop(self.wait(Instant::now() + FIRST_WAIT, |c| c.first || c.done));
            }
            Err(e) => {
                crate::warn::warn(format_args!(
                    "cannot start the resource sampler thread ({e}); this process's CPU, memory and I/O are missing from the trace"
                ));
                self.set_done();
            }
        }
    }

    /// Has the sampler take a final sample and stop; waits for it at most
    /// [`STOP_WAIT`] (a sampler stuck in a `/proc` read is left behind).
    pub(crate) fn stop(&self) {
        // Relaxed: set by this process's fork handler, on this thread's
        // history (the child's only thread at the time).
        if self.forked_away.load(Ordering::Relaxed) {
            return;
        }
        let deadline = Instant::now() + STOP_WAIT;
        self.update(|c| c.stop = true);
        if !self.wait(deadline, |c| c.done).done {
            return;
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }

    /// In a forked child that starts recording: the parent's sampler
    /// thread does not exist here; its handle is forgotten, not joined.
    pub(crate) fn forget_in_forked_child(&self) {
        std::mem::forget(self.thread.lock().take());
    }

    /// In the fork handler of the child (an atomic store, an atomic swap
    /// and `close`: all allowed there): this sampler's thread stayed in the
    /// parent, and the child closes its copy of the host lock, which would
    /// otherwise keep the parent's lock held for as long as the child
    /// lives, whether or not the child ever records.
    pub(crate) fn forked_away(&self) {
        self.forked_away.store(true, Ordering::Relaxed);
        crate::perf::close_in_forked_child();
        let fd = self.host_lock.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the descriptor was the sampler's own, and its thread
            // does not exist in the child.
            unsafe { libc::close(fd) };
        }
    }

    fn set_done(&self) {
        self.update(|c| c.done = true);
    }

    /// Changes the control state and wakes whoever waits on it.
    fn update(&self, change: impl FnOnce(&mut Ctl)) {
        let mut c = self.ctl.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut c);
        self.cv.notify_all();
    }

    /// Waits until `until` holds of the control state or `deadline` passes;
    /// returns the state then, locked.
    fn wait(&self, deadline: Instant, until: impl Fn(&Ctl) -> bool) -> StdMutexGuard<'_, Ctl> {
        let mut c = self.ctl.lock().unwrap_or_else(|e| e.into_inner());
        while !until(&c) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            c = self
                .cv
                .wait_timeout(c, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        c
    }

    /// The thread: a resource sample every `ms` (none if 0) and, with the
    /// profiler on (`hz` > 0), its records copied out every tick (at most
    /// [`PROFILE_TICK_MS`] apart, so the kernel's rings do not fill).
    fn run(&self, chunks: &'static Chunks, ms: u64, hz: u32, syscalls: bool, lock_path: PathBuf) {
        let profiling = hz > 0 || syscalls;
        let tick_ms = match (ms, profiling) {
            (0, _) => PROFILE_TICK_MS,
            (ms, false) => ms,
            (ms, true) => ms.min(PROFILE_TICK_MS),
        };
        // Resource samples every this many ticks.
        let every = if ms == 0 { 0 } else { (ms / tick_ms).max(1) };
        let interval = Duration::from_millis(tick_ms);
        // The profiler first: the program's first samples are what the
        // start waits for (see `Sampler::start`).
        let mut prof =
            profiling.then(|| super::profiler::Profiler::start(chunks, hz, syscalls, gettid()));
        let mut st = State::open(chunks, lock_path);
        let start = Instant::now();
        let mut k: u32 = 0;
        loop {
            let stop = self.wait(start + interval * k, |c| c.stop).stop;
            if chunks.is_finished() {
                break; // finished without a stop (at exit, the lock busy)
            }
            if let Some(p) = prof.as_mut() {
                p.drain(stop, !budget_spent(chunks));
            }
            if every > 0 && (stop || u64::from(k) % every == 0) {
                st.sample(stop);
                // After the first sample, and again if a source failed since.
                st.declare_sampler(ms);
            }
            if k == 0 {
                self.update(|c| c.first = true);
            }
            self.host_lock.store(st.host_fd(), Ordering::Relaxed);
            if stop {
                break;
            }
            // The next deadline after now: a sampler that fell behind (a
            // suspended process, a starved thread) skips samples rather
            // than taking them back to back.
            let due = (start.elapsed().as_nanos() / interval.as_nanos()) as u32 + 1;
            k = (k + 1).max(due);
        }
        self.host_lock.store(-1, Ordering::Relaxed);
        drop(prof);
        drop(st);
        self.set_done();
    }
}

/// Under keep-first, whether three quarters of the budget are taken: then
/// resource samples and stack samples stop, so that they never take the
/// rest of the budget from the program's events. A flight recorder keeps
/// sampling: it overwrites the oldest.
fn budget_spent(chunks: &Chunks) -> bool {
    chunks
        .using(|c| {
            let b = c.buf();
            b.policy() == crate::format::Policy::KeepFirst
                && u64::from(b.slots_taken()) * 4 >= u64::from(b.max_chunks()) * 3
        })
        .unwrap_or(false)
}

/// `s` with every byte but ASCII letters, digits, `-` and `_` replaced.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Which series a counter callsite holds.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SiteKey {
    scope: Scope,
    key: &'static str,
    instance: String,
}

struct Series {
    /// Its counter's callsite id (see `callsite::fresh_id`).
    id: u32,
    last: Option<u64>,
}

/// The sampler thread's state: open files, callsites, last values.
struct State {
    chunks: &'static Chunks,
    tick: u64,
    page: u64,
    /// ns per `/proc/stat` tick.
    tick_ns: u64,
    statm: Option<ProcFile>,
    io: Option<ProcFile>,
    task_dir: Option<File>,
    unavailable: BTreeSet<String>,
    /// What a warning said already.
    warned: BTreeSet<String>,
    /// Whether `Meta::Sampler` is written, and with how many unavailable.
    declared_unavailable: Option<usize>,
    host: Host,
    /// Every series of this file, and where each is in `series`.
    series: Vec<(SiteKey, Series)>,
    index: HashMap<SiteKey, usize>,
    /// The series of each `put` of the previous sample, in order: a sample
    /// makes the same calls in the same order as the one before (unless
    /// threads came or went), so most lookups are one comparison, no hash
    /// and no allocation.
    order: Vec<usize>,
    /// Puts so far in this sample.
    pos: usize,
    /// Resources not declared yet, and their counters' names.
    pending: Vec<Resource>,
    pending_names: Vec<String>,
    threads: usize,
    /// The sampler thread's own id.
    own_tid: u32,
    /// Sampling stopped short of the budget (keep-first), leaving the rest
    /// to the program's events: only the final sample is still taken.
    stopped: bool,
    /// Sampled threads and their names (`comm`) when first seen.
    thread_names: HashMap<u32, String>,
    /// Their CPU clocks at the last read of their `schedstat`.
    thread_cpu: HashMap<u32, u64>,
    /// This sample's values.
    values: Vec<(u32, CounterValue)>,
    schedstat: procfs::ReadBuf,
}

/// The host's files, read while this process holds the host lock.
struct Host {
    lock_path: PathBuf,
    lock: Option<File>,
    /// The lock file could not be made: no host sampling.
    no_lock: bool,
    held: bool,
    /// Host samples taken.
    ticks: u64,
    /// Force every host value into the next sample (just took the lock).
    fresh: bool,
    stat: Option<ProcFile>,
    loadavg: Option<ProcFile>,
    meminfo: Option<ProcFile>,
    diskstats: Option<ProcFile>,
    net: Option<ProcFile>,
    /// Whole disks (`/sys/block`); `None`: unknown, every device.
    disks: Option<BTreeSet<String>>,
    cpus: Vec<procfs::CpuTimes>,
    disk_lines: Vec<procfs::Disk>,
    net_lines: Vec<procfs::Net>,
}

impl State {
    fn open(chunks: &'static Chunks, lock_path: PathBuf) -> State {
        let mut unavailable = BTreeSet::new();
        let mut open = |path: &str| match ProcFile::open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                unavailable.insert(format!("{path}: {e}"));
                None
            }
        };
        let statm = open("/proc/self/statm");
        let io = open("/proc/self/io");
        let task_dir = match File::open("/proc/self/task") {
            Ok(f) => Some(f),
            Err(e) => {
                unavailable.insert(format!("/proc/self/task: {e}"));
                None
            }
        };
        // SAFETY: sysconf has no preconditions.
        let (page, hz) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        State {
            chunks,
            tick: 0,
            page: if page > 0 { page as u64 } else { 4096 },
            tick_ns: if hz > 0 {
                1_000_000_000 / hz as u64
            } else {
                10_000_000
            },
            statm,
            io,
            task_dir,
            unavailable,
            warned: BTreeSet::new(),
            declared_unavailable: None,
            host: Host {
                lock_path,
                lock: None,
                no_lock: false,
                held: false,
                ticks: 0,
                fresh: false,
                stat: None,
                loadavg: None,
                meminfo: None,
                diskstats: None,
                net: None,
                disks: None,
                cpus: Vec::new(),
                disk_lines: Vec::new(),
                net_lines: Vec::new(),
            },
            series: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            pos: 0,
            pending: Vec::new(),
            pending_names: Vec::new(),
            threads: 0,
            own_tid: gettid(),
            stopped: false,
            thread_names: HashMap::new(),
            thread_cpu: HashMap::new(),
            values: Vec::new(),
            schedstat: procfs::ReadBuf::default(),
        }
    }

    fn host_fd(&self) -> i32 {
        match &self.host.lock {
            Some(f) if self.host.held => f.as_raw_fd(),
            _ => -1,
        }
    }

    /// Writes `Meta::Sampler` (again when more sources turned out to be
    /// unavailable), and warns once about those.
    fn declare_sampler(&mut self, ms: u64) {
        let n = self.unavailable.len();
        if self.declared_unavailable == Some(n) {
            return;
        }
        let info = SamplerInfo {
            interval_ns: ms * 1_000_000,
            tid: gettid(),
            unavailable: self.unavailable.iter().cloned().collect(),
        };
        self.chunks
            .using(|c| c.write_meta(&MetaRef::Sampler(&info)));
        let new: Vec<&str> = self
            .unavailable
            .difference(&self.warned)
            .map(|s| s.as_str())
            .collect();
        if !new.is_empty() {
            crate::warn::warn(format_args!(
                "resource sampling goes without {}; those counters are missing from the trace (`mpprof-merge check` lists them)",
                new.join("; ")
            ));
        }
        self.warned = self.unavailable.clone();
        self.declared_unavailable = Some(n);
    }

    /// One sample; `last`: the final one (every value recorded).
    fn sample(&mut self, last: bool) {
        if !last && self.budget_spent() {
            return;
        }
        self.tick += 1;
        let force = last || self.tick % KEYFRAME == 1;
        self.values.clear();
        self.pos = 0;
        self.put(
            Scope::Process,
            key::SAMPLE,
            "",
            "count",
            false,
            U(self.tick),
            true,
        );
        self.process(force);
        self.threads(force);
        self.host(last);
        self.flush();
        // After the declarations: a reader that meets a value knows it.
        for &(id, v) in &self.values {
            record::counter_id(id, v);
        }
    }

    fn process(&mut self, force: bool) {
        // SAFETY: an all-zero rusage is a valid value of the plain struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes the struct it is given.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
            let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
            let p = Scope::Process;
            self.put(p, key::CPU_USER, "", "ns", true, U(ns(ru.ru_utime)), force);
            self.put(
                p,
                key::CPU_SYSTEM,
                "",
                "ns",
                true,
                U(ns(ru.ru_stime)),
                force,
            );
            self.put(
                p,
                key::PEAK_RSS,
                "",
                "bytes",
                false,
                U(ru.ru_maxrss as u64 * 1024),
                force,
            );
            self.put(
                p,
                key::MINOR_FAULTS,
                "",
                "count",
                true,
                U(ru.ru_minflt as u64),
                force,
            );
            self.put(
                p,
                key::MAJOR_FAULTS,
                "",
                "count",
                true,
                U(ru.ru_majflt as u64),
                force,
            );
            self.put(
                p,
                key::CTX_VOLUNTARY,
                "",
                "count",
                true,
                U(ru.ru_nvcsw as u64),
                force,
            );
            self.put(
                p,
                key::CTX_INVOLUNTARY,
                "",
                "count",
                true,
                U(ru.ru_nivcsw as u64),
                force,
            );
        }
        let rss = read(&mut self.statm, "/proc/self/statm", &mut self.unavailable)
            .and_then(procfs::statm_resident_pages);
        if let Some(pages) = rss {
            let bytes = pages * self.page;
            self.put(
                Scope::Process,
                key::RSS,
                "",
                "bytes",
                false,
                U(bytes),
                force,
            );
        }
        if let Some(text) = read(&mut self.io, "/proc/self/io", &mut self.unavailable) {
            let io = procfs::io(text);
            let p = Scope::Process;
            self.put(
                p,
                key::READ_BYTES,
                "",
                "bytes",
                true,
                U(io.read_bytes),
                force,
            );
            self.put(
                p,
                key::WRITE_BYTES,
                "",
                "bytes",
                true,
                U(io.write_bytes),
                force,
            );
            self.put(p, key::READ_CHARS, "", "bytes", true, U(io.rchar), force);
            self.put(p, key::WRITE_CHARS, "", "bytes", true, U(io.wchar), force);
        }
    }

    fn threads(&mut self, force: bool) {
        let Some(dir) = &self.task_dir else { return };
        let dirfd = dir.as_raw_fd();
        let tids: Vec<u32> = match std::fs::read_dir("/proc/self/task") {
            Ok(d) => d
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => return,
        };
        self.put(
            Scope::Process,
            key::THREADS,
            "",
            "count",
            false,
            U(tids.len() as u64),
            force,
        );
        let mut unsampled = 0u64;
        for tid in tids {
            let scope = Scope::Thread { tid };
            let known = self.thread_names.contains_key(&tid);
            if !known && self.threads >= MAX_THREADS {
                unsampled += 1;
                continue;
            }
            // A thread that did not run since the last sample is not read
            // (its on-CPU time, from its CPU clock, is one system call
            // where its `schedstat` is three); its run-queue wait is read
            // every few samples anyway, for a thread that waits without
            // getting a CPU at all.
            if known && tid == self.own_tid && !force {
                // The sampler's own thread ran (it is sampling): its time
                // is what sampling costs, recorded at keyframes only (it
                // would be two records every sample).
                self.skip(2);
                continue;
            }
            let ran = thread_cpu_ns(tid);
            if known && !force && (self.tick - 1) % THREADS_EVERY != 0 {
                if let (Some(now), Some(&before)) = (ran, self.thread_cpu.get(&tid)) {
                    if now == before {
                        self.skip(2);
                        continue;
                    }
                }
            }
            let Some((on_cpu, wait)) = read_schedstat(dirfd, tid, &mut self.schedstat) else {
                continue; // gone meanwhile
            };
            if let Some(now) = ran {
                self.thread_cpu.insert(tid, now);
            }
            if !known {
                self.threads += 1;
                // Its name when first seen (the series keep it).
                let name = read_comm(dirfd, tid, &mut self.schedstat).unwrap_or_default();
                self.thread_names.insert(tid, name);
            }
            // Taken out and put back: no copy of the name per sample.
            let name = self.thread_names.remove(&tid).unwrap_or_default();
            self.put(scope, key::ON_CPU, &name, "ns", true, U(on_cpu), force);
            self.put(scope, key::RUN_WAIT, &name, "ns", true, U(wait), force);
            self.thread_names.insert(tid, name);
        }
        if unsampled > 0 || self.threads >= MAX_THREADS {
            self.put(
                Scope::Process,
                key::THREADS_UNSAMPLED,
                "",
                "count",
                false,
                U(unsampled),
                force,
            );
        }
    }

    fn host(&mut self, last: bool) {
        if !(last || (self.tick - 1) % HOST_EVERY == 0) || !self.take_host_lock() {
            return;
        }
        self.host.ticks += 1;
        let force = last || self.host.ticks % KEYFRAME == 1 || std::mem::take(&mut self.host.fresh);
        let h = Scope::Host;
        let n = self.host.ticks;
        self.put(h, key::HOST_SAMPLE, "", "count", false, U(n), true);
        let tick_ns = self.tick_ns;
        if let Some(text) = read(&mut self.host.stat, "/proc/stat", &mut self.unavailable) {
            procfs::stat_cpus(text, &mut self.host.cpus);
            let cpus = std::mem::take(&mut self.host.cpus);
            for c in &cpus {
                let inst = if c.name == "cpu" { "" } else { c.name.as_str() };
                self.put(
                    h,
                    key::HOST_CPU_BUSY,
                    inst,
                    "ns",
                    true,
                    U(c.busy * tick_ns),
                    force,
                );
                self.put(
                    h,
                    key::HOST_CPU_IDLE,
                    inst,
                    "ns",
                    true,
                    U(c.idle * tick_ns),
                    force,
                );
                if inst.is_empty() {
                    self.put(
                        h,
                        key::HOST_CPU_IOWAIT,
                        "",
                        "ns",
                        true,
                        U(c.iowait * tick_ns),
                        force,
                    );
                }
            }
            self.host.cpus = cpus;
        }
        if let Some((load, runnable)) = read(
            &mut self.host.loadavg,
            "/proc/loadavg",
            &mut self.unavailable,
        )
        .and_then(procfs::loadavg)
        {
            self.put(h, key::HOST_LOAD, "", "", false, F(load), force);
            self.put(
                h,
                key::HOST_RUNNABLE,
                "",
                "count",
                false,
                U(runnable),
                force,
            );
        }
        if let Some(text) = read(
            &mut self.host.meminfo,
            "/proc/meminfo",
            &mut self.unavailable,
        ) {
            let m = procfs::meminfo(text);
            self.put(
                h,
                key::HOST_MEM_TOTAL,
                "",
                "bytes",
                false,
                U(m.total),
                force,
            );
            let used = m.total.saturating_sub(m.available);
            self.put(h, key::HOST_MEM_USED, "", "bytes", false, U(used), force);
            self.put(
                h,
                key::HOST_MEM_AVAILABLE,
                "",
                "bytes",
                false,
                U(m.available),
                force,
            );
            self.put(
                h,
                key::HOST_MEM_CACHED,
                "",
                "bytes",
                false,
                U(m.cached),
                force,
            );
        }
        if let Some(text) = read(
            &mut self.host.diskstats,
            "/proc/diskstats",
            &mut self.unavailable,
        ) {
            procfs::diskstats(text, &mut self.host.disk_lines);
            let lines = std::mem::take(&mut self.host.disk_lines);
            for d in &lines {
                let whole = self.host.disks.as_ref().is_none_or(|s| s.contains(&d.name));
                if !whole || d.reads + d.writes == 0 {
                    continue; // a partition, or a device never used
                }
                let i = d.name.as_str();
                self.put(
                    h,
                    key::DISK_READ_BYTES,
                    i,
                    "bytes",
                    true,
                    U(d.read_bytes),
                    force,
                );
                self.put(
                    h,
                    key::DISK_WRITE_BYTES,
                    i,
                    "bytes",
                    true,
                    U(d.write_bytes),
                    force,
                );
                self.put(h, key::DISK_READS, i, "count", true, U(d.reads), force);
                self.put(h, key::DISK_WRITES, i, "count", true, U(d.writes), force);
                self.put(
                    h,
                    key::DISK_BUSY,
                    i,
                    "ns",
                    true,
                    U(d.busy_ms * 1_000_000),
                    force,
                );
            }
            self.host.disk_lines = lines;
        }
        if let Some(text) = read(&mut self.host.net, "/proc/net/dev", &mut self.unavailable) {
            procfs::net_dev(text, &mut self.host.net_lines);
            let lines = std::mem::take(&mut self.host.net_lines);
            for n in &lines {
                if n.rx_packets + n.tx_packets == 0 {
                    continue;
                }
                let i = n.name.as_str();
                self.put(h, key::NET_RX_BYTES, i, "bytes", true, U(n.rx_bytes), force);
                self.put(h, key::NET_TX_BYTES, i, "bytes", true, U(n.tx_bytes), force);
                self.put(
                    h,
                    key::NET_RX_PACKETS,
                    i,
                    "count",
                    true,
                    U(n.rx_packets),
                    force,
                );
                self.put(
                    h,
                    key::NET_TX_PACKETS,
                    i,
                    "count",
                    true,
                    U(n.tx_packets),
                    force,
                );
            }
            self.host.net_lines = lines;
        }
    }

    /// Under keep-first, whether three quarters of the budget are taken:
    /// then sampling stops (once, with a warning and a note in
    /// `Meta::Sampler`), so the samples of a long run never take the rest
    /// of the budget from the program's events. The final sample is still
    /// taken. A flight recorder keeps sampling: it overwrites the oldest.
    fn budget_spent(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        let full = budget_spent(self.chunks);
        if full {
            self.stopped = true;
            self.unavailable.insert(
                "resource samples after three quarters of the buffer budget (MPPROF_BUFFER_MB, keep-first): the rest is left to the program's events"
                    .to_owned(),
            );
        }
        full
    }

    /// Whether this process holds the host lock (taking it if free: its
    /// holder exited or died); opens the host's files when it takes it.
    fn take_host_lock(&mut self) -> bool {
        let h = &mut self.host;
        if h.held {
            return true;
        }
        if h.no_lock {
            return false;
        }
        if h.lock.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            // 0600 like every file of the session; no symlink followed.
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&h.lock_path)
            {
                Ok(f) => h.lock = Some(f),
                Err(e) => {
                    self.unavailable.insert(format!(
                        "host lock {}: {e} (no host counters from this process)",
                        h.lock_path.display()
                    ));
                    h.no_lock = true;
                    return false;
                }
            }
        }
        let fd = h.lock.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: flock on a descriptor this state owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return false;
        }
        h.held = true;
        h.fresh = true;
        let mut open = |path: &str| match ProcFile::open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                self.unavailable.insert(format!("{path}: {e}"));
                None
            }
        };
        h.stat = open("/proc/stat");
        h.loadavg = open("/proc/loadavg");
        h.meminfo = open("/proc/meminfo");
        h.diskstats = open("/proc/diskstats");
        h.net = open("/proc/net/dev");
        h.disks = std::fs::read_dir("/sys/block").ok().map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
                .collect()
        });
        true
    }

    /// Queues `value` of series (`scope`, `key`, `instance`) for this
    /// sample if it changed (or `force`), making its callsite on first use.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        scope: Scope,
        key: &'static str,
        instance: &str,
        unit: &str,
        cumulative: bool,
        value: Value,
        force: bool,
    ) {
        let bits = value.bits();
        let same = |k: &SiteKey| k.scope == scope && k.key == key && k.instance == instance;
        let cached = self
            .order
            .get(self.pos)
            .copied()
            .filter(|&i| same(&self.series[i].0));
        let i = match cached {
            Some(i) => i,
            None => {
                let sk = SiteKey {
                    scope,
                    key,
                    instance: instance.to_owned(),
                };
                let i = match self.index.get(&sk) {
                    Some(&i) => i,
                    None => {
                        // Ids of this file's series only: a later session's
                        // sampler takes new ones, so nothing piles up across
                        // sessions or threads.
                        let Some(id) = callsite::fresh_id() else {
                            return;
                        };
                        self.pending.push(Resource {
                            site: id,
                            scope,
                            key: key.to_owned(),
                            instance: instance.to_owned(),
                            unit: unit.to_owned(),
                            cumulative,
                        });
                        self.pending_names
                            .push(site_name(scope, key, instance, unit));
                        self.series.push((sk.clone(), Series { id, last: None }));
                        self.index.insert(sk, self.series.len() - 1);
                        self.series.len() - 1
                    }
                };
                match self.order.get_mut(self.pos) {
                    Some(o) => *o = i,
                    None => self.order.push(i),
                }
                i
            }
        };
        self.pos += 1;
        let s = &mut self.series[i].1;
        if force || s.last != Some(bits) {
            s.last = Some(bits);
            self.values.push((s.id, value.counter()));
        }
    }

    /// Passes over `n` puts that the previous sample made here (their
    /// values did not change), keeping the positions of the next ones.
    fn skip(&mut self, n: usize) {
        self.pos += n;
    }

    /// Names and declares the series made in this sample: a counter
    /// callsite entry each (what a reader that does not know resources
    /// shows), then `Meta::Resources`.
    fn flush(&mut self) {
        for (r, name) in self.pending.iter().zip(&self.pending_names) {
            let entry = MetaRef::Callsite {
                id: r.site,
                kind: SiteKind::Counter,
                name: Clipped::new(name, MAX_NAME),
                path: Clipped::whole("mpprof::resource"),
                file: Clipped::whole(""),
                line: 0,
            };
            self.chunks.using(|c| c.write_meta(&entry));
        }
        self.pending_names.clear();
        for batch in self.pending.chunks(DECLARE_BATCH) {
            self.chunks
                .using(|c| c.write_meta(&MetaRef::Resources(batch)));
        }
        self.pending.clear();
    }
}

/// A sample value.
#[derive(Clone, Copy)]
enum Value {
    U(u64),
    F(f64),
}
use Value::{F, U};

impl Value {
    fn bits(self) -> u64 {
        match self {
            U(v) => v,
            F(f) => f.to_bits(),
        }
    }

    fn counter(self) -> CounterValue {
        match self {
            U(v) => CounterValue::UInt(v),
            F(f) => CounterValue::Float(f),
        }
    }
}

/// The counter's display name for readers that do not know resources.
fn site_name(scope: Scope, key: &str, instance: &str, unit: &str) -> String {
    let mut s = String::from("mpprof: ");
    match scope {
        Scope::Process => {}
        Scope::Thread { tid } => s.push_str(&format!("thread {tid} ")),
        Scope::Host => s.push_str("host "),
    }
    if !instance.is_empty() {
        s.push_str(instance);
        s.push(' ');
    }
    s.push_str(key);
    if !unit.is_empty() {
        s.push_str(&format!(" ({unit})"));
    }
    s
}

/// Reads `file`'s text; on an error, notes it as unavailable and stops
/// reading it.
fn read<'a>(
    file: &'a mut Option<ProcFile>,
    path: &str,
    unavailable: &mut BTreeSet<String>,
) -> Option<&'a str> {
    if let Err(e) = file.as_mut()?.read() {
        unavailable.insert(format!("{path}: {e}"));
        *file = None;
        return None;
    }
    Some(file.as_ref()?.text())
}

/// Thread `tid`'s `schedstat`, opened relative to the task directory.
fn read_schedstat(dirfd: i32, tid: u32, buf: &mut procfs::ReadBuf) -> Option<(u64, u64)> {
    read_task_file(dirfd, tid, "schedstat", buf)?;
    procfs::schedstat(buf.text())
}

/// Thread `tid`'s name (`comm`).
fn read_comm(dirfd: i32, tid: u32, buf: &mut procfs::ReadBuf) -> Option<String> {
    read_task_file(dirfd, tid, "comm", buf)?;
    Some(buf.text().trim_end().to_owned())
}

/// Reads file `name` of thread `tid` into `buf`.
fn read_task_file(dirfd: i32, tid: u32, name: &str, buf: &mut procfs::ReadBuf) -> Option<()> {
    // "<tid>/<name>\0" on the stack.
    let mut path = [0u8; 64];
    let mut w = &mut path[..63];
    std::io::Write::write_fmt(&mut w, format_args!("{tid}/{name}")).ok()?;
    // SAFETY: openat with a valid directory descriptor and a NUL-ended
    // string (the array's last byte stays 0).
    let fd = unsafe {
        libc::openat(
            dirfd,
            path.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just opened, owned from here.
    let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    procfs::read_whole(&f, buf).ok()
}

/// Thread `tid`'s CPU time (ns) from its CPU clock (one `clock_gettime`,
/// no file); `None` if it is gone.
fn thread_cpu_ns(tid: u32) -> Option<u64> {
    // The kernel's per-thread scheduler clock id: ~tid << 3 | PERTHREAD
    // (4) | SCHED (2), as glibc's `pthread_getcpuclockid` makes it.
    let clock = ((!(tid as libc::clockid_t)) << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0)
        .then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}
