//! Recovery: one test per row of `RECOVERY_TABLE` (storage/src/recovery.rs), plus the cases the
//! issue names (torn tail, a flipped byte in the last and in a sealed segment, a truncated index, a
//! zero-filled tail).
//!
//! Each test builds the on-disk state on the simulated disk — by running the log and crashing it,
//! by making an operation fail half-way (`fail_next`) and crashing, or by editing files with the
//! raw helpers as a bad disk would — then reopens with `Log::open` and checks:
//! - the decision recovery recorded for that state and file (`RecoveryReport::decisions`),
//! - what the log serves now (every surviving batch byte-identical to what was appended) and its
//!   offsets,
//! - that appending continues at the right offset, and (mostly) that the repaired log and the new
//!   batch survive another power loss.
//!
//! Layout used by most tests (`crashed`): 50 batches over several 16 KiB segments, an explicit
//! roll, then 4 batches in the last segment, with fsync=always so every append was acknowledged
//! and survives the power loss.

mod common;

use std::ops::Range;

use common::*;
use keel_storage::{
    cleaner::CompactionOutcome,
    io::sim::{FaultKind, SimClock, SimDisk},
    recovery::DiskState::{self, *},
    CleanupPolicy, DamagedRange, LogConfig, RecoveryReport, StorageError,
};

const TERM: u32 = 5;
const EIO: i32 = 5;
/// Batches appended before the explicit roll; the last segment then gets `TAIL` more.
const N: u64 = 50;
const TAIL: u64 = 4;

/// Appends tags `0..N`, rolls, appends `TAIL` more into the (then) last segment. Returns what the
/// log must store.
fn fill(log: &SimLog) -> Vec<Stored> {
    let mut expected = append_tagged(log, 0..N, TERM);
    block_on(log.roll()).expect("roll");
    let bases_before = log.segment_bases();
    expected.extend(append_tagged(log, N..N + TAIL, TERM));
    assert_eq!(log.segment_bases(), bases_before, "the tail batches fit in one segment");
    assert!(bases_before.len() >= 4, "the fixture needs at least 3 sealed segments: {bases_before:?}");
    expected
}

/// A filled log left as a power loss leaves it.
fn crashed(seed: u64) -> (SimDisk, SimClock, Vec<Stored>) {
    let disk = SimDisk::new(seed);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let expected = fill(&log);
    drop(log);
    disk.crash();
    (disk, clock, expected)
}

fn end_of(expected: &[Stored]) -> u64 {
    expected.last().map_or(0, |b| b.1 + 1)
}

/// The batches stored in segment `base`'s file: (position, base, last, length).
fn batches_of(disk: &SimDisk, base: u64) -> Vec<(usize, u64, u64, usize)> {
    batches_in(&disk.file_bytes(DIR, &log_file(base)).expect("segment file"))
}

fn file_len(disk: &SimDisk, name: &str) -> usize {
    disk.file_bytes(DIR, name).unwrap_or_else(|| panic!("{name} exists")).len()
}

/// XORs one byte of a file, as bit rot would.
fn flip(disk: &SimDisk, name: &str, pos: usize) {
    let old = disk.file_bytes(DIR, name).expect("file")[pos];
    disk.write_raw(DIR, name, pos as u64, &[old ^ 0x5A]);
}

/// Appends one batch (continuing at the log end), loses power, reopens, and checks the log serves
/// `expected` plus that batch. Returns the reopened log and its report.
fn append_then_power_loss(
    disk: &SimDisk,
    clock: &SimClock,
    log: SimLog,
    mut expected: Vec<Stored>,
    log_start: u64,
) -> (SimLog, RecoveryReport, Vec<Stored>) {
    let end = log.offsets().log_end;
    expected.push(append_one_more(&log, 10_000, end));
    drop(log);
    disk.crash();
    let (log, report) = reopen(disk, clock, small_config());
    assert_serves(&log, &expected, log_start, end_of(&expected));
    (log, report, expected)
}

/// For a log with one refused range: every batch outside it reads back byte-identical (a read of
/// that batch alone); offsets inside it are refused with `Corrupt` naming the range.
fn assert_serves_around(log: &SimLog, expected: &[Stored], damaged: &Range<u64>) {
    for (base, last, bytes) in expected {
        if *base < damaged.end && *last >= damaged.start {
            for at in [*base, *last] {
                match block_on(log.read(at, 1 << 20)) {
                    Err(StorageError::Corrupt { offsets, .. }) => assert_eq!(&offsets, damaged, "read {at}"),
                    other => panic!("read {at} inside the damaged range {damaged:?}: {other:?}"),
                }
            }
            continue;
        }
        let one = block_on(log.read(*base, 1)).unwrap_or_else(|e| panic!("read {base} (outside {damaged:?}): {e}"));
        let first = &split(&one.bytes)[0];
        assert!(
            first.0 == *base && first.1 == *last && first.2 == *bytes,
            "read {base}: got batch {}..={}",
            first.0,
            first.1
        );
    }
}

/// For a log with one refused range: a large read (1 MiB) from every batch outside the range
/// succeeds, starts with that batch, returns only batches as appended, in order, and none of the
/// range (a read that reaches the range stops before it).
fn assert_large_reads_around(log: &SimLog, expected: &[Stored], damaged: &Range<u64>) {
    for (i, (base, last, _)) in expected.iter().enumerate() {
        if *base < damaged.end && *last >= damaged.start {
            continue;
        }
        let many = block_on(log.read(*base, 1 << 20))
            .unwrap_or_else(|e| panic!("large read from {base} (outside {damaged:?}): {e}"));
        let got = split(&many.bytes);
        assert!(!got.is_empty(), "large read from {base} returned nothing");
        for (g, w) in got.iter().zip(&expected[i..]) {
            assert!(g == w, "large read from {base}: got batch {}..={} where {}..={} was appended", g.0, g.1, w.0, w.1);
        }
        assert!(
            got.iter().all(|g| g.1 < damaged.start || g.0 >= damaged.end),
            "a read from {base} returned offsets of the damaged range {damaged:?}"
        );
    }
}

