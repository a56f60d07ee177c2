//! Cost of one instrumented call (enter + exit), side by side with the
//! physical floor and with other profilers. See docs/PERFORMANCE.md for the
//! results and how to read them.
//!
//! Every case calls an `#[inline(never)]` function with the same body,
//! `black_box(x) ^ 1`; only the instrumentation around it differs:
//!
//! - `floor/*`: no instrumentation, one `rdtsc`, one `Instant::now()`, and
//!   the ideal recorder written by hand: two 16-byte records (one `rdtsc`
//!   each) into a thread-local chunk, each published by a release store of
//!   the chunk's commit count. Three places to write to: a heap ring that
//!   wraps (cache-hot), a `MAP_SHARED` file ring that wraps (mapped pages,
//!   resident after the first lap), and a `MAP_SHARED` file streamed into
//!   fresh chunks claimed with `posix_fallocate` like mpprof's keep-first
//!   recorder does (so every 4 KiB page is a first-touch fault). The last
//!   one is the physical floor of mpprof's design.
//! - `mpprof/*`: disabled (no session), then enabled through
//!   `#[mpprof::instrument]` and `mpprof::scope!`.
//! - `threads/*`: two threads calling concurrently, time per call per thread.
//! - `peers/*`: tracing (registry without layers, and with tracing-chrome),
//!   puffin, tracy-client.
//!
//! The recorder is process-global and cannot be switched back on once its
//! session is dropped, so the order is fixed: the disabled case runs first
//! (no `MPPROF_DIR`, so the first call switches recording off), then
//! `mpprof::init()` with a session in a temporary directory. Files written
//! by the streaming cases are punched out (`FALLOC_FL_PUNCH_HOLE`) between
//! samples, outside the timed loops, so disk and page-cache use stay flat
//! however long criterion measures; the hot path still writes to fresh pages
//! as it does in real use.

use std::cell::Cell;
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion};
use mpprof::format;

// ---------------------------------------------------------------------------
// The function every case calls.

#[inline(never)]
fn plain(x: u64) -> u64 {
    black_box(x) ^ 1
}

/// The timestamp the ideal recorder takes: `rdtsc`, as mpprof does on x86_64.
#[inline(always)]
fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        mpprof::clock::now()
    }
}

#[inline(never)]
fn with_rdtsc(x: u64) -> u64 {
    let t = tsc();
    black_box(t);
    black_box(x) ^ 1
}

#[inline(never)]
fn with_instant(x: u64) -> u64 {
    black_box(Instant::now());
    black_box(x) ^ 1
}

// ---------------------------------------------------------------------------
// The ideal recorder: what mpprof's hot path does, without the session state.

const CHUNK_SIZE: usize = format::DEFAULT_CHUNK_SIZE as usize;
const CHUNK_HEADER: usize = format::CHUNK_HEADER_SIZE as usize;
const CHUNK_RECORDS: u32 = ((CHUNK_SIZE - CHUNK_HEADER) / 16) as u32;

#[repr(C)]
struct Rec {
    ts: u64,
    site_kind: u64,
}

/// A thread's position in its chunk (the same fields as mpprof's `Writer`).
struct Ideal {
    recs: Cell<*mut Rec>,
    idx: Cell<u32>,
    cap: Cell<u32>,
    commit: Cell<*const AtomicU32>,
    slot: Cell<u32>,
}

impl Ideal {
    const fn new() -> Ideal {
        Ideal {
            recs: Cell::new(std::ptr::null_mut()),
            idx: Cell::new(0),
            cap: Cell::new(0),
            commit: Cell::new(std::ptr::null()),
            slot: Cell::new(u32::MAX),
        }
    }

    /// Points the writer at a chunk that starts at `base` (64-byte header,
    /// commit count at the same offset as in mpprof's chunk header).
    fn install(&self, base: *mut u8) {
        // SAFETY: base points to a CHUNK_SIZE-byte chunk owned by this thread.
        unsafe {
            let commit = base.add(format::chunk::COMMITTED) as *const AtomicU32;
            (*commit).store(0, Ordering::Relaxed);
            self.commit.set(commit);
            self.recs.set(base.add(CHUNK_HEADER) as *mut Rec);
        }
        self.idx.set(0);
        self.cap.set(CHUNK_RECORDS);
    }
}

