//! Buffer files built in memory with the format's own encoders
//! (`mpprof_format`): the reader's tests make the files a writer never
//! makes (a header whose magic never landed, a hand-off into the middle
//! of a chunk, a metadata entry from the future) without copying an
//! encoder, and edit recorded files field by field.

use std::ops::Range;

use mpprof_format::{
    chunk, encode_entry, ChunkHeader, Entries, FileHeader, Meta, Policy, CHUNK_EVENTS,
    CHUNK_HEADER_SIZE, CHUNK_MAGIC, CHUNK_META, HEADER_SIZE, MAX_META_ENTRY, STATE_FINISHED,
};

/// A buffer file under construction: its header, then its chunks in slot
/// order.
#[derive(Clone, Debug)]
pub struct FileBuilder {
    /// The file header (`next_chunk` is set to the number of chunks by
    /// [`FileBuilder::build`] unless it is set here to something else).
    pub header: FileHeader,
    chunks: Vec<Vec<u8>>,
    next_chunk: Option<u32>,
}

/// The header of an event chunk of `lane` with sequence number `seq`,
/// published (`CHUNK_MAGIC`), nothing lost or overwritten.
pub fn event_header(lane: u32, seq: u32) -> ChunkHeader {
    ChunkHeader {
        magic: CHUNK_MAGIC,
        kind: CHUNK_EVENTS,
        lane,
        tid: 100 + lane,
        seq,
        ..ChunkHeader::default()
    }
}

impl FileBuilder {
    /// A file of `chunk_size`-byte chunks with a budget of `max_chunks`,
    /// as a writer of this version starts it: pid 42, keep-first, still
    /// recording.
    pub fn new(chunk_size: u32, max_chunks: u32) -> FileBuilder {
        FileBuilder {
            header: FileHeader::new(chunk_size, max_chunks, Policy::KeepFirst, 0x5eed, 42),
            chunks: Vec::new(),
            next_chunk: None,
        }
    }

    /// Marks the file finished (a clean exit) or not.
    pub fn finished(&mut self, yes: bool) -> &mut FileBuilder {
        self.header.state = if yes { STATE_FINISHED } else { 0 };
        self
    }

    /// Sets the header's `next_chunk` (slots claimed) instead of the number
    /// of chunks added.
    pub fn next_chunk(&mut self, n: u32) -> &mut FileBuilder {
        self.next_chunk = Some(n);
        self
    }