/// Every segment but the ones in `except` was trusted (sealed ones) per its valid index.
fn assert_sealed_trusted(report: &RecoveryReport, bases: &[u64], except: &[u64]) {
    for &b in &bases[..bases.len() - 1] {
        if !except.contains(&b) {
            assert_eq!(decisions_for(report, &log_file(b)), [SealedIndexValid], "segment {b}: {report:?}");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// CleanShutdown, SealedIndexValid

/// Row CleanShutdown: after `close`, every segment has a valid index and the marker is valid, so
/// open trusts all of them without scanning, honours the marker once (removes it), serves
/// everything; a crash after that is an unclean stop again.
#[test]
fn row_clean_shutdown_trusts_every_segment_without_scanning() {
    let disk = SimDisk::new(1);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let expected = fill(&log);
    block_on(log.close()).unwrap();
    assert!(disk.list_raw(DIR).contains(&"clean.shutdown".to_string()));
    let bases = segment_files(&disk);

    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(report.clean_shutdown);
    assert_eq!(report.scanned_segments, 0, "{report:?}");
    assert_eq!(report.rebuilt_indexes, 0);
    let want: Vec<(DiskState, String)> = bases
        .iter()
        .enumerate()
        .map(|(i, &b)| (if i + 1 == bases.len() { CleanShutdown } else { SealedIndexValid }, log_file(b)))
        .collect();
    assert_eq!(report.decisions, want);
    assert!(!disk.list_raw(DIR).contains(&"clean.shutdown".to_string()), "the marker is honoured once");
    assert_serves(&log, &expected, 0, end_of(&expected));

    let (_log, report, _) = append_then_power_loss(&disk, &clock, log, expected, 0);
    assert!(!report.clean_shutdown, "a crash after a clean open is not a clean shutdown");
    assert!(!decisions_for(&report, &log_file(*bases.last().unwrap())).contains(&CleanShutdown));
}

/// Row SealedIndexValid: after a power loss, every sealed segment whose index agrees with its file
/// is trusted without a scan; only the last segment is scanned.
#[test]
fn row_sealed_index_valid_is_trusted_and_only_the_last_segment_is_scanned() {
    let (disk, clock, expected) = crashed(2);
    let bases = segment_files(&disk);
    let last = *bases.last().unwrap();
    let last_len = file_len(&disk, &log_file(last)) as u64;

    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(!report.clean_shutdown);
    assert_sealed_trusted(&report, &bases, &[]);
    assert_eq!(report.scanned_segments, 1, "{report:?}");
    assert_eq!(report.scanned_bytes, last_len);
    assert_eq!(report.rebuilt_indexes, 0);
    assert!(report.damaged.is_empty());
    assert_eq!(log.segment_bases(), bases);
    assert_serves(&log, &expected, 0, end_of(&expected));
    append_then_power_loss(&disk, &clock, log, expected, 0);
}

// ------------------------------------------------------------------------------------------------
// Index rows

/// Row IndexMissing: a sealed segment without `.index`, another without `.timeindex`: both are
/// scanned and their indexes rebuilt — byte-identical to the ones the seal wrote — and persisted,
/// so the next open trusts them again.
#[test]
fn row_index_missing_is_rebuilt_identically() {
    let (disk, clock, expected) = crashed(3);
    let bases = segment_files(&disk);
    let (s0, s1) = (bases[0], bases[1]);
    let originals: Vec<(String, Vec<u8>)> = [index_file(s0), timeindex_file(s0), index_file(s1), timeindex_file(s1)]
        .into_iter()
        .map(|n| {
            let bytes = disk.file_bytes(DIR, &n).unwrap();
            (n, bytes)
        })
        .collect();
    disk.remove_raw(DIR, &index_file(s0));
    disk.remove_raw(DIR, &timeindex_file(s1));

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &log_file(s0)), [IndexMissing]);
    assert_eq!(decisions_for(&report, &log_file(s1)), [IndexMissing]);
    assert_sealed_trusted(&report, &bases, &[s0, s1]);
    assert_eq!(report.rebuilt_indexes, 2);
    assert_eq!(report.scanned_segments, 3);
    for (name, bytes) in &originals {
        assert!(disk.file_bytes(DIR, name).as_ref() == Some(bytes), "{name} rebuilt byte-identical");
    }
    assert_serves(&log, &expected, 0, end_of(&expected));
    // Lookups through the rebuilt indexes find each batch by any of its offsets.
    for (base, last, bytes) in &expected {
        let read = block_on(log.read(*last, 1)).unwrap();
        assert!(split(&read.bytes)[0] == (*base, *last, bytes.clone()), "read {last}");
    }
    let (_log, report, _) = append_then_power_loss(&disk, &clock, log, expected, 0);
    assert_sealed_trusted(&report, &bases, &[]);
}

/// Row IndexDamaged: a bad CRC (flipped entry byte), a bad magic, and an offset index that belongs
/// to another segment (valid on its own, inconsistent with the time index): each is rebuilt by a
/// scan, byte-identical to the original.
#[test]
fn row_index_damaged_is_rebuilt_identically() {
    let (disk, clock, expected) = crashed(4);
    let bases = segment_files(&disk);
    let (s0, s1, s2) = (bases[0], bases[1], bases[2]);
    let originals: Vec<(String, Vec<u8>)> = [s0, s1, s2]
        .iter()
        .flat_map(|&b| [index_file(b), timeindex_file(b)])
        .map(|n| {
            let bytes = disk.file_bytes(DIR, &n).unwrap();
            (n, bytes)
        })
        .collect();
    flip(&disk, &index_file(s0), 48 + 5); // inside the first entry: CRC mismatch
    flip(&disk, &timeindex_file(s1), 0); // magic
    disk.remove_raw(DIR, &index_file(s2));
    disk.write_raw(DIR, &index_file(s2), 0, &originals[2].1); // s1's offset index under s2's name

    let (log, report) = reopen(&disk, &clock, small_config());
    for s in [s0, s1, s2] {
        assert_eq!(decisions_for(&report, &log_file(s)), [IndexDamaged], "segment {s}");
    }
    assert_sealed_trusted(&report, &bases, &[s0, s1, s2]);
    assert_eq!(report.rebuilt_indexes, 3);
    for (name, bytes) in &originals {
        assert!(disk.file_bytes(DIR, name).as_ref() == Some(bytes), "{name} rebuilt byte-identical");
    }
    assert_serves(&log, &expected, 0, end_of(&expected));
    let (_log, report, _) = append_then_power_loss(&disk, &clock, log, expected, 0);
    assert_sealed_trusted(&report, &bases, &[]);
}

/// Issue case "truncated index" (row IndexDamaged): offset index cut inside its header, offset
/// index cut inside its entries, empty time index. All rebuilt, the log serves everything.
#[test]
fn truncated_index_is_rebuilt() {
    let (disk, clock, expected) = crashed(5);
    let bases = segment_files(&disk);
    let (s0, s1, s2) = (bases[0], bases[1], bases[2]);
    let originals: Vec<(String, Vec<u8>)> = [index_file(s0), index_file(s1), timeindex_file(s2)]
        .into_iter()
        .map(|n| {
            let bytes = disk.file_bytes(DIR, &n).unwrap();
            (n, bytes)
        })
        .collect();
    disk.set_len_raw(DIR, &index_file(s0), 30);
    disk.set_len_raw(DIR, &index_file(s1), 48 + 4);
    disk.set_len_raw(DIR, &timeindex_file(s2), 0);

    let (log, report) = reopen(&disk, &clock, small_config());
    for s in [s0, s1, s2] {
        assert_eq!(decisions_for(&report, &log_file(s)), [IndexDamaged], "segment {s}");
    }
    assert_eq!(report.rebuilt_indexes, 3);
    for (name, bytes) in &originals {
        assert!(disk.file_bytes(DIR, name).as_ref() == Some(bytes), "{name} rebuilt byte-identical");
    }
    assert_serves(&log, &expected, 0, end_of(&expected));
    for (base, last, bytes) in &expected {
        let read = block_on(log.read(*last, 1)).unwrap();
        assert!(split(&read.bytes)[0] == (*base, *last, bytes.clone()), "read {last}");
    }
    append_then_power_loss(&disk, &clock, log, expected, 0);
}

/// Row IndexPastEnd, sealed segment: compaction's swap interrupted after the `.log` rename and
/// before the index renames leaves the old (longer) index next to the compacted file. Recovery
/// scans and rebuilds, and the log serves exactly what it served after the compaction.
#[test]
fn row_index_past_end_after_interrupted_compaction_swap() {
    let config = LogConfig { cleanup_policy: CleanupPolicy::Compact, ..small_config() };
    let disk = SimDisk::new(6);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, config.clone());
    fill(&log);
    let bases = segment_files(&disk);
    let before: Vec<(u64, usize, Vec<u8>, Vec<u8>)> = bases
        .iter()
        .map(|&b| {
            (
                b,
                file_len(&disk, &log_file(b)),
                disk.file_bytes(DIR, &index_file(b)).unwrap_or_default(),
                disk.file_bytes(DIR, &timeindex_file(b)).unwrap_or_default(),
            )
        })
        .collect();
    let outcome: CompactionOutcome = block_on(log.compact()).unwrap();
    assert!(outcome.segments_rewritten > 0 && outcome.records_removed > 0, "{outcome:?}");
    let (s, _, old_index, old_timeindex) = before
        .iter()
        .find(|(b, len, _, _)| (1..*len).contains(&file_len(&disk, &log_file(*b))))
        .cloned()
        .expect("a segment compaction shrank but did not empty");
    let expected = read_all(&log);
    let end = log.offsets().log_end;
    // Undo the index renames: the old index files are back next to the compacted segment.
    for (name, bytes) in [(index_file(s), old_index), (timeindex_file(s), old_timeindex)] {
        disk.remove_raw(DIR, &name);
        disk.write_raw(DIR, &name, 0, &bytes);
    }
    drop(log);
    disk.crash();

    let (log, report) = block_on(keel_storage::Log::open(disk.dir(DIR), clock.clone(), config.clone())).unwrap();
    assert_eq!(decisions_for(&report, &log_file(s)), [IndexPastEnd], "{report:?}");
    assert!(report.damaged.is_empty());
    assert!(report.rebuilt_indexes >= 1);
    assert_serves(&log, &expected, 0, end);
    let new = append_one_more(&log, 20_000, end);
    drop(log);
    disk.crash();
    let (log, report) = block_on(keel_storage::Log::open(disk.dir(DIR), clock, config)).unwrap();
    assert_eq!(decisions_for(&report, &log_file(s)), [SealedIndexValid], "the rebuilt index was persisted");
    let mut expected = expected;
    expected.push(new);
    assert_serves(&log, &expected, 0, end_of(&expected));
}

