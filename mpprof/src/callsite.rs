//! Callsites: one `static` per instrumented place, built by a `const fn`,
//! given a process-wide id on first use (tracing-core's callsite pattern).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::format::word::{MAX_SITE, SITE_SHIFT};
use crate::format::{Meta, SiteKind};

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
        self.register() << SITE_SHIFT
    }

    #[cold]
    #[inline(never)]
    fn register(&'static self) -> u32 {
        let mut reg = REGISTRY.lock();
        // Relaxed: re-checked under the registry lock, which orders it.
        let b = self.bits.load(Ordering::Relaxed);
        if b != 0 {
            return b >> SITE_SHIFT;
        }
        let id = reg.assign(self, MAX_SITE);
        self.bits.store(id << SITE_SHIFT, Ordering::Relaxed);
        id
    }

    fn meta(&self, id: u32) -> Meta {
        Meta::Callsite {
            id,
            kind: self.kind,
            name: self.name.to_owned(),
            path: self.dyn_path.unwrap_or_else(|| (self.path)()).to_owned(),
            file: self.file.to_owned(),
            line: self.line,
        }
    }
}

struct Registry {
    /// Registered callsites; id `i + 1` is `sites[i]`.
    sites: Vec<&'static Callsite>,
    /// Callsites made at run time for names given as strings.
    dynamic: BTreeMap<(SiteKind, String), &'static Callsite>,
}

impl Registry {
    /// Gives `site` the next id, at most `max`: the id `max` is the
    /// overflow callsite that stands for `site` and every later one.
    /// Writes the metadata that names a new id.
    fn assign(&mut self, site: &'static Callsite, max: u32) -> u32 {
        if self.sites.len() + 1 >= max as usize {
            if self.sites.len() + 1 == max as usize {
                self.sites.push(&OVERFLOW);
                crate::session::write_meta(&OVERFLOW.meta(max));
                crate::warn::warn(format_args!(
                    "more than {} callsites in this process; the rest are recorded as \"{}\"",
                    max - 1,
                    OVERFLOW.name
                ));
            }
            return max;
        }
        self.sites.push(site);
        let id = self.sites.len() as u32;
        crate::session::write_meta(&site.meta(id));
        id
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    sites: Vec::new(),
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
    let id = site.id();
    let _ = RECENT.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.len() == CACHED {
            r.remove(0);
        }
        r.push((kind, site.name, id));
    });
    id
}

/// Writes the metadata of every registered callsite into a new file (after
/// fork, or for a new session), then runs `then` (which installs the new
/// file) while still holding the registry lock, so no callsite registered
/// concurrently can miss the new file.
pub fn replay_then<R>(mut write: impl FnMut(&Meta), then: impl FnOnce() -> R) -> R {
    let reg = REGISTRY.lock();
    for (i, s) in reg.sites.iter().enumerate() {
        write(&s.meta(i as u32 + 1));
    }
    then()
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
        let mut reg = Registry {
            sites: Vec::new(),
            dynamic: BTreeMap::new(),
        };
        let ids: Vec<u32> = (0..6)
            .map(|i| reg.assign(leaked(&format!("s{i}")), 4))
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 4, 4]);
        assert_eq!(reg.sites.len(), 4);
        assert!(std::ptr::eq(reg.sites[3], &OVERFLOW));
        assert_eq!(reg.sites[2].name, "s2");
    }
}
