//! Replays the committed fuzz corpus (`fuzz/corpus/`, seeds and every input
//! that once crashed the merge) in the normal test suite, so a regression
//! shows up without cargo-fuzz. See docs/FUZZING.md.

mod common;

use std::path::{Path, PathBuf};

use common::session_dir;
use mpprof_merge::{check, read, write, Session};

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

/// What the fuzz targets do with a session (`fuzz/src/lib.rs`, `exercise`).
fn exercise(s: &Session) -> u64 {
    let n = s.events().count() as u64;
    let sink = &mut std::io::sink();
    write::chrome::write(s, sink).unwrap();
    write::folded::write(s, sink).unwrap();
    write::summary::write(s, sink, 10).unwrap();
    check::write_text(&check::check(s), sink).unwrap();
    n
}

/// The `session` target's input format (`fuzz/src/lib.rs`, `split_session`):
/// first byte % 3 + 1 files, a little-endian u32 length per file but the
/// last, then the files.
fn split_session(data: &[u8]) -> Vec<&[u8]> {
    let Some((&first, mut rest)) = data.split_first() else {
        return vec![data];
    };
    let n = first as usize % 3 + 1;
    let mut lens = Vec::new();
    for _ in 1..n {
        let mut b = [0u8; 4];
        let k = rest.len().min(4);
        b[..k].copy_from_slice(&rest[..k]);
        rest = &rest[k..];
        lens.push(u32::from_le_bytes(b) as usize);
    }
    let mut files = Vec::new();
    for len in lens {
        let (a, b) = rest.split_at(len.min(rest.len()));
        files.push(a);
        rest = b;
    }
    files.push(rest);
    files
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
