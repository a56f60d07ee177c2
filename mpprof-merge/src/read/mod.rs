//! Reading one process's buffer file. Every byte is untrusted: the header
//! and every chunk header are validated before their numbers are used, and
//! every problem names the file, the process and the field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mpprof_format::{self as format, header, Policy};

mod file;
mod lanes;
mod meta;
mod records;
mod source;

pub use file::{Lane, LaneLoss, Losses, ProcessFile, ReadError, Reuse, Site};
/// [`mpprof_format::Meta::Handoff`] (a thread continued another, finished
/// thread's chunk from record `start`) and [`mpprof_format::Meta::Reused`]
/// entries, as decoded.
pub use mpprof_format::{Handoff, Reused};
pub use records::{decode_records, ChunkRef, Layout, RawEvent, RecordReader, BLOCK_RECORDS};
pub use source::Source;

use lanes::{apply_reuses, lane_overwritten, looks_torn, split_handoffs};
use meta::decode_meta;

/// Opens and validates a buffer file; decodes its metadata and locates its chunks.
///
/// Only a regular file is opened: anything else named like a buffer file
/// (a FIFO, whose open would wait for a writer; a device, whose open may do
/// something) is refused before it is opened, and the open itself is
/// non-blocking, in case the file was replaced in between.
pub fn open(path: &Path) -> Result<ProcessFile, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_owned(),
        error,
    };
    let not_regular = |t: std::fs::FileType| ReadError::NotRegular {
        path: path.to_owned(),
        kind: file_kind(t),
    };
    let md = std::fs::metadata(path).map_err(io)?;
    if !md.is_file() {
        return Err(not_regular(md.file_type()));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options.open(path).map_err(io)?;
    let md = file.metadata().map_err(io)?;
    if !md.is_file() {
        return Err(not_regular(md.file_type()));
    }
    parse(path, Source::File(file))
}

/// What a file that is not a regular file is, for messages.
fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO (named pipe)";
        } else if t.is_socket() {
            return "socket";
        } else if t.is_char_device() {
            return "character device";
        } else if t.is_block_device() {
            return "block device";
        }
    }
    "special file"
}

/// [`open`] for a file's bytes in memory; `name` names it in messages.
pub fn from_bytes(name: &Path, bytes: impl Into<Arc<[u8]>>) -> Result<ProcessFile, ReadError> {
    parse(name, Source::Bytes(bytes.into()))
}

