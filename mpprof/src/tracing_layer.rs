//! `tracing` integration: a [`tracing_subscriber::Layer`] that records
//! `tracing` spans and events on the same per-thread buffers as
//! `#[mpprof::instrument]`.
//!
//! # How a tracing callsite becomes an mpprof callsite
//!
//! Every `tracing` callsite has a `&'static Metadata`. The first time the
//! layer sees one (in `register_callsite`, which tracing calls once per
//! callsite and dispatcher, or on first use if it was missed) it leaks one
//! mpprof callsite for it — name: the span's name; path: `target::name`;
//! file and line from the metadata — and stores its id in a fixed-size,
//! open-addressed table keyed by the metadata's address. Enter and exit then
//! cost: the registry's span lookup (tracing's own, lock-free), a probe of
//! that table (relaxed/acquire loads, no lock, no allocation), and the same
//! 8-byte record write as `#[mpprof::instrument]`. Past 8192 tracing
//! callsites the table is full and further callsites are looked up in a map
//! under a lock (documented limit, not expected in practice).
//!
//! # Events
//!
//! A `tracing` event is recorded as an instant event named by its message
//! (the `message` field, formatted; cut at 200 bytes): one mpprof callsite
//! per distinct (tracing callsite, message) pair, so `info!("cache miss")`
//! shows as `cache miss`. Messages with values in them (`info!("got {n}")`)
//! make one name per distinct text, up to [`MAX_NAMES_PER_SITE`] per
//! tracing callsite; past that, and for events without a message, the
//! event is named by its metadata name (`event src/file.rs:12`). Cost per
//! event: formatting the message into a reused thread-local buffer and one
//! thread-local hash lookup (no lock, no allocation once seen on this
//! thread); the first sighting of a message takes a global lock. Events of
//! a callsite that reached the limit are not formatted at all any more.
//! Other event fields are not recorded (the buffer format has no record
//! type for arguments).
//!
//! # Span fields
//!
//! Off by default. With [`TracingLayer::with_fields`]`(true)` the fields a
//! span is created with are part of its name (`handle{id=3 user="ann"}`),
//! interned the same way as event messages (bounded per callsite, then the
//! plain name). Cost, per span *creation*: formatting the fields, a
//! thread-local lookup, and one insertion into the span's extensions (a
//! small allocation and the registry's extension lock); per enter/exit: a
//! read of the span's extensions (an uncontended read lock). Values recorded
//! later with `Span::record` are not included.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id};
use tracing_core::{Event, Interest, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::callsite::Callsite;
use crate::format::{kind, SiteKind};
use crate::{record, session};

/// Distinct names (event messages, span field sets) kept per tracing
/// callsite; further ones use the callsite's plain name.
pub const MAX_NAMES_PER_SITE: usize = 256;

/// Longest name made from a message or from fields, in bytes.
const MAX_NAME_LEN: usize = 200;

/// A [`Layer`] that records `tracing` spans (enter/exit) and events
/// (instant events) into this process's mpprof buffer. Made by
/// [`crate::tracing_layer`]; see the module docs of `tracing_layer.rs` for
/// costs.
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry().with(mpprof::tracing_layer()).init();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TracingLayer {
    fields: bool,
}

impl Default for TracingLayer {
    /// The layer without span fields. Its registration lock is held across
    /// `fork()` from now on, so a child never inherits it locked by a
    /// thread that does not exist there.
    fn default() -> TracingLayer {
        session::hold_across_fork(session::ForkLock {
            lock: lock_for_fork,
            unlock: unlock_after_fork,
        });
        TracingLayer { fields: false }
    }
}

impl TracingLayer {
    /// Whether span names include the fields the span was created with
    /// (`handle{id=3}`). Off by default: it costs formatting and an
    /// allocation per span creation and a read lock per enter/exit.
    pub fn with_fields(self, on: bool) -> TracingLayer {
        TracingLayer { fields: on }
    }

    #[inline]
    fn span_site<S>(&self, id: &Id, ctx: &Context<'_, S>) -> Option<u32>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if self.fields {
            let span = ctx.span(id)?;
            if let Some(f) = span.extensions().get::<FieldSite>() {
                return Some(f.0);
            }
            return Some(site_of(span.metadata()));
        }
        ctx.metadata(id).map(site_of)
    }
}

/// The mpprof callsite of a span created with fields, in its extensions.
struct FieldSite(u32);

