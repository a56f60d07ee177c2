//! Property tests: every structure the format encodes decodes to the same
//! value, over many random values (a fixed-seed generator, so a failure
//! reproduces; the failing value is printed).

use mpprof_format::{
    chunk, header, kind, word, Anchor, ChunkHeader, ClockKind, EncodeError, Entries, EntryError,
    FileHeader, FlowId, Handoff, Lost, Meta, Module, Policy, ProcessInfo, ProfilerInfo, Resource,
    Reused, SamplerInfo, Scope, SiteKind, MAX_META_ENTRY, META_LEN_SIZE,
};

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn u32(&mut self) -> u32 {
        // Small values often: varints change size at 128, 16384, ...
        match self.u64() % 4 {
            0 => (self.u64() % 200) as u32,
            1 => (self.u64() % 70_000) as u32,
            _ => self.u64() as u32,
        }
    }
    fn u16(&mut self) -> u16 {
        self.u64() as u16
    }
    fn big(&mut self) -> u64 {
        match self.u64() % 3 {
            0 => self.u64() % 300,
            1 => u64::MAX - self.u64() % 3,
            _ => self.u64(),
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }
    fn string(&mut self, max: usize) -> String {
        const PIECES: [&str; 8] = ["a", "worker", "é", "→", "🦀", "\n", "\0", ";"];
        let n = self.below(max as u64 + 1) as usize;
        let mut s = String::new();
        while s.len() < n {
            s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
        }
        s
    }
}

const N: usize = 20_000;

#[test]
fn file_headers_roundtrip() {
    let mut r = Rng(1);
    for _ in 0..N {
        let mut magic = [0u8; 8];
        magic.iter_mut().for_each(|b| *b = r.u64() as u8);
        let h = FileHeader {
            magic,
            version: r.u32(),
            header_size: r.u32(),
            chunk_size: r.u32(),
            chunk_header_size: r.u16(),
            record_size: r.u16(),
            max_chunks: r.u32(),
            policy: r.u32(),
            next_chunk: r.u32(),
            state: r.u32(),
            lost_events: r.big(),
            lost_chunks: r.big(),
            process_uid: r.big(),
            pid: r.u32(),
            lost_meta: r.u32(),
        };
        let b = h.encode();
        assert_eq!(FileHeader::decode(&b), Some(h), "{h:?}");
        assert_eq!(FileHeader::decode(&b[..header::END - 1]), None);
    }
}

#[test]
fn a_new_file_header_says_what_this_version_writes() {
    let h = FileHeader::new(65536, 16, Policy::KeepLast, 7, 42);
    let b = h.encode();
    assert_eq!(&b[header::MAGIC..header::MAGIC + 8], &mpprof_format::MAGIC);
    assert_eq!(
        b[header::VERSION..header::VERSION + 4],
        mpprof_format::FORMAT_VERSION.to_le_bytes()
    );
    assert_eq!(b[header::POLICY], 1);
    assert_eq!(b[header::PID], 42);
    assert_eq!(FileHeader::decode(&b), Some(h));
}

#[test]
fn chunk_headers_roundtrip() {
    let mut r = Rng(2);
    for _ in 0..N {
        let h = ChunkHeader {
            magic: r.u32(),
            kind: r.u16(),
            lane: r.u32(),
            tid: r.u32(),
            seq: r.u32(),
            committed: r.u32(),
            lost_before: r.big(),
            overwritten: r.big(),
            lost_after: r.big(),
        };
        let b = h.encode();
        assert_eq!(ChunkHeader::decode(&b), Some(h), "{h:?}");
        assert_eq!(ChunkHeader::decode(&b[..chunk::END - 1]), None);
    }
}

#[test]
fn record_words_roundtrip() {
    let mut r = Rng(3);
    for _ in 0..N {
        let ts = r.u64();
        let site = (r.u64() as u32) & word::MAX_SITE;
        let k = (r.below(u64::from(kind::LAST)) + 1) as u8;
        let w = word::new(ts, word::site_kind(site, k));
        assert_eq!(word::kind(w), k);
        assert_eq!(word::site(w), site);
        // The high half comes from any base with the same high half.
        let base = (ts & !0xFFFF_FFFF) | (r.u64() & 0xFFFF_FFFF);
        assert_eq!(word::ts(w, base), ts);
        assert_eq!(word::high(ts), (ts >> 32) as u32);
    }
}

