//! Warnings about recording, on standard error.

/// Prints a warning about recording, prefixed so users know where it comes from.
pub(crate) fn warn(args: std::fmt::Arguments<'_>) {
    eprintln!("mpprof: warning: {args}");
}
