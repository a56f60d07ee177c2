//! `perf_event_open` on the process itself: task-clock stack samples and
//! context switches of every thread, read from the kernel's ring buffers.
//! A leaf (libc and the kernel's ABI only); `session::profiler` decides
//! what to record.
//!
//! **Events.** One software `task-clock` event per CPU for each thread
//! that exists when the profiler opens (all but the profiler's own), with
//! `inherit` and `inherit_thread`: threads those threads create later
//! carry the events too, from their first instruction, but a `fork`ed
//! child does not (it opens its own, see `session::profiler`). A thread's
//! events on one CPU write into that CPU's ring (`PERF_EVENT_IOC_SET_OUTPUT`
//! to the first event opened on it), so there is one ring per CPU however
//! many threads run. Per-CPU events, not one per thread with `cpu = -1`:
//! the kernel refuses to map the ring of an inherited per-thread event.
//!
//! **Records.** Samples carry the thread id, a CLOCK_MONOTONIC time, the
//! CPU and the user-space call chain that the kernel walks by frame
//! pointers (`exclude_callchain_kernel`: the kernel's own frames are not
//! allowed at `perf_event_paranoid` 2 and not asked for). With
//! `context_switch`, a `PERF_RECORD_SWITCH` marks each time a thread left
//! or came back to a CPU (`sample_id_all` gives them the same thread id
//! and time). `PERF_RECORD_LOST` says how many records a full ring lost.
//!
//! All of it is allowed to an unprivileged process on its own threads at
//! `perf_event_paranoid` 2 (software events, user space only); where it is
//! refused (paranoid 3, seccomp, a container without the syscall) [`Perf::open`]
//! says why and the caller goes on without samples.

use std::io;
use std::sync::atomic::{fence, AtomicI32, Ordering};

use perf_event_open_sys as sys;
use sys::bindings as b;

use crate::unwind::{Regs, REGS_MASK};

/// Smallest data area of a ring (bytes) the profiler settles for when the
/// kernel refuses a larger one (locked-memory limits).
const MIN_RING: usize = 16 * 1024;

/// What the profiler asks the kernel for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Task-clock samples per second per thread.
    pub hz: u32,
    /// Context-switch records.
    pub switches: bool,
    /// Bytes of each sample's user stack the kernel copies (from the stack
    /// pointer up: the innermost frames), for unwinding.
    pub stack: u32,
    /// Data area of each CPU's ring, bytes (a power of two).
    pub ring: usize,
    /// Instead of task-clock samples: every hit of this tracepoint (its id
    /// under tracefs `events/`), with its raw data.
    pub tracepoint: Option<u64>,
}

/// One record read from a ring.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    /// A stack sample: the user registers at it (`None` when the kernel
    /// had none: the thread was not in user space) and the copy of its
    /// stack from the stack pointer up.
    Sample {
        tid: u32,
        time: u64,
        cpu: u32,
        regs: Option<Regs>,
        stack: &'a [u8],
    },
    /// Thread `tid` left (`out`) or came back to a CPU at `time`;
    /// `preempt`: it left runnable (the CPU was taken from it).
    Switch {
        tid: u32,
        time: u64,
        out: bool,
        preempt: bool,
    },
    /// A tracepoint's hit: its raw data (the event's fields, as its
    /// tracefs `format` lays them out).
    Raw { tid: u32, time: u64, data: &'a [u8] },
    /// The kernel lost this many records (the ring was full).
    Lost(u64),
}

/// The descriptors of every open profiler, for the fork handler (which
/// may not lock or allocate): a forked child closes them, since its
/// copies would keep the parent's events alive and their rings mapped.
static FDS: [AtomicI32; MAX_FDS] = [const { AtomicI32::new(-1) }; MAX_FDS];
/// Most descriptors [`FDS`] tracks; later ones are closed by `Drop` only.
const MAX_FDS: usize = 1024;

/// One CPU's ring buffer.
struct Ring {
    fd: i32,
    /// Index of its CPU in [`Perf::cpus`].
    cpu_index: usize,
    base: *mut u8,
    len: usize,
    data: usize,
    size: usize,
}

/// The open events and their rings.
pub(crate) struct Perf {
    rings: Vec<Ring>,
    /// Every descriptor (the rings' and those redirected into them).
    fds: Vec<i32>,
    /// A record that wraps around its ring's end, copied whole.
    scratch: Vec<u64>,
    cfg: Config,
    cpus: Vec<i32>,
}