impl<S> Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        record::inside(|| site_of(meta));
        Interest::always()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.fields || !record::maybe_on() || attrs.fields().is_empty() {
            return;
        }
        // Inside the recorder: the names take a lock and a thread-local
        // buffer (see `record.rs` on re-entrance).
        record::inside(|| {
            let meta = attrs.metadata();
            let site = named_site(meta, |buf| {
                buf.push_str(meta.name());
                buf.push('{');
                let start = buf.len();
                attrs.record(&mut FieldsVisitor { buf, start });
                if buf.len() == start {
                    return false;
                }
                buf.push('}');
                true
            });
            if let (Some(site), Some(span)) = (site, ctx.span(id)) {
                span.extensions_mut().replace(FieldSite(site));
            }
        });
    }

    #[inline]
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if !record::maybe_on() {
            return;
        }
        match record::inside(|| self.span_site(id, &ctx)) {
            Some(Some(site)) => record::enter(site),
            Some(None) => {}
            None => record::lost_nested(),
        }
    }

    #[inline]
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if !record::maybe_on() {
            return;
        }
        match record::inside(|| self.span_site(id, &ctx)) {
            Some(Some(site)) => record::exit(site << crate::format::word::SITE_SHIFT),
            Some(None) => {}
            None => record::lost_nested(),
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !record::maybe_on() {
            return;
        }
        let meta = event.metadata();
        let site = record::inside(|| {
            named_site(meta, |buf| {
                let mut v = MessageVisitor { buf, found: false };
                event.record(&mut v);
                v.found
            })
            .unwrap_or_else(|| site_of(meta))
        });
        match site {
            Some(site) => record::record(site, kind::INSTANT),
            None => record::lost_nested(),
        }
    }
}

// ---------------------------------------------------------------------------
// Metadata address -> mpprof callsite id: a lock-free open-addressed table.

const SLOTS: usize = 1 << 14;
/// At most half full, so a probe always ends at an empty slot quickly.
const MAX_IN_TABLE: usize = SLOTS / 2;

struct Slot {
    /// Address of the `Metadata` (0: empty). Written once.
    key: AtomicUsize,
    /// The mpprof callsite id, written before `key`.
    site: AtomicU32,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        key: AtomicUsize::new(0),
        site: AtomicU32::new(0),
    }
}; SLOTS];

#[inline(always)]
fn slot_of(key: usize) -> usize {
    // Fibonacci hashing of the address (its low bits are alignment).
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// Looks `key` up in the table: `Some(site)` or `None` when absent.
#[inline(always)]
fn table_get(key: usize) -> Option<u32> {
    let mut i = slot_of(key);
    loop {
        // Acquire: pairs with the release store in `table_put`, so `site`
        // is the one written before the key.
        let k = TABLE[i].key.load(Ordering::Acquire);
        if k == key {
            // Relaxed: ordered by the acquire load of the key above.
            return Some(TABLE[i].site.load(Ordering::Relaxed));
        }
        if k == 0 {
            return None;
        }
        i = (i + 1) & (SLOTS - 1);
    }
}

/// Inserts `key` (absent); caller holds the `COLD` lock.
fn table_put(key: usize, site: u32) {
    let mut i = slot_of(key);
    // Relaxed: writers are serialised by the COLD lock.
    while TABLE[i].key.load(Ordering::Relaxed) != 0 {
        i = (i + 1) & (SLOTS - 1);
    }
    // Relaxed: published by the release store of the key.
    TABLE[i].site.store(site, Ordering::Relaxed);
    // Release: the site above is visible to whoever sees the key.
    TABLE[i].key.store(key, Ordering::Release);
}

/// The cold side: registering callsites and names.
struct Cold {
    /// Entries in `TABLE`.
    in_table: usize,
    /// Callsites beyond the table's capacity.
    overflow: BTreeMap<usize, u32>,
    /// Named sites: (metadata address, name) -> id.
    named: BTreeMap<(usize, String), u32>,
    /// Number of named sites per metadata address.
    names_per_site: BTreeMap<usize, usize>,
}

static COLD: Mutex<Cold> = Mutex::new(Cold {
    in_table: 0,
    overflow: BTreeMap::new(),
    named: BTreeMap::new(),
    names_per_site: BTreeMap::new(),
});

fn key_of(meta: &'static Metadata<'static>) -> usize {
    meta as *const Metadata<'static> as usize
}

/// The mpprof callsite id of a tracing callsite, registering it on first
/// sight.
#[inline]
fn site_of(meta: &'static Metadata<'static>) -> u32 {
    match table_get(key_of(meta)) {
        Some(id) => id,
        None => register(meta),
    }
}

fn kind_of(meta: &Metadata<'_>) -> SiteKind {
    if meta.is_span() {
        SiteKind::Span
    } else {
        SiteKind::Event
    }
}

fn path_of(meta: &Metadata<'_>) -> String {
    if meta.is_span() {
        format!("{}::{}", meta.target(), meta.name())
    } else {
        meta.target().to_owned()
    }
}

#[cold]
#[inline(never)]
fn register(meta: &'static Metadata<'static>) -> u32 {
    let key = key_of(meta);
    let mut cold = COLD.lock();
    if let Some(id) = table_get(key).or_else(|| cold.overflow.get(&key).copied()) {
        return id;
    }
    let id = Callsite::leak_dynamic(
        kind_of(meta),
        meta.name(),
        &path_of(meta),
        meta.file().unwrap_or(""),
        meta.line().unwrap_or(0),
    )
    .id_inside();
    if cold.in_table < MAX_IN_TABLE {
        table_put(key, id);
        cold.in_table += 1;
    } else {
        cold.overflow.insert(key, id);
    }
    id
}

/// The id of the site named `name` for tracing callsite `meta`, or `None`
/// when the callsite already has [`MAX_NAMES_PER_SITE`] names.
#[cold]
#[inline(never)]
fn register_named(meta: &'static Metadata<'static>, name: &str) -> Option<u32> {
    let key = key_of(meta);
    let mut cold = COLD.lock();
    if let Some(&id) = cold.named.get(&(key, name.to_owned())) {
        return Some(id);
    }
    let n = cold.names_per_site.entry(key).or_default();
    if *n >= MAX_NAMES_PER_SITE {
        return None;
    }
    *n += 1;
    let id = Callsite::leak_dynamic(
        kind_of(meta),
        name,
        &path_of(meta),
        meta.file().unwrap_or(""),
        meta.line().unwrap_or(0),
    )
    .id_inside();
    cold.named.insert((key, name.to_owned()), id);
    Some(id)
}

/// Per-thread cache of named sites, so a known message costs no lock.
struct Names {
    /// Reused formatting buffer.
    buf: String,
    /// (metadata address, hash of the name) -> (name, id).
    known: HashMap<(usize, u64), (Box<str>, u32)>,
    /// Callsites that reached the name limit (no formatting any more).
    saturated: HashSet<usize>,
}

thread_local! {
    static NAMES: RefCell<Names> = RefCell::new(Names {
        buf: String::with_capacity(256),
        known: HashMap::new(),
        saturated: HashSet::new(),
    });
}

/// The site for the name `fill` writes (returns false when there is no
/// name), interned per tracing callsite. `None`: no name, or the callsite
/// is saturated.
fn named_site(
    meta: &'static Metadata<'static>,
    fill: impl FnOnce(&mut String) -> bool,
) -> Option<u32> {
    let key = key_of(meta);
    NAMES
        .try_with(|n| {
            // A message whose Debug impl emits an event lands here again.
            let mut n = n.try_borrow_mut().ok()?;
            let Names {
                buf,
                known,
                saturated,
            } = &mut *n;
            if saturated.contains(&key) {
                return None;
            }
            buf.clear();
            if !fill(buf) {
                return None;
            }
            if buf.len() > MAX_NAME_LEN {
                let mut cut = MAX_NAME_LEN;
                while !buf.is_char_boundary(cut) {
                    cut -= 1;
                }
                buf.truncate(cut);
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            buf.hash(&mut h);
            let hk = (key, h.finish());
            if let Some((name, id)) = known.get(&hk) {
                if **name == **buf {
                    return Some(*id);
                }
                // A hash collision: correct, uncached.
                return register_named(meta, buf);
            }
            match register_named(meta, buf) {
                Some(id) => {
                    known.insert(hk, (buf.as_str().into(), id));
                    Some(id)
                }
                None => {
                    saturated.insert(key);
                    None
                }
            }
        })
        .ok()
        .flatten()
}

/// Writes the `message` field of an event.
struct MessageVisitor<'a> {
    buf: &'a mut String,
    found: bool,
}

impl Visit for MessageVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && !self.found {
            self.buf.push_str(value);
            self.found = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" && !self.found {
            let _ = write!(self.buf, "{value:?}");
            self.found = true;
        }
    }
}