fn random_meta(r: &mut Rng) -> Meta {
    let flow = |r: &mut Rng| FlowId::from_parts(r.big(), r.big());
    let anchor = |r: &mut Rng| Anchor {
        ts: r.big(),
        width: r.u32(),
        mono_ns: r.big(),
        real_ns: r.big(),
    };
    match r.below(Meta::VARIANTS as u64) {
        0 => Meta::Process(ProcessInfo {
            pid: r.u32(),
            ppid: r.u32(),
            uid: r.big(),
            parent_flow: (r.below(2) == 0).then(|| flow(r)),
            exe: r.string(600),
            argv: (0..r.below(5)).map(|_| r.string(300)).collect(),
            hostname: r.string(100),
            host_id: r.string(40),
            time_ns: r.big(),
            clock: if r.below(2) == 0 {
                ClockKind::Tsc
            } else {
                ClockKind::Monotonic
            },
            clock_hz: f64::from_bits(r.u64()),
            policy: if r.below(2) == 0 {
                Policy::KeepFirst
            } else {
                Policy::KeepLast
            },
        }),
        1 => Meta::Callsite {
            id: r.u32(),
            kind: [
                SiteKind::Span,
                SiteKind::Event,
                SiteKind::Counter,
                SiteKind::Flow,
            ][r.below(4) as usize],
            name: r.string(4000),
            path: r.string(200),
            file: r.string(100),
            line: r.u32(),
        },
        2 => Meta::Thread {
            lane: r.u32(),
            tid: r.u32(),
            name: r.string(64),
        },
        3 => Meta::Anchor(anchor(r)),
        4 => Meta::Handoff(Handoff {
            slot: r.u32(),
            start: r.u32(),
            lane: r.u32(),
            tid: r.u32(),
            seq: r.u32(),
            lost_before: r.big(),
        }),
        5 => Meta::Reused(Reused {
            slot: r.u32(),
            lane: r.u32(),
            seq: r.u32(),
            ts: r.big(),
            prev_lane: r.u32(),
            prev_overwritten: r.big(),
            overwritten: (0..r.below(40)).map(|_| (r.u32(), r.big())).collect(),
        }),
        6 => Meta::Lost(Lost {
            lane: r.u32(),
            tid: r.u32(),
            name: r.string(256),
            ts: r.big(),
            events: r.big(),
        }),
        7 => Meta::Sampler(SamplerInfo {
            interval_ns: r.big(),
            tid: r.u32(),
            unavailable: (0..r.below(4)).map(|_| r.string(200)).collect(),
        }),
        9 => Meta::Profiler(ProfilerInfo {
            hz: r.u32(),
            switches: r.below(2) == 0,
            tid: r.u32(),
            error: r.string(300),
            lost_records: r.big(),
            dropped: r.big(),
            syscalls: r.below(2) == 0,
            syscalls_error: r.string(200),
        }),
        10 => Meta::Module(Module {
            start: r.big(),
            end: r.big(),
            offset: r.big(),
            path: r.string(500),
            build_id: (0..r.below(40)).map(|_| r.below(256) as u8).collect(),
        }),
        12 => Meta::Channel(mpprof_format::Channel {
            id: r.u32(),
            depth_site: r.u32(),
            kind: [
                mpprof_format::ChannelKind::Pipe,
                mpprof_format::ChannelKind::Unix,
                mpprof_format::ChannelKind::Tcp,
                mpprof_format::ChannelKind::Udp,
                mpprof_format::ChannelKind::Socket,
                mpprof_format::ChannelKind::File,
                mpprof_format::ChannelKind::Char,
                mpprof_format::ChannelKind::Other,
            ][r.below(8) as usize],
            label: r.string(300),
            fd: r.u32() as i32,
            dev: r.big(),
            inode: r.big(),
            local: r.string(100),
            peer: r.string(100),
            peer_inode: r.big(),
            capacity: r.big(),
        }),
        11 => Meta::Stack {
            id: r.u32(),
            frames: (0..r.below(128)).map(|_| r.big()).collect(),
        },
        _ => Meta::Resources(
            (0..r.below(60))
                .map(|_| Resource {
                    site: r.u32(),
                    scope: match r.below(3) {
                        0 => Scope::Process,
                        1 => Scope::Thread { tid: r.u32() },
                        _ => Scope::Host,
                    },
                    key: r.string(30),
                    instance: r.string(20),
                    unit: r.string(6),
                    cumulative: r.below(2) == 0,
                })
                .collect(),
        ),
    }
}

/// `PartialEq` for `Meta` compares `clock_hz` as a float: NaN != NaN. Compare
/// the bit patterns instead.
fn same(a: &Meta, b: &Meta) -> bool {
    match (a, b) {
        (Meta::Process(x), Meta::Process(y)) => {
            x.clock_hz.to_bits() == y.clock_hz.to_bits()
                && ProcessInfo {
                    clock_hz: 0.0,
                    ..x.clone()
                } == ProcessInfo {
                    clock_hz: 0.0,
                    ..y.clone()
                }
        }
        _ => a == b,
    }
}