thread_local! {
    static HEAP_RING: Ideal = const { Ideal::new() };
    static FILE_RING: Ideal = const { Ideal::new() };
    static FILE_STREAM: Ideal = const { Ideal::new() };
    static FILE_STREAM_POPULATED: Ideal = const { Ideal::new() };
}

/// One record: check room, timestamp, 16-byte store, release store of the
/// commit count. `refill` (cold) provides a chunk when there is no room.
#[inline(always)]
fn ideal_record(key: &'static LocalKey<Ideal>, site: u32, kind: u8, refill: fn(&Ideal)) {
    key.with(|w| {
        let mut i = w.idx.get();
        if i >= w.cap.get() {
            refill(w);
            i = 0;
        }
        let ts = tsc();
        // SAFETY: i < cap: the record is inside this thread's chunk.
        unsafe {
            w.recs.get().add(i as usize).write(Rec {
                ts,
                site_kind: site as u64 | (kind as u64) << 32,
            });
            (*w.commit.get()).store(i + 1, Ordering::Release);
        }
        w.idx.set(i + 1);
    });
}

/// Heap ring: one leaked chunk per thread, reused when full.
#[cold]
#[inline(never)]
fn refill_heap(w: &Ideal) {
    if w.recs.get().is_null() {
        let chunk: &'static mut [u64] = vec![0u64; CHUNK_SIZE / 8].leak();
        w.install(chunk.as_mut_ptr() as *mut u8);
    } else {
        w.idx.set(0);
    }
}

/// File ring: one chunk of a small MAP_SHARED file, reused when full.
#[cold]
#[inline(never)]
fn refill_file_ring(w: &Ideal) {
    if w.recs.get().is_null() {
        let file = tempfile::tempfile().expect("temp file");
        file.set_len(CHUNK_SIZE as u64).expect("set_len");
        let map = memmap2::MmapOptions::new()
            .len(CHUNK_SIZE)
            .map_raw(&file)
            .expect("mmap");
        let base = map.as_mut_ptr();
        std::mem::forget(map);
        w.install(base);
    } else {
        w.idx.set(0);
    }
}

/// The streamed file: chunks claimed in order with one atomic bump and
/// `posix_fallocate`, as mpprof's keep-first recorder does, in a mapping as
/// large as the bench gives mpprof (1 TiB), so that, like mpprof, it keeps
/// growing the file into fresh address space. (Wrapping around a smaller
/// file measured about 20 % faster here: punched-out slots refault into
/// existing page tables and the file size no longer changes.)
struct Stream {
    map: memmap2::MmapRaw,
    file: File,
    next: AtomicU32,
    /// Chunks their thread left, to punch out between samples.
    retired: Mutex<Vec<u32>>,
}

/// Chunks in the streamed file: 1 TiB of address space (`count_mode` makes
/// it 64 MiB, which valgrind can map).
static STREAM_SLOTS: AtomicU32 = AtomicU32::new(1 << 22);

fn stream() -> &'static Stream {
    static S: OnceLock<Stream> = OnceLock::new();
    S.get_or_init(|| {
        let file = tempfile::tempfile().expect("temp file");
        let map = memmap2::MmapOptions::new()
            .len(CHUNK_SIZE * STREAM_SLOTS.load(Ordering::Relaxed) as usize)
            .map_raw(&file)
            .expect("mmap");
        Stream {
            map,
            file,
            next: AtomicU32::new(0),
            retired: Mutex::new(Vec::new()),
        }
    })
}

#[cold]
#[inline(never)]
fn refill_stream(w: &Ideal) {
    claim_stream(w, false);
}

/// The same, then `madvise(MADV_POPULATE_WRITE)` on the new chunk: its pages
/// are faulted in by one system call at claim time instead of one page fault
/// per 4 KiB on the hot path (Linux 5.14 and later).
#[cold]
#[inline(never)]
fn refill_stream_populated(w: &Ideal) {
    claim_stream(w, true);
}

