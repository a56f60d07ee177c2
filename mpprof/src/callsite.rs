//! Callsites: one `static` per instrumented place, built by a `const fn`,
//! given a process-wide id on first use (tracing-core's callsite pattern).
//!
//! Registration takes no lock and allocates nothing (it may run in a
//! signal handler, at a callsite's first use): the id comes from an atomic
//! counter, the callsite joins an intrusive list of registered callsites
//! (replayed into every new file) with a compare-and-swap, and its name is
//! written to the current file's metadata before any thread records the
//! id.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::format::word::{MAX_SITE, SITE_SHIFT};
use crate::format::{Clipped, MetaRef, SiteKind, MAX_NAME};
use crate::{record, session};

/// The callsite that stands for every callsite past the [`MAX_SITE`]th.
static OVERFLOW: Callsite = Callsite::with_kind(
    SiteKind::Span,
    "(callsites past the format's limit)",
    || "mpprof",
    "",
    0,
);

/// An instrumented place in the source. Created by the macros; not meant to
/// be built by hand.
pub struct Callsite {
    /// The id shifted to its place in a record word (`id << SITE_SHIFT`),
    /// so the hot path does not shift it; 0 until registered.
    bits: AtomicU32,
    /// The id the first thread to use the callsite claimed (0: none yet);
    /// `bits` takes it once the name is written.
    claim: AtomicU32,
    /// The callsite registered before this one (the list of [`REGISTERED`]).
    next: AtomicPtr<Callsite>,
    kind: SiteKind,
    name: &'static str,
    path: fn() -> &'static str,
    file: &'static str,
    line: u32,
    /// The path as a string, for callsites made at run time
    /// ([`Callsite::leak_dynamic`]); `None` for the macros' callsites.
    dyn_path: Option<&'static str>,
}

impl Callsite {
    /// A span callsite (`#[instrument]`, `scope!`).
    pub const fn new(
        name: &'static str,
        path: fn() -> &'static str,
        file: &'static str,
        line: u32,
    ) -> Callsite {
        Callsite::with_kind(SiteKind::Span, name, path, file, line)
    }

    /// A callsite of the given kind.
    pub const fn with_kind(
        kind: SiteKind,
        name: &'static str,
        path: fn() -> &'static str,
        file: &'static str,
        line: u32,
    ) -> Callsite {
        Callsite {
            bits: AtomicU32::new(0),
            claim: AtomicU32::new(0),
            next: AtomicPtr::new(std::ptr::null_mut()),
            kind,
            name,
            path,
            file,
            line,
            dyn_path: None,
        }
    }

