//! `keel log verify|dump` against real log directories written by the storage engine.

use std::process::Command;

use keel_storage::{
    batch::BatchBuilder,
    io::{dma::DmaDir, SystemClock},
    Log, LogConfig,
};

fn write_log(path: std::path::PathBuf) {
    glommio::LocalExecutor::default().run(async move {
        let config = LogConfig { segment_bytes: 8 << 10, ..LogConfig::default() };
        let (log, _) = Log::open(DmaDir::create(&path).await.unwrap(), SystemClock, config).await.unwrap();
        for i in 0..40u32 {
            let mut b = BatchBuilder::new();
            b.push(1_000 + i64::from(i), Some(format!("key-{i}").as_bytes()), Some(&[b'v'; 500]), &[]);
            log.append(&b.build(), 1).await.unwrap();
        }
        log.close().await.unwrap();
    });
}

fn keel(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel")).args(args).output().expect("run keel");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn verify_reports_healthy_logs_and_damage_with_exit_codes() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("p0");
    write_log(dir.clone());
    let d = dir.to_str().unwrap();

    let (code, out) = keel(&["log", "verify", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("healthy"), "{out}");

    let (code, out) = keel(&["log", "dump", d, "--records"]);
    assert_eq!(code, 0);
    assert!(out.contains("batch offsets 0..=0") && out.contains("key=key-39"), "{out}");

    // Flip a byte inside the first (sealed) segment's first batch.
    let first = dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let (code, out) = keel(&["log", "verify", d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BAD") && out.contains("damaged"), "{out}");

    let (code, _) = keel(&["log", "verify", "/nonexistent/keel-dir"]);
    assert_eq!(code, 2);
}
