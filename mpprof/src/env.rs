//! The environment variables that configure recording, read in one place.
//!
//! A value that is not one of the accepted ones gives one warning per
//! process naming the variable, the value and what is accepted, then the
//! default is used; an `MPPROF_*` variable that mpprof does not know (a
//! typo: `MPPROF_BUFER_MB`) gives one warning too. Choices ignore case
//! (`MPPROF=OFF` disables).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Every variable mpprof reads (`MPPROF_TEST_*` are for mpprof's own
/// tests and not checked).
const KNOWN: &[&str] = &[
    "MPPROF",
    "MPPROF_DIR",
    "MPPROF_BUFFER_MB",
    "MPPROF_CHUNK_KB",
    "MPPROF_OVERFLOW",
    "MPPROF_CLOCK",
    "MPPROF_PREPARE",
    "MPPROF_HOST_ID",
    "MPPROF_SAMPLE_MS",
    "MPPROF_SAMPLE_HZ",
    "MPPROF_OFF_CPU",
    "MPPROF_SAMPLE_STACK_KB",
    "MPPROF_SYSCALLS",
    // Set by `mpprof::spawn` for the child.
    "MPPROF_CLOCK_HZ",
    "MPPROF_PARENT_FLOW",
    "MPPROF_PARENT_PID",
];

/// The variables already warned about in this process.
static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Warns about `name` once per process.
fn warn_once(name: &str, args: std::fmt::Arguments<'_>) {
    if WARNED.lock().insert(name.to_owned()) {
        crate::warn::warn(args);
    }
}

/// The value of `name`, if set (a value that is not UTF-8 is warned about
/// and treated as unset).
pub(crate) fn raw(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => {
            warn_once(name, format_args!("{name}={v:?} is not UTF-8; ignoring it"));
            None
        }
    }
}

/// One of `accepted` (compared without case) for `name`, as written in
/// `accepted`; `default` when unset or (with a warning) not accepted.
pub(crate) fn choice(name: &str, accepted: &[&'static str], default: &'static str) -> &'static str {
    let Some(v) = raw(name) else {
        return default;
    };
    let t = v.trim();
    if let Some(a) = accepted.iter().find(|a| a.eq_ignore_ascii_case(t)) {
        return a;
    }
    warn_once(
        name,
        format_args!(
            "{name}={v:?} is not one of {}; using {default}",
            accepted.join(", ")
        ),
    );
    default
}

/// A whole number in `min..=max` for `name`; `default` when unset or (with
/// a warning) not such a number.
pub(crate) fn number(name: &str, default: u64, min: u64, max: u64) -> u64 {
    let Some(v) = raw(name) else {
        return default;
    };
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => n,
        _ => {
            warn_once(
                name,
                format_args!(
                    "{name}={v:?} is not a whole number in {min}..={max}; using {default}"
                ),
            );
            default
        }
    }
}

/// A value of type `T` for `name` (an internal variable, or a test knob);
/// `None` when unset or (with a warning) unreadable as `T`, described by
/// `what`.
pub(crate) fn parsed<T: std::str::FromStr>(name: &str, what: &str) -> Option<T> {
    let v = raw(name)?;
    match v.trim().parse() {
        Ok(x) => Some(x),
        Err(_) => {
            warn_once(
                name,
                format_args!("{name}={v:?} is not {what}; ignoring it"),
            );
            None
        }
    }
}

/// Whether `MPPROF` turns recording off: `off`, `0`, `false` or `no`, in
/// any case; `on`, `1`, `true`, `yes` or unset turn it on; anything else
/// is warned about and recording stays on.
pub(crate) fn disabled() -> bool {
    matches!(
        choice(
            "MPPROF",
            &["on", "off", "1", "0", "true", "false", "yes", "no"],
            "on"
        ),
        "off" | "0" | "false" | "no"
    )
}

/// Warns, once per process, about each `MPPROF_*` variable mpprof does not
/// know (a misspelt knob would otherwise be silently ignored).
pub(crate) fn check_unknown() {
    static DONE: AtomicBool = AtomicBool::new(false);
    // Relaxed: at worst two threads starting at once both check.
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if k.starts_with("MPPROF_") && !k.starts_with("MPPROF_TEST_") && !KNOWN.contains(&k) {
            warn_once(
                k,
                format_args!(
                    "{k} is not an mpprof setting (known: {}); ignoring it",
                    KNOWN[..8].join(", ")
                ),
            );
        }
    }
}
