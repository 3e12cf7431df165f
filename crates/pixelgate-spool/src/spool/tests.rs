use std::num::NonZeroU64;

use super::*;
use crate::frame::{Item, Records};

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.join("spool"),
        segment_bytes: NonZeroU64::new(64 * 1024).unwrap(),
        max_bytes: NonZeroU64::new(1 << 20).unwrap(),
        ..SpoolConfig::default()
    }
}

fn event(n: usize) -> Vec<u8> {
    format!(
        r#"{{"v":1,"id":"{n:08}","kind":"open","pad":"{}"}}"#,
        "x".repeat(200)
    )
    .into_bytes()
}

fn append(spool: &Spool, events: std::ops::Range<usize>) {
    let payloads: Vec<_> = events.map(event).collect();
    spool
        .append(payloads.iter().map(|p| (Lane::Main, p.as_slice())))
        .unwrap();
}

/// Every intact payload of every sealed segment, oldest first.
fn replay(spool: &Spool) -> Vec<Vec<u8>> {
    spool.seal();
    let mut out = Vec::new();
    while let Some(segment) = spool.oldest() {
        let bytes = spool.read(&segment).unwrap();
        for item in Records::segment(&bytes) {
            if let Item::Record { payload, .. } = item {
                out.push(payload.to_vec());
            }
        }
        spool.remove(&segment).unwrap();
    }
    out
}

#[test]
fn appended_groups_come_back_in_order_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path())).unwrap();
    // 1,000 events of ~260 bytes: ~260 KB over 64 KiB segments.
    for group in 0..100 {
        append(&spool, group * 10..group * 10 + 10);
    }
    assert!(
        spool.stats().segments() >= 4,
        "{} segments",
        spool.stats().segments()
    );
    let on_disk: u64 = fs::read_dir(spool.dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| segment_seq(&e.file_name()).is_some())
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(spool.stats().bytes(), on_disk);
    assert_eq!(replay(&spool), (0..1000).map(event).collect::<Vec<_>>());
    assert_eq!(spool.stats().bytes(), 0);
    assert_eq!(spool.stats().segments(), 0);
}

#[test]
fn a_full_spool_refuses_the_whole_group_and_keeps_what_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_bytes: NonZeroU64::new(64 * 1024).unwrap(),
        ..config(tmp.path())
    };
    let spool = Spool::open(&config).unwrap();
    let mut kept = 0;
    loop {
        let before = spool.stats().bytes();
        let payloads: Vec<_> = (kept..kept + 10).map(event).collect();
        match spool.append(payloads.iter().map(|p| (Lane::Main, p.as_slice()))) {
            Ok(()) => kept += 10,
            Err(SpoolError::Full { max_bytes }) => {
                assert_eq!(max_bytes, 64 * 1024);
                assert_eq!(spool.stats().bytes(), before);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(kept > 0);
    assert_eq!(replay(&spool).len(), kept);
    append(&spool, 0..10);
}

#[test]
fn a_second_process_cannot_open_the_same_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Spool::open(&config(tmp.path())).unwrap();
    match Spool::open(&config(tmp.path())) {
        Err(e @ SpoolError::InUse { .. }) => assert!(e.to_string().contains("in use")),
        other => panic!("{other:?}"),
    }
    drop(first);
    Spool::open(&config(tmp.path())).unwrap();
}

#[test]
fn a_restart_finds_the_segments_left_and_appends_after_them() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path())).unwrap();
    append(&spool, 0..10);
    drop(spool); // as a crash would leave it: the current segment never sealed
    // A crash right after a segment was made leaves a file with only its header.
    let config = config(tmp.path());
    fs::write(config.dir.join(format!("{:020}.seg", 7)), MAGIC).unwrap();
    fs::write(config.dir.join("notes.txt"), b"not a segment").unwrap();

    let spool = Spool::open(&config).unwrap();
    assert!(!config.dir.join(format!("{:020}.seg", 7)).exists());
    assert_eq!(spool.stats().segments(), 1);
    append(&spool, 10..20);
    assert_eq!(replay(&spool), (0..20).map(event).collect::<Vec<_>>());
    assert!(config.dir.join("notes.txt").exists());
}

#[test]
fn damage_costs_only_the_records_it_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path())).unwrap();
    append(&spool, 0..10);
    spool.seal();
    let segment = spool.oldest().unwrap();
    let mut bytes = fs::read(&segment.path).unwrap();
    let record = bytes.len() / 10;
    bytes[1] ^= 0x40; // the header
    bytes[MAGIC.len() + 3 * record + 20] ^= 0x01; // inside the fourth record
    bytes.truncate(bytes.len() - 5); // the last record cut short
    fs::write(&segment.path, &bytes).unwrap();

    let bytes = spool.read(&segment).unwrap();
    let items: Vec<_> = Records::segment(&bytes).collect();
    let payloads: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Record { payload, .. } => Some(payload.to_vec()),
            _ => None,
        })
        .collect();
    let expected: Vec<_> = [0, 1, 2, 4, 5, 6, 7, 8].into_iter().map(event).collect();
    assert_eq!(payloads, expected);
    assert_eq!(
        items[0],
        Item::Corrupt {
            offset: 0,
            skipped: 8
        }
    );
    assert!(matches!(items.last(), Some(Item::TruncatedTail { .. })));
    assert_eq!(
        items
            .iter()
            .filter(|i| matches!(i, Item::Corrupt { .. }))
            .count(),
        2
    );
}

#[test]
fn segment_names_are_strict() {
    for (name, seq) in [
        ("00000000000000000001.seg", Some(1)),
        ("00000000000000000001.seg.tmp", None),
        ("1.seg", None),
        ("0000000000000000000a.seg", None),
        ("lock", None),
    ] {
        assert_eq!(segment_seq(std::ffi::OsStr::new(name)), seq, "{name}");
    }
}

#[test]
fn config_is_checked() {
    let mut config = SpoolConfig::default();
    assert!(config.validate().is_ok());
    config.segment_bytes = NonZeroU64::new(100).unwrap();
    assert_eq!(config.validate().unwrap_err().key, "spool.segment_bytes");
    config.segment_bytes = NonZeroU64::new(1 << 30).unwrap();
    config.max_bytes = NonZeroU64::new(1 << 20).unwrap();
    assert_eq!(config.validate().unwrap_err().key, "spool.max_bytes");
}