fn claim_stream(w: &Ideal, populate: bool) {
    let s = stream();
    if w.slot.get() != u32::MAX {
        s.retired.lock().unwrap().push(w.slot.get());
    }
    let slot = s.next.fetch_add(1, Ordering::Relaxed) % STREAM_SLOTS.load(Ordering::Relaxed);
    let off = slot as usize * CHUNK_SIZE;
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe {
        libc::posix_fallocate(
            s.file.as_raw_fd(),
            off as libc::off_t,
            CHUNK_SIZE as libc::off_t,
        )
    };
    assert_eq!(r, 0, "posix_fallocate");
    w.slot.set(slot);
    // SAFETY: off + CHUNK_SIZE is inside the mapping.
    let base = unsafe { s.map.as_mut_ptr().add(off) };
    if populate {
        // SAFETY: the range is inside the mapping; populating has no other effect.
        let r = unsafe { libc::madvise(base.cast(), CHUNK_SIZE, libc::MADV_POPULATE_WRITE) };
        assert_eq!(
            r,
            0,
            "MADV_POPULATE_WRITE: {}",
            std::io::Error::last_os_error()
        );
    }
    w.install(base);
}

fn stream_reclaim() {
    let s = stream();
    let slots = std::mem::take(&mut *s.retired.lock().unwrap());
    for slot in slots {
        punch(&s.file, slot as u64 * CHUNK_SIZE as u64, CHUNK_SIZE as u64);
    }
}

fn punch(file: &File, off: u64, len: u64) {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    assert_eq!(r, 0, "punch hole: {}", std::io::Error::last_os_error());
}

macro_rules! ideal_fn {
    ($name:ident, $key:ident, $refill:ident) => {
        #[inline(never)]
        fn $name(x: u64) -> u64 {
            ideal_record(&$key, 1, format::kind::ENTER, $refill);
            let r = black_box(x) ^ 1;
            ideal_record(&$key, 1, format::kind::EXIT, $refill);
            r
        }
    };
}
ideal_fn!(ideal_heap_ring, HEAP_RING, refill_heap);
ideal_fn!(ideal_file_ring, FILE_RING, refill_file_ring);
ideal_fn!(ideal_file_stream, FILE_STREAM, refill_stream);
ideal_fn!(
    ideal_file_stream_populated,
    FILE_STREAM_POPULATED,
    refill_stream_populated
);

/// The ideal recorder with mpprof's format-4 records: one 8-byte word per
/// event (the timestamp's low half, callsite, kind), with the check that
/// the high half is the time base's. The floor below the 16-byte ideal: the
/// same two `rdtsc`, half the bytes.
struct Ideal8 {
    words: Cell<*mut u64>,
    idx: Cell<u32>,
    cap: Cell<u32>,
    commit: Cell<*const AtomicU32>,
    base_hi: Cell<u32>,
    slot: Cell<u32>,
}

impl Ideal8 {
    const fn new() -> Ideal8 {
        Ideal8 {
            words: Cell::new(std::ptr::null_mut()),
            idx: Cell::new(0),
            cap: Cell::new(0),
            commit: Cell::new(std::ptr::null()),
            base_hi: Cell::new(0),
            slot: Cell::new(u32::MAX),
        }
    }

    /// Points the writer at the chunk at `base` and writes a time base and
    /// the event `site_kind` there.
    fn start(&self, base: *mut u8, site_kind: u64) {
        // SAFETY: base points to a CHUNK_SIZE-byte chunk owned by this thread.
        unsafe {
            self.commit
                .set(base.add(format::chunk::COMMITTED) as *const AtomicU32);
            self.words.set(base.add(CHUNK_HEADER) as *mut u64);
        }
        self.cap.set(((CHUNK_SIZE - CHUNK_HEADER) / 8) as u32);
        let (lo, hi) = mpprof::clock::counter_parts();
        self.base_hi.set(hi);
        let words = [
            format::word::site_kind(0, format::kind::BASE),
            (hi as u64) << 32 | lo as u64,
            format::word::new(lo as u64, site_kind),
        ];
        // SAFETY: three words fit in an empty chunk.
        unsafe {
            for (k, x) in words.iter().enumerate() {
                self.words.get().add(k).write(*x);
            }
            (*self.commit.get()).store(3, Ordering::Release);
        }
        self.idx.set(3);
    }
}

thread_local! {
    static HEAP_RING8: Ideal8 = const { Ideal8::new() };
    static FILE_STREAM8: Ideal8 = const { Ideal8::new() };
}

