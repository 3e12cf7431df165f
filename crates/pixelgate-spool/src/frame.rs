//! The on-disk record format: length, CRC32C, lane, payload.
//!
//! ```text
//! segment := MAGIC record*
//! record  := len:u32le crc:u32le lane:u8 payload[len]      crc = crc32c(len ‖ lane ‖ payload)
//! ```
//!
//! The checksum covers the length too, so a flipped bit anywhere in a record is caught. Reading
//! never trusts a byte: [`Records`] yields every intact record and names each damaged region
//! (a bad record, or a tail cut short by a crash) instead of failing or panicking, and finds the
//! next intact record after damage by scanning for a frame whose checksum holds.

/// The first bytes of every segment file; the last byte is the format version.
pub const MAGIC: &[u8; 8] = b"PGSPOOL\x01";

/// Bytes before a record's payload: length, checksum and lane.
pub const RECORD_HEADER: usize = 9;

/// The largest payload a record may carry. Events are a few hundred bytes; anything longer on
/// disk is damage, and the bound keeps the scan for the next record cheap.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Which Redis key a spooled event goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The main queue.
    Main,
    /// The capped overflow list, for clients over their rate limit.
    Overflow,
}

impl Lane {
    /// The label this lane is counted under in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Overflow => "overflow",
        }
    }

    const fn to_byte(self) -> u8 {
        match self {
            Self::Main => 0,
            Self::Overflow => 1,
        }
    }

    const fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Main),
            1 => Some(Self::Overflow),
            _ => None,
        }
    }
}

/// Why a payload cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a spooled event must not be empty")]
    Empty,
    #[error("a spooled event must be at most {MAX_PAYLOAD} bytes, this one is {0}")]
    TooLong(usize),
}

/// Appends one framed record to `out`.
pub fn encode(lane: Lane, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_PAYLOAD)
        .ok_or(FrameError::TooLong(payload.len()))?;
    let len = len.to_le_bytes();
    out.reserve(RECORD_HEADER + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(len, lane.to_byte(), payload).to_le_bytes());
    out.push(lane.to_byte());
    out.extend_from_slice(payload);
    Ok(())
}

fn checksum(len: [u8; 4], lane: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len);
    let crc = crc32c::crc32c_append(crc, &[lane]);
    crc32c::crc32c_append(crc, payload)
}

/// What [`Records`] finds, in file order. Offsets are from the start of the bytes given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// An intact record.
    Record {
        lane: Lane,
        payload: &'a [u8],
        offset: u64,
    },
    /// Damaged bytes (a flipped bit, a bad length, garbage) up to the next intact record or the
    /// end; whatever events they held are lost and counted.
    Corrupt { offset: u64, skipped: u64 },
    /// A last record cut short, as a crash in the middle of a write leaves it. Such a record was
    /// never acknowledged to anyone: its write had not been synced.
    TruncatedTail { offset: u64, len: u64 },
}

/// The records of a segment body (the bytes after [`MAGIC`]), intact or not, in order.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Added to every offset reported: where `bytes` starts in its file.
    base: u64,
}

/// How a frame at some position fails to be a record.
enum Bad {
    /// The header or the payload runs past the end of the bytes.
    Short,
    /// The frame is all there but wrong: lane, length bound or checksum.
    Invalid,
}

