//! Compaction of a log fed by a compressing producer: keys inside compressed batches count, and a
//! compressed batch that loses records is rebuilt compressed with its own codec, offsets intact.

mod common;

use std::collections::HashMap;

use common::*;
use keel_storage::{
    batch::{BatchBuilder, BatchView, Compression, ATTR_LOG_APPEND_TIME, ATTR_TRANSACTIONAL},
    cleaner::{clean_batch, CleanedBatch},
    io::sim::{SimClock, SimDisk},
    CleanupPolicy, LogConfig,
};

type Rec = (u64, Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// Every record of a served batch as (offset, key, value, timestamp), decompressing as needed.
fn records_of(bytes: &[u8]) -> Vec<Rec> {
    let view = BatchView::parse(bytes).expect("valid batch, CRC included");
    let section = view.decompressed_records().expect("decompresses");
    section
        .records()
        .map(|r| {
            let r = r.expect("record decodes");
            (
                r.offset(view.base_offset()) as u64,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
                r.timestamp(view.base_timestamp()),
            )
        })
        .collect()
}

fn compressed(codec: Compression, keys: &[&str], tag: &str, ts: i64) -> Vec<u8> {
    // One idempotent producer per codec (the log refuses a repeated sequence of one producer).
    let producer_id = 7 + [Compression::Lz4, Compression::Zstd, Compression::Gzip, Compression::Snappy]
        .iter()
        .position(|c| *c == codec)
        .unwrap_or(4) as i64;
    let mut b = BatchBuilder::new().compression(codec).producer(producer_id, 2, 100);
    for (i, k) in keys.iter().enumerate() {
        let value = format!("{tag}-{k}-{}", "x".repeat(200));
        b.push(ts + i as i64, Some(k.as_bytes()), Some(value.as_bytes()), &[(b"h", Some(tag.as_bytes()))]);
    }
    b.build()
}

#[test]
fn compressed_batches_are_compacted_and_keep_their_codec() {
    let config = LogConfig { cleanup_policy: CleanupPolicy::Compact, ..small_config() };
    let disk = SimDisk::new(11);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, config);

    // The oldest versions of "b" and "z", uncompressed: "b" is superseded by the lz4 batch, which
    // only a key map that reads compressed batches knows.
    let mut first = BatchBuilder::new();
    first.push(900, Some(b"b"), Some(b"oldest"), &[]);
    first.push(901, Some(b"z"), Some(b"only"), &[]);
    let first_info = block_on(log.append(&first.build(), 3)).unwrap();
    // Old versions inside an lz4 and a zstd batch (and a gzip and a snappy one), newer versions
    // of some keys in uncompressed batches.
    let old = [
        (Compression::Lz4, vec!["a", "b", "c", "d"]),
        (Compression::Zstd, vec!["e", "f", "g"]),
        (Compression::Gzip, vec!["h", "i"]),
        (Compression::Snappy, vec!["j", "k"]),
    ];
    let mut appended = Vec::new();
    for (codec, keys) in &old {
        let bytes = compressed(*codec, keys, codec.name(), 1_000);
        let info = block_on(log.append(&bytes, 3)).unwrap();
        appended.push((*codec, info.base_offset, info.last_offset, stored(&bytes, info.base_offset, 3)));
    }
    for key in ["a", "c", "e", "f", "g", "h", "i"] {
        block_on(log.append(&batch_of(key, "new"), 3)).unwrap();
    }
    block_on(log.roll()).unwrap();
    let before = read_all(&log);

    let outcome = block_on(log.compact()).unwrap();
    assert_eq!(outcome.records_removed, 8, "{outcome:?}");
    let after = read_all(&log);
    let first_after = after.iter().find(|b| b.0 == first_info.base_offset).expect("z survives");
    let z: Vec<Rec> = records_of(&first_after.2);
    assert_eq!(z, vec![(first_info.base_offset + 1, Some(b"z".to_vec()), Some(b"only".to_vec()), 901)]);

    // lz4 keeps b, d; zstd and gzip lost everything; snappy is untouched; the new batches stay.
    let (_, lz4_base, lz4_last, lz4_orig) = &appended[0];
    let lz4 = after.iter().find(|b| b.0 == *lz4_base).expect("the lz4 batch survives");
    assert_eq!(lz4.1, *lz4_last, "offset range kept");
    let view = BatchView::parse(&lz4.2).expect("rebuilt batch parses with a valid CRC");
    assert_eq!(view.compression(), Compression::Lz4);
    assert_eq!(&lz4.2[61..65], &[0x04, 0x22, 0x4d, 0x18], "records section is an lz4 frame");
    let orig = BatchView::parse(lz4_orig).unwrap();
    assert_eq!(view.partition_leader_epoch(), 3);
    assert_eq!((view.producer_id(), view.producer_epoch(), view.base_sequence()), (7, 2, 100));
    assert_eq!(view.base_timestamp(), orig.base_timestamp());
    assert_eq!(view.attributes(), orig.attributes());
    assert_eq!(view.records_count(), 2);
    let orig_recs = records_of(lz4_orig);
    let kept: Vec<Rec> = orig_recs.iter().filter(|r| matches!(r.1.as_deref(), Some(b"b" | b"d"))).cloned().collect();
    assert_eq!(records_of(&lz4.2), kept);
    assert_eq!(kept.iter().map(|r| r.0).collect::<Vec<_>>(), vec![lz4_base + 1, lz4_base + 3]);

    for (_, base, _, _) in &appended[1..3] {
        assert!(after.iter().all(|b| b.0 != *base), "emptied batch at {base} dropped");
    }
    let (_, snappy_base, _, snappy_orig) = &appended[3];
    let snappy = after.iter().find(|b| b.0 == *snappy_base).expect("the snappy batch survives");
    assert_eq!(&snappy.2, snappy_orig, "a batch that loses nothing is kept byte for byte");

    // Every latest value is still served, and nothing else changed.
    let latest = |batches: &[(u64, u64, Vec<u8>)]| {
        let mut m: HashMap<Vec<u8>, (u64, Option<Vec<u8>>)> = HashMap::new();
        for b in batches {
            for (o, k, v, _) in records_of(&b.2) {
                m.insert(k.unwrap(), (o, v));
            }
        }
        m
    };
    assert_eq!(latest(&after), latest(&before));
    assert_eq!(before.len() - after.len(), 2);
}

