//! Aligning clock domains (hosts, time namespaces) with one another.
//!
//! Every process's timestamps are first mapped to its own CLOCK_MONOTONIC.
//! Processes of one domain share that clock. Each other domain `d` gets an
//! offset `o_d` so that `mono_ref = mono_d + o_d`:
//!
//! 1. a first estimate from the REALTIME anchors (`real - mono` of the
//!    domain minus that of the reference domain);
//! 2. every flow from domain `a` (sent at `s`) to domain `b` (received at
//!    `r`) must arrive at least `min_latency` after it left:
//!    `o_a - o_b <= r - s - min_latency`. These difference constraints form
//!    a graph whose shortest paths bound each offset relative to the
//!    reference from above and below (the LP view of the convex-hull
//!    method, with a constant offset per domain);
//! 3. a domain with messages both ways gets the middle of its interval
//!    (±half its width is the uncertainty); one with messages one way only
//!    gets the REALTIME estimate moved just inside its one bound and is
//!    labelled one-sided; one with no messages keeps the REALTIME estimate
//!    and is labelled so. Domains are fixed one at a time, re-tightening the
//!    others' bounds, so the choices stay consistent with each other.

use std::collections::HashMap;

use mpprof_format::kind;
use mpprof_format::FlowId;

use super::{round_i64, ClockMap, Correction};
use crate::read::{ProcessFile, RecordReader};

/// How well a domain's offset is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    /// The reference domain (offset 0).
    Reference,
    /// Messages both ways: offset inside a closed interval.
    TwoSided,
    /// Messages one way only: a bound on one side, REALTIME on the other.
    OneSided,
    /// No messages to other domains: placed by its REALTIME anchors.
    RealtimeOnly,
    /// The messages contradict each other (clock drift, or a minimum
    /// latency that is too large): REALTIME placement, violations remain.
    Inconsistent,
}

impl Quality {
    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Quality::Reference => "reference",
            Quality::TwoSided => "two-sided (messages both ways)",
            Quality::OneSided => "one-sided (messages one way only: a bound, not a precise value)",
            Quality::RealtimeOnly => {
                "placed by REALTIME anchors only (no messages to other domains)"
            }
            Quality::Inconsistent => "inconsistent messages: placed by REALTIME, violations remain",
        }
    }
}

/// One clock domain's result.
#[derive(Clone, Debug)]
pub struct DomainReport {
    /// `host_id/time:<namespace>`.
    pub domain: String,
    /// Processes in it.
    pub processes: usize,
    /// Chosen offset to the reference domain, ns.
    pub offset_ns: i64,
    /// The REALTIME anchors' estimate, ns.
    pub realtime_offset_ns: i64,
    /// Lower bound from the messages, ns.
    pub lower_ns: Option<i64>,
    /// Upper bound from the messages, ns.
    pub upper_ns: Option<i64>,
    /// Messages between this domain and others.
    pub messages: u64,
    /// How well the offset is known.
    pub quality: Quality,
    /// Rate correction, parts per million: the domain's clock gains
    /// this much on the reference's (0 when not estimated).
    pub drift_ppm: f64,
}

/// The alignment of a session.
#[derive(Clone, Debug, Default)]
pub struct Alignment {
    /// Per domain; the first is the reference.
    pub domains: Vec<DomainReport>,
    /// Flows whose ends are in different domains.
    pub cross_flows: u64,
    /// Cross-domain flows received before sent with REALTIME placement.
    pub violations_before: u64,
    /// ... and after alignment.
    pub violations_after: u64,
    /// Minimum one-way latency assumed, ns.
    pub min_latency_ns: i64,
}

fn domain_key(f: &ProcessFile) -> String {
    match &f.info {
        Some(i) => format!("{}/time:{}", i.host_id, i.time_ns),
        None => format!("unknown:{}", f.path.display()),
    }
}