/// Row IndexPastEnd, last segment: a clean close indexes the active segment; after the clean
/// reopen the log appends to it, so the index on disk is stale (shorter) when power fails.
/// Recovery must not trust it: it scans and serves everything appended after the reopen.
#[test]
fn row_index_past_end_in_last_segment_after_clean_reopen() {
    let disk = SimDisk::new(7);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let mut expected = fill(&log);
    block_on(log.close()).unwrap();
    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(report.clean_shutdown);
    let last = log.active_segment_base();
    expected.extend(append_tagged(&log, 100..102, TERM));
    assert_eq!(log.active_segment_base(), last);
    drop(log);
    disk.crash();

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &log_file(last))[0], IndexPastEnd, "{report:?}");
    assert!(!report.clean_shutdown);
    assert_serves(&log, &expected, 0, end_of(&expected));
    append_then_power_loss(&disk, &clock, log, expected, 0);
}

// ------------------------------------------------------------------------------------------------
// Last segment rows

/// Row UncleanTail: the last segment has a valid index that agrees with its file, but there is no
/// valid clean-shutdown marker (missing, or damaged): it is scanned anyway; sealed ones are trusted.
#[test]
fn row_unclean_tail_without_valid_marker_is_scanned() {
    for damaged_marker in [false, true] {
        let disk = SimDisk::new(8);
        let clock = SimClock::new(1_000);
        let log = open(&disk, &clock, small_config());
        let expected = fill(&log);
        block_on(log.close()).unwrap();
        if damaged_marker {
            flip(&disk, "clean.shutdown", 6);
        } else {
            disk.remove_raw(DIR, "clean.shutdown");
        }
        let bases = segment_files(&disk);
        let last = *bases.last().unwrap();

        let (log, report) = reopen(&disk, &clock, small_config());
        assert!(!report.clean_shutdown, "damaged marker: {damaged_marker}");
        assert_eq!(decisions_for(&report, &log_file(last)), [UncleanTail], "damaged marker: {damaged_marker}");
        assert_sealed_trusted(&report, &bases, &[]);
        assert_eq!(report.scanned_segments, 1);
        assert_eq!(report.scanned_bytes, file_len(&disk, &log_file(last)) as u64);
        assert_serves(&log, &expected, 0, end_of(&expected));
        let (log, _, _) = append_then_power_loss(&disk, &clock, log, expected, 0);
        // A clean close now writes a fresh valid marker over the damaged one.
        block_on(log.close()).unwrap();
        let (_log, report) = reopen(&disk, &clock, small_config());
        assert!(report.clean_shutdown, "damaged marker: {damaged_marker}");
    }
}

