//! The reader treats every byte as untrusted: truncated, torn, corrupted and
//! foreign files give errors or warnings, never a panic, and everything
//! intact is still read.

mod common;

use std::path::Path;

use common::{child_role, self_command, session_dir};
use mpprof_merge::read::{self, ReadError};
use mpprof_merge::Session;

#[mpprof::instrument]
fn work(i: u64) -> u64 {
    std::hint::black_box(i + 1)
}

/// Records a small real session and returns the bytes of its one file.
fn recorded_file() -> Vec<u8> {
    let dir = session_dir();
    let st = self_command("corrupt_files_never_panic_the_reader", "record", dir.path())
        .env("MPPROF_CHUNK_KB", "4")
        .status()
        .unwrap();
    assert!(st.success());
    let files = read::list_session(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    std::fs::read(&files[0]).unwrap()
}

/// Opens and fully merges `bytes` as a one-file session; must not panic.
fn merge_bytes(dir: &Path, bytes: &[u8]) -> Result<u64, String> {
    let p = dir.join("x.mpb");
    std::fs::write(&p, bytes).unwrap();
    let s = Session::open(&[dir]).map_err(|e| e.to_string())?;
    let n = s.events().count() as u64;
    let mut sink = Vec::new();
    mpprof_merge::write::chrome::write(&s, &mut sink).unwrap();
    mpprof_merge::write::summary::write(&s, &mut sink, 10).unwrap();
    mpprof_merge::check::check(&s);
    Ok(n)
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn corrupt_files_never_panic_the_reader() {
    child_role("record", || {
        for i in 0..3000 {
            work(i);
        }
        mpprof::event!("done");
    });
    let good = recorded_file();
    let tmp = session_dir();
    let full = merge_bytes(tmp.path(), &good).unwrap();
    assert_eq!(full, 6001, "3000 calls (enter + exit) and 1 instant event");

    // Truncation anywhere: fewer events, never more, never a panic.
    let mut last = 0;
    for cut in (0..good.len()).step_by(509).chain([good.len() - 1]) {
        match merge_bytes(tmp.path(), &good[..cut]) {
            Ok(n) => {
                assert!(n <= full);
                last = n;
            }
            Err(e) => assert!(e.contains("x.mpb"), "the error names the file: {e}"),
        }
    }
    assert!(last > 0, "a file cut near its end keeps most events");

    // Random corruption: flip bytes anywhere, many times over.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.next() % 16 {
            let at = (rng.next() % bad.len() as u64) as usize;
            bad[at] = rng.next() as u8;
        }
        let _ = merge_bytes(tmp.path(), &bad);
    }
    // Corruption aimed at the header and chunk headers.
    for _ in 0..300 {
        let mut bad = good.clone();
        let chunk = 4096 * (rng.next() % (bad.len() as u64 / 4096)) as usize;
        let at = chunk + (rng.next() % 80) as usize;
        if at < bad.len() {
            bad[at] = rng.next() as u8;
        }
        let _ = merge_bytes(tmp.path(), &bad);
    }
}

#[test]
fn foreign_and_newer_files_get_clear_errors() {
    let tmp = session_dir();
    let p = tmp.path().join("a.mpb");
    std::fs::write(&p, b"hello, this is not a buffer file at all").unwrap();
    let e = read::open(&p).unwrap_err().to_string();
    assert!(e.contains("a.mpb") && e.contains("header"), "{e}");

    let mut h = vec![0u8; 4096];
    h[..8].copy_from_slice(&mpprof::format::MAGIC);
    std::fs::write(&p, &h).unwrap();
    let e = read::open(&p).unwrap_err().to_string();
    assert!(e.contains("version"), "{e}");

    h[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&p, &h).unwrap();
    match read::open(&p) {
        Err(e @ ReadError::NewerFormat { found: 99, .. }) => {
            assert!(
                e.to_string()
                    .contains("written by a newer mpprof (format 99)"),
                "{e}"
            )
        }
        other => panic!("expected a newer-format error, got {other:?}"),
    }

    // A directory without buffer files is an error that names it.
    let empty = session_dir();
    let e = Session::open(&[empty.path()]).unwrap_err().to_string();
    assert!(e.contains("no readable mpprof buffer files"), "{e}");
}
