//! A sleeping shard must wake for every message sent to it and for every timer it waits on.
//!
//! Keel runs a patched glommio (`vendor/glommio/KEEL-PATCHES.md`): a sleeping executor is
//! told of a cross-executor message through a pair of SeqCst fences instead of upstream's
//! `membarrier`, its preemption timer stays armed across passes and sleeps, and it no longer
//! parks with runnable tasks when a timer completes just before it looks. A mistake in any of
//! them loses a wakeup: the shard sleeps with work to do until something else wakes it, or,
//! in these tests, where nothing else does, forever. So each test bounds its run (a hang fails
//! it) and the lateness of every timer.

use std::cell::Cell;
use std::time::{Duration, Instant};

mod common;

use common::join_within;
use glommio::timer::sleep;
use keel_shards::{start, RuntimeConfig, ShardId};

/// Upper bound for a whole test; far above what it takes on a loaded 2-core machine.
const HANG_BOUND: Duration = Duration::from_secs(60);

/// How late a timer may end a sleep. A shard that missed its timer would wait for the next
/// message, which in these tests never comes while it sleeps; a loaded virtual machine can
/// stall for a few hundred milliseconds.
const TIMER_LATENESS_BOUND: Duration = Duration::from_secs(5);

/// A small deterministic generator for delays (no need for a crate).
fn next_random(state: &Cell<u64>) -> u64 {
    let x = state.get().wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    state.set(x);
    x >> 33
}

#[test]
fn every_cross_shard_message_wakes_its_sleeping_shard() {
    // Strict ping-pong: each call finds the callee asleep (it has nothing else to do) and each
    // answer finds the caller asleep, so every message goes through the sleep/notify handshake.
    const CALLS: u64 = 20_000;
    let started = Instant::now();
    let runtime = start(RuntimeConfig::unpinned(2), |shard| async move {
        shard.serve(|_from: ShardId, n: u64| async move { n + 1 });
        if shard.id() == ShardId(0) {
            for n in 0..CALLS {
                let answer = shard.call(ShardId(1), n).await.map_err(|e| e.to_string())?;
                if answer != n + 1 {
                    return Err(format!("call {n} answered {answer}"));
                }
            }
            shard.stop_handle().stop();
        }
        shard.stopping().await;
        Ok(())
    })
    .expect("start");
    join_within(runtime, HANG_BOUND).expect("shards");
    let elapsed = started.elapsed();
    println!("{CALLS} cross-shard round trips in {elapsed:?} ({:?} each)", elapsed / CALLS as u32);
}

#[test]
fn timers_end_sleeps_between_message_wakeups() {
    // Shard 0 waits for answers that shard 1 gives after a random timer of up to 2 ms, while a
    // long timer of its own stays pending (as a request's timeout does in the broker), then
    // sleeps 1 ms on a timer with nothing else to wake it. Shard 1 likewise sleeps on timers
    // between messages. Every sleep must end on its timer.
    const ROUNDS: u32 = 500;
    const NAP: Duration = Duration::from_millis(1);
    let runtime = start(RuntimeConfig::unpinned(2), |shard| async move {
        let delays = std::rc::Rc::new(Cell::new(0x9E37_79B9_7F4A_7C15));
        shard.serve(move |_from: ShardId, n: u32| {
            let delay = Duration::from_micros(next_random(&delays) % 2_000);
            async move {
                sleep(delay).await;
                n
            }
        });
        if shard.id() == ShardId(0) {
            let pending_timeout = glommio::spawn_local(sleep(Duration::from_secs(3600)));
            let mut worst = Duration::ZERO;
            for n in 0..ROUNDS {
                let answer = shard.call(ShardId(1), n).await.map_err(|e| e.to_string())?;
                if answer != n {
                    return Err(format!("call {n} answered {answer}"));
                }
                let asleep = Instant::now();
                sleep(NAP).await;
                let late = asleep.elapsed().saturating_sub(NAP);
                if late > TIMER_LATENESS_BOUND {
                    return Err(format!("a {NAP:?} timer ended {late:?} late (round {n})"));
                }
                worst = worst.max(late);
            }
            drop(pending_timeout);
            println!("{ROUNDS} timer sleeps between calls; the latest ended {worst:?} late");
            shard.stop_handle().stop();
        }
        shard.stopping().await;
        Ok(())
    })
    .expect("start");
    join_within(runtime, HANG_BOUND).expect("shards");
}
