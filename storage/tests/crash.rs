//! Crash test with real processes on the real disk (glommio, O_DIRECT, io_uring).
//!
//! A child process (this test binary re-run as `crash_child`) opens the log with
//! `fsync=always`, appends from several concurrent tasks and prints `ACK <base> <last> <tag>` for
//! every acknowledged batch. The parent SIGKILLs it at a random moment, reopens the log
//! (recovery), and checks (a task keeps the log's zeroed runway meanwhile, so kills also land
//! during zero writes and recovery finds zeros after the data):
//! - every acknowledged batch is present, at its offsets, byte-identical (rebuilt from its tag);
//! - every batch the log serves is valid (CRC) and is one the child really appended (its records
//!   match its tag), offsets contiguous — nothing corrupt or invented is served.
//!
//! The same directory is reused across cycles, so recovery runs on logs with many segments,
//! rolls interrupted, and tails torn by earlier kills.
//!
//! `KEEL_CRASH_CYCLES` (default 100; `make torture` runs 1000) and `KEEL_CRASH_SEED` (default:
//! time-based) control the run; the seed and the figures are printed.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    rc::Rc,
    sync::mpsc,
    time::{Duration, Instant},
};

use keel_storage::{
    batch::{set_base_offset, set_partition_leader_epoch, BatchBuilder, BatchView},
    io::{dma::DmaDir, SystemClock},
    FsyncPolicy, Log, LogConfig,
};

const TERM: u32 = 3;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 256 << 10,
        retention_ms: None,
        preallocate_bytes: 64 << 10,
        // Small enough to be refilled many times per segment, so kills land during zero writes.
        runway_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

/// The batch a tag stands for: 1–8 records of 20–1500 bytes, all derived from the tag.
fn batch_for(tag: u64) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n = 1 + (next() % 8) as usize;
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let len = 20 + (next() % 1500) as usize;
        let mut value = format!("tag:{tag}:{i}:").into_bytes();
        value.resize(len, b'a' + (tag % 26) as u8);
        let key = format!("key-{}", next() % 50);
        b.push(1_700_000_000_000 + tag as i64, Some(key.as_bytes()), Some(&value), &[]);
    }
    b.build()
}

/// The tag of a stored batch, read from its first record's value.
fn tag_of(batch: &BatchView<'_>) -> Option<u64> {
    let first = batch.records().ok()?.next()?.ok()?;
    let value = std::str::from_utf8(first.value?).ok()?;
    value.strip_prefix("tag:")?.split(':').next()?.parse().ok()
}

#[test]
#[ignore = "run by crash_test_sigkill_loses_nothing_acknowledged as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("KEEL_CRASH_DIR") else { return };
    let first_tag: u64 = std::env::var("KEEL_CRASH_TAG").unwrap().parse().unwrap();
    glommio::LocalExecutor::default().run(async move {
        let (log, _) = Log::open(DmaDir::create(&dir).await.unwrap(), SystemClock, config()).await.expect("child open");
        let log = Rc::new(log);
        println!("READY");
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut tag = first_tag + worker;
                loop {
                    let info = log.append(&batch_for(tag), TERM).await.expect("append");
                    println!("ACK {} {} {}", info.base_offset, info.last_offset, tag);
                    tag += 4;
                }
            }));
        }
        // The zeroed runway, kept as the broker keeps it: refilled whenever low, beside appends.
        tasks.push(glommio::spawn_local(async move {
            loop {
                if log.wants_runway() {
                    log.extend_runway().await.expect("runway");
                }
                glommio::timer::sleep(Duration::from_micros(200)).await;
            }
        }));
        for t in tasks {
            t.await;
        }
    });
}

struct Figures {
    cycles: u64,
    acked: u64,
    verified_batches: u64,
    lost: u64,
}

