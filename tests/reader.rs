//! The reader treats every byte as untrusted: truncated, torn, corrupted and
//! foreign files give errors or warnings, never a panic, and everything
//! intact is still read.

mod common;

use std::path::Path;

use common::{child_role, file, self_command, session_dir};
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
    // Events but counters: a cut through the metadata may lose the entry
    // that declares the resource sampler's counters, which then show as
    // plain counters.
    let n = s
        .events()
        .filter(|e| !matches!(e.kind, mpprof_merge::EventKind::Counter { .. }))
        .count() as u64;
    let mut sink = Vec::new();
    mpprof_merge::write::chrome::write(&s, &mut sink).unwrap();
    mpprof_merge::write::summary::write(&s, &mut sink, 10).unwrap();
    mpprof_merge::analysis::check::check(&s);
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

/// A one-event-chunk file made by hand: slot 0 holds an event chunk with
/// header `(lane, seq)` (no chunk magic if `lane` is 0) and `words`
/// committed, followed by `leftover` words past the count; slot 1 holds
/// the metadata log `meta`.
fn handmade(
    (lane, seq): (u32, u32),
    words: &[u64],
    leftover: &[u64],
    meta: &[mpprof::format::Meta],
    finished: bool,
) -> Vec<u8> {
    let mut h = file::event_header(lane, seq);
    if lane == 0 {
        h.magic = 0;
    }
    let mut b = file::FileBuilder::new(mpprof::format::MIN_CHUNK_SIZE, 4);
    b.header.policy = mpprof::format::Policy::KeepLast as u32;
    b.finished(finished)
        .event_chunk(h, words, leftover)
        .meta_chunk(0, meta);
    b.build()
}

/// The callsite (id 1, an instant named "tick") of the hand-made files.
fn tick_site() -> mpprof::format::Meta {
    mpprof::format::Meta::Callsite {
        id: 1,
        kind: mpprof::format::SiteKind::Event,
        name: "tick".into(),
        path: "t::tick".into(),
        file: "t.rs".into(),
        line: 1,
    }
}

