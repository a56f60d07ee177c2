//! One process's clock: the mapping from its record timestamps to its
//! CLOCK_MONOTONIC, fitted from its anchors.

use mpprof_format::{Anchor, ClockKind, ProcessInfo};

/// Maps a process's record timestamps to CLOCK_MONOTONIC nanoseconds:
/// `mono = mono0 + (ts - ts0) * ns_per_tick`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockMap {
    /// Reference timestamp.
    pub ts0: u64,
    /// CLOCK_MONOTONIC at `ts0`, ns.
    pub mono0: i64,
    /// Slope.
    pub ns_per_tick: f64,
    /// Largest distance of an anchor from the fitted line, ns.
    pub residual_ns: f64,
    /// How the slope was found.
    pub method: FitMethod,
}

/// How a [`ClockMap`]'s slope was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitMethod {
    /// Timestamps are CLOCK_MONOTONIC already.
    Identity,
    /// Least-squares fit of anchors spanning enough time.
    Fit,
    /// The writer's frequency estimate (anchors too few or too close).
    Estimate,
    /// Nothing to go by; assumed 1 ns per tick.
    Assumed,
}

/// Anchors must span at least this long (ns) for their slope to be trusted
/// over the writer's estimate.
const MIN_FIT_SPAN_NS: u64 = 20_000_000;

impl ClockMap {
    /// Fits the mapping from a process's anchors.
    pub fn fit(info: Option<&ProcessInfo>, anchors: &[Anchor]) -> ClockMap {
        let clock = info.map(|i| i.clock).unwrap_or(ClockKind::Tsc);
        if clock == ClockKind::Monotonic {
            return ClockMap {
                ts0: 0,
                mono0: 0,
                ns_per_tick: 1.0,
                residual_ns: 0.0,
                method: FitMethod::Identity,
            };
        }
        let Some(first) = anchors.first() else {
            let hz = info
                .map(|i| i.clock_hz)
                .filter(|h| h.is_finite() && *h > 0.0);
            return ClockMap {
                ts0: 0,
                mono0: 0,
                ns_per_tick: hz.map(|h| 1e9 / h).unwrap_or(1.0),
                residual_ns: f64::INFINITY,
                method: FitMethod::Assumed,
            };
        };
        let span = anchors.iter().map(|a| a.mono_ns).max().unwrap_or(0)
            - anchors.iter().map(|a| a.mono_ns).min().unwrap_or(0);
        let estimate = info
            .map(|i| i.clock_hz)
            .filter(|h| h.is_finite() && *h > 1e6)
            .map(|h| 1e9 / h);
        // Centre on the first anchor so f64 keeps precision.
        let xs: Vec<f64> = anchors
            .iter()
            .map(|a| a.ts.wrapping_sub(first.ts) as i64 as f64)
            .collect();
        let ys: Vec<f64> = anchors
            .iter()
            .map(|a| a.mono_ns.wrapping_sub(first.mono_ns) as i64 as f64)
            .collect();
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let (sxy, sxx) = xs.iter().zip(&ys).fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
            (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
        });
        let (slope, method) =
            if anchors.len() >= 2 && span >= MIN_FIT_SPAN_NS && sxx > 0.0 && sxy / sxx > 0.0 {
                (sxy / sxx, FitMethod::Fit)
            } else if let Some(e) = estimate {
                (e, FitMethod::Estimate)
            } else {
                (1.0, FitMethod::Assumed)
            };
        // Intercept through the mean (least squares), expressed at ts0 = first.ts.
        let intercept = my - slope * mx;
        let residual_ns = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (intercept + slope * x - y).abs())
            .fold(0.0, f64::max);
        ClockMap {
            ts0: first.ts,
            mono0: (first.mono_ns as i64).saturating_add(intercept.round() as i64),
            ns_per_tick: slope,
            residual_ns,
            method,
        }
    }

    /// CLOCK_MONOTONIC ns of a record timestamp.
    #[inline]
    pub fn to_ns(&self, ts: u64) -> i64 {
        let d = ts.wrapping_sub(self.ts0) as i64;
        self.mono0
            .saturating_add(round_i64(d as f64 * self.ns_per_tick))
    }
}

/// `x.round() as i64` (half away from zero, saturating) without the libm
/// call `round` is on x86_64 without SSE4.1: the merge converts every
/// timestamp with it. Exact: below 2^53 the fraction `x - trunc(x)` is
/// computed without error, and above it `x` has none.
#[inline]
pub fn round_i64(x: f64) -> i64 {
    let t = x as i64;
    let frac = x - t as f64;
    t.saturating_add(i64::from(frac >= 0.5) - i64::from(frac <= -0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ts: u64, mono: u64) -> Anchor {
        Anchor {
            ts,
            width: 10,
            mono_ns: mono,
            real_ns: mono + 1_000,
        }
    }

    #[test]
    fn round_i64_is_round() {
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.499_999_999_999_999_94,
            -0.499_999_999_999_999_94,
            4_503_599_627_370_495.5,
            9_007_199_254_740_993.0,
            1e300,
            -1e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            i64::MAX as f64,
            i64::MIN as f64,
        ];
        // A spread of magnitudes and fractions (an LCG: no dependency).
        let mut r = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            r = r.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let scale = 2f64.powi((r >> 58) as i32);
            xs.push((r as i64 as f64 / i64::MAX as f64) * scale * 1e3);
        }
        for x in xs {
            assert_eq!(round_i64(x), x.round() as i64, "{x:e}");
        }
    }

    #[test]
    fn fits_a_line_through_anchors() {
        // 3 GHz counter, offset 5 s.
        let anchors = [
            a(1_000_000, 5_000_000_000),
            a(1_000_000 + 300_000_000, 5_100_000_000),
            a(1_000_000 + 3_000_000_000, 6_000_000_000),
        ];
        let m = ClockMap::fit(None, &anchors);
        assert_eq!(m.method, FitMethod::Fit);
        assert!((m.ns_per_tick - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.to_ns(1_000_000 + 1_500_000_000), 5_500_000_000);
        assert!(m.residual_ns < 1.0);
    }

    #[test]
    fn close_anchors_fall_back_to_the_estimate() {
        let info = ProcessInfo {
            pid: 1,
            ppid: 0,
            uid: 1,
            parent_flow: None,
            exe: String::new(),
            argv: vec![],
            hostname: String::new(),
            host_id: String::new(),
            time_ns: 0,
            clock: ClockKind::Tsc,
            clock_hz: 2e9,
            policy: mpprof_format::Policy::KeepFirst,
        };
        let m = ClockMap::fit(Some(&info), &[a(100, 1000), a(120, 1011)]);
        assert_eq!(m.method, FitMethod::Estimate);
        assert_eq!(m.ns_per_tick, 0.5);
        assert!((m.to_ns(100 + 2_000) - 2000).abs() <= 1);
    }
}
