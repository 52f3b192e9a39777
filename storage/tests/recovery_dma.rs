//! Recovery on the real disk (glommio, O_DIRECT): flipped bytes in segment files, written with
//! std::fs while the log is down, are handled as on the simulated disk (see recovery.rs):
//! - in the last segment (row BadBatchInTail): the log is truncated at the bad batch and appends
//!   continue there;
//! - in a sealed segment that open scans (its index lost too; row BadBatchInSealed): the batch's
//!   offsets are reported and refused with `Corrupt`, every other batch still reads back;
//! - in a sealed segment whose index is intact (trusted, not read at open): the read of the batch
//!   is refused with `Corrupt` (CRC checked on every disk read), the others read back.
//!
//! One test in its own binary: glommio keeps process-wide state (see dma.rs).

mod common;

use std::{
    io::{Seek, SeekFrom, Write},
    path::Path,
};

use common::{batches_in, index_file, log_file, split, stored, tagged_batch, Stored};
use keel_storage::{
    io::{dma::DmaDir, SystemClock},
    recovery::DiskState::*,
    FsyncPolicy, Log, LogConfig, StorageError,
};

const TERM: u32 = 4;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        preallocate_bytes: 64 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn flip(path: &Path, pos: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[pos] ^= 0x5A;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(pos as u64)).unwrap();
    f.write_all(&bytes[pos..pos + 1]).unwrap();
    f.sync_all().unwrap();
}

fn batches_of(path: &Path) -> Vec<(usize, u64, u64, usize)> {
    batches_in(&std::fs::read(path).unwrap())
}

#[test]
fn flipped_bytes_on_real_disk_truncate_the_tail_and_refuse_sealed_ranges() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = tmp.path().join("p0");
    glommio::LocalExecutor::default().run(async move {
        // 150 batches over several 64 KiB segments, a roll, then 4 batches in the last segment.
        let (log, _) = Log::open(DmaDir::create(&path).await.unwrap(), SystemClock, config()).await.unwrap();
        let mut expected: Vec<Stored> = Vec::new();
        for tag in 0..154u64 {
            if tag == 150 {
                log.roll().await.unwrap();
            }
            let b = tagged_batch(tag);
            let info = log.append(&b, TERM).await.unwrap();
            expected.push((info.base_offset, info.last_offset, stored(&b, info.base_offset, TERM)));
        }
        let bases = log.segment_bases();
        assert!(bases.len() >= 4, "{bases:?}");
        drop(log); // the process dies: no clean close

        let seg = |b: u64| path.join(log_file(b));
        // Sealed segment 1: a flipped byte in its middle batch, and its index is lost.
        let s1 = batches_of(&seg(bases[1]));
        let (pos, bad_base, bad_last, _) = s1[s1.len() / 2];
        flip(&seg(bases[1]), pos + 70);
        std::fs::remove_file(path.join(index_file(bases[1]))).unwrap();
        let damaged = bad_base..bad_last + 1;
        // Sealed segment 2: a flipped byte, index intact.
        let s2 = batches_of(&seg(bases[2]));
        let (pos, rot_base, rot_last, _) = s2[s2.len() / 2];
        flip(&seg(bases[2]), pos + 70);
        // Last segment: a flipped byte in the second of its 4 batches.
        let last = *bases.last().unwrap();
        let tail = batches_of(&seg(last));
        assert_eq!(tail.len(), 4);
        let (cut_pos, cut, _, _) = tail[1];
        flip(&seg(last), cut_pos + 70);

        let (log, report) = Log::open(DmaDir::create(&path).await.unwrap(), SystemClock, config()).await.unwrap();
        let decisions =
            |name: &str| -> Vec<_> { report.decisions.iter().filter(|(_, n)| n == name).map(|(s, _)| *s).collect() };
        assert_eq!(decisions(&log_file(bases[1])), [IndexMissing, BadBatchInSealed], "{report:?}");
        assert_eq!(decisions(&log_file(bases[2])), [SealedIndexValid], "{report:?}");
        assert_eq!(decisions(&log_file(last)), [IndexMissing, BadBatchInTail], "{report:?}");
        assert_eq!(report.damaged.len(), 1, "{report:?}");
        assert_eq!(report.damaged[0].segment, log_file(bases[1]));
        assert_eq!(report.damaged[0].offsets, damaged);
        assert_eq!(log.damaged_ranges(), report.damaged);
        assert_eq!(std::fs::metadata(seg(last)).unwrap().len(), cut_pos as u64, "tail cut at the bad batch");
        let o = log.offsets();
        assert_eq!((o.log_start, o.log_end, o.written_end, o.flushed_end), (0, cut, cut, cut));

        expected.retain(|b| b.0 < cut);
        for (base, last_offset, bytes) in &expected {
            let read = log.read(*base, 1).await;
            if damaged.contains(base) || *base == rot_base {
                let Err(StorageError::Corrupt { offsets, .. }) = read else {
                    panic!("read {base} of a corrupt batch: {read:?}")
                };
                if damaged.contains(base) {
                    assert_eq!(offsets, damaged);
                }
                continue;
            }
            let read = read.unwrap_or_else(|e| panic!("read {base}: {e}"));
            let got = &split(&read.bytes)[0];
            assert!(got.0 == *base && got.1 == *last_offset && got.2 == *bytes, "read {base}");
        }
        assert!(matches!(log.read(rot_last, 1).await, Err(StorageError::Corrupt { .. })));

        // Appends continue at the cut, and survive a clean restart; the damage is still reported.
        let b = tagged_batch(1_000);
        let info = log.append(&b, TERM).await.unwrap();
        assert_eq!(info.base_offset, cut);
        let appended = stored(&b, cut, TERM);
        log.close().await.unwrap();
        let (log, report) = Log::open(DmaDir::create(&path).await.unwrap(), SystemClock, config()).await.unwrap();
        assert_eq!(report.damaged.len(), 1, "{report:?}");
        assert_eq!(report.damaged[0].offsets, damaged);
        let read = log.read(cut, 1).await.unwrap();
        assert!(split(&read.bytes)[0].2 == appended);
        assert_eq!(log.offsets().log_end, info.last_offset + 1);
        log.close().await.unwrap();
    });
}