// SAFETY: the rings are mappings this value owns; it is used by one thread.
unsafe impl Send for Perf {}

impl Perf {
    /// Opens the events of every thread of the process but `skip` (the
    /// caller's own) on every CPU. An error says why the kernel refused;
    /// nothing is left open then.
    pub(crate) fn open(cfg: Config, skip: u32) -> io::Result<Perf> {
        let mut p = Perf {
            rings: Vec::new(),
            fds: Vec::new(),
            scratch: Vec::new(),
            cfg,
            cpus: cpus(),
        };
        // The threads as they are now, listed before any event is open: a
        // thread that one of them creates from here on inherits its
        // creator's events. (Listing after opening some would open a
        // second set for the threads those already cover, and sample them
        // twice.) A thread created, in the moment of opening, by a thread
        // whose events are not open yet is missed.
        let mut tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|&t| t != skip)
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        // The main thread first: the test of whether the kernel allows any
        // of it, whose error is the one to report.
        tids.sort_unstable_by_key(|&t| t != pid);
        for (i, tid) in tids.into_iter().enumerate() {
            match p.add_thread(tid) {
                Err(e) if i == 0 => return Err(e),
                // A thread that exited meanwhile (ESRCH) is no loss.
                _ => {}
            }
        }
        if p.rings.is_empty() {
            return Err(io::Error::other("no CPU accepted the events"));
        }
        Ok(p)
    }

    fn add_thread(&mut self, tid: u32) -> io::Result<()> {
        let mut attr = self.attr();
        let mut opened = 0;
        let mut first_err = None;
        for i in 0..self.cpus.len() {
            let cpu = self.cpus[i];
            // SAFETY: attr is a valid perf_event_attr of the size it says.
            let fd = unsafe {
                sys::perf_event_open(&mut attr, tid as i32, cpu, -1, b::PERF_FLAG_FD_CLOEXEC as _)
            };
            if fd < 0 {
                first_err.get_or_insert_with(io::Error::last_os_error);
                continue;
            }
            self.remember(fd);
            match self.rings.iter().position(|r| r.cpu_index == i) {
                Some(r) => {
                    // SAFETY: both descriptors are perf events of this
                    // process on the same CPU.
                    if unsafe { sys::ioctls::SET_OUTPUT(fd, self.rings[r].fd) } != 0 {
                        first_err.get_or_insert_with(io::Error::last_os_error);
                        continue;
                    }
                }
                None => match Ring::map(fd, i, &mut self.cfg.ring) {
                    Ok(r) => self.rings.push(r),
                    Err(e) => {
                        first_err.get_or_insert(e);
                        continue;
                    }
                },
            }
            opened += 1;
        }
        if opened == 0 {
            return Err(first_err.unwrap_or_else(|| io::Error::other("no CPU")));
        }
        Ok(())
    }

    fn remember(&mut self, fd: i32) {
        self.fds.push(fd);
        for slot in &FDS {
            if slot
                .compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
    }

    fn attr(&self) -> b::perf_event_attr {
        // SAFETY: perf_event_attr is plain data; all zero is its default.
        let mut a: b::perf_event_attr = unsafe { std::mem::zeroed() };
        if let Some(id) = self.cfg.tracepoint {
            a.type_ = b::PERF_TYPE_TRACEPOINT;
            a.size = std::mem::size_of::<b::perf_event_attr>() as u32;
            a.config = id;
            a.__bindgen_anon_1.sample_period = 1;
            a.sample_type = (b::PERF_SAMPLE_TID
                | b::PERF_SAMPLE_TIME
                | b::PERF_SAMPLE_CPU
                | b::PERF_SAMPLE_RAW) as u64;
            a.set_inherit(1);
            a.set_inherit_thread(1);
            a.set_sample_id_all(1);
            a.set_use_clockid(1);
            a.clockid = libc::CLOCK_MONOTONIC;
            return a;
        }
        a.type_ = b::PERF_TYPE_SOFTWARE;
        a.size = std::mem::size_of::<b::perf_event_attr>() as u32;
        a.config = b::PERF_COUNT_SW_TASK_CLOCK as u64;
        // A fixed period of task-clock nanoseconds, not a frequency: the
        // kernel then never re-computes the period (which frequency mode
        // does at every tick and every switch of an inherited event).
        a.__bindgen_anon_1.sample_period = 1_000_000_000 / u64::from(self.cfg.hz.max(1));
        a.sample_type = (b::PERF_SAMPLE_TID
            | b::PERF_SAMPLE_TIME
            | b::PERF_SAMPLE_CPU
            | b::PERF_SAMPLE_REGS_USER
            | b::PERF_SAMPLE_STACK_USER) as u64;
        a.sample_regs_user = REGS_MASK;
        a.sample_stack_user = self.cfg.stack;
        a.set_exclude_kernel(1);
        a.set_exclude_hv(1);
        a.set_inherit(1);
        a.set_inherit_thread(1);
        a.set_context_switch(u64::from(self.cfg.switches));
        a.set_sample_id_all(1);
        a.set_use_clockid(1);
        a.clockid = libc::CLOCK_MONOTONIC;
        a
    }

    /// Reads every record the kernel wrote since the last call, ring by
    /// ring (each ring in time order; the rings interleave).
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Record<'_>)) {
        let raw = self.cfg.tracepoint.is_some();
        for i in 0..self.rings.len() {
            let r = &self.rings[i];
            // SAFETY: the ring's first page is the kernel's control page.
            let page = r.base as *mut b::perf_event_mmap_page;
            // SAFETY: as above; data_head is written by the kernel.
            let head = unsafe { std::ptr::read_volatile(&(*page).data_head) };
            // The records up to head are written before we read them.
            fence(Ordering::Acquire);
            // SAFETY: data_tail is ours to read and write.
            let mut tail = unsafe { std::ptr::read_volatile(&(*page).data_tail) };
            let (data, size) = (r.data, r.size);
            let base = r.base;
            while tail < head {
                let at = (tail % size as u64) as usize;
                // SAFETY: headers are 8-byte aligned inside the data area
                // (every record's size is a multiple of 8), so one never
                // wraps.
                let hdr =
                    unsafe { std::ptr::read(base.add(data + at) as *const b::perf_event_header) };
                let len = hdr.size as usize;
                if len < 8 || len % 8 != 0 || tail + len as u64 > head {
                    break; // not a record: stop reading this ring
                }
                tail += len as u64;
                if at + len <= size {
                    // SAFETY: the record lies whole in the data area, 8-byte
                    // aligned (the area is page-aligned, records' sizes are
                    // multiples of 8), and the kernel does not write it
                    // until data_tail passes it.
                    let words = unsafe {
                        std::slice::from_raw_parts(base.add(data + at) as *const u64, len / 8)
                    };
                    parse(hdr.type_, hdr.misc, &words[1..], raw, &mut f);
                } else {
                    // It wraps around the end: copied whole.
                    self.scratch.clear();
                    self.scratch.reserve(len / 8);
                    let dst = self.scratch.as_mut_ptr() as *mut u8;
                    let first = size - at;
                    // SAFETY: both ranges are inside the data area, and the
                    // scratch buffer has room for len bytes, which the two
                    // copies fill before its length is set.
                    unsafe {
                        std::ptr::copy_nonoverlapping(base.add(data + at), dst, first);
                        std::ptr::copy_nonoverlapping(base.add(data), dst.add(first), len - first);
                        self.scratch.set_len(len / 8);
                    }
                    parse(hdr.type_, hdr.misc, &self.scratch[1..], raw, &mut f);
                }
            }
            // Everything up to tail is read before the kernel may reuse it.
            fence(Ordering::Release);
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(&mut (*page).data_tail, tail) };
        }
    }
}