/// Row ZeroFilledTail (and the "zero-filled tail"): zeros after the last batch (page
/// padding, preallocated or journaled-but-unwritten extents) end the log there: the file is cut
/// to the last batch, nothing is reported as truncated data, nothing is lost.
#[test]
fn row_zero_filled_tail_is_cut_and_loses_nothing() {
    let (disk, clock, expected) = crashed(9);
    let last = *segment_files(&disk).last().unwrap();
    let batches = batches_of(&disk, last);
    let content_end = batches.last().map_or(0, |b| b.0 + b.3);
    let len = file_len(&disk, &log_file(last));
    disk.set_len_raw(DIR, &log_file(last), (len + 3 * 4096) as u64);

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &log_file(last)), [IndexMissing, ZeroFilledTail]);
    assert_eq!(report.truncated_bytes, 0, "zeros are not data");
    assert_eq!(report.discarded_valid_bytes, 0);
    assert_eq!(file_len(&disk, &log_file(last)), content_end, "cut right after the last batch");
    assert_serves(&log, &expected, 0, end_of(&expected));
    append_then_power_loss(&disk, &clock, log, expected, 0);
}

/// Row ZeroFilledTail: zeros where the last batch's header should be (a torn write whose first
/// sectors never reached the disk) end the log before that batch.
#[test]
fn row_zero_filled_tail_over_the_last_batch_header_cuts_before_it() {
    let (disk, clock, mut expected) = crashed(10);
    let last = *segment_files(&disk).last().unwrap();
    let (pos, base, _, _) = *batches_of(&disk, last).last().unwrap();
    disk.write_raw(DIR, &log_file(last), pos as u64, &[0; 512]);

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &log_file(last)), [IndexMissing, ZeroFilledTail]);
    assert_eq!(file_len(&disk, &log_file(last)), pos);
    let gone = expected.pop().unwrap();
    assert_eq!(gone.0, base);
    assert_serves(&log, &expected, 0, base);
    append_then_power_loss(&disk, &clock, log, expected, 0);
}

/// Row TornTail (and the "torn tail"): the last segment ends inside its last batch. The
/// log is truncated at that batch's first byte, the partial batch is reported as truncated, and
/// the next append reuses its offset.
#[test]
fn row_torn_tail_is_truncated_at_the_torn_batch() {
    let (disk, clock, mut expected) = crashed(11);
    let last = *segment_files(&disk).last().unwrap();
    let (pos, base, _, len) = *batches_of(&disk, last).last().unwrap();
    disk.set_len_raw(DIR, &log_file(last), (pos + len / 2) as u64);

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &log_file(last)), [IndexMissing, TornTail]);
    assert_eq!(report.truncated_bytes, (len / 2) as u64);
    assert_eq!(file_len(&disk, &log_file(last)), pos);
    assert_eq!(expected.pop().unwrap().0, base);
    assert_serves(&log, &expected, 0, base);
    append_then_power_loss(&disk, &clock, log, expected, 0);
}

/// Row BadBatchInTail (and the "flipped byte in the last segment"): a bad CRC (flipped
/// record byte), a bad magic, or a bad length in the second of the last segment's 4 batches: the
/// log is truncated there; what followed (valid but, by the table's reasoning, never
/// acknowledged) is dropped and counted in `discarded_valid_bytes`.
#[test]
fn row_bad_batch_in_tail_is_truncated_at_the_first_bad_byte() {
    for (what, field_pos, bytes) in
        [("crc", 70, None), ("magic", 16, Some(vec![1u8])), ("length", 8, Some(vec![0, 0, 0, 10]))]
    {
        let (disk, clock, expected) = crashed(12);
        let last = *segment_files(&disk).last().unwrap();
        let name = log_file(last);
        let batches = batches_of(&disk, last);
        assert_eq!(batches.len() as u64, TAIL);
        let (pos, base, _, _) = batches[1];
        match bytes {
            None => flip(&disk, &name, pos + field_pos),
            Some(b) => disk.write_raw(DIR, &name, (pos + field_pos) as u64, &b),
        }
        let len_before = file_len(&disk, &name);

        let (log, report) = reopen(&disk, &clock, small_config());
        assert_eq!(decisions_for(&report, &name), [IndexMissing, BadBatchInTail], "{what}");
        assert_eq!(file_len(&disk, &name), pos, "{what}");
        assert_eq!(report.truncated_bytes, (len_before - pos) as u64, "{what}");
        let after: u64 = batches[2..].iter().map(|b| b.3 as u64).sum();
        assert!(report.discarded_valid_bytes >= after, "{what}: {report:?}");
        assert!(report.damaged.is_empty(), "{what}: the tail is cut, not reported as damage");
        let kept: Vec<Stored> = expected.iter().filter(|b| b.0 < base).cloned().collect();
        assert_serves(&log, &kept, 0, base);
        append_then_power_loss(&disk, &clock, log, kept, 0);
    }
}

// ------------------------------------------------------------------------------------------------
// Sealed segment rows

