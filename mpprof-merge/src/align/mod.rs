//! Putting every process on one clock. Within one clock domain (same host
//! and time namespace) CLOCK_MONOTONIC is shared, so each process only
//! needs its own mapping from record timestamps to CLOCK_MONOTONIC, fitted
//! from its anchors ([`ClockMap`]). Across domains (hosts, time
//! namespaces), [`domains`] finds each domain's offset (and drift) from
//! the messages between them: a [`Correction`] per process.

mod clock;
pub mod domains;

pub use clock::{round_i64, ClockMap, FitMethod};

/// What aligning the clock domains does to one process's CLOCK_MONOTONIC
/// times: a rate correction (drift) around an origin, then an offset. The
/// default changes nothing (the reference domain, or a single domain).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Correction {
    /// Offset added to align the process's clock domain with the
    /// reference domain, ns.
    pub offset_ns: i64,
    /// Rate correction of the domain (ns per ns, added to 1), applied
    /// around `drift_origin_ns` before the offset; 0 when none.
    pub drift: f64,
    /// Local time the rate correction is taken around, ns.
    pub drift_origin_ns: i64,
}

impl Correction {
    /// The aligned time of a local CLOCK_MONOTONIC time, ns.
    #[inline]
    pub fn apply(&self, local_ns: i64) -> i64 {
        let rate = if self.drift == 0.0 {
            0
        } else {
            round_i64((local_ns as f64 - self.drift_origin_ns as f64) * self.drift)
        };
        local_ns.saturating_add(rate).saturating_add(self.offset_ns)
    }
}