/// `Meta::Reused` retires the hand-offs of the slot's old content, and
/// counts what it overwrote against the lanes that wrote it, but only once
/// the chunk header shows that the reuse happened: a writer killed between
/// the entry and the header leaves the old content, which still reads as
/// it was written.
#[test]
fn reused_chunks_drop_their_old_hand_offs_once_the_header_shows_the_reuse() {
    use mpprof::format::{kind, word, Handoff, Meta, Reused};
    let base = |ts: u64| [word::site_kind(0, kind::BASE), ts];
    let instant = |ts: u64| word::new(ts, word::site_kind(1, kind::INSTANT));
    let mut meta = vec![tick_site()];
    for lane in 1..=5 {
        meta.push(Meta::Thread {
            lane,
            tid: 100 + lane,
            name: format!("t{lane}"),
        });
    }
    let handoff = |start, lane| {
        Meta::Handoff(Handoff {
            slot: 0,
            start,
            lane,
            tid: 100 + lane,
            seq: 0,
            lost_before: 0,
        })
    };
    let reused = |lane, seq, ow: Vec<(u32, u64)>| {
        Meta::Reused(Reused {
            slot: 0,
            lane,
            seq,
            ts: 1000,
            prev_lane: 1,
            prev_overwritten: 0,
            overwritten: ow,
        })
    };
    // Old content: lane 1 wrote words 0..3 (a base and one event), lane 2
    // continued at word 3 (a base and two events). Then lane 3 took the
    // chunk over.
    // Lane 2 lost 6 events before it continued the chunk.
    let mut h = handoff(3, 2);
    if let Meta::Handoff(x) = &mut h {
        x.lost_before = 6;
    }
    meta.push(h);
    meta.push(reused(3, 0, vec![(1, 1), (2, 2)]));
    let old: Vec<u64> = [
        base(10).as_slice(),
        &[instant(11)],
        &base(20),
        &[instant(21), instant(22)],
    ]
    .concat();
    let new: Vec<u64> = [base(30).as_slice(), &[instant(31)]].concat();
    let events = |f: &read::ProcessFile, lane: u32| -> Vec<u64> {
        let mut v = Vec::new();
        for c in f.lanes.get(&lane).map_or(&[][..], |l| &l.chunks) {
            let mut r = read::RecordReader::new(*c);
            while let Some(e) = r.next_event(&f.file) {
                v.push(e.ts);
            }
        }
        v
    };
    let tmp = session_dir();
    let open = |bytes: Vec<u8>| {
        let p = tmp.path().join("x.mpb");
        std::fs::write(&p, bytes).unwrap();
        read::open(&p).unwrap()
    };

    // The reuse happened: lane 3's header. Everything in the chunk is lane
    // 3's, lanes 1 and 2 lost theirs, and the old word past the count is a
    // leftover, not a torn write, even in an unfinished file.
    let f = open(handmade((3, 0), &new, &old[3..], &meta, false));
    assert!(
        f.warnings
            .iter()
            .all(|w| w.contains("no process information")),
        "{:?}",
        f.warnings
    );
    assert_eq!(events(&f, 3), [31]);
    assert_eq!((events(&f, 1), events(&f, 2)), (vec![], vec![]));
    let ow = |f: &read::ProcessFile, lane| f.lanes.get(&lane).map_or(0, |l| l.overwritten);
    assert_eq!((ow(&f, 1), ow(&f, 2), ow(&f, 3)), (1, 2, 0));
    assert_eq!(f.lanes[&2].overwritten_until, Some(1000));
    assert!(f.reuses[0].effective);
    assert_eq!(f.torn_records, 0);
    // The retired hand-off's losses stay lane 2's, counted once.
    let lost_before = |f: &read::ProcessFile, lane| {
        f.lanes[&lane]
            .chunks
            .iter()
            .map(|c| c.lost_before)
            .sum::<u64>()
    };
    assert_eq!((f.lanes[&2].lost_noted, lost_before(&f, 2)), (6, 0));
    assert_eq!(f.lanes[&2].lost_noted_until, Some(1000));

    // Killed between the entry and the header: the old content stands,
    // split at its hand-off, and nothing counts as overwritten.
    let f = open(handmade((1, 0), &old, &[], &meta, false));
    assert_eq!(
        (events(&f, 1), events(&f, 2), events(&f, 3)),
        (vec![11], vec![21, 22], vec![])
    );
    assert_eq!((ow(&f, 1), ow(&f, 2)), (0, 0));
    assert!(!f.reuses[0].effective);
    assert_eq!((f.lanes[&2].lost_noted, lost_before(&f, 2)), (0, 6));

    // Killed while the header was rewritten (no magic): the chunk is
    // skipped, and the entry did not take effect.
    let f = open(handmade((0, 0), &old, &[], &meta, false));
    assert!(!f.reuses[0].effective);
    assert_eq!(f.lanes.values().map(|l| l.chunks.len()).sum::<usize>(), 0);

    // A later life of the slot: lane 3 reused it as its own (seq 2), left
    // it to lane 4 at exit (a hand-off after the reuse, which counts), and
    // lane 5 was killed taking it over. Lane 3's reuse took effect, lane
    // 5's did not.
    meta.push(handoff(2, 4));
    meta.push(reused(5, 0, vec![(3, 0), (4, 1)]));
    let later: Vec<u64> = [base(40).as_slice(), &base(50), &[instant(51)]].concat();
    let f = open(handmade((3, 2), &later, &[], &meta, true));
    assert_eq!(
        (events(&f, 3), events(&f, 4), events(&f, 5)),
        (vec![], vec![51], vec![])
    );
    assert_eq!(
        f.reuses.iter().map(|r| r.effective).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!((ow(&f, 1), ow(&f, 2), ow(&f, 4)), (1, 2, 0));
}

/// `Meta::Lost` gives a thread's losses to its lane (several entries add
/// up), names a lane whose `Thread` entry is missing, and the merge shows
/// them there, not on the process's first lane. An entry naming lane 0 or
/// of a kind this reader does not know is a warning, never a panic.
#[test]
fn lost_entries_give_losses_to_their_lanes() {
    use mpprof::format::{kind, word, Meta};
    use mpprof_merge::EventKind;
    let lost = |lane, name: &str, ts, events| {
        Meta::Lost(mpprof::format::Lost {
            lane,
            tid: 100 + lane,
            name: name.into(),
            ts,
            events,
        })
    };
    let meta = vec![
        tick_site(),
        Meta::Thread {
            lane: 1,
            tid: 101,
            name: "t1".into(),
        },
        Meta::Thread {
            lane: 2,
            tid: 102,
            name: "t2".into(),
        },
        lost(2, "other name", 15, 5),
        lost(2, "", 25, 7),
        // Lane 3's `Thread` entry is missing: the entry names it.
        lost(3, "t3", 20, 4),
    ];
    let words = [
        word::site_kind(0, kind::BASE),
        10,
        word::new(10, word::site_kind(1, kind::INSTANT)),
        word::new(30, word::site_kind(1, kind::INSTANT)),
    ];
    let mut f = handmade((1, 0), &words, &[], &meta, true);
    file::edit_file_header(&mut f, |h| h.lost_events = 16);
    let tmp = session_dir();
    let p = tmp.path().join("x.mpb");
    std::fs::write(&p, &f).unwrap();
    let pf = read::open(&p).unwrap();
    let l = &pf.lanes;
    assert_eq!(
        (
            l[&2].name.as_str(),
            l[&2].lost_noted,
            l[&2].lost_noted_until
        ),
        ("t2", 12, Some(25))
    );
    assert_eq!(
        (l[&3].name.as_str(), l[&3].tid, l[&3].lost_noted),
        ("t3", 103, 4)
    );
    assert_eq!(l[&1].lost_noted, 0);
    let s = Session::open(&[tmp.path()]).unwrap();
    let timeline: Vec<(u32, Option<u64>)> = s
        .events()
        .map(|e| match e.kind {
            EventKind::Lost { count, overwritten } => {
                assert!(!overwritten);
                (e.lane, Some(count))
            }
            _ => (e.lane, None),
        })
        .collect();
    // The lanes without records show their losses when their last entry
    // was written (20 and 25, between the ticks at 10 and 30).
    assert_eq!(
        timeline,
        [(1, None), (3, Some(4)), (2, Some(12)), (1, None)]
    );

    // Corrupt entries: lane 0, an unknown kind, garbage. Warnings, and the
    // losses stay the process's (the first lane's, at its end).
    file::append_raw_meta(&mut f, &postcard::to_stdvec(&lost(0, "x", 30, 9)).unwrap());
    file::append_raw_meta(&mut f, &[Meta::VARIANTS as u8, 1, 2, 3]);
    file::append_raw_meta(&mut f, &[6, 0xFF]);
    file::edit_file_header(&mut f, |h| h.lost_events = 25);
    std::fs::write(&p, &f).unwrap();
    let pf = read::open(&p).unwrap();
    let w = pf.warnings.join("\n");
    assert!(w.contains("a `Lost` entry of 9 events names lane 0"), "{w}");
    assert!(
        w.contains(&format!("entry of unknown kind {}", Meta::VARIANTS)),
        "{w}"
    );
    assert!(w.contains("undecodable entry"), "{w}");
    let s = Session::open(&[tmp.path()]).unwrap();
    let unattributed: u64 = s
        .events()
        .filter_map(|e| match e.kind {
            EventKind::Lost { count, .. } if e.lane == 1 => Some(count),
            _ => None,
        })
        .sum();
    assert_eq!(unattributed, 9);
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(h.damaged(), "corrupt metadata is damage");
}
