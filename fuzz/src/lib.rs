//! What the fuzz targets (`fuzz_targets/`) do with an input. The workspace
//! test `tests/fuzz_corpus.rs` replays the committed corpus the same way.
//!
//! The reader reads the input from memory (`read::from_bytes`), through
//! the same parser as a file on disk, and `Session::from_files` merges it.

use std::io;
use std::path::Path;

use mpprof_merge::{analysis, read, write, Session};

/// Most files a session input is split into.
pub const MAX_FILES: usize = 3;

/// Splits a session input into 1 to [`MAX_FILES`] files. The first byte
/// chooses the number of files (`b % 3 + 1`); then one little-endian `u32`
/// per split gives the length of each file but the last (clamped to what is
/// left); the rest is the last file. See [`join_session`].
pub fn split_session(data: &[u8]) -> Vec<&[u8]> {
    let Some((&first, mut rest)) = data.split_first() else {
        return vec![data];
    };
    let n = first as usize % MAX_FILES + 1;
    let mut lens = Vec::with_capacity(n - 1);
    for _ in 1..n {
        let mut b = [0u8; 4];
        let k = rest.len().min(4);
        b[..k].copy_from_slice(&rest[..k]);
        rest = &rest[k..];
        lens.push(u32::from_le_bytes(b) as usize);
    }
    let mut files = Vec::with_capacity(n);
    for len in lens {
        let (a, b) = rest.split_at(len.min(rest.len()));
        files.push(a);
        rest = b;
    }
    files.push(rest);
    files
}

/// The inverse of [`split_session`]: one input holding `files` (1 to 3).
pub fn join_session(files: &[&[u8]]) -> Vec<u8> {
    assert!((1..=MAX_FILES).contains(&files.len()));
    let mut v = vec![(files.len() - 1) as u8];
    for f in &files[..files.len() - 1] {
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
    }
    for f in files {
        v.extend_from_slice(f);
    }
    v
}

/// Everything a user can do with a session: iterate the events, and write
/// Chrome JSON, folded stacks (also capped at 2 frames), Perfetto, the
/// summary and the health report (into sinks). Returns the number of merged events.
pub fn exercise(s: &Session) -> u64 {
    let mut n = 0u64;
    let mut events = s.events();
    for e in events.by_ref() {
        std::hint::black_box(&e);
        n += 1;
    }
    std::hint::black_box(events.stats());
    let sink = &mut io::sink();
    write::chrome::write(s, sink).expect("writing into a sink cannot fail");
    write::folded::write(s, sink).expect("writing into a sink cannot fail");
    // A small stack cap, so the fold below it is exercised too.
    let fold = write::folded::Options {
        max_stack: 2,
        samples: false,
    };
    write::folded::write_with(s, sink, fold).expect("writing into a sink cannot fail");
    // The stack samples' folded stacks (and their symbolization).
    let fold = write::folded::Options {
        max_stack: 2,
        samples: true,
    };
    write::folded::write_with(s, sink, fold).expect("writing into a sink cannot fail");
    write::perfetto::write(s, sink).expect("writing into a sink cannot fail");
    write::summary::write(s, sink, 10).expect("writing into a sink cannot fail");
    let h = analysis::check::check(s);
    std::hint::black_box((h.damaged(), h.imperfect()));
    // `check` counts each process's events while it merges; the reader's
    // own pass over the records must agree.
    for (ph, p) in h.processes.iter().zip(&s.processes) {
        assert_eq!(ph.events, p.file.recorded_events(), "{}", ph.name);
    }
    write::check::write_text(&h, sink).expect("writing into a sink cannot fail");
    n
}

/// Target `read_file`: the input is one buffer file. Returns the number
/// of merged events when it opens.
pub fn read_file(data: &[u8]) -> Option<u64> {
    match read::from_bytes(Path::new("input.mpb"), data.to_vec()) {
        Ok(f) => {
            std::hint::black_box((f.committed_records(), f.display_name()));
            Some(exercise(&Session::from_files(vec![f])))
        }
        Err(e) => {
            // Errors name the file.
            let msg = e.to_string();
            assert!(
                msg.contains("input.mpb"),
                "error does not name the file: {msg}"
            );
            None
        }
    }
}

/// Target `session`: the input is 1 to 3 files of one session directory
/// (see [`split_session`]); those that open are merged, as
/// `Session::open` does, and those that do not are the session's
/// unreadable files. Returns the number of merged events, if any opened.
pub fn session(data: &[u8]) -> Option<u64> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for (i, f) in split_session(data).iter().enumerate() {
        let name = format!("{i}.mpb");
        match read::from_bytes(Path::new(&name), f.to_vec()) {
            Ok(f) => files.push(f),
            Err(e) => unreadable.push((name.into(), e.to_string())),
        }
    }
    if files.is_empty() {
        return None;
    }
    let mut s = Session::from_files(files);
    s.unreadable = unreadable;
    Some(exercise(&s))
}

/// Runs target `name` on `data`; `false` for an unknown target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "read_file" => read_file(data),
        "session" => session(data),
        _ => return false,
    };
    true
}

/// The targets.
pub const TARGETS: [&str; 2] = ["read_file", "session"];