/// One event: check room and the time base's high half, timestamp, one
/// 8-byte store, release store of the commit count. `refill` (cold) starts
/// a chunk (or the same one over) with a time base and the event.
#[inline(always)]
fn ideal_word(key: &'static LocalKey<Ideal8>, site: u32, kind: u8, refill: fn(&Ideal8, u64)) {
    key.with(|w| {
        let i = w.idx.get();
        let (lo, hi) = mpprof::clock::counter_parts();
        let site_kind = format::word::site_kind(site, kind);
        if i < w.cap.get() && hi == w.base_hi.get() {
            // SAFETY: i < cap: the word is inside this thread's chunk.
            unsafe {
                w.words
                    .get()
                    .add(i as usize)
                    .write(format::word::new(lo as u64, site_kind));
                (*w.commit.get()).store(i + 1, Ordering::Release);
            }
            w.idx.set(i + 1);
        } else {
            refill(w, site_kind);
        }
    });
}

/// Heap ring: one leaked chunk per thread, started over when full.
#[cold]
#[inline(never)]
fn refill_heap8(w: &Ideal8, site_kind: u64) {
    let mut base = w.commit.get() as *mut u8;
    if base.is_null() {
        let chunk: &'static mut [u64] = vec![0u64; CHUNK_SIZE / 8].leak();
        base = chunk.as_mut_ptr() as *mut u8;
    } else {
        // SAFETY: commit points COMMITTED bytes into the chunk.
        base = unsafe { base.sub(format::chunk::COMMITTED) };
    }
    w.start(base, site_kind);
}

/// The physical floor of mpprof's keep-first recording: fresh chunks of a
/// `MAP_SHARED` file that a helper thread reserved (`pwrite` of zeros) and
/// page-mapped (`MADV_POPULATE_WRITE`) ahead of time, as mpprof's preparer
/// does, written with 8-byte words. Every store goes to memory the thread
/// has not touched before.
struct Prepared {
    map: memmap2::MmapRaw,
    file: File,
    next: AtomicU32,
    ready: Mutex<std::collections::VecDeque<u32>>,
    wake: std::sync::Condvar,
    retired: Mutex<Vec<u32>>,
}

const PREPARED_SLOTS: u32 = 1 << 22;
const PREPARED_READY: usize = 4;

fn prepared() -> &'static Prepared {
    static P: OnceLock<&'static Prepared> = OnceLock::new();
    P.get_or_init(|| {
        let file = tempfile::tempfile().expect("temp file");
        let map = memmap2::MmapOptions::new()
            .len(CHUNK_SIZE * PREPARED_SLOTS as usize)
            .map_raw(&file)
            .expect("mmap");
        let p: &'static Prepared = Box::leak(Box::new(Prepared {
            map,
            file,
            next: AtomicU32::new(0),
            ready: Mutex::new(std::collections::VecDeque::new()),
            wake: std::sync::Condvar::new(),
            retired: Mutex::new(Vec::new()),
        }));
        std::thread::Builder::new()
            .name("ideal-prepare".into())
            .spawn(move || loop {
                let mut ready = p.ready.lock().unwrap();
                while ready.len() >= PREPARED_READY {
                    ready = p.wake.wait(ready).unwrap();
                }
                drop(ready);
                let slot = p.reserve();
                p.ready.lock().unwrap().push_back(slot);
            })
            .expect("spawn the preparer");
        p
    })
}

impl Prepared {
    /// Takes the next slot, writes zeros over it and maps its pages.
    fn reserve(&self) -> u32 {
        static ZEROS: [u8; CHUNK_SIZE] = [0; CHUNK_SIZE];
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % PREPARED_SLOTS;
        let off = slot as usize * CHUNK_SIZE;
        self.file
            .write_all_at(&ZEROS, off as u64)
            .expect("pwrite zeros");
        // SAFETY: the range is inside the mapping; populating has no other effect.
        let r = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(off).cast(),
                CHUNK_SIZE,
                libc::MADV_POPULATE_WRITE,
            )
        };
        assert_eq!(r, 0, "MADV_POPULATE_WRITE");
        slot
    }
}

#[cold]
#[inline(never)]
fn refill_prepared(w: &Ideal8, site_kind: u64) {
    let p = prepared();
    if w.slot.get() != u32::MAX {
        p.retired.lock().unwrap().push(w.slot.get());
    }
    let ready = p.ready.lock().unwrap().pop_front();
    let slot = ready.unwrap_or_else(|| p.reserve());
    p.wake.notify_one();
    w.slot.set(slot);
    // SAFETY: the slot is inside the mapping.
    let base = unsafe { p.map.as_mut_ptr().add(slot as usize * CHUNK_SIZE) };
    w.start(base, site_kind);
}

