//! Resource samples (format 4, added December 2026): what the recorder's
//! sampler thread measures of its process, its threads and its host, as
//! ordinary counter records whose callsites a [`Meta::Resources`] entry
//! declares.
//!
//! A reader that knows these entries shows the samples as resource tracks
//! (CPU %, RSS, I/O, per-thread on-CPU time, the host's CPUs, memory,
//! disks and network); one that does not (variant index past its
//! [`Meta::VARIANTS`](crate::Meta::VARIANTS)) skips the entries with a
//! warning and shows the samples as the plain counters they are, named
//! `mpprof: <key> ...` on the sampler's thread.
//!
//! Cumulative values ([`Resource::cumulative`]) are recorded raw (CPU time
//! since the process started, bytes written so far): a reader derives
//! rates between samples, and a lost sample loses no total. A value is
//! recorded when it changed since the previous sample, and every value at
//! least every [`KEYFRAME`] samples. Each sample starts with a counter of
//! key [`key::SAMPLE`] (its sequence number), whose timestamp is the
//! sample's: a series with no record in a sample kept its value. Host
//! series are read in fewer samples, each starting its host part with a
//! [`key::HOST_SAMPLE`] counter: they are timed by those.

use serde::{Deserialize, Serialize};

/// Every value is recorded at least once per this many samples, changed or
/// not, so a flight recorder that overwrote a series' first sample still
/// shows its value soon after.
pub const KEYFRAME: u64 = 100;

/// What a resource counter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The recording process.
    Process,
    /// One thread of it (OS thread id).
    Thread {
        /// OS thread id.
        tid: u32,
    },
    /// The host (`instance` names a CPU, disk or network interface, or is
    /// empty for the whole host). Recorded by one process per host at a
    /// time: whichever holds the session's host lock.
    Host,
}

/// [`Meta::Resources`](crate::Meta::Resources): counter callsite `site`
/// holds samples of `key` (see [`key`]) for `scope`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The counter callsite of the samples.
    pub site: u32,
    /// Whose.
    pub scope: Scope,
    /// What (one of [`key`]; a reader shows a key it does not know as a
    /// plain counter track).
    pub key: String,
    /// Which CPU (`cpu0`), disk (`sda`) or interface (`eth0`) of the host;
    /// for a thread, its name (`comm`) when first sampled; empty otherwise.
    pub instance: String,
    /// Unit of the values: `ns`, `bytes`, `count`, or empty (a plain
    /// number).
    pub unit: String,
    /// Whether the value only grows (a total so far: show its rate), or is
    /// a level (show it as is).
    pub cumulative: bool,
}

/// [`Meta::Sampler`](crate::Meta::Sampler): the sampler of this file,
/// written once when it starts (or, with `interval_ns` 0, to say that
/// sampling is off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerInfo {
    /// Sampling interval (ns); 0: sampling is off (`MPPROF_SAMPLE_MS=0`).
    pub interval_ns: u64,
    /// The sampler thread's OS thread id: its lane holds the samples.
    pub tid: u32,
    /// What could not be read, and why (`/proc/self/io: Permission
    /// denied`): the counters of those sources are missing.
    pub unavailable: Vec<String>,
}

