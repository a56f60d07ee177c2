//! Replays the committed fuzz corpus (`fuzz/corpus/`, seeds and every input
//! that once crashed the merge) in the normal test suite, so a regression
//! shows up without cargo-fuzz. See docs/FUZZING.md.

mod common;

use std::path::{Path, PathBuf};

use common::session_dir;
// The fuzz targets' own input handling (`split_session`, `exercise`), so
// the replay does exactly what the fuzzer does.
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_input;
use fuzz_input::{exercise, split_session};
use mpprof_merge::{read, Session};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{} is empty", dir.display());
    v
}

fn merge_file(bytes: &[u8]) -> Option<u64> {
    let dir = session_dir();
    let p = dir.path().join("input.mpb");
    std::fs::write(&p, bytes).unwrap();
    if let Err(e) = read::open(&p) {
        assert!(e.to_string().contains("input.mpb"), "{e}");
    }
    Session::open(&[&p]).ok().map(|s| exercise(&s))
}

#[test]
fn fuzz_corpus_read_file_inputs_merge_without_panic() {
    for f in corpus("read_file") {
        eprintln!("{}", f.display());
        merge_file(&std::fs::read(&f).unwrap());
    }
}

#[test]
fn fuzz_corpus_session_inputs_merge_without_panic() {
    for f in corpus("session") {
        eprintln!("{}", f.display());
        let data = std::fs::read(&f).unwrap();
        let dir = session_dir();
        for (i, part) in split_session(&data).iter().enumerate() {
            std::fs::write(dir.path().join(format!("{i}.mpb")), part).unwrap();
        }
        if let Ok(s) = Session::open(&[dir.path()]) {
            exercise(&s);
        }
    }
}

/// Found by fuzzing: chunk headers whose `lost_before`/`lost_after`/
/// `overwritten` counts add up past `u64::MAX` overflowed the sum of a
/// lane's losses (a panic in debug builds, a wrong count in release). The
/// sums saturate now.
#[test]
fn lane_loss_counts_near_u64_max_do_not_overflow() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/read_file/crash-lane-losses-overflow");
    let n = merge_file(&std::fs::read(p).unwrap()).expect("the file opens");
    assert!(n > 0);

    // The same, built by hand from the golden file: the event chunk (slot
    // 1 of 4 KiB chunks) says u64::MAX events were lost before it and after.
    let mut bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2.mpb")).unwrap();
    let s =
        Session::open(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2.mpb")]).unwrap();
    let chunk = s.processes[0].file.lanes.values().next().unwrap().chunks[0];
    let header = chunk.offset as usize - mpprof::format::CHUNK_HEADER_SIZE as usize;
    for field in [
        mpprof::format::chunk::LOST_BEFORE,
        mpprof::format::chunk::LOST_AFTER,
    ] {
        bytes[header + field..header + field + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    assert!(merge_file(&bytes).is_some());
}