fn prepared_reclaim() {
    let p = prepared();
    let slots = std::mem::take(&mut *p.retired.lock().unwrap());
    for slot in slots {
        punch(&p.file, slot as u64 * CHUNK_SIZE as u64, CHUNK_SIZE as u64);
    }
}

macro_rules! ideal8_fn {
    ($name:ident, $key:ident, $refill:ident) => {
        #[inline(never)]
        fn $name(x: u64) -> u64 {
            ideal_word(&$key, 1, format::kind::ENTER, $refill);
            let r = black_box(x) ^ 1;
            ideal_word(&$key, 1, format::kind::EXIT, $refill);
            r
        }
    };
}
ideal8_fn!(ideal_heap_ring8, HEAP_RING8, refill_heap8);
ideal8_fn!(ideal_file_stream8_prepared, FILE_STREAM8, refill_prepared);

// ---------------------------------------------------------------------------
// mpprof.

#[mpprof::instrument]
#[inline(never)]
fn mpprof_instrument(x: u64) -> u64 {
    black_box(x) ^ 1
}

#[inline(never)]
fn mpprof_scope(x: u64) -> u64 {
    let _g = mpprof::scope!("scope");
    black_box(x) ^ 1
}

/// Punches out the event chunks of the process file that are full (their
/// writer has moved on and never writes them again). Metadata chunks and
/// chunks still being written are kept.
struct Reclaimer {
    file: File,
    chunk_size: u64,
    capacity: u32,
    cursor: u32,
    pending: Vec<u32>,
    punched: u64,
}

impl Reclaimer {
    fn new(path: &Path) -> Reclaimer {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open process file");
        let chunk_size = read_u32(&file, format::header::CHUNK_SIZE as u64) as u64;
        Reclaimer {
            file,
            chunk_size,
            capacity: ((chunk_size - format::CHUNK_HEADER_SIZE as u64) / format::RECORD_SIZE as u64)
                as u32,
            cursor: 0,
            pending: Vec::new(),
            punched: 0,
        }
    }

    fn reclaim(&mut self) {
        let next = read_u32(&self.file, format::header::NEXT_CHUNK as u64);
        let mut todo = std::mem::take(&mut self.pending);
        todo.extend(self.cursor..next);
        self.cursor = next;
        for slot in todo {
            let off = format::HEADER_SIZE + slot as u64 * self.chunk_size;
            let mut h = [0u8; format::chunk::END];
            if self.file.read_exact_at(&mut h, off).is_err() {
                // Claimed (by the preparer, say) but not yet written.
                self.pending.push(slot);
                continue;
            }
            let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
            let kind = u16::from_le_bytes([h[format::chunk::KIND], h[format::chunk::KIND + 1]]);
            if u32_at(format::chunk::MAGIC) != format::CHUNK_MAGIC {
                self.pending.push(slot); // claimed, header not written yet
            } else if kind != format::CHUNK_EVENTS {
                // metadata: keep
            } else if u32_at(format::chunk::COMMITTED) == self.capacity {
                punch(&self.file, off, self.chunk_size);
                self.punched += 1;
            } else {
                self.pending.push(slot);
            }
        }
    }
}

fn read_u32(file: &File, off: u64) -> u32 {
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, off).expect("read header");
    u32::from_le_bytes(b)
}

// ---------------------------------------------------------------------------
// Peers.

#[tracing::instrument(level = "info", skip_all)]
#[inline(never)]
fn tracing_instrument(x: u64) -> u64 {
    black_box(x) ^ 1
}

#[inline(never)]
fn puffin_scope(x: u64) -> u64 {
    puffin::profile_scope!("work");
    black_box(x) ^ 1
}

#[inline(never)]
fn tracy_span(x: u64) -> u64 {
    let _s = tracy_client::span!("work");
    black_box(x) ^ 1
}

// ---------------------------------------------------------------------------
// Drivers.

/// Times `iters` calls of `f` on this thread.
#[inline(always)]
fn run(iters: u64, f: fn(u64) -> u64) -> Duration {
    let t = Instant::now();
    for i in 0..iters {
        black_box(f(black_box(i)));
    }
    t.elapsed()
}

/// Two threads, `iters` calls each, started together; the slower thread's
/// time (so the result is time per call per thread). Each thread makes one
/// call before the start line, so thread setup (mpprof: lane and first
/// chunk) is not timed, as it is not in the single-thread cases.
/// A sample for a bench thread: calls, and the function to call.
type Job = (u64, fn(u64) -> u64);