/// Decodes one record's body (the words after its header) with the layout
/// [`Perf::attr`] asked for.
fn parse(ty: u32, misc: u16, w: &[u64], raw: bool, f: &mut impl FnMut(Record<'_>)) {
    let tid_of = |x: u64| (x >> 32) as u32;
    match ty {
        b::PERF_RECORD_SAMPLE if raw => {
            // TID, TIME, CPU, then RAW: a u32 size and that many bytes.
            let Some(&[pidtid, time, _cpu, first]) = w.get(..4) else {
                return;
            };
            let size = (first & 0xffff_ffff) as usize;
            // SAFETY: any u64 slice is a valid byte slice of 8x its length.
            let bytes = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 8) };
            if let Some(data) = bytes.get(28..28 + size) {
                f(Record::Raw {
                    tid: tid_of(pidtid),
                    time,
                    data,
                });
            }
        }
        b::PERF_RECORD_SAMPLE => {
            // TID (pid, tid), TIME, CPU (cpu, res), REGS_USER (abi, then
            // bp, sp, ip unless abi is 0), STACK_USER (size, size bytes,
            // and the bytes copied, when size is not 0).
            let Some(&[pidtid, time, cpu, abi]) = w.get(..4) else {
                return;
            };
            let mut at = 4;
            let regs = if abi != 0 {
                let Some(&[bp, sp, ip]) = w.get(4..7) else {
                    return;
                };
                at = 7;
                Some(Regs { bp, sp, ip })
            } else {
                None
            };
            let size = w.get(at).copied().unwrap_or(0) as usize;
            let mut stack: &[u8] = &[];
            if size > 0 && size % 8 == 0 {
                let body = at + 1..at + 1 + size / 8;
                if let (Some(words), Some(&used)) = (w.get(body.clone()), w.get(body.end)) {
                    // SAFETY: any u64 slice is a valid byte slice of 8x its
                    // length.
                    let bytes =
                        unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, size) };
                    stack = &bytes[..(used as usize).min(size)];
                }
            }
            f(Record::Sample {
                tid: tid_of(pidtid),
                time,
                cpu: cpu as u32,
                regs,
                stack,
            });
        }
        b::PERF_RECORD_SWITCH => {
            // sample_id: TID, TIME, CPU.
            if w.len() < 3 {
                return;
            }
            let misc = u32::from(misc);
            f(Record::Switch {
                tid: tid_of(w[0]),
                time: w[1],
                out: misc & b::PERF_RECORD_MISC_SWITCH_OUT != 0,
                preempt: misc & b::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0,
            });
        }
        b::PERF_RECORD_LOST => {
            // id, lost.
            if let Some(&n) = w.get(1) {
                f(Record::Lost(n));
            }
        }
        _ => {}
    }
}