/// Row BadBatchInSealed (and the "flipped byte in a sealed segment"): a flipped byte in a
/// batch in the middle of a sealed segment whose index is lost too, so the segment is scanned. The
/// bytes stay, the batch's offsets are reported (`RecoveryReport::damaged`,
/// `Log::damaged_ranges`) and refused with `Corrupt`; reads before and after it work, offsets are
/// not renumbered, appends work, and the damage is still reported after another restart.
#[test]
fn row_bad_batch_in_sealed_is_reported_and_refused() {
    let (disk, clock, expected) = crashed(13);
    let bases = segment_files(&disk);
    let s1 = bases[1];
    let name = log_file(s1);
    let batches = batches_of(&disk, s1);
    let k = batches.len() / 2;
    let (pos, base, last, _) = batches[k];
    flip(&disk, &name, pos + 70);
    disk.remove_raw(DIR, &index_file(s1));
    let bytes_before = disk.file_bytes(DIR, &name).unwrap();

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &name), [IndexMissing, BadBatchInSealed], "{report:?}");
    assert_sealed_trusted(&report, &bases, &[s1]);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let DamagedRange { segment, offsets, .. } = &report.damaged[0];
    assert_eq!((segment.as_str(), offsets.clone()), (name.as_str(), base..last + 1));
    assert_eq!(log.damaged_ranges(), report.damaged);
    assert!(disk.file_bytes(DIR, &name) == Some(bytes_before), "a sealed segment's bytes are kept");
    assert_eq!(log.offsets().log_end, end_of(&expected), "nothing truncated, nothing renumbered");
    assert_serves_around(&log, &expected, &(base..last + 1));

    let end = end_of(&expected);
    let mut expected = expected;
    expected.push(append_one_more(&log, 30_000, end));
    drop(log);
    disk.crash();
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(report.damaged.len(), 1, "the damage is still reported after a restart: {report:?}");
    assert_eq!(report.damaged[0].offsets, base..last + 1);
    assert_serves_around(&log, &expected, &(base..last + 1));
}

/// Issue case "flipped byte in a sealed segment" when the segment's index is intact: by design
/// open trusts the index and does not read the segment, so nothing is reported at open, but a
/// read of the batch is refused with `Corrupt` (CRC checked on every disk read), and every other
/// batch — before and after it — still reads back; appends work.
#[test]
fn flipped_byte_in_trusted_sealed_segment_is_refused_on_read() {
    let (disk, clock, expected) = crashed(14);
    let bases = segment_files(&disk);
    let s1 = bases[1];
    let batches = batches_of(&disk, s1);
    let k = batches.len() / 2;
    let (pos, base, last, _) = batches[k];
    flip(&disk, &log_file(s1), pos + 70);

    let (log, report) = reopen(&disk, &clock, small_config());
    assert_sealed_trusted(&report, &bases, &[]);
    assert!(report.damaged.is_empty(), "a trusted segment is not read at open");
    for at in [base, last] {
        assert!(matches!(block_on(log.read(at, 1)), Err(StorageError::Corrupt { .. })), "read {at}");
    }
    for (b, l, bytes) in expected.iter().filter(|b| b.0 != base) {
        let read = block_on(log.read(*b, 1)).unwrap_or_else(|e| panic!("read {b}: {e}"));
        assert!(split(&read.bytes)[0] == (*b, *l, bytes.clone()), "read {b}");
    }
    append_one_more(&log, 40_000, end_of(&expected));
}

/// Row TornSealed: a sealed segment ends inside its last batch (synced data lost). Its index no
/// longer agrees with it (IndexPastEnd), the scan finds the torn batch: its offsets — up to the
/// next segment's base — are reported and refused; nothing is truncated or renumbered.
#[test]
fn row_torn_sealed_is_reported_and_refused() {
    let (disk, clock, expected) = crashed(15);
    let bases = segment_files(&disk);
    let (s1, s2) = (bases[1], bases[2]);
    let name = log_file(s1);
    let (pos, base, last, len) = *batches_of(&disk, s1).last().unwrap();
    assert_eq!(last + 1, s2);
    disk.set_len_raw(DIR, &name, (pos + len / 2) as u64);

    let (log, report) = reopen(&disk, &clock, small_config());
    let decisions = decisions_for(&report, &name);
    assert_eq!(decisions[0], IndexPastEnd, "{report:?}");
    assert!(decisions.contains(&TornSealed), "{report:?}");
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!((report.damaged[0].segment.as_str(), report.damaged[0].offsets.clone()), (name.as_str(), base..s2));
    assert_eq!(log.damaged_ranges(), report.damaged);
    assert_eq!(file_len(&disk, &name), pos + len / 2, "a sealed segment is never truncated");
    assert_eq!(log.offsets().log_end, end_of(&expected));
    assert_serves_around(&log, &expected, &(base..s2));
    append_one_more(&log, 50_000, end_of(&expected));
}

// ------------------------------------------------------------------------------------------------
// OffsetsNotMonotonic

/// Rewrites the base offset of the batch at `pos` of segment `seg` to `to` (outside the CRC: the
/// batch stays valid, like stale bytes of an older version of the file).
fn set_stored_base(disk: &SimDisk, seg: u64, pos: usize, to: u64) {
    disk.write_raw(DIR, &log_file(seg), pos as u64, &(to as i64).to_be_bytes());
}

/// Row OffsetsNotMonotonic, action: a batch whose base offset goes backwards is treated like a
/// bad batch — in the last segment the log is truncated there; in a (scanned) sealed segment its
/// offsets are reported and refused.
#[test]
fn row_offsets_not_monotonic_is_treated_like_a_bad_batch() {
    // Last segment: truncated at the stale batch.
    let (disk, clock, expected) = crashed(16);
    let last = *segment_files(&disk).last().unwrap();
    let batches = batches_of(&disk, last);
    let (pos, base, _, _) = batches[2];
    set_stored_base(&disk, last, pos, batches[1].1);
    let (log, report) = reopen(&disk, &clock, small_config());
    let decisions = decisions_for(&report, &log_file(last));
    assert!(decisions.iter().any(|d| matches!(d, OffsetsNotMonotonic | BadBatchInTail)), "{report:?}");
    assert_eq!(file_len(&disk, &log_file(last)), pos);
    let kept: Vec<Stored> = expected.iter().filter(|b| b.0 < base).cloned().collect();
    assert_serves(&log, &kept, 0, base);
    append_then_power_loss(&disk, &clock, log, kept, 0);

    // Sealed segment (index lost, so it is scanned): the stale batch's offsets are refused.
    let (disk, clock, expected) = crashed(17);
    let s1 = segment_files(&disk)[1];
    let batches = batches_of(&disk, s1);
    let k = batches.len() / 2;
    let (pos, base, last, _) = batches[k];
    set_stored_base(&disk, s1, pos, batches[k - 1].1);
    disk.remove_raw(DIR, &index_file(s1));
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].offsets, base..last + 1);
    assert_eq!(log.offsets().log_end, end_of(&expected));
    assert_serves_around(&log, &expected, &(base..last + 1));
    append_one_more(&log, 60_000, end_of(&expected));
}

