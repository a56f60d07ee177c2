//! Event records: decoding 16-byte records (formats 1-3) and 8-byte words
//! (format 4) against their time base, and streaming a chunk's events a
//! block at a time.

use mpprof_format::{self as format, kind, word};

use super::source::Source;

/// How a file's event records are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Format versions 1-3: 16-byte records with absolute timestamps
    /// ([`format::record_v3`]), a 16-byte payload record after some kinds.
    Records16,
    /// Format version 4: 8-byte words holding the low half of the
    /// timestamp, the high half coming from the last `BASE`
    /// ([`format::word`]); payload words after some kinds.
    Words8,
}

impl Layout {
    /// The layout of a format version.
    pub fn of_version(v: u32) -> Layout {
        if v <= 3 {
            Layout::Records16
        } else {
            Layout::Words8
        }
    }

    /// Bytes of one record (16) or word (8).
    pub fn unit(self) -> u32 {
        match self {
            Layout::Records16 => format::RECORD_SIZE_V3,
            Layout::Words8 => format::RECORD_SIZE,
        }
    }
}

/// A chunk of one lane, located and validated.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRef {
    /// Byte offset of the first record.
    pub offset: u64,
    /// The file's record layout.
    pub layout: Layout,
    /// Sequence number within the lane.
    pub seq: u32,
    /// Records (format 4: words) to read (committed, clamped to what the
    /// file holds).
    pub records: u32,
    /// Events the lane lost just before this chunk.
    pub lost_before: u64,
    /// Events of the lane overwritten (keep-last) before this chunk was claimed.
    pub overwritten: u64,
    /// Events the lane lost after this chunk filled up (last chunk only).
    pub lost_after: u64,
    /// OS thread id written in the chunk header.
    pub tid: u32,
}

/// A decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// Timestamp in the process clock.
    pub ts: u64,
    /// Callsite id.
    pub site: u32,
    /// Record kind.
    pub kind: u8,
    /// Payload record (flows, counters).
    pub payload: Option<[u64; 2]>,
}

/// Decodes records from `bytes` into `out`. Returns how many records were
/// malformed (unknown kind, payload missing at the end of the chunk, format
/// 4 events before the segment's first time base) and how many records
/// (format 4: words) were consumed: when `at_end` is false, an event whose
/// payload lies past `bytes` is left for the next call. `base` carries the
/// format 4 time base from one call to the next.
pub fn decode_records(
    layout: Layout,
    bytes: &[u8],
    base: &mut Option<u64>,
    out: &mut Vec<RawEvent>,
    at_end: bool,
) -> (u64, usize) {
    match layout {
        Layout::Records16 => decode_records16(bytes, out, at_end),
        Layout::Words8 => decode_words8(bytes, base, out, at_end),
    }
}

fn decode_records16(bytes: &[u8], out: &mut Vec<RawEvent>, at_end: bool) -> (u64, usize) {
    let mut bad = 0;
    let mut i = 0;
    let n = bytes.len() / 16;
    while i < n {
        let r = &bytes[i * 16..i * 16 + 16];
        let k = r[format::record_v3::KIND];
        if !(kind::ENTER..=kind::LAST_V3).contains(&k) {
            bad += 1;
            i += 1;
            continue;
        }
        let payload = if kind::has_payload(k) {
            if i + 1 >= n {
                if at_end {
                    bad += 1;
                    i = n;
                }
                break;
            }
            let p = &bytes[(i + 1) * 16..(i + 1) * 16 + 16];
            Some([le_u64(p, 0), le_u64(p, 8)])
        } else {
            None
        };
        out.push(RawEvent {
            ts: le_u64(r, format::record_v3::TS),
            site: le_u32(r, format::record_v3::SITE),
            kind: k,
            payload,
        });
        i += if payload.is_some() { 2 } else { 1 };
    }
    (bad, i)
}

fn decode_words8(
    bytes: &[u8],
    base: &mut Option<u64>,
    out: &mut Vec<RawEvent>,
    at_end: bool,
) -> (u64, usize) {
    let mut bad = 0;
    let mut i = 0;
    let n = bytes.len() / 8;
    while i < n {
        let w = le_u64(bytes, i * 8);
        let k = word::kind(w);
        if !(kind::ENTER..=kind::LAST).contains(&k) {
            bad += 1;
            i += 1;
            continue;
        }
        let pw = kind::payload_words(k) as usize;
        if i + pw >= n {
            if at_end {
                bad += 1;
                i = n;
            }
            break;
        }
        if k == kind::BASE {
            *base = Some(le_u64(bytes, (i + 1) * 8));
            i += 2;
            continue;
        }
        i += 1 + pw;
        let Some(b) = *base else {
            bad += 1;
            continue;
        };
        let payload = (pw == 2).then(|| [le_u64(bytes, (i - 2) * 8), le_u64(bytes, (i - 1) * 8)]);
        out.push(RawEvent {
            ts: word::ts(w, b),
            site: word::site(w),
            kind: k,
            payload,
        });
    }
    (bad, i)
}