    /// Adds an event chunk with header `h` whose committed count covers
    /// `words` (`h.committed` is set to their number), followed by
    /// `leftover` words past the count.
    pub fn event_chunk(
        &mut self,
        h: ChunkHeader,
        words: &[u64],
        leftover: &[u64],
    ) -> &mut FileBuilder {
        let mut c = self.empty_chunk();
        let h = ChunkHeader {
            committed: words.len() as u32,
            ..h
        };
        c[..chunk::END].copy_from_slice(&h.encode());
        for (i, w) in words.iter().chain(leftover).enumerate() {
            let at = CHUNK_HEADER_SIZE as usize + 8 * i;
            c[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.chunks.push(c);
        self
    }

    /// Adds a metadata chunk (sequence number `seq`) holding `entries`,
    /// framed as the recorder frames them.
    pub fn meta_chunk(&mut self, seq: u32, entries: &[Meta]) -> &mut FileBuilder {
        let mut c = self.empty_chunk();
        let h = ChunkHeader {
            magic: CHUNK_MAGIC,
            kind: CHUNK_META,
            seq,
            ..ChunkHeader::default()
        };
        c[..chunk::END].copy_from_slice(&h.encode());
        let mut buf = [0u8; MAX_META_ENTRY];
        let mut at = CHUNK_HEADER_SIZE as usize;
        for m in entries {
            let n = encode_entry(&m.as_ref(), &mut buf).expect("the entry fits a metadata entry");
            c[at..at + n].copy_from_slice(&buf[..n]);
            at += n;
        }
        let committed = (at - CHUNK_HEADER_SIZE as usize) as u32;
        c[chunk::COMMITTED..chunk::COMMITTED + 4].copy_from_slice(&committed.to_le_bytes());
        self.chunks.push(c);
        self
    }

    fn empty_chunk(&self) -> Vec<u8> {
        vec![0u8; self.header.chunk_size as usize]
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut h = self.header;
        h.next_chunk = self.next_chunk.unwrap_or(self.chunks.len() as u32);
        let mut f = vec![0u8; HEADER_SIZE as usize];
        f[..mpprof_format::header::END].copy_from_slice(&h.encode());
        for c in &self.chunks {
            f.extend_from_slice(c);
        }
        f
    }
}

/// The chunk size a file's header gives.
fn chunk_size(file: &[u8]) -> usize {
    FileHeader::decode(file).expect("a file header").chunk_size as usize
}

/// The byte range of chunk `slot`'s header in `file`.
pub fn chunk_header_range(file: &[u8], slot: usize) -> Range<usize> {
    let at = HEADER_SIZE as usize + slot * chunk_size(file);
    at..at + chunk::END
}

/// Changes the header of chunk `slot` of `file` in place.
pub fn edit_chunk_header(file: &mut [u8], slot: usize, edit: impl FnOnce(&mut ChunkHeader)) {
    let r = chunk_header_range(file, slot);
    let mut h = ChunkHeader::decode(&file[r.clone()]).expect("a chunk header");
    edit(&mut h);
    file[r].copy_from_slice(&h.encode());
}

/// Changes the file header of `file` in place.
pub fn edit_file_header(file: &mut [u8], edit: impl FnOnce(&mut FileHeader)) {
    let mut h = FileHeader::decode(file).expect("a file header");
    edit(&mut h);
    file[..mpprof_format::header::END].copy_from_slice(&h.encode());
}

/// The slot of the first metadata chunk of `file`.
pub fn first_meta_slot(file: &[u8]) -> usize {
    let n = (file.len() - HEADER_SIZE as usize) / chunk_size(file);
    (0..n)
        .find(|&s| {
            let h =
                ChunkHeader::decode(&file[chunk_header_range(file, s)]).expect("a chunk header");
            h.magic == CHUNK_MAGIC && h.kind == CHUNK_META
        })
        .expect("a metadata chunk")
}

/// Appends `entry`, the body of a metadata entry as raw bytes (a
/// well-formed one or not), behind its length to the first metadata chunk
/// of `file`, and commits it.
pub fn append_raw_meta(file: &mut [u8], entry: &[u8]) {
    let slot = first_meta_slot(file);
    let start = HEADER_SIZE as usize + slot * chunk_size(file);
    let h = ChunkHeader::decode(&file[chunk_header_range(file, slot)]).expect("header");
    let at = start + CHUNK_HEADER_SIZE as usize + h.committed as usize;
    file[at..at + 4].copy_from_slice(&(entry.len() as u32).to_le_bytes());
    file[at + 4..at + 4 + entry.len()].copy_from_slice(entry);
    let committed = h.committed + 4 + entry.len() as u32;
    edit_chunk_header(file, slot, |x| x.committed = committed);
}

/// Decodes the entries of every metadata chunk of `file`, lets `edit`
/// change them, and writes each chunk's back framed (each chunk must still
/// hold its own).
pub fn rewrite_meta(file: &mut [u8], mut edit: impl FnMut(&mut Meta)) {
    let size = chunk_size(file);
    let n = (file.len() - HEADER_SIZE as usize) / size;
    for slot in 0..n {
        let h = ChunkHeader::decode(&file[chunk_header_range(file, slot)]).expect("header");
        if h.magic != CHUNK_MAGIC || h.kind != CHUNK_META {
            continue;
        }
        let data = HEADER_SIZE as usize + slot * size + CHUNK_HEADER_SIZE as usize;
        let old = &file[data..data + h.committed as usize];
        let mut entries: Vec<Meta> = Entries::new(old)
            .map(|e| e.expect("a decodable entry"))
            .collect();
        entries.iter_mut().for_each(&mut edit);
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_META_ENTRY];
        for m in &entries {
            let n = encode_entry(&m.as_ref(), &mut buf).expect("the entry fits");
            out.extend_from_slice(&buf[..n]);
        }
        assert!(
            out.len() <= size - CHUNK_HEADER_SIZE as usize,
            "the entries fit the chunk"
        );
        file[data..data + size - CHUNK_HEADER_SIZE as usize].fill(0);
        file[data..data + out.len()].copy_from_slice(&out);
        edit_chunk_header(file, slot, |x| x.committed = out.len() as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpprof_format::{kind, word, MIN_CHUNK_SIZE};

    /// What the builder makes, the reader reads: the events, the names, the
    /// header's fields.
    #[test]
    fn the_reader_reads_what_the_builder_builds() {
        let words = [
            word::site_kind(0, kind::BASE),
            5,
            word::new(6, word::site_kind(1, kind::INSTANT)),
        ];
        let site = Meta::Callsite {
            id: 1,
            kind: mpprof_format::SiteKind::Event,
            name: "tick".into(),
            path: "t::tick".into(),
            file: "t.rs".into(),
            line: 1,
        };
        let mut b = FileBuilder::new(MIN_CHUNK_SIZE, 4);
        b.finished(true)
            .event_chunk(event_header(1, 0), &words, &[])
            .meta_chunk(0, &[site]);
        let mut bytes = b.build();
        let f = mpprof_merge::read::from_bytes("built.mpb".as_ref(), bytes.clone()).unwrap();
        assert!(
            f.clean
                && f.warnings
                    .iter()
                    .all(|w| w.contains("no process information"))
        );
        assert_eq!(f.sites[&1].name, "tick");
        assert_eq!(f.recorded_events(), 1);
        assert_eq!(f.pid, 42);

        edit_chunk_header(&mut bytes, 0, |h| h.lost_before = 3);
        rewrite_meta(&mut bytes, |m| {
            if let Meta::Callsite { name, .. } = m {
                *name = "tock".into();
            }
        });
        append_raw_meta(&mut bytes, &[Meta::VARIANTS as u8]);
        let f = mpprof_merge::read::from_bytes("built.mpb".as_ref(), bytes).unwrap();
        assert_eq!(f.sites[&1].name, "tock");
        assert_eq!(f.lanes[&1].chunks[0].lost_before, 3);
        assert!(f.warnings.iter().any(|w| w.contains("unknown kind")));
    }
}
