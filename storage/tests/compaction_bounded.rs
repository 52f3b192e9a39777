//! Compaction with a bounded key map (`LogConfig::compaction_map_bytes`): when the keys of the
//! closed segments do not fit, each compaction maps what fits and rewrites the segments up to
//! there; the next one goes on. No round may drop the latest record of a key, and the rounds
//! together must leave exactly the log one unbounded compaction leaves.

mod common;

use std::collections::HashMap;

use common::*;
use keel_storage::{
    batch::BatchView,
    cleaner::map_entry_bytes,
    io::sim::{SimClock, SimDisk},
    CleanupPolicy, LogConfig,
};

const KEYS: u64 = 50;

/// 200 batches of 3 records over keys `k0..k49`, then a roll: every batch in a closed segment.
/// Returns each key's latest (offset, value).
fn fill(log: &SimLog) -> HashMap<Vec<u8>, (u64, Vec<u8>)> {
    let mut latest = HashMap::new();
    for tag in 0..200 {
        let b = batch(tag, 3, KEYS, 100, 1_000 + tag as i64);
        let info = block_on(log.append(&b, 1)).expect("append");
        let view = BatchView::parse(&b).unwrap();
        for (i, r) in view.decompressed_records().unwrap().records().enumerate() {
            let r = r.unwrap();
            latest.insert(r.key.unwrap().to_vec(), (info.base_offset + i as u64, r.value.unwrap().to_vec()));
        }
    }
    block_on(log.roll()).expect("roll");
    latest
}

/// Every (key, offset, value) the log serves.
fn served(log: &SimLog) -> Vec<(Vec<u8>, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (_, _, bytes) in read_all(log) {
        let view = BatchView::parse(&bytes).unwrap();
        for r in view.decompressed_records().unwrap().records() {
            let r = r.unwrap();
            let offset = r.offset(view.base_offset()) as u64;
            out.push((r.key.unwrap().to_vec(), offset, r.value.unwrap().to_vec()));
        }
    }
    out
}

#[test]
fn a_bounded_key_map_compacts_in_rounds_to_the_same_log() {
    let clock = SimClock::new(1_000);
    let config = LogConfig { cleanup_policy: CleanupPolicy::Compact, ..small_config() };
    // Room for about 10 of the 50 keys ("k0" … "k49").
    let budget = map_entry_bytes(3) * 10;
    let (disk, twin_disk) = (SimDisk::new(3), SimDisk::new(3));
    let log = open(&disk, &clock, LogConfig { compaction_map_bytes: budget, ..config.clone() });
    let twin = open(&twin_disk, &clock, config);
    let latest = fill(&log);
    assert_eq!(fill(&twin), latest);
    assert!(log.segment_bases().len() >= 4, "several closed segments: {:?}", log.segment_bases());

    let once = block_on(twin.compact()).unwrap();
    assert!(once.complete && once.keys_mapped == KEYS as usize, "{once:?}");

    let mut rounds = Vec::new();
    loop {
        let outcome = block_on(log.compact()).unwrap();
        assert!(outcome.map_bytes <= budget, "round {}: {outcome:?}", rounds.len());
        assert!(outcome.keys_mapped <= 10, "round {}: {outcome:?}", rounds.len());
        // No round loses the latest record of any key.
        let now = served(&log);
        for (key, (offset, value)) in &latest {
            assert!(now.contains(&(key.clone(), *offset, value.clone())), "round {}: lost {key:?}", rounds.len());
        }
        rounds.push(outcome.clone());
        if outcome.complete {
            break;
        }
        assert!(rounds.len() < 50, "compaction does not progress: {rounds:?}");
    }
    assert!(rounds.len() >= 5, "50 keys, room for 10 per round: {rounds:?}");
    assert!(rounds.windows(2).all(|w| w[0].mapped_to < w[1].mapped_to), "each round goes on: {rounds:?}");
    // The same log as one unbounded compaction, byte for byte: one record per key.
    assert_eq!(read_all(&log), read_all(&twin));
    assert_eq!(served(&log).len(), KEYS as usize);

    // Nothing new: a further compaction maps nothing and changes nothing.
    let idle = block_on(log.compact()).unwrap();
    assert!(idle.complete && idle.keys_mapped == 0 && idle.records_removed == 0, "{idle:?}");
    // New data is mapped from where the rounds ended.
    let b = batch(7, 1, KEYS, 100, 9_000);
    let info = block_on(log.append(&b, 1)).unwrap();
    block_on(log.roll()).unwrap();
    let next = block_on(log.compact()).unwrap();
    assert!(next.complete && next.keys_mapped == 1 && next.records_removed == 1, "{next:?}");
    let key = b"k7".to_vec();
    let k7: Vec<u64> = served(&log).into_iter().filter(|r| r.0 == key).map(|r| r.1).collect();
    assert_eq!(k7, [info.base_offset], "the new k7 supersedes the one the rounds kept");
}

