//! `retain_freed_memory`: after it, a thread that allocates, fills and frees buffers of 1 to 4 MiB
//! over and over (a connection's answers) faults their pages in once, not on every round.
//!
//! Its own test binary: malloc's settings are the process's, and other tests would fault pages
//! in meanwhile.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::hint::black_box;

use keel_storage::io::heap::{retain_freed_memory, FreedMemory};

fn minor_faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_minflt
}

/// Page faults of the whole process while a new thread runs `rounds` rounds of: a buffer of 1, 2,
/// 3 or 4 MiB and one of 64 KiB, both filled, then freed.
fn churn(rounds: usize) -> i64 {
    let before = minor_faults();
    std::thread::spawn(move || {
        for i in 0..rounds {
            let large = vec![1u8; (1 + i % 4) << 20];
            let small = vec![2u8; 64 << 10];
            black_box((&large, &small));
        }
    })
    .join()
    .expect("churn thread");
    minor_faults() - before
}

#[test]
fn freed_buffers_are_reused_not_faulted_in_again() {
    match retain_freed_memory() {
        FreedMemory::Retained => {}
        FreedMemory::LeftToTunables => {
            eprintln!("skipped: GLIBC_TUNABLES sets malloc tunables, which retain_freed_memory leaves alone");
            return;
        }
        FreedMemory::Unchanged => panic!("glibc refused the thresholds"),
    }
    let rounds = 100;
    let faults = churn(rounds);
    eprintln!("{faults} page faults in {rounds} rounds");
    // Each page of the largest buffers faulted in once (plus the thread's stack and slack);
    // glibc's default gives the top of a thread's heap back and faults it in again: 3,609 faults
    // for this pattern on the machine this was written on, against 1,044 with the memory kept.
    let first_touch = ((4 << 20) + (64 << 10)) / 4096;
    assert!(
        faults < 2 * first_touch as i64,
        "{faults} page faults in {rounds} rounds; the first touch alone is {first_touch}"
    );
}
