//! The log on the real disk (glommio, O_DIRECT). Kept to one test per binary where a
//! process-wide glommio state matters: the first file this process opens on the device is a new,
//! empty segment, which is exactly what broke reads before `prime_poll_probe`.

use keel_storage::{
    batch::BatchBuilder,
    io::{dma::DmaDir, SystemClock},
    FsyncPolicy, Log, LogConfig,
};

#[test]
fn fresh_log_on_real_disk_reads_back_what_it_wrote() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = tmp.path().join("p0");
    glommio::LocalExecutor::default().run(async move {
        let config = LogConfig { fsync: FsyncPolicy::Always, segment_bytes: 64 << 10, ..LogConfig::default() };
        let (log, report) = Log::open(DmaDir::create(&path).await.unwrap(), SystemClock, config.clone()).await.unwrap();
        assert_eq!(report.segments, 1);
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let mut b = BatchBuilder::new();
            let value = vec![(i % 251) as u8; 100 + (i as usize * 37) % 3000];
            b.push(i64::from(i), Some(&i.to_be_bytes()), Some(&value), &[]);
            let bytes = b.build();
            let info = log.append(&bytes, 1).await.unwrap();
            assert_eq!(info.base_offset, u64::from(i));
            sent.push(value);
        }
        assert!(log.segment_bases().len() > 1);
        // Read everything back, from the tail cache and from disk.
        let check = |bytes: &[u8], from: u32| {
            let mut rest = bytes;
            let mut i = from;
            while !rest.is_empty() {
                let b = keel_storage::batch::BatchView::parse(rest).unwrap();
                assert_eq!(b.base_offset(), i64::from(i));
                let r = b.records().unwrap().next().unwrap().unwrap();
                assert_eq!(r.value.unwrap(), &sent[i as usize][..]);
                rest = &rest[b.total_len()..];
                i += 1;
            }
            i
        };
        let mut at = 0;
        while at < 200 {
            let read = log.read(u64::from(at), 10_000).await.unwrap();
            at = check(&read.bytes, at);
        }
        log.close().await.unwrap();
        // Reopen (clean) and read again, now all from disk.
        let (log, report) = Log::open(DmaDir::create(&path).await.unwrap(), SystemClock, config.clone()).await.unwrap();
        assert!(report.clean_shutdown);
        let mut at = 0;
        while at < 200 {
            let read = log.read(u64::from(at), 50_000).await.unwrap();
            at = check(&read.bytes, at);
        }
        assert_eq!(log.offset_for_timestamp(150).await.unwrap().map(|(offset, _)| offset), Some(150));

        // A topic's altered configs, live: retention and the largest batch apply at once; the
        // fsync policy stays as opened.
        let altered = LogConfig {
            retention_bytes: Some(64 << 10),
            max_batch_bytes: 1000,
            fsync: FsyncPolicy::Never,
            ..config.clone()
        };
        log.reconfigure(&altered);
        assert_eq!((log.config().retention_bytes, log.config().fsync), (Some(64 << 10), FsyncPolicy::Always));
        log.enforce_retention().await.unwrap();
        assert!(log.offsets().log_start > 0, "the new retention.bytes deleted old segments");
        let mut big = BatchBuilder::new();
        big.push(0, None, Some(&[1u8; 2000]), &[]);
        let refused = log.append(&big.build(), 1).await;
        assert!(matches!(refused, Err(keel_storage::StorageError::BatchTooLarge { max: 1000, .. })), "{refused:?}");
        log.close().await.unwrap();
    });
}
