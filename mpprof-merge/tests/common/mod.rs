//! Shared by the CLI tests.

use std::path::PathBuf;
use std::process::Command;

/// The `mpprof-merge` binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mpprof-merge"))
}

/// A session directory holding the committed golden buffer file.
pub fn golden_session() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/v2.mpb");
    std::fs::copy(src, d.path().join("golden.mpb")).unwrap();
    d
}