/// REALTIME minus CLOCK_MONOTONIC of a process (median over anchors).
fn realtime_minus_mono(f: &ProcessFile) -> Option<i64> {
    let mut v: Vec<i64> = f
        .anchors
        .iter()
        .map(|a| (a.real_ns as i64).saturating_sub(a.mono_ns as i64))
        .collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Local (own CLOCK_MONOTONIC) times of every flow end of a process.
fn flow_ends(
    (file, clock): (&ProcessFile, &ClockMap),
    outs: &mut HashMap<FlowId, (usize, i64)>,
    ins: &mut Vec<(FlowId, usize, i64)>,
    d: usize,
) {
    for l in file.lanes.values() {
        for c in &l.chunks {
            let mut r = RecordReader::new(*c);
            while let Some(e) = r.next_event(&file.file) {
                let Some(pl) = e.payload else { continue };
                let f = FlowId::from_payload(pl);
                match e.kind {
                    kind::FLOW_OUT => {
                        outs.insert(f, (d, clock.to_ns(e.ts)));
                    }
                    kind::FLOW_IN => ins.push((f, d, clock.to_ns(e.ts))),
                    _ => {}
                }
            }
        }
    }
}

/// All-pairs shortest paths (Floyd–Warshall) over the constraint graph;
/// `None` on a negative cycle (contradictory constraints).
fn shortest(w: &[Vec<Option<i64>>]) -> Option<Vec<Vec<Option<i64>>>> {
    let n = w.len();
    let mut d = w.to_vec();
    for (i, row) in d.iter_mut().enumerate() {
        row[i] = Some(row[i].map_or(0, |x| x.min(0)));
    }
    for k in 0..n {
        let row_k = d[k].clone();
        for row in d.iter_mut() {
            let Some(ik) = row[k] else { continue };
            for (cell, kj) in row.iter_mut().zip(&row_k) {
                if let Some(kj) = kj {
                    let via = ik.saturating_add(*kj);
                    if cell.is_none_or(|x| via < x) {
                        *cell = Some(via);
                    }
                }
            }
        }
    }
    (0..n).all(|i| d[i][i].is_none_or(|x| x >= 0)).then_some(d)
}

/// Runs shorter than this (ns) keep a constant offset unless no
/// constant offset fits their messages.
const DRIFT_MIN_SPAN_NS: i64 = 1_000_000_000;

/// The rate at which domain `d`'s clock drifts from the reference's,
/// from messages both ways between them: each message from `d` bounds
/// the offset from above at its send time, each message to `d` from
/// below at its receive time. The rate is the slope of the line that
/// passes between the two point sets with the widest margin (a concave
/// function of the slope, maximised by ternary search over ±1000 ppm).
/// `None` when the messages do not go both ways, or when the run is
/// short and a constant offset fits, or when no slope fits better than
/// none.
fn estimate_drift(pairs: &[(usize, i64, usize, i64)], d: usize, lat: i64) -> Option<(f64, i64)> {
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    // Saturating: the times come from untrusted files (found by
    // fuzzing: `fuzz/corpus/session/crash-drift-overflow`).
    for &(a, s, b, r) in pairs {
        if a == d && b == 0 {
            upper.push((s, r.saturating_sub(s).saturating_sub(lat)));
        } else if a == 0 && b == d {
            lower.push((r, s.saturating_sub(r).saturating_add(lat)));
        }
    }
    if upper.is_empty() || lower.is_empty() {
        return None;
    }
    let x0 = upper.iter().chain(&lower).map(|p| p.0).min()?;
    let x1 = upper.iter().chain(&lower).map(|p| p.0).max()?;
    let width = |rate: f64| {
        let at = |&(x, v): &(i64, i64)| v as f64 - rate * (x as f64 - x0 as f64);
        let hi = upper.iter().map(at).fold(f64::INFINITY, f64::min);
        let lo = lower.iter().map(at).fold(f64::NEG_INFINITY, f64::max);
        hi - lo
    };
    let constant = width(0.0);
    if constant >= 0.0 && x1.saturating_sub(x0) < DRIFT_MIN_SPAN_NS {
        return None;
    }
    let (mut lo, mut hi) = (-1e-3, 1e-3);
    for _ in 0..200 {
        let (m1, m2) = (lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0);
        if width(m1) < width(m2) {
            lo = m1;
        } else {
            hi = m2;
        }
    }
    let rate = (lo + hi) / 2.0;
    // The offset o(x) = a + rate (x - x0) maps d's time to the
    // reference; correcting d's times by the rate leaves a constant.
    (width(rate) > constant).then_some((rate, x0))
}

/// Aligns the clock domains of the processes (each its file and its own
/// clock mapping): returns how, and the correction of each process's
/// CLOCK_MONOTONIC times, in the order given.
pub fn align(
    ps: &[(&ProcessFile, &ClockMap)],
    min_latency_ns: i64,
) -> (Alignment, Vec<Correction>) {
    let mut keys: Vec<String> = Vec::new();
    let mut dom_of = Vec::with_capacity(ps.len());
    // The reference is the domain of the first process that was not
    // started by another (the root), else of the first process.
    let root = ps
        .iter()
        .position(|p| p.0.info.as_ref().is_some_and(|i| i.parent_flow.is_none()))
        .unwrap_or(0);
    if let Some(p) = ps.get(root) {
        keys.push(domain_key(p.0));
    }
    for p in ps.iter() {
        let k = domain_key(p.0);
        let d = keys.iter().position(|x| *x == k).unwrap_or_else(|| {
            keys.push(k);
            keys.len() - 1
        });
        dom_of.push(d);
    }
    let n = keys.len();
    if n <= 1 {
        let alignment = Alignment {
            domains: keys
                .into_iter()
                .map(|domain| DomainReport {
                    domain,
                    processes: ps.len(),
                    offset_ns: 0,
                    realtime_offset_ns: 0,
                    lower_ns: Some(0),
                    upper_ns: Some(0),
                    messages: 0,
                    quality: Quality::Reference,
                    drift_ppm: 0.0,
                })
                .collect(),
            min_latency_ns,
            ..Default::default()
        };
        return (alignment, vec![Correction::default(); ps.len()]);
    }
    // REALTIME estimates.
    let mut rt: Vec<Vec<i64>> = vec![Vec::new(); n];
    for (p, &d) in ps.iter().zip(&dom_of) {
        if let Some(v) = realtime_minus_mono(p.0) {
            rt[d].push(v);
        }
    }
    let rt: Vec<Option<i64>> = rt
        .into_iter()
        .map(|mut v| {
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        })
        .collect();
    let rt_est: Vec<i64> = (0..n)
        .map(|d| match (rt[d], rt[0]) {
            (Some(a), Some(b)) => a.saturating_sub(b),
            _ => 0,
        })
        .collect();
    // Cross-domain flows.
    let mut outs = HashMap::new();
    let mut ins = Vec::new();
    for (p, &d) in ps.iter().zip(&dom_of) {
        flow_ends(*p, &mut outs, &mut ins, d);
    }
    let mut pairs: Vec<(usize, i64, usize, i64)> = Vec::new(); // (send dom, s, recv dom, r)
    for (f, b, r) in &ins {
        if let Some(&(a, s)) = outs.get(f) {
            if a != *b {
                pairs.push((a, s, *b, *r));
            }
        }
    }
    let mut messages = vec![0u64; n];
    for &(a, _, b, _) in &pairs {
        messages[a] += 1;
        messages[b] += 1;
    }
    let violations_in = |pairs: &[(usize, i64, usize, i64)], o: &[i64]| {
        pairs
            .iter()
            .filter(|&&(a, s, b, r)| {
                i128::from(r) + i128::from(o[b]) < i128::from(s) + i128::from(o[a])
            })
            .count() as u64
    };
    let before = violations_in(&pairs, &rt_est);
    // Drift first: a domain that exchanges messages both ways with the
    // reference gets a rate correction when no constant offset fits its
    // messages or the run is long enough for the rate to matter; its
    // times are corrected before the constant offsets are solved.
    let drift: Vec<Option<(f64, i64)>> = (0..n)
        .map(|d| {
            if d == 0 {
                None
            } else {
                estimate_drift(&pairs, d, min_latency_ns)
            }
        })
        .collect();
    let correct = |d: usize, t: i64| match drift[d] {
        Some((rate, x0)) => t.saturating_add(round_i64((t as f64 - x0 as f64) * rate)),
        None => t,
    };
    let pairs: Vec<(usize, i64, usize, i64)> = pairs
        .iter()
        .map(|&(a, s, b, r)| (a, correct(a, s), b, correct(b, r)))
        .collect();
    let violations = |o: &[i64]| violations_in(&pairs, o);
    // Constraint graph: x_a - x_b <= r - s - L is an edge b -> a.
    let build = |lat: i64| {
        let mut w: Vec<Vec<Option<i64>>> = vec![vec![None; n]; n];
        for &(a, s, b, r) in &pairs {
            let c = r.saturating_sub(s).saturating_sub(lat);
            let e = &mut w[b][a];
            *e = Some(e.map_or(c, |x: i64| x.min(c)));
        }
        w
    };
    let mut lat = min_latency_ns;
    let mut w = build(lat);
    let mut consistent = shortest(&w).is_some();
    if !consistent && lat > 0 {
        lat = 0;
        w = build(lat);
        consistent = shortest(&w).is_some();
    }
    let mut offsets = rt_est.clone();
    offsets[0] = 0;
    let mut reports = vec![DomainReport {
        domain: keys[0].clone(),
        processes: dom_of.iter().filter(|&&d| d == 0).count(),
        offset_ns: 0,
        realtime_offset_ns: 0,
        lower_ns: Some(0),
        upper_ns: Some(0),
        messages: messages[0],
        quality: Quality::Reference,
        drift_ppm: 0.0,
    }];
    for d in 1..n {
        let (mut lower, mut upper, mut quality) = (None, None, Quality::Inconsistent);
        let mut v = rt_est[d];
        if consistent {
            if let Some(sp) = shortest(&w) {
                // x_d - x_0 <= dist(0 -> d);  x_0 - x_d <= dist(d -> 0).
                upper = sp[0][d];
                lower = sp[d][0].map(i64::saturating_neg);
                (v, quality) = match (lower, upper) {
                    (Some(lo), Some(hi)) => (
                        lo.saturating_add(hi.saturating_sub(lo) / 2),
                        Quality::TwoSided,
                    ),
                    (Some(lo), None) => (v.max(lo), Quality::OneSided),
                    (None, Some(hi)) => (v.min(hi), Quality::OneSided),
                    (None, None) => (v, Quality::RealtimeOnly),
                };
            }
            // Fix x_d = x_0 + v for the domains still to come.
            w[0][d] = Some(w[0][d].map_or(v, |x| x.min(v)));
            w[d][0] = Some(w[d][0].map_or(v.saturating_neg(), |x| x.min(v.saturating_neg())));
        }
        offsets[d] = v;
        reports.push(DomainReport {
            domain: keys[d].clone(),
            processes: dom_of.iter().filter(|&&x| x == d).count(),
            offset_ns: v,
            realtime_offset_ns: rt_est[d],
            lower_ns: lower,
            upper_ns: upper,
            messages: messages[d],
            quality,
            drift_ppm: drift[d].map_or(0.0, |(rate, _)| rate * 1e6),
        });
    }
    let corrections = dom_of
        .iter()
        .map(|&d| {
            let (drift, drift_origin_ns) = drift[d].unwrap_or((0.0, 0));
            Correction {
                offset_ns: offsets[d],
                drift,
                drift_origin_ns,
            }
        })
        .collect();
    let alignment = Alignment {
        domains: reports,
        cross_flows: pairs.len() as u64,
        violations_before: before,
        violations_after: violations(&offsets),
        min_latency_ns: lat,
    };
    (alignment, corrections)
}