/// Row OffsetsNotMonotonic, decision: recovery records the state it found — the table has a row
/// for stale offsets, distinct from a bad length/magic/CRC.
#[test]
fn row_offsets_not_monotonic_is_recorded_as_its_own_state() {
    let (disk, clock, _) = crashed(18);
    let last = *segment_files(&disk).last().unwrap();
    let batches = batches_of(&disk, last);
    set_stored_base(&disk, last, batches[2].0, batches[1].1);
    let (_log, report) = reopen(&disk, &clock, small_config());
    assert!(decisions_for(&report, &log_file(last)).contains(&OffsetsNotMonotonic), "{:?}", report.decisions);
}

// ------------------------------------------------------------------------------------------------
// Interrupted operations

/// Row LeftoverCompaction: a compaction that failed before its swap (the first rename fails) leaves
/// `*.cleaned` files, and a checkpoint write that died leaves a `.tmp`. Open deletes them (with or
/// without a power loss in between), records each, and serves the original, uncompacted data.
#[test]
fn row_leftover_compaction_files_are_deleted() {
    for power_loss in [false, true] {
        let config = LogConfig { cleanup_policy: CleanupPolicy::Compact, ..small_config() };
        let disk = SimDisk::new(19);
        let clock = SimClock::new(1_000);
        let log = open(&disk, &clock, config.clone());
        let expected = fill(&log);
        disk.fail_next(FaultKind::Rename, 1, EIO);
        assert!(matches!(block_on(log.compact()), Err(StorageError::Io { .. })));
        let cleaned: Vec<String> = disk.list_raw(DIR).into_iter().filter(|n| n.ends_with(".cleaned")).collect();
        assert_eq!(cleaned.len(), 3, "{:?}", disk.list_raw(DIR));
        drop(log);
        if power_loss {
            disk.crash();
        }
        disk.write_raw(DIR, "log-start.checkpoint.tmp", 0, b"half-written");
        let leftovers: Vec<String> =
            disk.list_raw(DIR).into_iter().filter(|n| n.ends_with(".cleaned") || n.ends_with(".tmp")).collect();
        assert!(!leftovers.is_empty());
        let bases = segment_files(&disk);

        let (log, report) = block_on(keel_storage::Log::open(disk.dir(DIR), clock.clone(), config.clone())).unwrap();
        for name in &leftovers {
            assert_eq!(decisions_for(&report, name), [LeftoverCompaction], "{name}");
            assert!(report.deleted_files.contains(name), "{name}: {report:?}");
        }
        let left: Vec<String> =
            disk.list_raw(DIR).into_iter().filter(|n| n.ends_with(".cleaned") || n.ends_with(".tmp")).collect();
        assert!(left.is_empty(), "{left:?}");
        assert_sealed_trusted(&report, &bases, &[]);
        assert_serves(&log, &expected, 0, end_of(&expected));
        append_one_more(&log, 70_000, end_of(&expected));
    }
}

/// Row TruncationIntent, redo: a `truncate.checkpoint` (real bytes, taken from a log that wrote
/// one for the same cut and failed right after) next to a log the truncation never touched. Open
/// redoes the truncation: everything from the cut on is gone for good, the checkpoint is removed,
/// the cut — inside a sealed segment — becomes the base of the new active segment, and appends
/// continue at the cut.
#[test]
fn row_truncation_intent_is_redone() {
    let (disk, clock, expected) = crashed(20);
    let bases = segment_files(&disk);
    let s1_batches = batches_of(&disk, bases[1]);
    let cut = s1_batches[s1_batches.len() / 2].1;

    // Donor: the same log in another directory, truncating at the same offset, dies after
    // writing its intent (the first file removal fails).
    let donor_disk = SimDisk::new(21);
    let (donor, _) = block_on(keel_storage::Log::open(donor_disk.dir("donor"), clock.clone(), small_config())).unwrap();
    assert_eq!(fill(&donor), expected);
    donor_disk.fail_next(FaultKind::Remove, 1, EIO);
    assert!(block_on(donor.truncate_suffix(cut)).is_err());
    let intent = donor_disk.file_bytes("donor", "truncate.checkpoint").expect("the donor wrote its intent");
    drop(donor);

    disk.write_raw(DIR, "truncate.checkpoint", 0, &intent);
    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(report.decisions.contains(&(TruncationIntent, "truncate.checkpoint".to_string())), "{report:?}");
    assert!(!disk.list_raw(DIR).contains(&"truncate.checkpoint".to_string()));
    assert_eq!(*log.segment_bases().last().unwrap(), cut, "the cut starts the new active segment");
    assert!(segment_files(&disk).iter().all(|&b| b <= cut), "{:?}", segment_files(&disk));
    let kept: Vec<Stored> = expected.iter().filter(|b| b.0 < cut).cloned().collect();
    assert_serves(&log, &kept, 0, cut);
    let (_log, report, _) = append_then_power_loss(&disk, &clock, log, kept, 0);
    assert!(!report.decisions.iter().any(|(s, _)| *s == TruncationIntent), "done once");
}

/// Row TruncationIntent, crash half-way: `truncate_suffix` (cut inside a sealed segment) fails at
/// one of its disk operations, then power fails. After reopening the log is either untouched or
/// truncated at the cut — never anything in between — and if the intent was durable it is redone.
#[test]
fn row_truncation_intent_after_a_failed_truncation_and_power_loss() {
    for (i, kind) in [FaultKind::Remove, FaultKind::SetLen, FaultKind::Sync, FaultKind::Rename, FaultKind::DirSync]
        .into_iter()
        .enumerate()
    {
        let disk = SimDisk::new(22 + i as u64);
        let clock = SimClock::new(1_000);
        let log = open(&disk, &clock, small_config());
        let expected = fill(&log);
        let s1_batches = batches_of(&disk, log.segment_bases()[1]);
        let cut = s1_batches[s1_batches.len() / 2].1;
        disk.fail_next(kind, 1, EIO);
        let result = block_on(log.truncate_suffix(cut));
        let intent_durable = disk.list_raw(DIR).contains(&"truncate.checkpoint".to_string());
        drop(log);
        disk.crash();

        let (log, report) = reopen(&disk, &clock, small_config());
        let end = log.offsets().log_end;
        let redone = report.decisions.iter().any(|(s, _)| *s == TruncationIntent);
        assert!(end == cut || end == end_of(&expected), "{kind:?}: log end {end}");
        if result.is_ok() || redone || (kind == FaultKind::Remove && intent_durable) {
            assert_eq!(end, cut, "{kind:?}: {result:?} {report:?}");
        }
        assert!(!disk.list_raw(DIR).contains(&"truncate.checkpoint".to_string()), "{kind:?}");
        let kept: Vec<Stored> = expected.iter().filter(|b| b.0 < end).cloned().collect();
        assert_serves(&log, &kept, 0, end);
        append_then_power_loss(&disk, &clock, log, kept, 0);
    }
}