    /// A callsite described at run time (one per `tracing` callsite, made by
    /// the tracing layer): leaked, so call it once per distinct site.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn leak_dynamic(
        kind: SiteKind,
        name: &str,
        path: &str,
        file: &str,
        line: u32,
    ) -> &'static Callsite {
        fn leak(s: &str) -> &'static str {
            Box::leak(s.to_owned().into_boxed_str())
        }
        Box::leak(Box::new(Callsite {
            dyn_path: Some(leak(path)),
            ..Callsite::with_kind(kind, leak(name), || "", leak(file), line)
        }))
    }

    /// The callsite's id, registering it on first use.
    #[inline(always)]
    pub fn id(&'static self) -> u32 {
        self.bits() >> SITE_SHIFT
    }

    /// The id in its place in a record word (`id << SITE_SHIFT`), never 0,
    /// registering the callsite on first use.
    #[inline(always)]
    pub fn bits(&'static self) -> u32 {
        // Relaxed: the id is a plain number; the metadata that names it is
        // written to the file by the registering thread and read after the
        // fact, so no memory ordering between threads is needed.
        let b = self.bits.load(Ordering::Relaxed);
        if b != 0 {
            return b;
        }
        self.register(false) << SITE_SHIFT
    }

    /// [`Callsite::id`] for the recorder's own code, which runs inside the
    /// recorder already (`record::inside`): a first use names the callsite
    /// in the current file at once.
    pub(crate) fn id_inside(&'static self) -> u32 {
        // Relaxed: as in `bits`.
        match self.bits.load(Ordering::Relaxed) {
            0 => self.register(true),
            b => b >> SITE_SHIFT,
        }
    }

    /// Gives the callsite its id on first use, names it in the current
    /// file, and only then makes the id its `bits`: no thread records the
    /// id before its name is in the file (a SIGKILL in between would leave
    /// events under an unnamed id). Racing threads agree on the id through
    /// `claim`; each of them writes the name before it uses the id (the
    /// reader takes a name written twice), so none waits for another, which
    /// may be preempted, or be the thread a signal handler interrupted.
    #[cold]
    #[inline(never)]
    fn register(&'static self, in_recorder: bool) -> u32 {
        let (id, won) = self.claim_id(|| assign_id(&NEXT_ID, MAX_SITE));
        if id == MAX_SITE {
            // Past the format's limit: this callsite, and every later one,
            // shares the last id, which OVERFLOW names.
            let (_, first) = OVERFLOW.claim_id(|| MAX_SITE);
            if first {
                crate::warn::warn(format_args!(
                    "more than {} callsites in this process; the rest are recorded as \"{}\"",
                    MAX_SITE - 1,
                    OVERFLOW.name
                ));
            }
            // Relaxed: as in `bits`.
            if OVERFLOW.bits.load(Ordering::Relaxed) == 0 {
                OVERFLOW.publish(MAX_SITE, first, in_recorder);
            }
            if OVERFLOW.bits.load(Ordering::Relaxed) != 0 {
                // Release: see `publish`.
                self.bits.store(MAX_SITE << SITE_SHIFT, Ordering::Release);
            }
            return MAX_SITE;
        }
        self.publish(id, won, in_recorder);
        id
    }

    /// The callsite's id: a `fresh` one if this thread claims it first
    /// (true), else the one another thread claimed.
    fn claim_id(&self, fresh: impl FnOnce() -> u32) -> (u32, bool) {
        // Relaxed: the id is a plain number; a thread that loses the race
        // takes the winner's id, and its own is a gap.
        match self.claim.load(Ordering::Relaxed) {
            0 => {
                let id = fresh();
                match self
                    .claim
                    .compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => (id, true),
                    Err(other) => (other, false),
                }
            }
            id => (id, false),
        }
    }

    /// Names `id` in the current file, then makes it the callsite's `bits`.
    /// The thread that claimed the id (`won`) also adds the callsite to the
    /// list replayed into every new file. If a new file became current
    /// meanwhile, the name goes there too: with [`replay`]'s order (a new
    /// file is made current, then the list is read) either the replay or
    /// this second write reaches it.
    ///
    /// `in_recorder`: the caller is the recorder's own code, inside the
    /// recorder. Otherwise (a first use on the hot path) the thread may be
    /// inside the recorder because a signal handler interrupted it there,
    /// with the metadata lock this thread's: then the name is not written
    /// and `bits` stays 0. The event the caller makes with the id is
    /// dropped (and counted) as any event of a busy thread is, and the
    /// next use of the callsite on a thread that is not busy names it.
    fn publish(&'static self, id: u32, won: bool, in_recorder: bool) {
        let name_in = |r: Option<&'static session::Recorder>| {
            let write = || {
                if let Some(r) = r {
                    r.chunks.using(|c| c.write_meta(&self.meta(id)));
                }
            };
            if in_recorder {
                write();
                true
            } else {
                record::inside(write).is_some()
            }
        };
        let first = session::live_recorder();
        let named = name_in(first);
        if won {
            push(&REGISTERED, self);
        }
        if !named {
            return;
        }
        let now = session::live_recorder();
        if now.is_some_and(|r| !first.is_some_and(|f| std::ptr::eq(r, f))) && !name_in(now) {
            return;
        }
        // Release: the name's metadata entry is in the file before a
        // thread that sees the id can record it.
        self.bits.store(id << SITE_SHIFT, Ordering::Release);
    }

    fn meta(&self, id: u32) -> MetaRef<'_> {
        MetaRef::Callsite {
            id,
            kind: self.kind,
            name: Clipped::new(self.name, MAX_NAME),
            path: Clipped::new(self.dyn_path.unwrap_or_else(|| (self.path)()), MAX_NAME),
            file: Clipped::new(self.file, MAX_NAME),
            line: self.line,
        }
    }
}

/// The next callsite id (from 1).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The registered callsites, newest first, linked through
/// [`Callsite::next`].
static REGISTERED: AtomicPtr<Callsite> = AtomicPtr::new(std::ptr::null_mut());

/// Pushes `c` onto the intrusive list at `head`, linked through
/// [`Callsite::next`]. Lock-free.
fn push(head: &AtomicPtr<Callsite>, c: &'static Callsite) {
    // SeqCst: see `Callsite::publish` (the registered list is read by
    // `replay` after a new file is made current).
    let mut h = head.load(Ordering::SeqCst);
    loop {
        // Relaxed: published by the compare-and-swap below.
        c.next.store(h, Ordering::Relaxed);
        match head.compare_exchange_weak(
            h,
            c as *const Callsite as *mut Callsite,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => return,
            Err(x) => h = x,
        }
    }
}

/// A callsite id of its own for a counter the recorder names itself in
/// each file it records into (the resource sampler's): no `Callsite`, and
/// not in the list replayed into new files. `None` past the format's
/// limit.
pub(crate) fn fresh_id() -> Option<u32> {
    Some(assign_id(&NEXT_ID, MAX_SITE)).filter(|&id| id < MAX_SITE)
}

/// Takes the next id from `next`, at most `max`: the id `max` stands for
/// every callsite past the `max - 1`th.
fn assign_id(next: &AtomicU64, max: u32) -> u32 {
    // Relaxed: only uniqueness matters.
    next.fetch_add(1, Ordering::Relaxed).min(u64::from(max)) as u32
}