impl Ring {
    /// Maps `fd`'s ring with a data area of `*size` bytes, halving it while
    /// the kernel refuses for want of locked memory (down to [`MIN_RING`]);
    /// `*size` is what it got.
    fn map(fd: i32, cpu_index: usize, size: &mut usize) -> io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let (base, len) = loop {
            let len = page + (*size).max(page);
            // SAFETY: a shared mapping of a perf event's ring, as the
            // kernel's ABI describes; checked for failure below.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if base != libc::MAP_FAILED {
                break (base, len);
            }
            let e = io::Error::last_os_error();
            let retry = matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOMEM));
            if !retry || *size <= MIN_RING {
                return Err(e);
            }
            *size /= 2;
        };
        // A forked child gets no copy of the mapping (its events are not
        // the parent's; see `close_in_forked_child`). Best effort.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(base, len, libc::MADV_DONTFORK) };
        let base = base as *mut u8;
        // SAFETY: the first page is the control page.
        let (data, size) = unsafe {
            let p = base as *const b::perf_event_mmap_page;
            ((*p).data_offset as usize, (*p).data_size as usize)
        };
        // Kernels before 4.1 leave these zero: the data follows the page.
        let (data, size) = if size == 0 {
            (page, len - page)
        } else {
            (data, size)
        };
        Ok(Ring {
            fd,
            base,
            len,
            data,
            size,
            cpu_index,
        })
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        for r in &self.rings {
            // SAFETY: the mapping is this ring's own.
            unsafe { libc::munmap(r.base as *mut libc::c_void, r.len) };
        }
        for &fd in &self.fds {
            for slot in &FDS {
                let _ = slot.compare_exchange(fd, -1, Ordering::Relaxed, Ordering::Relaxed);
            }
            // SAFETY: the descriptor is this value's own.
            unsafe { libc::close(fd) };
        }
    }
}

/// In a forked child's fork handler: closes the child's copies of every
/// profiler descriptor (atomic swaps and `close`, allowed there). The
/// rings' mappings are not copied into the child (`MADV_DONTFORK`).
pub(crate) fn close_in_forked_child() {
    for slot in &FDS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the descriptor was a profiler's, whose thread stayed
            // in the parent.
            unsafe { libc::close(fd) };
        }
    }
}

/// The CPUs to open events on: every possible one (offline CPUs refuse,
/// which the caller tolerates).
fn cpus() -> Vec<i32> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    (0..n.clamp(1, 4096) as i32).collect()
}