/// Row BelowLogStart: `advance_log_start` persisted the new start, then failed deleting the
/// segments below it, then power failed. Open deletes every segment wholly below the start
/// (all three files of each), keeps the one the start falls in, refuses reads below the start.
#[test]
fn row_below_log_start_segments_are_deleted() {
    let disk = SimDisk::new(30);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let expected = fill(&log);
    let bases = log.segment_bases();
    let s2_batches = batches_of(&disk, bases[2]);
    let start = s2_batches[s2_batches.len() / 2].1;
    disk.fail_next(FaultKind::Remove, 1, EIO);
    assert!(matches!(block_on(log.advance_log_start(start)), Err(StorageError::Io { .. })));
    drop(log);
    disk.crash();
    assert!(segment_files(&disk).contains(&bases[0]), "nothing was deleted before the crash");

    let (log, report) = reopen(&disk, &clock, small_config());
    for &b in &bases[..2] {
        assert!(decisions_for(&report, &log_file(b)).contains(&BelowLogStart), "segment {b}: {report:?}");
        for name in [log_file(b), index_file(b), timeindex_file(b)] {
            assert!(report.deleted_files.contains(&name), "{name}");
            assert!(!disk.list_raw(DIR).contains(&name), "{name}");
        }
    }
    assert!(!decisions_for(&report, &log_file(bases[2])).contains(&BelowLogStart));
    assert_eq!(log.segment_bases()[0], bases[2]);
    assert!(matches!(block_on(log.read(start - 1, 1)), Err(StorageError::OffsetOutOfRange { .. })));
    let kept: Vec<Stored> = expected.iter().filter(|b| b.0 >= start).cloned().collect();
    assert_serves(&log, &kept, start, end_of(&expected));
    let (_log, report, _) = append_then_power_loss(&disk, &clock, log, kept, start);
    assert!(!report.decisions.iter().any(|(s, _)| *s == BelowLogStart));
}

// ------------------------------------------------------------------------------------------------
// Reads around damage (found while writing the row tests above)

/// Flips a byte in the middle batch of sealed segment `bases[1]` and loses its index (so open
/// scans it and reports the batch). Returns the reopened log, what was appended, and the range.
fn scanned_sealed_flip(seed: u64) -> (SimLog, Vec<Stored>, Range<u64>) {
    let (disk, clock, expected) = crashed(seed);
    let s1 = segment_files(&disk)[1];
    let batches = batches_of(&disk, s1);
    let (pos, base, last, _) = batches[batches.len() / 2];
    flip(&disk, &log_file(s1), pos + 70);
    disk.remove_raw(DIR, &index_file(s1));
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].offsets, base..last + 1);
    (log, expected, base..last + 1)
}

/// Rows BadBatchInSealed and TornSealed, large reads: a read that starts at a good batch before a
/// refused range returns the good batches and stops before the range (`plan_read` computes a
/// `stop_offset` for exactly this) instead of failing the whole read with `Corrupt`.
#[test]
fn large_reads_stop_before_a_refused_range() {
    // Bad batch in a sealed segment.
    let (log, expected, damaged) = scanned_sealed_flip(31);
    assert_large_reads_around(&log, &expected, &damaged);

    // Torn sealed segment.
    let (disk, clock, expected) = crashed(32);
    let bases = segment_files(&disk);
    let (pos, base, _, len) = *batches_of(&disk, bases[1]).last().unwrap();
    disk.set_len_raw(DIR, &log_file(bases[1]), (pos + len / 2) as u64);
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(report.damaged[0].offsets, base..bases[2]);
    assert_large_reads_around(&log, &expected, &(base..bases[2]));
}

/// Row OffsetsNotMonotonic in a sealed segment, large reads: the stale batch (valid CRC, base
/// offset going backwards) is reported and refused when read directly, so a read that starts
/// before it must not serve it either (it would hand a consumer offsets going backwards).
#[test]
fn reads_never_serve_a_refused_stale_batch() {
    let (disk, clock, expected) = crashed(33);
    let s1 = segment_files(&disk)[1];
    let batches = batches_of(&disk, s1);
    let k = batches.len() / 2;
    let (pos, base, last, _) = batches[k];
    set_stored_base(&disk, s1, pos, batches[k - 1].1);
    disk.remove_raw(DIR, &index_file(s1));
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(report.damaged[0].offsets, base..last + 1);
    assert_large_reads_around(&log, &expected, &(base..last + 1));
}

/// Flipped byte in a trusted sealed segment (not known at open), large reads: a read that starts
/// at a good batch before the corrupt one returns the good batches (at least the first) rather
/// than failing as a whole, so a consumer can make progress up to the damage.
#[test]
fn large_read_over_an_undetected_corrupt_batch_returns_the_batches_before_it() {
    let (disk, clock, expected) = crashed(34);
    let s1 = segment_files(&disk)[1];
    let batches = batches_of(&disk, s1);
    let (pos, base, last, _) = batches[batches.len() / 2];
    flip(&disk, &log_file(s1), pos + 70);
    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(report.damaged.is_empty());
    assert_large_reads_around(&log, &expected, &(base..last + 1));
}