impl<'a> Records<'a> {
    /// Records from the first byte on, offsets counted from it.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            base: 0,
        }
    }

    /// The records of a whole segment file, offsets counted from the file's start. A damaged
    /// header is reported as corrupt bytes like any other damage, and the records after it
    /// still come back.
    pub fn segment(file: &'a [u8]) -> Self {
        match file.strip_prefix(MAGIC.as_slice()) {
            Some(body) => Self {
                bytes: body,
                pos: 0,
                base: MAGIC.len() as u64,
            },
            None => Self::new(file),
        }
    }

    /// The record at `at`, or why there is none; on success also where the next one starts.
    fn frame(&self, at: usize) -> Result<(Lane, &'a [u8], usize), Bad> {
        let rest = &self.bytes[at..];
        let Some(header) = rest.get(..RECORD_HEADER) else {
            return Err(Bad::Short);
        };
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let lane = Lane::from_byte(header[8]).ok_or(Bad::Invalid)?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 || len > MAX_PAYLOAD {
            return Err(Bad::Invalid);
        }
        let payload = rest
            .get(RECORD_HEADER..RECORD_HEADER + len)
            .ok_or(Bad::Short)?;
        if checksum(len_bytes, header[8], payload) != crc {
            return Err(Bad::Invalid);
        }
        Ok((lane, payload, at + RECORD_HEADER + len))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let start = self.pos;
        if start >= self.bytes.len() {
            return None;
        }
        let end = self.bytes.len();
        match self.frame(start) {
            Ok((lane, payload, next)) => {
                self.pos = next;
                Some(Item::Record {
                    lane,
                    payload,
                    offset: self.base + start as u64,
                })
            }
            Err(bad) => {
                // Resynchronise on the next position where a whole frame checks out. A random
                // match needs a valid lane, a bounded length and a 32-bit checksum to agree.
                let resume = (start + 1..end).find(|&at| self.frame(at).is_ok());
                self.pos = resume.unwrap_or(end);
                Some(match (bad, resume) {
                    (Bad::Short, None) => Item::TruncatedTail {
                        offset: self.base + start as u64,
                        len: (end - start) as u64,
                    },
                    (_, next) => Item::Corrupt {
                        offset: self.base + start as u64,
                        skipped: (next.unwrap_or(end) - start) as u64,
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(records: &[(Lane, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (lane, payload) in records {
            encode(*lane, payload, &mut out).unwrap();
        }
        out
    }

    fn intact(bytes: &[u8]) -> Vec<(Lane, Vec<u8>)> {
        Records::new(bytes)
            .filter_map(|item| match item {
                Item::Record { lane, payload, .. } => Some((lane, payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    fn lane() -> impl Strategy<Value = Lane> {
        prop_oneof![Just(Lane::Main), Just(Lane::Overflow)]
    }

    fn records() -> impl Strategy<Value = Vec<(Lane, Vec<u8>)>> {
        prop::collection::vec((lane(), prop::collection::vec(any::<u8>(), 1..300)), 0..20)
    }

    #[test]
    fn refuses_empty_and_oversized_payloads() {
        let mut out = Vec::new();
        assert_eq!(encode(Lane::Main, b"", &mut out), Err(FrameError::Empty));
        let big = vec![b'x'; MAX_PAYLOAD + 1];
        assert_eq!(
            encode(Lane::Main, &big, &mut out),
            Err(FrameError::TooLong(MAX_PAYLOAD + 1))
        );
        assert!(out.is_empty());
        encode(Lane::Main, &big[..MAX_PAYLOAD], &mut out).unwrap();
        assert_eq!(intact(&out).len(), 1);
    }

    #[test]
    fn a_cut_last_record_is_a_truncated_tail() {
        let mut bytes = encoded(&[(Lane::Main, b"one".to_vec()), (Lane::Main, b"two".to_vec())]);
        bytes.truncate(bytes.len() - 1);
        let items: Vec<_> = Records::new(&bytes).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            Item::TruncatedTail {
                offset: 12,
                len: 11
            }
        );
    }

    #[test]
    fn zeroes_are_not_records() {
        let items: Vec<_> = Records::new(&[0; 64]).collect();
        assert_eq!(
            items,
            vec![Item::Corrupt {
                offset: 0,
                skipped: 64
            }]
        );
    }

    proptest! {
        #[test]
        fn round_trip(records in records()) {
            let bytes = encoded(&records);
            let items: Vec<_> = Records::new(&bytes).collect();
            prop_assert_eq!(items.len(), records.len());
            prop_assert_eq!(intact(&bytes), records);
        }

        /// Any one flipped bit loses at most the record it hit; every other comes back.
        #[test]
        fn a_flipped_bit_costs_one_record(records in records(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            prop_assume!(!records.is_empty());
            let mut bytes = encoded(&records);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let back = intact(&bytes);
            prop_assert!(back.len() + 1 >= records.len(), "{} of {}", back.len(), records.len());
            for record in &back {
                prop_assert!(records.contains(record));
            }
        }

        /// Arbitrary bytes never panic, and the items tile the input without gap or overlap.
        #[test]
        fn items_cover_any_input(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut pos = 0u64;
            for item in Records::new(&bytes) {
                let (offset, len) = match item {
                    Item::Record { payload, offset, .. } => (offset, (RECORD_HEADER + payload.len()) as u64),
                    Item::Corrupt { offset, skipped } => (offset, skipped),
                    Item::TruncatedTail { offset, len } => (offset, len),
                };
                prop_assert_eq!(offset, pos);
                prop_assert!(len > 0);
                pos += len;
            }
            prop_assert_eq!(pos, bytes.len() as u64);
        }
    }
}
