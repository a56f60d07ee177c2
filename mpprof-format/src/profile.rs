//! Stack samples and off-CPU time (format 5, December 2026): what the
//! recorder's `perf_event_open` profiler writes (see
//! `docs/FORMAT.md`, *Samples and off-CPU time*).
//!
//! - A [`kind::SAMPLE`](crate::kind::SAMPLE) record is one stack sample of
//!   thread `site` (its OS thread id) at the CLOCK_MONOTONIC time of its
//!   first payload word; the second holds the stack's id (low 32 bits,
//!   see [`Meta::Stack`](crate::Meta::Stack)) and the CPU (high 32 bits).
//! - A [`kind::OFF_CPU`](crate::kind::OFF_CPU) record is one interval that
//!   thread `site` spent switched out: its payload words are the
//!   CLOCK_MONOTONIC times it left and came back to a CPU; bit 63 of the
//!   second ([`PREEMPTED`]) says the kernel took the CPU from a runnable
//!   thread (it waited for a CPU) rather than the thread blocking.
//!
//! The record's own timestamp (process clock) is when the profiler copied
//! it from the kernel, a few ms later: readers time samples by their
//! payload. Stacks are interned: [`Meta::Stack`](crate::Meta::Stack)
//! entries hold each distinct stack's instruction addresses (leaf first),
//! and [`Meta::Module`](crate::Meta::Module) entries the loaded objects
//! that map them to files, so a reader symbolizes after the process is
//! gone, on this machine or another.

use serde::{Deserialize, Serialize};

/// Bit 63 of an `OFF_CPU` record's second payload word: the thread was
/// preempted (runnable, waiting for a CPU), not blocked.
pub const PREEMPTED: u64 = 1 << 63;

/// Most frames of a stored stack (the kernel's default
/// `perf_event_max_stack` is 127); deeper stacks keep their innermost
/// frames.
pub const MAX_FRAMES: usize = 127;

/// [`Meta::Profiler`](crate::Meta::Profiler): the sampling profiler of this
/// file. Written when it starts (or is refused) and again whenever its
/// loss counts change; a reader takes the last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilerInfo {
    /// Samples per second asked for (`MPPROF_SAMPLE_HZ`).
    pub hz: u32,
    /// Whether context switches (off-CPU intervals) are recorded.
    pub switches: bool,
    /// OS thread id of the thread that writes the samples: its lane holds
    /// them (0: none).
    pub tid: u32,
    /// Why the profiler is off ("perf_event_open: Permission denied ..."),
    /// or empty when it runs.
    pub error: String,
    /// Kernel records lost because the profiler's ring buffer was full
    /// (the kernel's `PERF_RECORD_LOST` counts).
    pub lost_records: u64,
    /// Samples and off-CPU intervals read from the kernel but not written
    /// (the buffer budget was spent).
    pub dropped: u64,
    /// Whether system calls are traced (`SYSCALL` records,
    /// `MPPROF_SYSCALLS=1`).
    pub syscalls: bool,
    /// Why system calls are not traced although asked for, or empty.
    pub syscalls_error: String,
}

/// A traced system call, as packed in a `SYSCALL` record's second payload
/// word (the first is its start, CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    /// Its number (the architecture's; at most 4095).
    pub nr: u16,
    /// The error it returned (`-ret` for a return in `-4095..0`; at most
    /// 4095), or 0.
    pub errno: u16,
    /// Its duration, ns (saturated at 2^40, about 18 minutes).
    pub dur_ns: u64,
}

impl Syscall {
    /// Longest duration a record holds.
    pub const MAX_DUR: u64 = (1 << 40) - 1;

    /// `dur_ns | nr << 40 | errno << 52`.
    pub fn pack(self) -> u64 {
        self.dur_ns.min(Self::MAX_DUR)
            | u64::from(self.nr & 0xfff) << 40
            | u64::from(self.errno & 0xfff) << 52
    }

    /// The call in `w`.
    pub fn unpack(w: u64) -> Syscall {
        Syscall {
            nr: ((w >> 40) & 0xfff) as u16,
            errno: (w >> 52) as u16,
            dur_ns: w & Self::MAX_DUR,
        }
    }
}

/// [`Meta::Module`](crate::Meta::Module): a loaded object's executable
/// mapping. An address `a` in `start..end` is at file offset
/// `a - start + offset` of `path`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The object's path when it was loaded (absolute when the loader
    /// knew it).
    pub path: String,
    /// Its GNU build id (empty if it has none): a reader symbolizes only a
    /// file whose build id matches.
    pub build_id: Vec<u8>,
}