/// The keys the recorder writes. Units in brackets; "cumulative" values
/// only grow.
pub mod key {
    /// Sequence number of the sample; the first counter of each sample.
    pub const SAMPLE: &str = "sample";
    /// Host: sequence number of the host's sample, the first host counter
    /// of a sample that reads the host (every few samples: its files cost
    /// more to read); host series hold their values between host samples.
    pub const HOST_SAMPLE: &str = "host.sample";
    /// Process: user CPU time, cumulative (ns; `getrusage`).
    pub const CPU_USER: &str = "cpu.user";
    /// Process: system CPU time, cumulative (ns).
    pub const CPU_SYSTEM: &str = "cpu.system";
    /// Process: resident set size (bytes; `/proc/self/statm`).
    pub const RSS: &str = "mem.rss";
    /// Process: peak resident set size (bytes; `getrusage`).
    pub const PEAK_RSS: &str = "mem.peak_rss";
    /// Process: minor page faults, cumulative.
    pub const MINOR_FAULTS: &str = "faults.minor";
    /// Process: major page faults, cumulative.
    pub const MAJOR_FAULTS: &str = "faults.major";
    /// Process: voluntary context switches, cumulative.
    pub const CTX_VOLUNTARY: &str = "ctx.voluntary";
    /// Process: involuntary context switches, cumulative.
    pub const CTX_INVOLUNTARY: &str = "ctx.involuntary";
    /// Process: threads now.
    pub const THREADS: &str = "threads";
    /// Process: threads not sampled one by one (past the sampler's limit).
    pub const THREADS_UNSAMPLED: &str = "threads.unsampled";
    /// Process: bytes read from storage, cumulative (`/proc/self/io`
    /// `read_bytes`).
    pub const READ_BYTES: &str = "io.read_bytes";
    /// Process: bytes sent to storage, cumulative (`write_bytes`).
    pub const WRITE_BYTES: &str = "io.write_bytes";
    /// Process: bytes read by read-like system calls, cumulative (`rchar`:
    /// pipes, sockets and the page cache too).
    pub const READ_CHARS: &str = "io.read_chars";
    /// Process: bytes written by write-like system calls, cumulative
    /// (`wchar`).
    pub const WRITE_CHARS: &str = "io.write_chars";
    /// Thread: time on a CPU, cumulative (ns; its `schedstat`).
    pub const ON_CPU: &str = "thread.on_cpu";
    /// Thread: time runnable but waiting for a CPU, cumulative (ns).
    pub const RUN_WAIT: &str = "thread.run_wait";
    /// Host, per CPU (`cpu0`...) and whole (empty instance): busy time,
    /// cumulative (ns; `/proc/stat`: all but idle and iowait).
    pub const HOST_CPU_BUSY: &str = "cpu.busy";
    /// Host, per CPU and whole: idle time, iowait included, cumulative
    /// (ns).
    pub const HOST_CPU_IDLE: &str = "cpu.idle";
    /// Host, whole: iowait time, cumulative (ns).
    pub const HOST_CPU_IOWAIT: &str = "cpu.iowait";
    /// Host: one-minute load average.
    pub const HOST_LOAD: &str = "load.1";
    /// Host: runnable tasks now (`/proc/loadavg`).
    pub const HOST_RUNNABLE: &str = "tasks.runnable";
    /// Host: memory in use, `MemTotal - MemAvailable` (bytes).
    pub const HOST_MEM_USED: &str = "mem.used";
    /// Host: `MemAvailable` (bytes).
    pub const HOST_MEM_AVAILABLE: &str = "mem.available";
    /// Host: page cache, `Cached` (bytes).
    pub const HOST_MEM_CACHED: &str = "mem.cached";
    /// Host: `MemTotal` (bytes).
    pub const HOST_MEM_TOTAL: &str = "mem.total";
    /// Host, per disk: bytes read, cumulative (`/proc/diskstats`).
    pub const DISK_READ_BYTES: &str = "disk.read_bytes";
    /// Host, per disk: bytes written, cumulative.
    pub const DISK_WRITE_BYTES: &str = "disk.write_bytes";
    /// Host, per disk: reads completed, cumulative.
    pub const DISK_READS: &str = "disk.reads";
    /// Host, per disk: writes completed, cumulative.
    pub const DISK_WRITES: &str = "disk.writes";
    /// Host, per disk: time with I/O in flight, cumulative (ns; iostat's
    /// %util is its rate).
    pub const DISK_BUSY: &str = "disk.busy";
    /// Host, per interface: bytes received, cumulative (`/proc/net/dev`).
    pub const NET_RX_BYTES: &str = "net.rx_bytes";
    /// Host, per interface: bytes sent, cumulative.
    pub const NET_TX_BYTES: &str = "net.tx_bytes";
    /// Host, per interface: packets received, cumulative.
    pub const NET_RX_PACKETS: &str = "net.rx_packets";
    /// Host, per interface: packets sent, cumulative.
    pub const NET_TX_PACKETS: &str = "net.tx_packets";
}
