//! Timestamps: the raw time-stamp counter where it is trustworthy, else
//! CLOCK_MONOTONIC. The process never converts ticks to time itself; it
//! writes [`Anchor`]s and the merge fits the mapping.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::format::{Anchor, ClockKind};

/// Whether [`now`] reads the TSC. Written once when recording starts,
/// before any record is written; read relaxed on the hot path (a stale read
/// cannot happen after the start because the start happens-before the
/// thread's first claim through the session lock).
static USE_TSC: AtomicBool = AtomicBool::new(false);

/// The current timestamp in the process clock.
#[inline(always)]
pub fn now() -> u64 {
    // Relaxed: see USE_TSC.
    now_with(USE_TSC.load(Ordering::Relaxed))
}

/// The current timestamp: the time-stamp counter when `tsc`, else
/// CLOCK_MONOTONIC ns. The hot path passes the clock choice it already has
/// in a register (the low bit of the recording epoch) instead of loading it.
#[inline(always)]
pub fn now_with(tsc: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if tsc {
            // SAFETY: rdtsc has no preconditions on x86_64.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if tsc {
            let v: u64;
            // SAFETY: cntvct_el0 is readable from EL0 on Linux (the kernel
            // enables user access to the virtual counter).
            unsafe { core::arch::asm!("mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
            return v;
        }
    }
    let _ = tsc;
    monotonic_ns()
}

/// The hardware counter (the process clock when [`select`] chose
/// [`ClockKind::Tsc`]) as its low and high 32 bits. On x86_64 `rdtsc`
/// delivers the two halves in two registers; taking them apart here spares
/// the hot path joining them into a `u64` and splitting it again (it stores
/// the low half and compares the high half, see `format::word`). On targets
/// without a counter mpprof uses, CLOCK_MONOTONIC.
#[inline(always)]
pub fn counter_parts() -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        let (lo, hi): (u32, u32);
        // SAFETY: rdtsc has no preconditions on x86_64; it reads no memory
        // and leaves the flags alone. Not `pure`: like the `_rdtsc`
        // intrinsic it has a side effect, so it is not merged, removed or
        // moved across other side effects.
        unsafe {
            core::arch::asm!(
                "rdtsc",
                out("eax") lo,
                out("edx") hi,
                options(nomem, nostack, preserves_flags)
            )
        };
        (lo, hi)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let t = now_with(true);
        (t as u32, (t >> 32) as u32)
    }
}

/// CLOCK_MONOTONIC in nanoseconds (through the vDSO).
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds since the epoch.
#[inline]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Decides the clock source (`MPPROF_CLOCK=tsc|monotonic` overrides) and
/// makes [`now`] use it.
pub fn select() -> ClockKind {
    let kind = match crate::env::choice("MPPROF_CLOCK", &["auto", "tsc", "monotonic"], "auto") {
        "monotonic" => ClockKind::Monotonic,
        "tsc" if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) => ClockKind::Tsc,
        _ => {
            if tsc_is_reliable() {
                ClockKind::Tsc
            } else {
                ClockKind::Monotonic
            }
        }
    };
    USE_TSC.store(kind == ClockKind::Tsc, Ordering::Relaxed);
    kind
}

/// The clock source in use.
pub fn current() -> ClockKind {
    if USE_TSC.load(Ordering::Relaxed) {
        ClockKind::Tsc
    } else {
        ClockKind::Monotonic
    }
}