/// Two long-lived threads (like an application's worker threads: their
/// thread-local writers and chunks stay from one sample to the next) that
/// run a case on request.
struct Pair {
    jobs: Vec<std::sync::mpsc::Sender<Job>>,
    done: std::sync::mpsc::Receiver<Duration>,
}

fn pair() -> &'static Mutex<Pair> {
    static P: OnceLock<Mutex<Pair>> = OnceLock::new();
    P.get_or_init(|| {
        let (done_tx, done) = std::sync::mpsc::channel();
        let start = std::sync::Arc::new(Barrier::new(2));
        let jobs = (0..2)
            .map(|t| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let (done_tx, start) = (done_tx.clone(), start.clone());
                std::thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn(move || {
                        for (iters, f) in rx {
                            black_box(f(0));
                            start.wait();
                            done_tx.send(run(iters, f)).expect("report");
                        }
                    })
                    .expect("spawn a bench thread");
                tx
            })
            .collect();
        Mutex::new(Pair { jobs, done })
    })
}

/// Both threads call `f` `iters` times at once; the slower one's time.
fn run_two(iters: u64, f: fn(u64) -> u64) -> Duration {
    let p = pair().lock().unwrap();
    for j in &p.jobs {
        j.send((iters, f)).expect("bench thread alive");
    }
    let a = p.done.recv().expect("bench thread result");
    let b = p.done.recv().expect("bench thread result");
    a.max(b)
}

fn case(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    f: fn(u64) -> u64,
) {
    g.bench_function(name, |b| b.iter_custom(|iters| run(iters, f)));
}

/// A case whose samples write to a file that is punched out afterwards.
fn case_reclaimed(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut driver: impl FnMut(u64) -> Duration,
    mut reclaim: impl FnMut(),
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let d = driver(iters);
            reclaim();
            d
        })
    });
}

