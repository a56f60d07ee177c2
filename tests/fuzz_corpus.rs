//! Replays the committed fuzz corpus (`fuzz/corpus/`, seeds and every input
//! that once crashed the merge) in the normal test suite, so a regression
//! shows up without cargo-fuzz. See docs/FUZZING.md.

mod common;

use std::path::{Path, PathBuf};

// The fuzz targets' own input handling (`split_session`, `exercise`), so
// the replay does exactly what the fuzzer does.
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_input;
use fuzz_input::{read_file, session};
use mpprof::format::{CHUNK_HEADER_SIZE, HEADER_SIZE};
use mpprof_merge::Session;

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

#[test]
fn fuzz_corpus_read_file_inputs_merge_without_panic() {
    for f in corpus("read_file") {
        eprintln!("{}", f.display());
        read_file(&std::fs::read(&f).unwrap());
    }
}

#[test]
fn fuzz_corpus_session_inputs_merge_without_panic() {
    for f in corpus("session") {
        eprintln!("{}", f.display());
        session(&std::fs::read(&f).unwrap());
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
    let n = read_file(&std::fs::read(p).unwrap()).expect("the file opens");
    assert!(n > 0);

    // The same, built by hand from the golden file: the event chunk (slot
    // 1 of 4 KiB chunks) says u64::MAX events were lost before it and after.
    let mut bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2.mpb")).unwrap();
    let s =
        Session::open(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2.mpb")]).unwrap();
    let chunk = s.processes[0].file.lanes.values().next().unwrap().chunks[0];
    let slot = (chunk.offset - HEADER_SIZE - u64::from(CHUNK_HEADER_SIZE)) / 4096;
    common::file::edit_chunk_header(&mut bytes, slot as usize, |h| {
        h.lost_before = u64::MAX;
        h.lost_after = u64::MAX;
    });
    assert!(read_file(&bytes).is_some());
}
