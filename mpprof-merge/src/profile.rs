//! Stack samples and off-CPU intervals (see `mpprof_format::profile`):
//! read from each process's profiler lane, put on the trace's clock, and
//! symbolized.
//!
//! A sample's time is the kernel's CLOCK_MONOTONIC time of it (its
//! payload), moved by the process's clock-domain correction like every
//! other time of the process. Symbolization reads each binary that the
//! recorded modules name, at merge time, with `blazesym` (ELF symbols and
//! DWARF: file, line and inlined functions), once per binary however many
//! processes ran it. A binary that is gone, was rebuilt since (its build id
//! differs) or has no symbols gives its frames as `module+0xoffset`, with
//! one warning per binary in [`Profile::warnings`]: never an error.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use mpprof_format::profile::PREEMPTED;
use mpprof_format::{kind, Module, ProfilerInfo};

use crate::read::RecordReader;
use crate::trace::{Process, Session};

/// One stack sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Trace time, ns.
    pub t: i64,
    /// OS thread id.
    pub tid: u32,
    /// CPU it ran on.
    pub cpu: u32,
    /// Stack id (see [`Profile::stack`]); 0: no user stack.
    pub stack: u32,
}

/// One interval a thread spent switched out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpu {
    /// OS thread id.
    pub tid: u32,
    /// Trace time it left its CPU, ns.
    pub start: i64,
    /// Trace time it came back, ns.
    pub end: i64,
    /// It was runnable and waited for a CPU (preempted), rather than
    /// blocked.
    pub preempted: bool,
}

/// One traced system call (`MPPROF_SYSCALLS=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEvent {
    /// OS thread id.
    pub tid: u32,
    /// Trace time it began, ns.
    pub start: i64,
    /// Trace time it returned, ns.
    pub end: i64,
    /// Its number (the recording machine's architecture).
    pub nr: u16,
    /// The error it returned, or 0.
    pub errno: u16,
}

/// The name of system call `nr` (`write`), or `syscall <nr>`.
pub fn syscall_name(nr: u16) -> String {
    #[cfg(target_os = "linux")]
    if let Some(s) = syscalls::Sysno::new(usize::from(nr)) {
        return s.name().to_owned();
    }
    format!("syscall {nr}")
}

/// A process's samples and off-CPU intervals.
#[derive(Clone, Debug, Default)]
pub struct ProcessProfile {
    /// The profiler's facts (the last entry).
    pub info: ProfilerInfo,
    /// Samples by time.
    pub samples: Vec<Sample>,
    /// Off-CPU intervals by thread, then start.
    pub off_cpu: Vec<OffCpu>,
    /// Samples whose stack has no `Meta::Stack` entry (it was not stored).
    pub unknown_stacks: u64,
    /// Traced system calls by thread, then start.
    pub syscalls: Vec<SyscallEvent>,
}

impl ProcessProfile {
    /// The off-CPU intervals of thread `tid`, by start.
    pub fn off_cpu_of(&self, tid: u32) -> &[OffCpu] {
        let a = self.off_cpu.partition_point(|o| o.tid < tid);
        let b = self.off_cpu.partition_point(|o| o.tid <= tid);
        &self.off_cpu[a..b]
    }

    /// Nanoseconds thread `tid` spent off CPU within `[start, end)`, and of
    /// those the ones it was preempted (waiting for a CPU).
    pub fn off_cpu_within(&self, tid: u32, start: i64, end: i64) -> (i64, i64) {
        let mut off = 0;
        let mut preempted = 0;
        let list = self.off_cpu_of(tid);
        // Intervals of one thread do not overlap; those that end after
        // `start` begin at this index or later.
        let first = list.partition_point(|o| o.end <= start);
        for o in &list[first..] {
            if o.start >= end {
                break;
            }
            let d = o.end.min(end) - o.start.max(start);
            if d > 0 {
                off += d;
                if o.preempted {
                    preempted += d;
                }
            }
        }
        (off, preempted)
    }
}