/// Callsites made at run time for names given as strings
/// (`flow::send("request")`, spawn spans), by kind and name.
struct Registry {
    dynamic: BTreeMap<(SiteKind, String), &'static Callsite>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    dynamic: BTreeMap::new(),
});

/// Holds the registry lock across `fork()` (see `session::register_fork_hook`).
pub(crate) fn lock_for_fork() {
    std::mem::forget(REGISTRY.lock());
}

/// Releases the lock taken by [`lock_for_fork`], in the parent or the child.
pub(crate) fn unlock_after_fork() {
    // SAFETY: locked by `lock_for_fork` on this thread, which still owns it
    // (in the child it is the only thread).
    unsafe { REGISTRY.force_unlock() };
}

/// The id of a callsite named at run time (`flow::send("request")`, spawn
/// spans). Interned: one leaked `Callsite` per distinct (kind, name). A
/// small per-thread cache of recent names makes repeated calls cost a few
/// string compares: no lock, no allocation.
pub fn intern(kind: SiteKind, name: &str) -> u32 {
    const CACHED: usize = 16;
    thread_local! {
        static RECENT: std::cell::RefCell<Vec<(SiteKind, &'static str, u32)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let hit = RECENT
        .try_with(|r| {
            r.borrow()
                .iter()
                .find(|(k, n, _)| *k == kind && *n == name)
                .map(|e| e.2)
        })
        .ok()
        .flatten();
    if let Some(id) = hit {
        return id;
    }
    let site = {
        let mut reg = REGISTRY.lock();
        match reg.dynamic.get(&(kind, name.to_owned())) {
            Some(s) => *s,
            None => {
                let s: &'static Callsite = Box::leak(Box::new(Callsite::with_kind(
                    kind,
                    Box::leak(name.to_owned().into_boxed_str()),
                    || "",
                    "",
                    0,
                )));
                reg.dynamic.insert((kind, name.to_owned()), s);
                s
            }
        }
    };
    let id = site.id_inside();
    let _ = RECENT.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.len() == CACHED {
            r.remove(0);
        }
        r.push((kind, site.name, id));
    });
    id
}

/// Writes the metadata of every registered callsite with `write`: into a
/// new file (for a new session, or after fork), which must be current
/// already (see [`Callsite::publish`]).
pub fn replay(mut write: impl FnMut(&MetaRef)) {
    // SeqCst: see `Callsite::publish`.
    let mut p = REGISTERED.load(Ordering::SeqCst);
    // SAFETY: the list holds only `&'static Callsite`s, linked once each
    // before being published by the compare-and-swap that made them head.
    while let Some(c) = unsafe { p.as_ref() } {
        // Relaxed: registered callsites have their id (set before publish).
        let id = c.bits.load(Ordering::Relaxed) >> SITE_SHIFT;
        write(&c.meta(id));
        p = c.next.load(Ordering::Relaxed);
    }
}

/// Strips the helper suffix from the type name of the function item the
/// macro passes, leaving the instrumented function's full path.
pub fn fn_path<F>(_f: F) -> &'static str {
    let mut name = std::any::type_name::<F>();
    for suffix in [
        "::__mpprof_here",
        "::__mpprof_path",
        "::__MPPROF_CALLSITE",
        "::{{closure}}",
    ] {
        name = name.strip_suffix(suffix).unwrap_or(name);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked(name: &str) -> &'static Callsite {
        Callsite::leak_dynamic(SiteKind::Span, name, "test::s", "test.rs", 1)
    }

    /// Past the largest id a record word holds, every callsite shares the
    /// last id, which names the overflow (shown with a small limit; the real
    /// one is 2^28 - 1).
    #[test]
    fn callsites_past_the_limit_share_the_last_id() {
        let next = AtomicU64::new(1);
        let ids: Vec<u32> = (0..6).map(|_| assign_id(&next, 4)).collect();
        assert_eq!(ids, [1, 2, 3, 4, 4, 4]);
    }

    /// Threads racing to register the same callsite agree on one id, and
    /// every registered callsite is on the list the replay reads.
    #[test]
    fn racing_registrations_agree_and_are_replayed() {
        let sites: Vec<&'static Callsite> = (0..50).map(|i| leaked(&format!("race{i}"))).collect();
        let ids: Vec<Vec<u32>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|_| sc.spawn(|| sites.iter().map(|s| s.id()).collect::<Vec<u32>>()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|v| v == &ids[0]), "one id per callsite");
        let mut replayed = std::collections::HashMap::new();
        replay(|m| {
            if let MetaRef::Callsite { id, name, .. } = m {
                replayed.insert(name.to_string(), *id);
            }
        });
        for (s, id) in sites.iter().zip(&ids[0]) {
            assert_eq!(replayed.get(s.name), Some(id), "{}", s.name);
        }
    }
}