/// Row IndexPastEnd on a segment compaction emptied (every record superseded): the interrupted
/// swap leaves the old index next to an empty `.log`. The scan finds no batch; the log must still
/// serve everything from its log start and keep appending.
#[test]
fn index_past_end_on_a_segment_compaction_emptied() {
    let config = LogConfig { cleanup_policy: CleanupPolicy::Compact, ..small_config() };
    let disk = SimDisk::new(35);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, config.clone());
    fill(&log);
    let bases = segment_files(&disk);
    let s0 = bases[0];
    let old_index = disk.file_bytes(DIR, &index_file(s0)).unwrap();
    let old_timeindex = disk.file_bytes(DIR, &timeindex_file(s0)).unwrap();
    block_on(log.compact()).unwrap();
    assert_eq!(file_len(&disk, &log_file(s0)), 0, "compaction emptied the first segment");
    let expected = read_all(&log);
    let end = log.offsets().log_end;
    for (name, bytes) in [(index_file(s0), old_index), (timeindex_file(s0), old_timeindex)] {
        disk.remove_raw(DIR, &name);
        disk.write_raw(DIR, &name, 0, &bytes);
    }
    drop(log);
    disk.crash();

    let (log, report) = block_on(keel_storage::Log::open(disk.dir(DIR), clock.clone(), config)).unwrap();
    assert_eq!(decisions_for(&report, &log_file(s0))[0], IndexPastEnd, "{report:?}");
    let start = log.offsets().log_start;
    let served: Vec<Stored> = (|| {
        let mut out = Vec::new();
        let mut at = start;
        loop {
            let read = block_on(log.read(at, 4096)).unwrap_or_else(|e| panic!("read {at} (log start {start}): {e}"));
            if read.bytes.is_empty() {
                return out;
            }
            out.extend(split(&read.bytes));
            at = read.next_offset;
        }
    })();
    assert!(served == expected, "the log serves what it served before the crash");
    append_one_more(&log, 80_000, end);
}

/// A flipped byte in a sealed segment with a sparse index (one entry per 4 KiB, the default), the
/// segment trusted (damage unknown at open) or scanned (damage reported): reads of the good batches
/// after the corrupt one — which the reader reaches by scanning forward from an index entry before
/// it — still work; only the corrupt batch's offsets are refused.
#[test]
fn reads_after_a_corrupt_batch_work_with_a_sparse_index() {
    for scanned in [false, true] {
        let config = LogConfig { index_interval_bytes: 4096, ..small_config() };
        let disk = SimDisk::new(36);
        let clock = SimClock::new(1_000);
        let log = open(&disk, &clock, config.clone());
        let expected = fill(&log);
        drop(log);
        disk.crash();
        let s1 = segment_files(&disk)[1];
        let batches = batches_of(&disk, s1);
        // Which batches start an index entry (one when 4096 bytes have gone by since the last):
        // corrupt a batch whose successor has none, so reading the successor scans from before it.
        let mut since = 0;
        let has_entry: Vec<bool> = batches
            .iter()
            .map(|b| {
                let entry = since >= 4096;
                since = if entry { b.3 } else { since + b.3 };
                entry
            })
            .collect();
        let k = (0..batches.len() - 1).find(|&k| !has_entry[k + 1]).expect("a batch without an index entry");
        let (pos, base, last, _) = batches[k];
        flip(&disk, &log_file(s1), pos + 70);
        if scanned {
            disk.remove_raw(DIR, &index_file(s1));
        }
        let (log, report) = block_on(keel_storage::Log::open(disk.dir(DIR), clock, config)).unwrap();
        assert_eq!(report.damaged.len(), usize::from(scanned));
        for at in [base, last] {
            assert!(matches!(block_on(log.read(at, 1)), Err(StorageError::Corrupt { .. })), "read {at}");
        }
        for (b, l, bytes) in expected.iter().filter(|b| b.0 != base) {
            let read = block_on(log.read(*b, 1))
                .unwrap_or_else(|e| panic!("scanned {scanned}: read {b} (corrupt batch at {base}): {e}"));
            assert!(split(&read.bytes)[0] == (*b, *l, bytes.clone()), "read {b}");
        }
    }
}

/// Zeros after the last batch of a sealed segment (its file longer than its index says, the extra
/// bytes zero): open scans it (IndexPastEnd) and finds every batch intact. The zeros hold no
/// offsets, so every batch of the segment must still read back, alone and in large reads.
#[test]
fn zero_filled_end_of_a_sealed_segment_does_not_break_reads() {
    let (disk, clock, expected) = crashed(37);
    let s1 = segment_files(&disk)[1];
    let name = log_file(s1);
    let len = file_len(&disk, &name);
    disk.set_len_raw(DIR, &name, (len + 4096) as u64);
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(decisions_for(&report, &name)[0], IndexPastEnd, "{report:?}");
    assert_serves_around(&log, &expected, &(0..0));
    assert_large_reads_around(&log, &expected, &(0..0));
    assert_serves(&log, &expected, 0, end_of(&expected));
}

/// Reads of the active segment: what the tail cache no longer holds is read from the file with
/// its CRC checked (a flipped byte is refused), while the recent batches are served from memory
/// (whose CRC the append checked) whatever happens to their bytes in the file.
#[test]
fn active_segment_reads_check_the_crc_of_what_comes_from_the_file() {
    let disk = SimDisk::new(41);
    let clock = SimClock::new(1_000);
    let config = LogConfig { segment_bytes: 4 << 20, tail_cache_bytes: 8192, ..small_config() };
    let log = open(&disk, &clock, config);
    // Well past one 256 KiB cache chunk, all in the first segment.
    let expected = append_tagged(&log, 0..900, TERM);
    assert_eq!(log.segment_bases(), [0], "one active segment");
    let batches = batches_of(&disk, 0);
    assert_eq!(batches.len(), 900);
    let (early_pos, early_base, _, _) = batches[10];
    assert!(early_pos < 200 << 10, "the batch is in the first chunk, evicted from the cache");
    let (late_pos, late_base, _, _) = batches[899];
    assert!(matches!(block_on(log.read(early_base, 1)), Ok(r) if split(&r.bytes)[0] == expected[10]));

    flip(&disk, &log_file(0), early_pos + 70);
    flip(&disk, &log_file(0), late_pos + 70);
    assert!(matches!(block_on(log.read(early_base, 1)), Err(StorageError::Corrupt { .. })), "read from the file");
    let late = block_on(log.read(late_base, 1)).expect("the tail is served from memory");
    assert!(split(&late.bytes)[0] == expected[899], "as appended");
    let next = block_on(log.read(expected[11].0, 1)).expect("the batch after the flipped one");
    assert!(split(&next.bytes)[0] == expected[11]);
}