/// Writes `name=value` pairs separated by spaces.
struct FieldsVisitor<'a> {
    buf: &'a mut String,
    start: usize,
}

impl Visit for FieldsVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.buf.len() > self.start {
            self.buf.push(' ');
        }
        let _ = write!(self.buf, "{}={value:?}", field.name());
    }
}

/// Takes the layer's registration lock for a `fork()` and leaves it held
/// (see `session::hold_across_fork`). It comes before the callsite
/// registry in the lock order: [`register`] holds it while it registers
/// an mpprof callsite.
fn lock_for_fork() {
    std::mem::forget(COLD.lock());
}

/// Releases the lock taken by [`lock_for_fork`], in the parent or the child.
fn unlock_after_fork() {
    // SAFETY: locked by `lock_for_fork` on this thread, which still owns it
    // (in the child it is the only thread).
    unsafe { COLD.force_unlock() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_finds_what_was_put_and_nothing_else() {
        let _cold = COLD.lock();
        // Addresses of real statics, so they cannot clash with metadata.
        static A: [u64; 64] = [0; 64];
        let keys: Vec<usize> = (0..64).map(|i| &A[i] as *const u64 as usize).collect();
        for (i, &k) in keys.iter().enumerate().take(32) {
            assert_eq!(table_get(k), None);
            table_put(k, 1000 + i as u32);
        }
        for (i, &k) in keys.iter().enumerate() {
            let want = (i < 32).then_some(1000 + i as u32);
            assert_eq!(table_get(k), want, "key {i}");
        }
    }

    #[test]
    fn slots_spread() {
        let used: HashSet<usize> = (0..1024).map(|i| slot_of(0x5555_0000 + i * 64)).collect();
        assert!(used.len() > 900, "{}", used.len());
    }
}