/// x86_64: the TSC is invariant (CPUID 0x8000_0007 EDX bit 8) or the kernel
/// itself uses it as its clocksource (which it only does after checking it is
/// stable and synchronised; VMs often hide the CPUID bit). aarch64: the
/// generic timer is always constant-rate and synchronised.
fn tsc_is_reliable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: cpuid is available on every x86_64 CPU (the intrinsic is
        // safe on newer compilers, hence the allow).
        #[allow(unused_unsafe)]
        let max_ext = unsafe { core::arch::x86_64::__cpuid(0x8000_0000) }.eax;
        if max_ext >= 0x8000_0007 {
            // SAFETY: leaf checked above.
            #[allow(unused_unsafe)]
            let edx = unsafe { core::arch::x86_64::__cpuid(0x8000_0007) }.edx;
            if edx & (1 << 8) != 0 {
                return true;
            }
        }
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim() == "tsc")
            .unwrap_or(false)
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Takes an anchor: process clock, CLOCK_MONOTONIC, CLOCK_REALTIME. Retries
/// a few times and keeps the narrowest bracket, so a preemption between the
/// readings does not widen it.
pub fn anchor() -> Anchor {
    let mut best: Option<Anchor> = None;
    for _ in 0..4 {
        let t0 = now();
        let mono = monotonic_ns();
        let real = realtime_ns();
        let t1 = now();
        let width = t1.saturating_sub(t0);
        let a = Anchor {
            ts: t0 + width / 2,
            width: width.min(u32::MAX as u64) as u32,
            mono_ns: drifted(mono),
            real_ns: real.wrapping_add_signed(realtime_skew()),
        };
        if best.is_none_or(|b| a.width < b.width) {
            best = Some(a);
        }
    }
    best.expect("four iterations ran")
}

/// `MPPROF_TEST_REALTIME_SKEW_NS`: pretend this host's wall clock is off by
/// that many ns (tests of the cross-host alignment use it to make REALTIME
/// a wrong first guess, as it is between real hosts).
fn realtime_skew() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        crate::env::parsed("MPPROF_TEST_REALTIME_SKEW_NS", "a whole number of ns").unwrap_or(0)
    })
}

/// `MPPROF_TEST_MONO_DRIFT_PPM`: pretend this host's CLOCK_MONOTONIC runs
/// fast (or slow) by that many parts per million from the first anchor on
/// (tests of the drift estimation use it; real hosts drift by tens of ppm).
fn drifted(mono: u64) -> u64 {
    static DRIFT: std::sync::OnceLock<Option<(f64, u64)>> = std::sync::OnceLock::new();
    let d = DRIFT.get_or_init(|| {
        let ppm: f64 = crate::env::parsed("MPPROF_TEST_MONO_DRIFT_PPM", "a number of ppm")?;
        Some((ppm * 1e-6, mono))
    });
    match *d {
        Some((rate, base)) => base + (mono.saturating_sub(base) as f64 * (1.0 + rate)) as u64,
        None => mono,
    }
}

/// Estimates the process clock frequency in ticks per second. Inherited from
/// the parent through `MPPROF_CLOCK_HZ` when it is there (same machine, same
/// counter), else measured against CLOCK_MONOTONIC over `window_ms`. The
/// merge prefers a fit of the anchors; this is the fallback for a process
/// that died before writing a second anchor.
pub fn estimate_hz(window_ms: u64) -> f64 {
    if current() == ClockKind::Monotonic {
        return 1e9;
    }
    if let Some(hz) = crate::env::parsed::<f64>("MPPROF_CLOCK_HZ", "a frequency in Hz") {
        if hz.is_finite() && hz > 1e6 {
            return hz;
        }
    }
    let a = anchor();
    let deadline = a.mono_ns + window_ms * 1_000_000;
    while monotonic_ns() < deadline {
        std::hint::spin_loop();
    }
    let b = anchor();
    let dt = b.mono_ns.saturating_sub(a.mono_ns).max(1) as f64;
    (b.ts.wrapping_sub(a.ts)) as f64 * 1e9 / dt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_anchors_are_narrow() {
        select();
        let a = now();
        let b = now();
        assert!(b >= a);
        let an = anchor();
        assert!(an.mono_ns > 0 && an.real_ns > 1_500_000_000_000_000_000);
        let hz = estimate_hz(2);
        assert!(hz > 1e6, "clock rate {hz}");
    }
}