/// Validates the buffer file in `file` (named `path` in messages),
/// decodes its metadata and locates its chunks.
pub fn parse(path: &Path, file: Source) -> Result<ProcessFile, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_owned(),
        error,
    };
    let bad = |what: String| ReadError::Header {
        path: path.to_owned(),
        what,
    };
    let file_len = file.len().map_err(io)?;
    if file_len == 0 {
        return Err(ReadError::Empty {
            path: path.to_owned(),
        });
    }
    let mut h = vec![0u8; format::HEADER_SIZE as usize];
    let got = file.read_at(&mut h, 0).map_err(io)?;
    let Some(fh) = format::FileHeader::decode(&h[..got]) else {
        return Err(bad(format!(
            "file is {file_len} bytes, shorter than the {}-byte header: truncated or not an mpprof buffer",
            header::END
        )));
    };
    if fh.magic != format::MAGIC {
        return Err(bad("field `magic`: not an mpprof buffer file".into()));
    }
    let version = fh.version;
    if version > format::FORMAT_VERSION {
        return Err(ReadError::NewerFormat {
            path: path.to_owned(),
            found: version,
            known: format::FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(bad("field `version` is 0".into()));
    }
    let pid = fh.pid;
    let bad_field = |field: &str, v: u64, want: String| {
        bad(format!(
            "process {pid}: field `{field}` is {v}, expected {want}"
        ))
    };
    let header_size = fh.header_size as u64;
    if header_size != format::HEADER_SIZE {
        return Err(bad_field(
            "header_size",
            header_size,
            format::HEADER_SIZE.to_string(),
        ));
    }
    let layout = Layout::of_version(version);
    let unit = layout.unit();
    let rec_size = fh.record_size as u32;
    if rec_size != unit {
        return Err(bad_field(
            "record_size",
            rec_size as u64,
            format!("{unit} in a format {version} file"),
        ));
    }
    let ch_size = fh.chunk_header_size as u32;
    if ch_size != format::CHUNK_HEADER_SIZE {
        return Err(bad_field(
            "chunk_header_size",
            ch_size as u64,
            format::CHUNK_HEADER_SIZE.to_string(),
        ));
    }
    let chunk_size = fh.chunk_size;
    if !(format::MIN_CHUNK_SIZE..=format::MAX_CHUNK_SIZE).contains(&chunk_size)
        || chunk_size % 16 != 0
    {
        return Err(bad_field(
            "chunk_size",
            chunk_size as u64,
            format!(
                "a multiple of 16 in {}..={}",
                format::MIN_CHUNK_SIZE,
                format::MAX_CHUNK_SIZE
            ),
        ));
    }
    let max_chunks = fh.max_chunks;
    let next_chunk = fh.next_chunk;
    let mut pf = ProcessFile {
        path: path.to_owned(),
        file,
        info: None,
        pid,
        version,
        uid: fh.process_uid,
        clean: fh.state == format::STATE_FINISHED,
        policy: Policy::from_u32(fh.policy),
        lost_events: fh.lost_events,
        lost_chunks: fh.lost_chunks,
        lost_meta: fh.lost_meta,
        sites: BTreeMap::new(),
        lanes: BTreeMap::new(),
        anchors: Vec::new(),
        warnings: Vec::new(),
        torn_records: 0,
        sampler: None,
        resources: BTreeMap::new(),
        profiler: None,
        modules: Vec::new(),
        stacks: HashMap::new(),
        channels: BTreeMap::new(),
        handoffs: Vec::new(),
        reuses: Vec::new(),
    };
    let name = format!("{} (process {pid})", path.display());
    if pf.policy.is_none() {
        pf.warnings.push(format!(
            "{name}: field `policy` has unknown value {}",
            fh.policy
        ));
    }
    // Slots that can hold a chunk: claimed, within the budget, and (at least
    // partly) inside the file.
    let in_file = file_len
        .saturating_sub(format::HEADER_SIZE)
        .div_ceil(chunk_size as u64);
    let slots = (next_chunk.min(max_chunks) as u64).min(in_file);
    // Claims that failed to grow the file (disk full) leave slots at the end
    // that were never written: not a truncation.
    let missing = (next_chunk.min(max_chunks) as u64).saturating_sub(in_file);
    if missing > pf.lost_chunks {
        pf.warnings.push(format!(
            "{name}: field `next_chunk` says {} chunks were claimed but the file ({file_len} bytes) holds {in_file}: truncated file, reading what is there",
            next_chunk.min(max_chunks)
        ));
    }
    let cap_records = (chunk_size - format::CHUNK_HEADER_SIZE) / unit;
    let cap_bytes = chunk_size - format::CHUNK_HEADER_SIZE;
    let mut meta_chunks: Vec<(u32, u64, u32)> = Vec::new();
    let mut event_chunks: Vec<(u32, u32, ChunkRef)> = Vec::new();
    // Event chunks to inspect for a torn record once the metadata says
    // which were reused: (index in event_chunks, header `overwritten` > 0).
    let mut torn_candidates: Vec<(usize, bool)> = Vec::new();
    let mut ch = [0u8; format::CHUNK_HEADER_SIZE as usize];
    for slot in 0..slots {
        let off = format::HEADER_SIZE + slot * chunk_size as u64;
        let got = pf.file.read_at(&mut ch, off).map_err(io)?;
        let Some(hd) = format::ChunkHeader::decode(&ch[..got]) else {
            continue; // cut off by the end of the file
        };
        if hd.magic != format::CHUNK_MAGIC {
            continue; // never claimed, or its disk reservation failed
        }
        let data = off + format::CHUNK_HEADER_SIZE as u64;
        // Bytes of this chunk actually present in the file.
        let present = file_len.saturating_sub(data).min(cap_bytes as u64) as u32;
        let committed = hd.committed;
        let lane = hd.lane;
        let seq = hd.seq;
        match hd.kind {
            format::CHUNK_META => {
                let mut bytes = committed;
                if bytes > cap_bytes {
                    pf.warnings.push(format!(
                        "{name}: metadata chunk {slot}: field `committed` is {committed}, more than the chunk's {cap_bytes} bytes; ignoring the chunk"
                    ));
                    continue;
                }
                if bytes > present {
                    pf.warnings.push(format!(
                        "{name}: metadata chunk {slot} is cut short by the end of the file"
                    ));
                    bytes = present;
                }
                meta_chunks.push((seq, data, bytes));
            }
            format::CHUNK_EVENTS => {
                let mut records = committed;
                if records > cap_records {
                    pf.warnings.push(format!(
                        "{name}: lane {lane} chunk {slot}: field `committed` is {committed}, more than the chunk's {cap_records} records; reading none of it"
                    ));
                    continue;
                }
                if records as u64 * unit as u64 > present as u64 {
                    pf.warnings.push(format!(
                        "{name}: lane {lane} chunk {slot} is cut short by the end of the file; {} committed records are missing",
                        records - present / unit
                    ));
                    records = present / unit;
                }
                if records < cap_records && !pf.clean {
                    let reused = hd.overwritten > 0;
                    torn_candidates.push((event_chunks.len(), reused));
                }
                let tid = hd.tid;
                let lost_before = hd.lost_before;
                let overwritten = hd.overwritten;
                let lost_after = hd.lost_after;
                event_chunks.push((
                    slot as u32,
                    lane,
                    ChunkRef {
                        offset: data,
                        layout,
                        seq,
                        records,
                        lost_before,
                        overwritten,
                        lost_after,
                        tid,
                    },
                ));
            }
            other => pf.warnings.push(format!(
                "{name}: chunk {slot}: field `kind` has unknown value {other}; skipped"
            )),
        }
    }
    meta_chunks.sort_by_key(|m| m.0);
    let mut buf = Vec::new();
    // For each reuse entry: how many hand-offs were decoded before it.
    let mut reuse_at = Vec::new();
    for (seq, data, bytes) in meta_chunks {
        buf.resize(bytes as usize, 0);
        let n = pf.file.read_at(&mut buf, data).map_err(io)?;
        buf.truncate(n);
        decode_meta(&mut pf, &buf, seq, &name, &mut reuse_at);
    }
    let current_from = apply_reuses(&mut pf, &event_chunks, &reuse_at);
    for (i, header_says_reused) in torn_candidates {
        let (slot, _, c) = &event_chunks[i];
        let reused = header_says_reused || current_from.get(slot).is_some_and(|&(_, any)| any);
        if looks_torn(&pf.file, layout, c.offset, c.records, reused).map_err(io)? {
            pf.torn_records += 1;
        }
    }
    split_handoffs(&mut pf, event_chunks, &current_from, cap_records, &name);
    lane_overwritten(&mut pf);
    for l in pf.lanes.values_mut() {
        l.chunks.sort_by_key(|c| c.seq);
    }
    if pf.info.is_none() && !pf.recorded_nothing() {
        pf.warnings.push(format!(
            "{name}: no process information in the metadata (executable and parent unknown)"
        ));
    }
    Ok(pf)
}

/// Lists the buffer files (`*.mpb`) of a session directory, sorted.
pub fn list_session(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mpb"))
        .collect();
    v.sort();
    Ok(v)
}