/// A batch of one uncompressed record `key` = `tag`.
fn batch_of(key: &str, tag: &str) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push(2_000, Some(key.as_bytes()), Some(tag.as_bytes()), &[]);
    b.build()
}

#[test]
fn clean_batch_rebuilds_with_the_same_codec_and_header() {
    let attrs = ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL;
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let mut b = BatchBuilder::new()
            .compression(codec)
            .base_offset(40)
            .partition_leader_epoch(9)
            .producer(5, 1, 17)
            .attributes(attrs)
            .max_timestamp(77_777)
            .last_offset_delta(5);
        b.push_with_delta(0, 100, Some(b"k1"), Some(b"old"), &[(b"h", None)]);
        b.push_with_delta(2, 101, Some(b"k2"), None, &[]);
        b.push_with_delta(3, 102, None, Some(b"no key"), &[]);
        b.push_with_delta(4, 103, Some(b"k3"), Some(b"v3"), &[(b"x", Some(b"y"))]);
        let bytes = b.build();
        let view = BatchView::parse(&bytes).unwrap();
        // k1 has a newer version elsewhere; k2 is an expired tombstone; k3 is the latest.
        let latest: HashMap<Vec<u8>, u64> = [(b"k1".to_vec(), 99), (b"k2".to_vec(), 42), (b"k3".to_vec(), 44)].into();
        let CleanedBatch::Rebuilt { bytes: out, removed } = clean_batch(&view, &latest, 1_000) else {
            panic!("{codec}: expected a rebuilt batch");
        };
        assert_eq!(removed, 2, "{codec}");
        let got = BatchView::parse(&out).unwrap();
        assert_eq!(got.compression(), codec);
        assert_eq!(got.attributes(), attrs | codec.attribute_bits());
        assert_eq!((got.base_offset(), got.last_offset_delta()), (40, 5));
        assert_eq!(got.partition_leader_epoch(), 9);
        assert_eq!((got.producer_id(), got.producer_epoch(), got.base_sequence()), (5, 1, 17));
        assert_eq!((got.base_timestamp(), got.max_timestamp()), (100, 77_777));
        let recs = records_of(&out);
        assert_eq!(
            recs,
            vec![(43, None, Some(b"no key".to_vec()), 102), (44, Some(b"k3".to_vec()), Some(b"v3".to_vec()), 103)],
            "{codec}"
        );
        // Nothing to remove: kept as it is.
        let all_latest: HashMap<Vec<u8>, u64> = [(b"k1".to_vec(), 40), (b"k3".to_vec(), 44)].into();
        assert_eq!(clean_batch(&view, &all_latest, 0), CleanedBatch::Keep, "{codec}");
    }
}

#[test]
fn unreadable_compressed_batch_is_kept_whole() {
    // Batches whose CRC is right but whose payload is not a zstd frame, or decompresses to bytes
    // that are not records, cannot be read: compaction keeps them rather than drop what it cannot see.
    let mut b = BatchBuilder::new().compression(Compression::Zstd);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let good = b.build();
    let mut not_zstd = good[..61].to_vec();
    not_zstd.extend_from_slice(b"not a zstd frame");
    let mut not_records = good[..61].to_vec();
    not_records.extend_from_slice(&zstd::bulk::compress(b"\x7f not records", 3).unwrap());
    let latest: HashMap<Vec<u8>, u64> = [(b"k".to_vec(), 1_000)].into();
    for bad in [&mut not_zstd, &mut not_records] {
        let len = (bad.len() - 12) as i32;
        bad[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let view = BatchView::parse(bad).expect("the CRC covers the garbage, so the batch parses");
        let readable = view.decompressed_records().is_ok_and(|s| s.records().all(|r| r.is_ok()));
        assert!(!readable);
        assert_eq!(clean_batch(&view, &latest, i64::MAX), CleanedBatch::Keep);
    }
    // The readable original under the same map loses its record.
    assert_eq!(clean_batch(&BatchView::parse(&good).unwrap(), &latest, i64::MAX), CleanedBatch::Drop);
}

#[test]
fn compressed_control_batch_is_kept_whole() {
    let mut b = BatchBuilder::new().compression(Compression::Lz4).attributes(keel_storage::batch::ATTR_CONTROL);
    b.push(1, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
    let bytes = b.build();
    let latest: HashMap<Vec<u8>, u64> = [(vec![0, 0, 0, 1], 1_000)].into();
    assert_eq!(clean_batch(&BatchView::parse(&bytes).unwrap(), &latest, i64::MAX), CleanedBatch::Keep);
}