/// Entries framed one after another in a metadata chunk read back the
/// same, in order; those over the size limit are refused, and exactly
/// those; the frame is postcard's bytes behind their length.
#[test]
fn metadata_entries_roundtrip_through_their_framing() {
    let mut r = Rng(4);
    let mut log = Vec::new();
    let mut kept = Vec::new();
    let mut refused = 0;
    let mut buf = [0u8; MAX_META_ENTRY];
    for _ in 0..N {
        let m = random_meta(&mut r);
        let plain = postcard::to_stdvec(&m).unwrap();
        match mpprof_format::encode_entry(&m.as_ref(), &mut buf) {
            Ok(n) => {
                assert_eq!(n, META_LEN_SIZE + plain.len());
                assert_eq!(buf[..4], (plain.len() as u32).to_le_bytes());
                assert_eq!(buf[4..n], plain[..]);
                log.extend_from_slice(&buf[..n]);
                kept.push(m);
            }
            Err(e) => {
                assert_eq!(e, EncodeError::TooLarge);
                assert!(META_LEN_SIZE + plain.len() > MAX_META_ENTRY, "{m:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && kept.len() > N / 2, "both cases were tried");
    let back: Vec<Meta> = Entries::new(&log).map(|e| e.unwrap()).collect();
    assert_eq!(back.len(), kept.len());
    for (a, b) in kept.iter().zip(&back) {
        assert!(same(a, b), "{a:?} came back as {b:?}");
    }
}

#[test]
fn broken_framing_is_reported_and_ends_the_chunk() {
    let mut buf = [0u8; MAX_META_ENTRY];
    let m = Meta::Anchor(Anchor {
        ts: 1,
        width: 2,
        mono_ns: 3,
        real_ns: 4,
    });
    let n = mpprof_format::encode_entry(&m.as_ref(), &mut buf).unwrap();
    let mut log = buf[..n].to_vec();
    // An entry of a kind from the future, then a good one again.
    log.extend_from_slice(&[1, 0, 0, 0, Meta::VARIANTS as u8]);
    log.extend_from_slice(&buf[..n]);
    // A length that runs past the end.
    log.extend_from_slice(&[200, 0, 0, 0, 3]);
    let got: Vec<_> = Entries::new(&log).collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], Ok(m.clone()));
    assert_eq!(
        got[1],
        Err(EntryError::Unknown {
            variant: Meta::VARIANTS as u8
        })
    );
    assert_eq!(got[2], Ok(m));
    assert_eq!(got[3], Err(EntryError::Overrun { len: 200 }));
    let stray: Vec<_> = Entries::new(&[1, 2]).collect();
    assert_eq!(stray, [Err(EntryError::Stray { bytes: 2 })]);
}

#[test]
fn flow_ids_roundtrip_in_every_form() {
    let mut r = Rng(5);
    for _ in 0..N {
        let f = FlowId::from_parts(r.big(), r.big());
        assert_eq!(f.to_string().parse::<FlowId>(), Ok(f));
        assert_eq!(FlowId::from_payload(f.to_payload()), f);
        let bin = postcard::to_stdvec(&f).unwrap();
        assert_eq!(postcard::from_bytes::<FlowId>(&bin).unwrap(), f);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<FlowId>(&json).unwrap(), f);
        if f != FlowId::default() {
            assert_eq!(FlowId::from_traceparent(&f.to_traceparent()), Ok(f));
        }
        let exit = f.child_exit();
        assert_eq!(
            (exit.process(), exit.seq()),
            (f.process(), f.seq() | 1 << 62)
        );
    }
}

#[test]
fn long_names_are_clipped_visibly_and_always_fit_an_entry() {
    use mpprof_format::{Clipped, MetaRef, MAX_NAME};
    let mut r = Rng(7);
    let mut buf = [0u8; MAX_META_ENTRY];
    let alphabet = ['a', 'é', '€', '𝄞', ';', '\n'];
    for _ in 0..2_000 {
        // Strings around and far past the limit, of 1- to 4-byte characters.
        let s = |r: &mut Rng| -> String {
            let n = (r.u64() % 6_000) as usize;
            (0..n)
                .map(|i| alphabet[(i + r.u64() as usize % 3) % alphabet.len()])
                .collect()
        };
        let (name, path, file) = (s(&mut r), s(&mut r), s(&mut r));
        let entry = MetaRef::Callsite {
            id: r.u64() as u32,
            kind: SiteKind::Span,
            name: Clipped::new(&name, MAX_NAME),
            path: Clipped::new(&path, MAX_NAME),
            file: Clipped::new(&file, MAX_NAME),
            line: r.u64() as u32,
        };
        let n = mpprof_format::encode_entry(&entry, &mut buf).expect("a clipped entry fits");
        let back = Entries::new(&buf[..n]).next().unwrap().unwrap();
        let Meta::Callsite {
            name: n2,
            path: p2,
            file: f2,
            ..
        } = back
        else {
            panic!("{back:?}")
        };
        for (orig, got) in [(&name, &n2), (&path, &p2), (&file, &f2)] {
            if orig.len() <= MAX_NAME {
                assert_eq!(got, orig);
            } else {
                // The start, and a marker saying how much was cut.
                let (head, marker) = got.rsplit_once('…').unwrap();
                assert!(orig.starts_with(head) && head.len() <= MAX_NAME);
                assert!(MAX_NAME - head.len() < 4, "cut at a character boundary");
                assert_eq!(marker, format!("[+{} bytes]", orig.len() - head.len()));
                assert!(got.len() <= MAX_NAME + Clipped::MARKER_MAX);
            }
        }
    }
}