#[test]
fn crash_test_sigkill_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("KEEL_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let seed: u64 = std::env::var("KEEL_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("crash test: seed={seed} cycles={cycles} (rerun with KEEL_CRASH_SEED={seed})");
    let tmp =
        tempfile::tempdir_in(std::env::var("KEEL_TEST_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into()))
            .unwrap();
    let dir = tmp.path().join("log");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // base -> (last, tag)
    let mut figures = Figures { cycles: 0, acked: 0, verified_batches: 0, lost: 0 };
    let started = Instant::now();
    let mut verified_end = 0u64;
    // Each child's stderr, kept in a file beside the log, so a child that dies on its own says why.
    let child_stderr = dir.with_extension("child-stderr");
    for cycle in 0..cycles {
        let first_tag = (cycle + 1) * 1_000_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("KEEL_CRASH_DIR", &dir)
            .env("KEEL_CRASH_TAG", first_tag.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&child_stderr).expect("child stderr file"))
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has opened the log, then let it run 1–40 ms before the kill.
        let ready_by = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.ends_with("READY") => break,
                Ok(_) => {}
                Err(_) if Instant::now() > ready_by => panic!("seed {seed} cycle {cycle}: child never opened the log"),
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        let stderr = std::fs::read_to_string(&child_stderr).unwrap_or_default();
                        let lines: Vec<&str> = stderr.lines().collect();
                        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                        panic!(
                            "seed {seed} cycle {cycle}: child died during open ({status}); its stderr ends:\n{tail}"
                        );
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(1_000 + next() % 39_000));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        reader.join().unwrap();
        for line in rx.try_iter() {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ACK") {
                continue;
            }
            let nums: Vec<u64> = parts.map(|p| p.parse().unwrap()).collect();
            acked.insert(nums[0], (nums[1], nums[2]));
            figures.acked += 1;
        }
        // Everything below the previous cycle's end was verified then and, closed cleanly, can only
        // change through a bug: check the new part every cycle and the whole log every 100 cycles
        // and at the end (a full pass each cycle would make the run quadratic).
        let whole = cycle % 100 == 99 || cycle + 1 == cycles;
        let (checked, end) = verify(&dir, &acked, if whole { 0 } else { verified_end }, seed, cycle);
        figures.verified_batches += checked;
        verified_end = end;
        figures.cycles += 1;
        if whole {
            println!(
                "crash test: {} cycles, {} acked, log end {end}, {:.1}s",
                figures.cycles,
                figures.acked,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "crash test: seed={seed} cycles={} acked={} verified_batches={} lost={} elapsed={:.1}s",
        figures.cycles,
        figures.acked,
        figures.verified_batches,
        figures.lost,
        started.elapsed().as_secs_f64()
    );
    assert!(figures.acked > figures.cycles, "the child must acknowledge appends in most cycles");
}

/// Reopens the log (recovery) and checks it from offset `from` against what was acknowledged.
/// Returns the number of batches checked and the log end.
fn verify(dir: &std::path::Path, acked: &BTreeMap<u64, (u64, u64)>, from: u64, seed: u64, cycle: u64) -> (u64, u64) {
    let dir = dir.to_path_buf();
    let acked: BTreeMap<u64, (u64, u64)> = acked.range(from..).map(|(k, v)| (*k, *v)).collect();
    with_watchdog(seed, cycle, move || {
        glommio::LocalExecutor::default().run(async move {
            let (log, report) = Log::open(DmaDir::create(&dir).await.unwrap(), SystemClock, config())
                .await
                .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: recovery failed: {e}"));
            assert!(report.damaged.is_empty(), "seed {seed} cycle {cycle}: damage after a kill: {report:?}");
            let mut served: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
            let mut at = log.offsets().log_start.max(from);
            let mut expected_next = at;
            loop {
                let read =
                    log.read(at, 1 << 20).await.unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: read {at}: {e}"));
                if read.bytes.is_empty() {
                    break;
                }
                let mut rest = &read.bytes[..];
                while !rest.is_empty() {
                    let b = BatchView::parse(rest)
                        .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: served an invalid batch: {e}"));
                    assert_eq!(
                        b.base_offset() as u64,
                        expected_next,
                        "seed {seed} cycle {cycle}: offsets not contiguous"
                    );
                    let tag = tag_of(&b).unwrap_or_else(|| {
                        panic!("seed {seed} cycle {cycle}: batch at {} has no tag", b.base_offset())
                    });
                    let mut want = batch_for(tag);
                    set_base_offset(&mut want, b.base_offset());
                    set_partition_leader_epoch(&mut want, TERM as i32);
                    assert!(
                        b.as_bytes() == &want[..],
                        "seed {seed} cycle {cycle}: batch at {} is not what was appended",
                        b.base_offset()
                    );
                    expected_next = b.last_offset() as u64 + 1;
                    served.insert(b.base_offset() as u64, (b.last_offset() as u64, b.as_bytes().to_vec()));
                    rest = &rest[b.total_len()..];
                }
                at = read.next_offset;
            }
            for (base, (last, tag)) in &acked {
                let Some((got_last, bytes)) = served.get(base) else {
                    panic!(
                        "seed {seed} cycle {cycle}: LOST acknowledged batch {base}..={last} (tag {tag}); log end {}",
                        log.offsets().log_end
                    );
                };
                assert_eq!(got_last, last, "seed {seed} cycle {cycle}: batch {base} has another range");
                let view = BatchView::parse(bytes).unwrap();
                assert_eq!(tag_of(&view), Some(*tag), "seed {seed} cycle {cycle}: offset {base} holds another batch");
            }
            let end = log.offsets().log_end;
            log.close().await.unwrap();
            (served.len() as u64, end)
        })
    })
}

/// Runs `check` on its own thread and waits at most `VERIFY_TIMEOUT` for it, so a hang (an I/O
/// that never completes) fails the test with its seed and cycle instead of stalling CI.
fn with_watchdog<T: Send + 'static>(seed: u64, cycle: u64, check: impl FnOnce() -> T + Send + 'static) -> T {
    const VERIFY_TIMEOUT: Duration = Duration::from_secs(300);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(VERIFY_TIMEOUT) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => {
            panic!("seed {seed} cycle {cycle}: recovery/verification did not finish within {VERIFY_TIMEOUT:?} (hung)")
        }
    }
}