/// Records read per block: the merge keeps one block per thread in memory,
/// so its memory is bounded by the number of threads, not by chunk size.
pub const BLOCK_RECORDS: u32 = 1024;

/// Streams the events of one chunk, a block at a time.
#[derive(Debug)]
pub struct RecordReader {
    chunk: ChunkRef,
    next: u32,
    /// Format 4: the time base in force.
    base: Option<u64>,
    bytes: Vec<u8>,
    buf: Vec<RawEvent>,
    pos: usize,
    /// Malformed records skipped so far.
    pub bad: u64,
    /// Blocks that could not be read.
    pub io_errors: u64,
}

impl RecordReader {
    /// A reader positioned at the chunk's first record.
    pub fn new(chunk: ChunkRef) -> RecordReader {
        RecordReader {
            chunk,
            next: 0,
            base: None,
            bytes: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            bad: 0,
            io_errors: 0,
        }
    }

    /// The chunk being read.
    pub fn chunk(&self) -> &ChunkRef {
        &self.chunk
    }

    /// The next event, or `None` at the end of the chunk.
    pub fn next_event(&mut self, file: &Source) -> Option<RawEvent> {
        loop {
            if let Some(e) = self.buf.get(self.pos) {
                self.pos += 1;
                return Some(*e);
            }
            if self.next >= self.chunk.records {
                return None;
            }
            let want = (self.chunk.records - self.next).min(BLOCK_RECORDS);
            let at_end = self.next + want == self.chunk.records;
            let unit = self.chunk.layout.unit();
            self.bytes.resize(want as usize * unit as usize, 0);
            let off = self.chunk.offset + self.next as u64 * unit as u64;
            self.buf.clear();
            self.pos = 0;
            match file.read_at(&mut self.bytes, off) {
                Ok(n) if n == self.bytes.len() => {
                    let (bad, used) = decode_records(
                        self.chunk.layout,
                        &self.bytes,
                        &mut self.base,
                        &mut self.buf,
                        at_end,
                    );
                    self.bad += bad;
                    // Always advance, even past a lone trailing event.
                    self.next += (used as u32).max(1).min(want);
                }
                _ => {
                    self.io_errors += 1;
                    self.next = self.chunk.records;
                }
            }
        }
    }
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn ev(lo: u64, site: u32, k: u8) -> u64 {
        word::new(lo, word::site_kind(site, k))
    }

    /// Format 4 words: a timestamp's high half comes from the last BASE, a
    /// payload follows its event, an event before any BASE or a payload cut
    /// off by the chunk's end is malformed, and an unknown kind is skipped.
    #[test]
    fn words_decode_against_their_time_base() {
        let base1 = 0x0000_0007_FFFF_FFF0u64;
        let base2 = 0x0000_0008_0000_0005u64;
        let words = [
            ev(1, 3, kind::ENTER), // before any BASE: malformed
            word::site_kind(0, kind::BASE),
            base1,
            ev(0xFFFF_FFF1, 3, kind::ENTER),
            ev(0xFFFF_FFF2, 4, kind::COUNTER),
            42,
            0,
            word::site_kind(0, kind::BASE),
            base2,
            ev(6, 3, kind::EXIT),
            ev(7, 5, 15), // unknown kind: skipped
            ev(8, 4, kind::COUNTER),
            9, // its second payload word is missing
        ];
        let mut out = Vec::new();
        let mut base = None;
        let (bad, used) = decode_records(Layout::Words8, &bytes(&words), &mut base, &mut out, true);
        assert_eq!(bad, 3);
        assert_eq!(used, words.len());
        assert_eq!(base, Some(base2));
        let got: Vec<(u64, u32, u8, Option<[u64; 2]>)> = out
            .iter()
            .map(|e| (e.ts, e.site, e.kind, e.payload))
            .collect();
        assert_eq!(
            got,
            [
                (0x7_FFFF_FFF1, 3, kind::ENTER, None),
                (0x7_FFFF_FFF2, 4, kind::COUNTER, Some([42, 0])),
                (0x8_0000_0006, 3, kind::EXIT, None),
            ]
        );
    }

    /// In the middle of a chunk, an event whose payload lies past the block
    /// is left for the next block, and the time base carries over.
    #[test]
    fn an_event_split_across_blocks_waits_for_the_next_one() {
        let words = [
            word::site_kind(0, kind::BASE),
            0x5_0000_0000,
            ev(1, 2, kind::FLOW_OUT),
            7,
        ];
        let (mut out, mut base) = (Vec::new(), None);
        let (bad, used) =
            decode_records(Layout::Words8, &bytes(&words), &mut base, &mut out, false);
        assert_eq!((bad, used, out.len()), (0, 2, 0));
        let rest = [ev(1, 2, kind::FLOW_OUT), 7, 8];
        let (bad, used) = decode_records(Layout::Words8, &bytes(&rest), &mut base, &mut out, true);
        assert_eq!((bad, used), (0, 3));
        assert_eq!(out[0].ts, 0x5_0000_0001);
        assert_eq!(out[0].payload, Some([7, 8]));
    }
}
