//! The spool's record reader on any bytes, and on damaged segments.
//!
//! The input, as raw bytes, is read as a segment body and as a whole segment file: reading
//! never panics, and the items (records, corrupt regions, a truncated tail) cover the bytes in
//! order without gap or overlap. The same bytes, read as [`Damaged`], are records that are
//! encoded, then damaged once (a flipped bit, or a cut): every record the damage did not touch
//! comes back intact at its offset, and nothing comes back that was not written there.

#![no_main]

use std::ops::Range;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pixelgate_spool::frame::{self, Item, Lane, RECORD_HEADER, Records};

/// Records as the spool writes them, then damage. The spool's payloads are JSON events, which
/// never hold a NUL byte (JSON escapes control characters), so neither do these: a payload that
/// is itself a whole frame (it has one) would come back as a record of its own once the header
/// around it is damaged.
#[derive(Arbitrary, Debug)]
struct Damaged {
    records: Vec<(bool, Vec<u8>)>,
    damage: Damage,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// Flips bit `bit % 8` of the byte at `at` (modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keeps the first `at` bytes (modulo the length).
    Truncate { at: usize },
}

/// Where an item lies in the bytes read, its offset made relative to `base`.
fn span(item: &Item<'_>, base: u64) -> Range<u64> {
    let (offset, len) = match *item {
        Item::Record {
            payload, offset, ..
        } => (offset, (RECORD_HEADER + payload.len()) as u64),
        Item::Corrupt { offset, skipped } => (offset, skipped),
        Item::TruncatedTail { offset, len } => (offset, len),
    };
    offset - base..offset - base + len
}

/// The items of `records`, checked to tile `len` bytes from `base` on.
fn tiled<'a>(records: Records<'a>, base: u64, len: usize) -> Vec<Item<'a>> {
    let items: Vec<Item<'a>> = records.collect();
    let mut at = 0;
    for item in &items {
        let span = span(item, base);
        assert_eq!(span.start, at, "gap or overlap at {item:?}");
        assert!(span.end > span.start, "empty item {item:?}");
        at = span.end;
    }
    assert_eq!(at, len as u64, "items stop short of the end");
    items
}

fn any_bytes(data: &[u8]) {
    tiled(Records::new(data), 0, data.len());
    match data.strip_prefix(frame::MAGIC.as_slice()) {
        Some(body) => tiled(
            Records::segment(data),
            frame::MAGIC.len() as u64,
            body.len(),
        ),
        None => tiled(Records::segment(data), 0, data.len()),
    };
}

fn damaged(input: Damaged) {
    let mut bytes = Vec::new();
    let mut written = Vec::new();
    let mut records = input.records;
    for (_, payload) in &mut records {
        payload.retain(|&b| b != 0);
    }
    for (overflow, payload) in &records {
        let lane = if *overflow {
            Lane::Overflow
        } else {
            Lane::Main
        };
        let offset = bytes.len();
        if frame::encode(lane, payload, &mut bytes).is_ok() {
            written.push((offset..bytes.len(), lane, payload.as_slice()));
        }
    }
    if bytes.is_empty() {
        return;
    }
    let hit = match input.damage {
        Damage::Flip { at, bit } => {
            let at = at % bytes.len();
            bytes[at] ^= 1 << (bit % 8);
            at..at + 1
        }
        Damage::Truncate { at } => {
            let at = at % bytes.len();
            bytes.truncate(at);
            at..usize::MAX
        }
    };
    let items = tiled(Records::new(&bytes), 0, bytes.len());
    let back: Vec<(u64, Lane, &[u8])> = items
        .iter()
        .filter_map(|item| match *item {
            Item::Record {
                lane,
                payload,
                offset,
            } => Some((offset, lane, payload)),
            Item::Corrupt { .. } | Item::TruncatedTail { .. } => None,
        })
        .collect();
    for (range, lane, payload) in &written {
        let untouched = range.end <= hit.start || range.start >= hit.end;
        if untouched {
            let record = (range.start as u64, *lane, *payload);
            assert!(back.contains(&record), "lost undamaged record at {range:?}");
        }
    }
    for (offset, lane, payload) in &back {
        let was_written = written
            .iter()
            .any(|(range, l, p)| range.start as u64 == *offset && l == lane && p == payload);
        assert!(was_written, "a record at {offset} that was never written");
    }
}

fuzz_target!(|data: &[u8]| {
    any_bytes(data);
    if let Ok(input) = Damaged::arbitrary_take_rest(Unstructured::new(data)) {
        damaged(input);
    }
});