/// Reads process `p`'s samples: `None` when it did not run the profiler.
pub fn of_process(p: &Process) -> Option<ProcessProfile> {
    let f = &p.file;
    let info = f.profiler.clone()?;
    let mut r = ProcessProfile {
        info,
        ..ProcessProfile::default()
    };
    let Some(lane) = f.profiler_lane() else {
        return Some(r);
    };
    let to_trace = |mono: u64| p.correction.apply(mono.min(i64::MAX as u64) as i64);
    for c in &f.lanes[&lane].chunks {
        let mut rd = RecordReader::new(*c);
        while let Some(e) = rd.next_event(&f.file) {
            let [a, b] = e.payload.unwrap_or_default();
            match e.kind {
                kind::SAMPLE => {
                    let stack = b as u32;
                    if stack != 0 && !f.stacks.contains_key(&stack) {
                        r.unknown_stacks += 1;
                    }
                    r.samples.push(Sample {
                        t: to_trace(a),
                        tid: e.site,
                        cpu: (b >> 32) as u32,
                        stack,
                    });
                }
                kind::SYSCALL => {
                    let c = mpprof_format::profile::Syscall::unpack(b);
                    let start = to_trace(a);
                    r.syscalls.push(SyscallEvent {
                        tid: e.site,
                        start,
                        end: start.saturating_add(c.dur_ns as i64),
                        nr: c.nr,
                        errno: c.errno,
                    });
                }
                kind::OFF_CPU => {
                    let back = b & !PREEMPTED;
                    if back >= a {
                        r.off_cpu.push(OffCpu {
                            tid: e.site,
                            start: to_trace(a),
                            end: to_trace(back),
                            preempted: b & PREEMPTED != 0,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    r.samples.sort_by_key(|s| (s.t, s.tid));
    r.off_cpu.sort_by_key(|o| (o.tid, o.start));
    r.syscalls.sort_by_key(|c| (c.tid, c.start));
    Some(r)
}

/// A symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name (demangled, without Rust's hash suffix), or
    /// `module+0xoffset` when it could not be symbolized.
    pub function: String,
    /// Source file, when the binary has line information.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// File name of the object the code is in (`libc.so.6`), or empty.
    pub module: String,
}

/// Every process's samples, with their stacks symbolized.
#[derive(Debug, Default)]
pub struct Profile {
    /// By process index; `None` for a process that did not sample.
    pub processes: Vec<Option<ProcessProfile>>,
    /// Every distinct frame.
    pub frames: Vec<Frame>,
    /// Per process, its stacks as frame indices, leaf first (inlined
    /// functions as frames of their own, innermost first).
    stacks: Vec<HashMap<u32, Vec<u32>>>,
    /// What symbolization could not do, one line per binary.
    pub warnings: Vec<String>,
}

impl Profile {
    /// Reads and symbolizes every process's samples.
    pub fn of(session: &Session) -> Profile {
        let mut prof = Profile::read(session);
        if prof.has_samples() {
            prof.symbolize(session);
        }
        prof
    }

    /// Reads every process's samples and off-CPU intervals, without
    /// symbolizing (for what needs only the times).
    pub fn read(session: &Session) -> Profile {
        let processes: Vec<Option<ProcessProfile>> =
            session.processes.iter().map(of_process).collect();
        Profile {
            stacks: vec![HashMap::new(); processes.len()],
            processes,
            ..Profile::default()
        }
    }

    /// Whether any process has samples.
    pub fn has_samples(&self) -> bool {
        self.processes
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| !p.samples.is_empty()))
    }

    /// Whether any process sampled.
    pub fn any(&self) -> bool {
        self.processes.iter().any(Option::is_some)
    }

    /// The frames of stack `id` of process `proc`, leaf first (empty for an
    /// unknown stack).
    pub fn stack(&self, proc: usize, id: u32) -> &[u32] {
        self.stacks
            .get(proc)
            .and_then(|s| s.get(&id))
            .map_or(&[], Vec::as_slice)
    }

    fn symbolize(&mut self, session: &Session) {
        let mut sym = Symbolizer::new();
        let mut index: HashMap<Frame, u32> = HashMap::new();
        for (i, p) in session.processes.iter().enumerate() {
            let f = &p.file;
            if self.processes[i]
                .as_ref()
                .is_none_or(|p| p.samples.is_empty())
            {
                continue;
            }
            let modules = Modules::new(&f.modules);
            // Each distinct (module, lookup offset) once per process.
            let mut wanted: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
            let mut unmapped = Vec::new();
            for frames in f.stacks.values() {
                for (depth, &a) in frames.iter().enumerate() {
                    // Callers' addresses are return addresses: the call is
                    // the instruction before.
                    let a = if depth > 0 { a.saturating_sub(1) } else { a };
                    match modules.find(a) {
                        Some((m, off)) => wanted.entry(m).or_default().push(off),
                        None => unmapped.push(a),
                    }
                }
            }
            for (m, mut offs) in wanted {
                offs.sort_unstable();
                offs.dedup();
                sym.resolve(&f.modules[m], &offs, &mut self.warnings);
            }
            let mut stacks = HashMap::new();
            for (&id, frames) in &f.stacks {
                let mut out = Vec::with_capacity(frames.len());
                for (depth, &a) in frames.iter().enumerate() {
                    let a = if depth > 0 { a.saturating_sub(1) } else { a };
                    let resolved = match modules.find(a) {
                        Some((m, off)) => sym.frames(&f.modules[m], off),
                        None => vec![Frame {
                            function: format!("0x{a:x}"),
                            file: None,
                            line: None,
                            module: String::new(),
                        }],
                    };
                    for fr in resolved {
                        let n = index.len() as u32;
                        let k = *index.entry(fr.clone()).or_insert_with(|| {
                            self.frames.push(fr);
                            n
                        });
                        out.push(k);
                    }
                }
                stacks.insert(id, out);
            }
            self.stacks[i] = stacks;
        }
    }
}

/// A process's modules, sorted by start, for address lookups.
struct Modules<'a> {
    list: &'a [Module],
    by_start: Vec<usize>,
}

impl<'a> Modules<'a> {
    fn new(list: &'a [Module]) -> Modules<'a> {
        let mut by_start: Vec<usize> = (0..list.len()).collect();
        by_start.sort_by_key(|&i| list[i].start);
        Modules { list, by_start }
    }

    /// The module holding `addr` and the file offset of `addr` in it.
    fn find(&self, addr: u64) -> Option<(usize, u64)> {
        let i = self
            .by_start
            .partition_point(|&m| self.list[m].start <= addr);
        // Mappings may overlap after a library was unloaded and another
        // loaded at its place: the latest recorded one that holds it.
        self.by_start[..i]
            .iter()
            .filter(|&&m| addr < self.list[m].end)
            .max()
            .map(|&m| (m, addr - self.list[m].start + self.list[m].offset))
    }
}

/// Resolved frames by (binary, file offset), and what each binary is.
struct Symbolizer {
    #[cfg(target_os = "linux")]
    inner: blazesym::symbolize::Symbolizer,
    /// Binaries by (path, build id): whether they can be symbolized.
    binaries: HashMap<(String, Vec<u8>), bool>,
    resolved: HashMap<(String, u64), Vec<Frame>>,
}

impl Symbolizer {
    fn new() -> Symbolizer {
        Symbolizer {
            #[cfg(target_os = "linux")]
            inner: blazesym::symbolize::Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .build(),
            binaries: HashMap::new(),
            resolved: HashMap::new(),
        }
    }

    /// Whether `m`'s file is there and the one the process ran (same
    /// build id); warns once per binary if not.
    fn usable(&mut self, m: &Module, warnings: &mut Vec<String>) -> bool {
        let key = (m.path.clone(), m.build_id.clone());
        if let Some(&ok) = self.binaries.get(&key) {
            return ok;
        }
        let ok = match check_binary(m) {
            Ok(()) => true,
            Err(why) => {
                // The vDSO has no file; its frames are few and named by it.
                if !m.path.starts_with("linux-vdso") && !m.path.starts_with("linux-gate") {
                    warnings.push(format!(
                        "{}: {why}; its frames are shown as addresses ({}+0xoffset)",
                        m.path,
                        module_name(&m.path)
                    ));
                }
                false
            }
        };
        self.binaries.insert(key, ok);
        ok
    }

    /// Symbolizes `offsets` (sorted, distinct) of `m`'s file.
    fn resolve(&mut self, m: &Module, offsets: &[u64], warnings: &mut Vec<String>) {
        let todo: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|&o| !self.resolved.contains_key(&(m.path.clone(), o)))
            .collect();
        if todo.is_empty() {
            return;
        }
        let usable = self.usable(m, warnings);
        let name = module_name(&m.path);
        let mut found: Vec<Option<Vec<Frame>>> = vec![None; todo.len()];
        #[cfg(target_os = "linux")]
        if usable {
            use blazesym::symbolize::{source, Input, Symbolized};
            let src = source::Source::Elf(source::Elf::new(&m.path));
            match self.inner.symbolize(&src, Input::FileOffset(&todo)) {
                Ok(syms) => {
                    for (slot, s) in found.iter_mut().zip(syms) {
                        if let Symbolized::Sym(s) = s {
                            *slot = Some(frames_of(&s, &name));
                        }
                    }
                }
                Err(e) => warnings.push(format!(
                    "{}: cannot be symbolized ({e}); its frames are shown as addresses",
                    m.path
                )),
            }
        }
        let _ = usable;
        for (o, f) in todo.into_iter().zip(found) {
            let f = f.unwrap_or_else(|| {
                vec![Frame {
                    function: format!("{name}+0x{o:x}"),
                    file: None,
                    line: None,
                    module: name.clone(),
                }]
            });
            self.resolved.insert((m.path.clone(), o), f);
        }
    }

    /// The frames at offset `off` of `m` (resolved before), innermost
    /// first.
    fn frames(&self, m: &Module, off: u64) -> Vec<Frame> {
        self.resolved
            .get(&(m.path.clone(), off))
            .cloned()
            .unwrap_or_default()
    }
}

/// Whether the binary of `m` is there and is the one recorded.
fn check_binary(m: &Module) -> Result<(), String> {
    let path = Path::new(&m.path);
    if !path.is_absolute() {
        return Err("no file recorded for it".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it ({e})"))?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    #[cfg(target_os = "linux")]
    if !m.build_id.is_empty() {
        match blazesym::helper::read_elf_build_id(&path) {
            Ok(Some(id)) if id[..] == m.build_id[..] => {}
            Ok(_) => {
                return Err(
                    "the file there now is not the one that ran (its build id differs)".into(),
                )
            }
            Err(e) => return Err(format!("cannot read its build id ({e})")),
        }
    }
    #[cfg(not(target_os = "linux"))]
    return Err("symbolization needs Linux".into());
    #[cfg(target_os = "linux")]
    Ok(())
}

#[cfg(target_os = "linux")]
fn frames_of(s: &blazesym::symbolize::Sym<'_>, module: &str) -> Vec<Frame> {
    let code = |c: Option<&blazesym::symbolize::CodeInfo<'_>>| match c {
        Some(c) => (Some(c.to_path().to_string_lossy().into_owned()), c.line),
        None => (None, None),
    };
    // blazesym lists the inlined calls outermost first, after the
    // function that holds them all; the stack wants the innermost first.
    let outer = std::iter::once((s.name.as_ref(), code(s.code_info.as_deref())));
    let inlined = s
        .inlined
        .iter()
        .map(|f| (f.name.as_ref(), code(f.code_info.as_ref())));
    let all: Vec<_> = outer.chain(inlined).collect();
    let mut out = Vec::with_capacity(all.len());
    for (name, (file, line)) in all.into_iter().rev() {
        out.push(Frame {
            function: strip_hash(name).to_owned(),
            file,
            line,
            module: module.to_owned(),
        });
    }
    out
}

/// `name` without a Rust legacy mangling hash (`::h0123456789abcdef`).
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => name,
    }
}

/// The file name of a module's path.
pub fn module_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stripped_and_other_names_kept() {
        assert_eq!(
            strip_hash("core::fmt::write::h0123456789abcdef"),
            "core::fmt::write"
        );
        assert_eq!(strip_hash("a::hello"), "a::hello");
        assert_eq!(strip_hash("memcpy"), "memcpy");
    }

    #[test]
    fn addresses_map_to_the_latest_module_holding_them() {
        let m = |start, end, offset, path: &str| Module {
            start,
            end,
            offset,
            path: path.into(),
            build_id: Vec::new(),
        };
        let list = [
            m(0x1000, 0x2000, 0x0, "/a"),
            m(0x5000, 0x6000, 0x3000, "/b"),
            m(0x5000, 0x5800, 0x100, "/c"),
        ];
        let ms = Modules::new(&list);
        assert_eq!(ms.find(0x1800), Some((0, 0x800)));
        assert_eq!(ms.find(0x5010), Some((2, 0x110)));
        assert_eq!(ms.find(0x5900), Some((1, 0x3900)));
        assert_eq!(ms.find(0x3000), None);
        assert_eq!(ms.find(0x10), None);
    }

    #[test]
    fn off_cpu_time_is_cut_to_the_window() {
        let o = |tid, start, end, preempted| OffCpu {
            tid,
            start,
            end,
            preempted,
        };
        let p = ProcessProfile {
            off_cpu: vec![o(1, 0, 10, false), o(1, 20, 30, true), o(2, 0, 100, false)],
            ..ProcessProfile::default()
        };
        assert_eq!(p.off_cpu_within(1, 5, 25), (10, 5));
        assert_eq!(p.off_cpu_within(1, 10, 20), (0, 0));
        assert_eq!(p.off_cpu_within(2, 50, 60), (10, 0));
        assert_eq!(p.off_cpu_within(3, 0, 100), (0, 0));
    }
}
