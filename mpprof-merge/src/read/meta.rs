//! Decoding a metadata chunk's entries into a [`ProcessFile`].

use mpprof_format::{self as format, EntryError, Lost, Meta};

use super::file::{ProcessFile, Reuse, Site};

pub(super) fn decode_meta(
    pf: &mut ProcessFile,
    b: &[u8],
    seq: u32,
    name: &str,
    reuse_at: &mut Vec<usize>,
) {
    for entry in format::Entries::new(b) {
        match entry {
            Ok(Meta::Process(info)) => pf.info = Some(info),
            Ok(Meta::Callsite {
                id,
                kind,
                name,
                path,
                file,
                line,
            }) => {
                pf.sites.insert(
                    id,
                    Site {
                        kind,
                        name,
                        path,
                        file,
                        line,
                    },
                );
            }
            Ok(Meta::Thread { lane, tid, name }) => {
                let l = pf.lanes.entry(lane).or_default();
                l.tid = tid;
                l.name = name;
            }
            Ok(Meta::Anchor(a)) => pf.anchors.push(a),
            Ok(Meta::Sampler(s)) => pf.sampler = Some(s),
            Ok(Meta::Profiler(p)) => pf.profiler = Some(p),
            Ok(Meta::Module(m)) => pf.modules.push(m),
            Ok(Meta::Stack { id, frames }) => {
                pf.stacks.insert(id, frames);
            }
            Ok(Meta::Channel(c)) => {
                pf.channels.insert(c.id, c);
            }
            Ok(Meta::Resources(list)) => {
                for r in list {
                    pf.resources.insert(r.site, r);
                }
            }
            Ok(Meta::Handoff(h)) => pf.handoffs.push(h),
            Ok(Meta::Reused(entry)) => {
                reuse_at.push(pf.handoffs.len());
                pf.reuses.push(Reuse {
                    entry,
                    effective: false,
                });
            }
            Ok(Meta::Lost(Lost {
                lane,
                tid,
                name: thread,
                ts,
                events,
            })) => {
                if lane == 0 {
                    pf.warnings.push(format!(
                        "{name}: metadata chunk {seq}: a `Lost` entry of {events} events names lane 0, which no thread has; they count for the process only"
                    ));
                } else {
                    let l = pf.lanes.entry(lane).or_default();
                    if l.name.is_empty() {
                        l.name = thread;
                    }
                    l.note_lost(tid, events, Some(ts));
                }
            }
            Err(EntryError::Stray { bytes }) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: {bytes} stray bytes at the end"
            )),
            Err(EntryError::Overrun { len }) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: entry length {len} runs past the committed bytes; rest of the chunk skipped"
            )),
            Err(EntryError::Unknown { variant }) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: entry of unknown kind {variant} (this reader knows {}; a newer writer?); skipped",
                Meta::VARIANTS
            )),
            Err(EntryError::Undecodable(e)) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: undecodable entry ({e}); skipped"
            )),
        }
    }
}