fn main() {
    // The disabled case must see no session: forget any inherited one.
    std::env::remove_var("MPPROF_DIR");
    std::env::remove_var("MPPROF");
    // No resource sampler unless asked for (`MPPROF_SAMPLE_MS=20` measures
    // the hot path beside it; its own cost is benches/sampler.rs): its
    // thread competes for the 2 cores.
    if std::env::var_os("MPPROF_SAMPLE_MS").is_none() {
        std::env::set_var("MPPROF_SAMPLE_MS", "0");
    }
    if let Ok(n) = std::env::var("OVERHEAD_CALLS") {
        count_mode(n.parse().expect("OVERHEAD_CALLS is a number"));
        return;
    }

    let mut c = Criterion::default().configure_from_args();

    let mut g = c.benchmark_group("floor");
    case(&mut g, "baseline", plain);
    case(&mut g, "rdtsc", with_rdtsc);
    case(&mut g, "instant_now", with_instant);
    case(&mut g, "ideal_heap_ring", ideal_heap_ring);
    case(&mut g, "ideal_heap_ring8", ideal_heap_ring8);
    case(&mut g, "ideal_file_ring", ideal_file_ring);
    case_reclaimed(
        &mut g,
        "ideal_file_stream",
        |n| run(n, ideal_file_stream),
        stream_reclaim,
    );
    case_reclaimed(
        &mut g,
        "ideal_file_stream_populated",
        |n| run(n, ideal_file_stream_populated),
        stream_reclaim,
    );
    case_reclaimed(
        &mut g,
        "ideal_file_stream8_prepared",
        |n| run(n, ideal_file_stream8_prepared),
        prepared_reclaim,
    );
    g.finish();

    // Recording is not started: the first call finds no MPPROF_DIR and
    // switches it off for good (until init).
    let mut g = c.benchmark_group("mpprof");
    case(&mut g, "disabled_instrument", mpprof_instrument);
    case(&mut g, "disabled_scope", mpprof_scope);

    // Now record, into a session in a temporary directory, keep-first (the
    // default). The budget is the largest allowed (1 TiB of address space;
    // the file is sparse and full chunks are punched out between samples),
    // so no event is lost however long criterion runs.
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("keep-first");
    std::fs::create_dir(&first).expect("session dir");
    std::env::set_var("MPPROF_DIR", &first);
    std::env::set_var("MPPROF_BUFFER_MB", (1u64 << 20).to_string());
    std::env::set_var("MPPROF_OVERFLOW", "keep-first");
    let session = mpprof::init().expect("mpprof::init");
    let path = process_file(&first);
    let mut reclaimer = Reclaimer::new(&path);
    mpprof_instrument(0);
    mpprof_scope(0);
    println!("mpprof clock: {:?}", mpprof::clock::current());
    case_reclaimed(
        &mut g,
        "enabled_instrument",
        |n| run(n, mpprof_instrument),
        || reclaimer.reclaim(),
    );
    case_reclaimed(
        &mut g,
        "enabled_scope",
        |n| run(n, mpprof_scope),
        || reclaimer.reclaim(),
    );
    {
        // `#[tracing::instrument]` recorded through mpprof's tracing layer,
        // into the same session (compare with peers/tracing_registry, the
        // same subscriber without the layer, and peers/tracing_chrome).
        use tracing_subscriber::layer::SubscriberExt;
        let _d = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(mpprof::tracing_layer()),
        );
        case_reclaimed(
            &mut g,
            "tracing_layer",
            |n| run(n, tracing_instrument),
            || reclaimer.reclaim(),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("threads");
    case_reclaimed(&mut g, "baseline_x2", |n| run_two(n, plain), || {});
    case_reclaimed(
        &mut g,
        "ideal_file_stream_x2",
        |n| run_two(n, ideal_file_stream),
        stream_reclaim,
    );
    case_reclaimed(
        &mut g,
        "ideal_heap_ring8_x2",
        |n| run_two(n, ideal_heap_ring8),
        || {},
    );
    case_reclaimed(
        &mut g,
        "ideal_file_stream8_prepared_x2",
        |n| run_two(n, ideal_file_stream8_prepared),
        prepared_reclaim,
    );
    case_reclaimed(
        &mut g,
        "mpprof_x2",
        |n| run_two(n, mpprof_instrument),
        || reclaimer.reclaim(),
    );
    g.finish();

    drop(session);
    report_session(&path, reclaimer.punched);

    // A second session, keep-last (the flight recorder) with the smallest
    // budget: 1 MiB is 4 slots (the first metadata chunk, the 2-slot
    // metadata reserve and one event chunk), so the thread starts its one
    // 256 KiB chunk over and over; it stays mapped and cached, which is what
    // the ideal rings above do.
    let last = dir.path().join("keep-last");
    std::fs::create_dir(&last).expect("session dir");
    std::env::set_var("MPPROF_DIR", &last);
    std::env::set_var("MPPROF_BUFFER_MB", "1");
    // Explicit: a small budget would otherwise get smaller chunks.
    std::env::set_var("MPPROF_CHUNK_KB", "256");
    std::env::set_var("MPPROF_OVERFLOW", "keep-last");
    // One event chunk: the only recording thread must be the bench's (a
    // sampler's lane would find no chunk and lose its samples).
    std::env::set_var("MPPROF_SAMPLE_MS", "0");
    let session = mpprof::init().expect("mpprof::init");
    let mut g = c.benchmark_group("mpprof");
    case(&mut g, "flight_recorder_instrument", mpprof_instrument);
    g.finish();
    drop(session);
    report_session(&process_file(&last), 0);

    // A third session, keep-last, for two threads: each cycles through its
    // own chunks (2 MiB: 5 event chunks, which the two threads claim in
    // turn; the main thread records nothing here), so this is the hot path
    // alone, with no page preparation competing for the two cores.
    let last2 = dir.path().join("keep-last-x2");
    std::fs::create_dir(&last2).expect("session dir");
    std::env::set_var("MPPROF_DIR", &last2);
    std::env::set_var("MPPROF_BUFFER_MB", "2");
    let session = mpprof::init().expect("mpprof::init");
    let mut g = c.benchmark_group("threads");
    case_reclaimed(
        &mut g,
        "mpprof_flight_recorder_x2",
        |n| run_two(n, mpprof_instrument),
        || {},
    );
    g.finish();
    drop(session);
    report_session(&process_file(&last2), 0);

    peers(&mut c, dir.path());
    c.final_summary();
}

/// `OVERHEAD_CALLS=N`: no criterion; N calls of each case, for counting
/// instructions under `valgrind --tool=callgrind` (each case's loop is its
/// own function, so `callgrind_annotate --inclusive=yes` gives its total).
fn count_mode(n: u64) {
    #[inline(never)]
    fn loop_baseline(n: u64) {
        run(n, plain);
    }
    #[inline(never)]
    fn loop_ideal_heap_ring(n: u64) {
        run(n, ideal_heap_ring);
    }
    #[inline(never)]
    fn loop_ideal_heap_ring8(n: u64) {
        run(n, ideal_heap_ring8);
    }
    #[inline(never)]
    fn loop_ideal_file_stream(n: u64) {
        run(n, ideal_file_stream);
    }
    #[inline(never)]
    fn loop_mpprof_disabled(n: u64) {
        // (A distinct body, or LLVM merges it with loop_mpprof_enabled.)
        black_box(1u8);
        run(n, mpprof_instrument);
    }
    #[inline(never)]
    fn loop_mpprof_enabled(n: u64) {
        run(n, mpprof_instrument);
    }
    #[inline(never)]
    fn loop_mpprof_scope(n: u64) {
        run(n, mpprof_scope);
    }
    STREAM_SLOTS.store(256, Ordering::Relaxed);
    // First calls outside the loops: lazy set-up (thread-locals, chunks,
    // callsite registration) is not what is counted.
    for f in [
        plain,
        ideal_heap_ring,
        ideal_heap_ring8,
        ideal_file_stream,
        mpprof_instrument,
    ] {
        f(0);
    }
    loop_baseline(n);
    loop_ideal_heap_ring(n);
    loop_ideal_heap_ring8(n);
    loop_ideal_file_stream(n);
    loop_mpprof_disabled(n);
    let dir = tempfile::tempdir().expect("temp dir");
    std::env::set_var("MPPROF_DIR", dir.path());
    std::env::set_var("MPPROF_BUFFER_MB", "4096");
    let session = mpprof::init().expect("mpprof::init");
    mpprof_instrument(0);
    mpprof_scope(0);
    loop_mpprof_enabled(n);
    loop_mpprof_scope(n);
    drop(session);
    report_session(&process_file(dir.path()), 0);
}

fn process_file(dir: &Path) -> PathBuf {
    let files = mpprof_merge::read::list_session(dir).expect("list session");
    assert_eq!(files.len(), 1, "one process file in {}", dir.display());
    files.into_iter().next().expect("one file")
}

/// The recording must have lost nothing (keep-first), or the enabled numbers
/// include the lost-event path; the flight recorder (keep-last) counts what
/// it overwrote as lost, and nothing else.
fn report_session(path: &Path, punched: u64) {
    let f = mpprof_merge::read::open(path).expect("read the process file");
    let overwritten: u64 = f.lanes.values().map(|l| l.overwritten).sum();
    println!(
        "mpprof session {:?}: {} record words in the file, {} full chunks punched out between samples, \
         {} overwritten (keep-last), lost events {}, lost chunks {}, clean {}",
        f.policy,
        f.committed_records(),
        punched,
        overwritten,
        f.lost_events,
        f.lost_chunks,
        f.clean
    );
    assert_eq!(
        f.lost_events, overwritten,
        "events were lost: the enabled numbers are wrong"
    );
    assert_eq!(
        f.lost_chunks, 0,
        "chunks were lost: the enabled numbers are wrong"
    );
}

fn peers(c: &mut Criterion, dir: &Path) {
    let mut g = c.benchmark_group("peers");
    // Their queues grow while measuring: keep the samples few and short.
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(30);

    // Scoped (thread-local) dispatchers, so that both subscribers can be
    // measured in one process; a global default saves one thread-local
    // look-up per call.
    {
        let registry = tracing_subscriber::registry();
        let _d = tracing::subscriber::set_default(registry);
        case(&mut g, "tracing_registry", tracing_instrument);
    }
    {
        use tracing_subscriber::layer::SubscriberExt;
        let (chrome, flush) = tracing_chrome::ChromeLayerBuilder::new()
            .file(dir.join("tracing-chrome.json"))
            .build();
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry().with(chrome));
        case(&mut g, "tracing_chrome", tracing_instrument);
        drop(_d);
        drop(flush);
    }

    puffin::set_scopes_on(true);
    g.bench_function("puffin", |b| {
        b.iter_custom(|iters| {
            let d = {
                puffin::profile_scope!("sample");
                run(iters, puffin_scope)
            };
            puffin::GlobalProfiler::lock().new_frame();
            d
        })
    });
    puffin::set_scopes_on(false);

    let _client = tracy_client::Client::start();
    case(&mut g, "tracy", tracy_span);
    g.finish();
}
