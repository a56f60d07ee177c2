//! The session directory: a fresh one for `init()` without `MPPROF_DIR`,
//! and the checks a given one must pass.

use std::io;
use std::path::{Path, PathBuf};

use crate::clock;

/// Makes `./mpprof-out/<utc time>-<pid>` (mode 0700).
pub(super) fn fresh_session_dir() -> Result<PathBuf, (PathBuf, io::Error)> {
    use std::os::unix::fs::DirBuilderExt;
    let root = PathBuf::from("mpprof-out");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&root)
        .map_err(|e| (root.clone(), e))?;
    let secs = clock::realtime_ns() / 1_000_000_000;
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    let name = format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{}",
        std::process::id()
    );
    // A second session of this process in the same second gets a suffix.
    let mut dir = root.join(&name);
    let mut n = 1;
    loop {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => {
                n += 1;
                dir = root.join(format!("{name}.{n}"));
            }
            Err(e) => return Err((dir, e)),
        }
    }
    Ok(dir)
}

/// UTC calendar fields of a Unix time (Howard Hinnant's days-from-civil,
/// inverted).
fn civil_from_unix(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y as u64,
        m as u64,
        d as u64,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    )
}

/// For `init()`: makes a missing `dir` (the leaf mode 0700, its parents as
/// `mkdir -p` does), as `perf record -o` and `lttng --output` make their
/// output place; then checks it as [`check_dir`] does, whoever made it.
/// Children never make it: they use `check_dir` alone.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Made meanwhile (another process of the session): checked below.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    check_dir(dir)
}

/// A session directory given by `MPPROF_DIR` must be a real directory (not
/// a symlink) owned by us and not writable by others.
pub(super) fn check_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(dir)?;
    if md.file_type().is_symlink() {
        return Err(io::Error::other("it is a symbolic link"));
    }
    if !md.is_dir() {
        return Err(io::Error::other("it is not a directory"));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if md.uid() != euid {
        return Err(io::Error::other(format!(
            "it belongs to uid {}, not to us (uid {euid})",
            md.uid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "it is writable by others (mode {:o})",
            md.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