/// Compaction's first dirty offset survives a reopen (`cleaner.checkpoint`), so the rounds of a
/// bounded map go on where they were instead of mapping from the log start again. A suffix
/// truncation below it drops the checkpoint, so what is appended there anew is mapped.
#[test]
fn compaction_goes_on_from_where_it_was_after_a_reopen() {
    let clock = SimClock::new(1_000);
    let budget = map_entry_bytes(3) * 10;
    let config = LogConfig { cleanup_policy: CleanupPolicy::Compact, compaction_map_bytes: budget, ..small_config() };
    let disk = SimDisk::new(4);
    let log = open(&disk, &clock, config.clone());
    let latest = fill(&log);
    let first = block_on(log.compact()).unwrap();
    assert!(!first.complete && first.keys_mapped == 10, "{first:?}");
    block_on(log.close()).unwrap();

    // Reopened: the next round maps from where the first stopped, not from offset 0.
    let log = open(&disk, &clock, config.clone());
    let second = block_on(log.compact()).unwrap();
    assert!(second.mapped_to > first.mapped_to, "went on: {first:?} then {second:?}");
    drop(log);
    // A crash (no clean close) keeps it too: the checkpoint is written when a round ends.
    disk.crash();
    let log = open(&disk, &clock, config.clone());
    let mut rounds = vec![first.clone(), second.clone()];
    loop {
        let outcome = block_on(log.compact()).unwrap();
        assert!(outcome.mapped_to > rounds.last().unwrap().mapped_to || outcome.complete, "{rounds:?} {outcome:?}");
        rounds.push(outcome.clone());
        if outcome.complete {
            break;
        }
        assert!(rounds.len() < 50, "compaction does not progress: {rounds:?}");
    }
    let served = served(&log);
    assert_eq!(served.len(), KEYS as usize, "one record per key in the end");
    for (key, (offset, value)) in &latest {
        assert!(served.contains(&(key.clone(), *offset, value.clone())), "lost the latest {key:?}");
    }

    // Truncating below the checkpoint drops it. Otherwise, with the log grown past the old
    // checkpoint again, a reopen would skip what was appended between the cut and it.
    let checkpoint = rounds.last().unwrap().mapped_to;
    let cut = read_all(&log)
        .into_iter()
        .map(|(base, _, _)| base)
        .filter(|&base| base > 0 && base < checkpoint)
        .max()
        .expect("a surviving batch below the checkpoint");
    block_on(log.truncate_suffix(cut)).unwrap();
    fill(&log);
    assert!(log.offsets().log_end > checkpoint);
    block_on(log.close()).unwrap();
    let log = open(&disk, &clock, config);
    let again = block_on(log.compact()).unwrap();
    assert!(again.keys_mapped == 10 && again.mapped_to <= cut, "mapped from the start again (cut {cut}): {again:?}");
}
