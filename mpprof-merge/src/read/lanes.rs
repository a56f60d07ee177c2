//! Which event chunks belong to which lane: chunks continued by other
//! threads (`Handoff`), chunks the flight recorder gave to another thread
//! (`Reused`), what each lane lost to overwriting, and whether a chunk
//! ends in a torn record.

use std::collections::BTreeMap;

use mpprof_format::{self as format, kind, word, Handoff};

use super::file::ProcessFile;
use super::records::{ChunkRef, Layout};
use super::source::Source;

/// Whether the record after a chunk's commit count looks like one its
/// writer was storing when the process stopped (torn or uncommitted): a
/// valid kind and, for 16-byte records, zero padding and a timestamp not
/// older than the chunk's first record. Older data there is a flight-recorder
/// leftover from the chunk's previous use. In format 4 a word holds only the
/// low half of its timestamp, which does not tell a leftover from a new
/// word: a chunk the flight recorder reused is not looked at.
pub(super) fn looks_torn(
    file: &Source,
    layout: Layout,
    data: u64,
    records: u32,
    reused: bool,
) -> std::io::Result<bool> {
    let unit = layout.unit() as u64;
    let mut first = [0u8; 16];
    let mut next = [0u8; 16];
    let n = unit as usize;
    let ok = file.read_at(&mut first[..n], data)? == n
        && file.read_at(&mut next[..n], data + records as u64 * unit)? == n;
    if !ok {
        return Ok(false);
    }
    Ok(match layout {
        Layout::Records16 => {
            let plausible = (kind::ENTER..=kind::LAST_V3).contains(&next[format::record_v3::KIND])
                && next[13..] == [0, 0, 0]
                && le_u64(&next, 0) != 0;
            let recent = if records > 0 {
                le_u64(&next, 0) >= le_u64(&first, 0)
            } else {
                !reused
            };
            plausible && recent
        }
        Layout::Words8 => {
            let w = le_u64(&next, 0);
            !reused && w != 0 && (kind::ENTER..=kind::LAST).contains(&word::kind(w))
        }
    })
}

/// Decides which [`Meta::Reused`] entries took effect and returns, per
/// slot that has any, the index of the first hand-off that describes the
/// slot's current content (hand-offs of the slot before it describe
/// overwritten content) and whether the slot was reused at all.
///
/// The entries of a slot, in file order, took effect up to the last one
/// whose lane is the lane in the slot's header with a `seq` no larger than
/// the header's (the new owner may have reused the chunk as its own since,
/// which raises the seq). An entry after it was written by a thread killed
/// before it re-initialised the header: the old content stands. When the
/// slot has no published header (killed while re-initialising it), all but
/// the last entry took effect.
pub(super) fn apply_reuses(
    pf: &mut ProcessFile,
    event_chunks: &[(u32, u32, ChunkRef)],
    reuse_at: &[usize],
) -> BTreeMap<u32, (usize, bool)> {
    let mut by_slot: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in pf.reuses.iter().enumerate() {
        by_slot.entry(r.entry.slot).or_default().push(i);
    }
    let headers: BTreeMap<u32, (u32, u32)> = event_chunks
        .iter()
        .map(|(slot, lane, c)| (*slot, (*lane, c.seq)))
        .collect();
    let mut current_from = BTreeMap::new();
    for (slot, entries) in by_slot {
        let took_effect = match headers.get(&slot) {
            Some(&(lane, seq)) => entries
                .iter()
                .rposition(|&i| {
                    let e = &pf.reuses[i].entry;
                    e.lane == lane && e.seq <= seq
                })
                .map_or(0, |k| k + 1),
            None => entries.len() - 1,
        };
        for &i in &entries[..took_effect] {
            pf.reuses[i].effective = true;
        }
        let from = match took_effect {
            0 => 0,
            k => reuse_at.get(entries[k - 1]).copied().unwrap_or(0),
        };
        current_from.insert(slot, (from, took_effect > 0));
    }
    current_from
}

/// Adds what the flight recorder overwrote to each lane: the largest
/// header count (of surviving chunks, and of replaced headers) plus the
/// events in chunks other threads took.
pub(super) fn lane_overwritten(pf: &mut ProcessFile) {
    for l in pf.lanes.values_mut() {
        l.overwritten = l.chunks.iter().map(|c| c.overwritten).max().unwrap_or(0);
    }
    for r in pf.reuses.iter().filter(|r| r.effective).map(|r| &r.entry) {
        if r.prev_overwritten > 0 {
            let l = pf.lanes.entry(r.prev_lane).or_default();
            l.overwritten = l.overwritten.max(r.prev_overwritten);
        }
    }
    for r in pf.reuses.iter().filter(|r| r.effective).map(|r| &r.entry) {
        for &(lane, events) in &r.overwritten {
            if events == 0 {
                continue;
            }
            let l = pf.lanes.entry(lane).or_default();
            // Saturating: the counts are untrusted.
            l.overwritten = l.overwritten.saturating_add(events);
            l.overwritten_until = Some(l.overwritten_until.map_or(r.ts, |t| t.max(r.ts)));
        }
    }
}

/// Assigns event chunks to lanes. A chunk continued by other threads
/// ([`Meta::Handoff`]) is split: records before the first hand-off belong
/// to the lane in its header, each later run to the lane that took it over.
/// Only the hand-offs after the slot's last effective reuse count
/// (`current_from`, see [`apply_reuses`]).
pub(super) fn split_handoffs(
    pf: &mut ProcessFile,
    chunks: Vec<(u32, u32, ChunkRef)>,
    current_from: &BTreeMap<u32, (usize, bool)>,
    cap: u32,
    name: &str,
) {
    // When each slot was last taken over (effective `Reused`).
    let mut reused_at: BTreeMap<u32, u64> = BTreeMap::new();
    for r in pf.reuses.iter().filter(|r| r.effective).map(|r| &r.entry) {
        let t = reused_at.entry(r.slot).or_insert(r.ts);
        *t = (*t).max(r.ts);
    }
    let (current, retired): (Vec<_>, Vec<_>) =
        pf.handoffs.iter().copied().enumerate().partition(|(i, h)| {
            current_from
                .get(&h.slot)
                .is_none_or(|&(from, _)| *i >= from)
        });
    // A hand-off of overwritten content no longer splits the chunk, but
    // what its lane lost before the segment is still that lane's: the
    // entry is the only place that counts it.
    for (_, h) in retired {
        if h.lost_before == 0 {
            continue;
        }
        pf.lanes.entry(h.lane).or_default().note_lost(
            h.tid,
            h.lost_before,
            reused_at.get(&h.slot).copied(),
        );
    }
    let mut handoffs: Vec<Handoff> = current.into_iter().map(|(_, h)| h).collect();
    handoffs.sort_by_key(|h| (h.slot, h.start));
    for (slot, lane, c) in chunks {
        let mine: Vec<&Handoff> = handoffs.iter().filter(|h| h.slot == slot).collect();
        let first_end = mine.first().map_or(c.records, |h| h.start.min(c.records));
        // Losses after the chunk filled belong to its last owner.
        let lost_after = if mine.is_empty() { c.lost_after } else { 0 };
        let l = pf.lanes.entry(lane).or_default();
        if l.tid == 0 {
            l.tid = c.tid;
        }
        l.chunks.push(ChunkRef {
            records: first_end,
            lost_after,
            ..c
        });
        for (i, h) in mine.iter().enumerate() {
            if h.start > cap {
                pf.warnings.push(format!("{name}: hand-off of chunk {slot}: field `start` is {}, past the chunk's {cap} records; skipped", h.start));
                continue;
            }
            let end = mine
                .get(i + 1)
                .map_or(c.records, |n| n.start)
                .min(c.records);
            let l = pf.lanes.entry(h.lane).or_default();
            if l.tid == 0 {
                l.tid = h.tid;
            }
            l.chunks.push(ChunkRef {
                offset: c.offset + h.start as u64 * c.layout.unit() as u64,
                layout: c.layout,
                seq: h.seq,
                records: end.saturating_sub(h.start),
                lost_before: h.lost_before,
                overwritten: 0,
                lost_after: if i + 1 == mine.len() { c.lost_after } else { 0 },
                tid: h.tid,
            });
        }
    }
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
