//! End-to-end tests of the runtime: real threads, real glommio executors, unpinned (the test
//! machine is shared), up to 4 shards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::join_within;
use glommio::timer::sleep;
use keel_shards::{start, ConfigError, FailureReason, RouteError, RuntimeConfig, Shard, ShardId, StartError};

/// Upper bound for anything that must not hang; far above what it takes on a loaded 2-core machine.
const HANG_BOUND: Duration = Duration::from_secs(30);

fn config(shards: usize, queue_capacity: usize, max_concurrent_requests: usize) -> RuntimeConfig {
    RuntimeConfig { queue_capacity, max_concurrent_requests, ..RuntimeConfig::unpinned(shards) }
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

/// Polls `condition` on the shard every 5 ms until it holds, or fails after `HANG_BOUND`.
async fn eventually(what: &str, condition: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + HANG_BOUND;
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[derive(Debug)]
struct Echo {
    task: u32,
    seq: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Echoed {
    served_by: ShardId,
    from: ShardId,
    task: u32,
    seq: u64,
}

#[test]
fn every_shard_calls_every_shard_concurrently() {
    const SHARDS: usize = 4;
    const TASKS_PER_TARGET: u32 = 3;
    const CALLS_PER_TASK: u64 = 150;
    let finished = Arc::new(AtomicUsize::new(0));
    let runtime = start(config(SHARDS, 4, 8), move |shard| {
        let finished = Arc::clone(&finished);
        async move {
            // Per (caller shard, caller task): the last sequence number seen; must grow by one.
            let last_seen: Rc<RefCell<HashMap<(ShardId, u32), u64>>> = Rc::default();
            let me = shard.id();
            shard.serve(move |from, echo: Echo| {
                let last_seen = Rc::clone(&last_seen);
                async move {
                    let expected = last_seen.borrow().get(&(from, echo.task)).map_or(0, |last| last + 1);
                    assert_eq!(echo.seq, expected, "{me}: out-of-order request from {from} task {}", echo.task);
                    last_seen.borrow_mut().insert((from, echo.task), echo.seq);
                    if echo.seq % 7 == 6 {
                        sleep(Duration::from_micros(200)).await;
                    }
                    Echoed { served_by: me, from, task: echo.task, seq: echo.seq }
                }
            });
            let mut callers = Vec::new();
            for target in shard.all() {
                for task in 0..TASKS_PER_TARGET {
                    let shard = shard.clone();
                    callers.push(glommio::spawn_local(async move {
                        for seq in 0..CALLS_PER_TASK {
                            let answer = shard.call(target, Echo { task, seq }).await.map_err(|e| e.to_string())?;
                            let expected = Echoed { served_by: target, from: shard.id(), task, seq };
                            check(answer == expected, || format!("got {answer:?}, expected {expected:?}"))?;
                        }
                        Ok::<(), String>(())
                    }));
                }
            }
            for caller in callers {
                caller.await?;
            }
            check(shard.calls_in_flight() == 0, || "calls left in flight".to_string())?;
            // Keep serving until every shard is done calling.
            if finished.fetch_add(1, Ordering::SeqCst) + 1 == shard.count() {
                shard.stop_handle().stop();
            }
            shard.stopping().await;
            Ok(())
        }
    })
    .expect("runtime starts");
    assert_eq!(join_within(runtime, HANG_BOUND), Ok(()));
}

#[test]
fn full_queue_makes_callers_wait_until_released() {
    const CAPACITY: usize = 2;
    const CONCURRENCY: usize = 1;
    const CALLS: usize = 10;
    // Requests the handler on shard 1 has started.
    let seen = Arc::new(AtomicUsize::new(0));
    let (release, released) = flume::bounded::<()>(1);
    let release = Arc::new(std::sync::Mutex::new(Some(release)));
    let runtime = start(config(2, CAPACITY, CONCURRENCY), move |shard| {
        let (seen, released, release) = (Arc::clone(&seen), released.clone(), Arc::clone(&release));
        async move {
            if shard.id() == ShardId(1) {
                shard.serve(move |_from, n: usize| {
                    let (seen, released) = (Arc::clone(&seen), released.clone());
                    async move {
                        seen.fetch_add(1, Ordering::SeqCst);
                        // Blocks until the sender is dropped.
                        let _ = released.recv_async().await;
                        n
                    }
                });
                shard.stopping().await;
                return Ok(());
            }
            let calls: Vec<_> = (0..CALLS)
                .map(|n| {
                    let shard = shard.clone();
                    glommio::spawn_local(async move { shard.call(ShardId(1), n).await })
                })
                .collect();
            // Sent = queued (capacity) + taken by shard 1's intake, waiting for a slot (1) + served.
            let bound = CAPACITY + 1 + CONCURRENCY;
            eventually("the queue to fill", || shard.calls_in_flight() == bound).await?;
            sleep(Duration::from_millis(200)).await;
            check(shard.calls_in_flight() == bound, || {
                format!("{} calls sent, bound {bound}", shard.calls_in_flight())
            })?;
            let started = seen.load(Ordering::SeqCst);
            check(started == CONCURRENCY, || format!("handler started {started} requests, max {CONCURRENCY}"))?;
            drop(release.lock().map_err(|e| e.to_string())?.take());
            for (n, call) in calls.into_iter().enumerate() {
                let answer = call.await.map_err(|e| e.to_string())?;
                check(answer == n, || format!("call {n} answered {answer}"))?;
            }
            check(seen.load(Ordering::SeqCst) == CALLS, || "not every request was handled".to_string())?;
            shard.stop_handle().stop();
            Ok(())
        }
    })
    .expect("runtime starts");
    assert_eq!(join_within(runtime, HANG_BOUND), Ok(()));
}

#[test]
fn calls_made_before_the_target_serves_are_queued_not_lost() {
    let runtime = start(config(2, 2, 4), |shard| async move {
        if shard.id() == ShardId(1) {
            sleep(Duration::from_millis(200)).await;
            shard.serve(|from, n: u32| async move { (from, n + 1) });
            shard.stopping().await;
            return Ok(());
        }
        let calls: Vec<_> = (0..8)
            .map(|n| {
                let shard = shard.clone();
                glommio::spawn_local(async move { shard.call(ShardId(1), n).await })
            })
            .collect();
        for (n, call) in (0..).zip(calls) {
            let answer = call.await.map_err(|e| e.to_string())?;
            check(answer == (ShardId(0), n + 1), || format!("call {n} answered {answer:?}"))?;
        }
        shard.stop_handle().stop();
        Ok(())
    })
    .expect("runtime starts");
    assert_eq!(join_within(runtime, HANG_BOUND), Ok(()));
}

#[test]
fn stop_from_another_thread_wakes_idle_shards() {
    let runtime = start(config(4, 2, 2), |shard| async move {
        shard.serve(|_from, (): ()| async {});
        shard.stopping().await;
        check(shard.is_stopping(), || "stopping() completed without a stop".to_string())
    })
    .expect("runtime starts");
    // Let every executor go to sleep in io_uring, then stop from a thread that is not a shard.
    std::thread::sleep(Duration::from_millis(100));
    let stop = runtime.stop_handle();
    std::thread::spawn(move || stop.stop()).join().expect("stopping thread");
    let started = Instant::now();
    assert_eq!(join_within(runtime, Duration::from_secs(5)), Ok(()));
    eprintln!("idle shards stopped {:?} after the stop request", started.elapsed());
}

#[test]
fn a_failed_shard_is_reported_and_never_leaves_callers_hanging() {
    let runtime = start(config(3, 2, 2), |shard| async move {
        match shard.id() {
            ShardId(2) => {
                // Never serves: shard 0's early calls sit in (or wait for) the queue when this shard dies.
                sleep(Duration::from_millis(100)).await;
                Err("disk on fire".to_string())
            }
            ShardId(0) => {
                shard.serve(|_from, n: u32| async move { n });
                // More calls than the queue holds: some are queued, some wait for room.
                let early: Vec<_> = (0..6)
                    .map(|n| {
                        let shard = shard.clone();
                        glommio::spawn_local(async move { shard.call(ShardId(2), n).await })
                    })
                    .collect();
                for call in early {
                    let early = call.await;
                    check(early == Err(RouteError::ShardStopped(ShardId(2))), || format!("early call: {early:?}"))?;
                }
                shard.stopping().await;
                let late = shard.call(ShardId(2), 2).await;
                check(late == Err(RouteError::ShardStopped(ShardId(2))), || format!("late call: {late:?}"))?;
                // The surviving shards still talk to each other.
                let alive = shard.call(ShardId(1), 3).await;
                check(alive == Ok(3), || format!("call to shard 1: {alive:?}"))
            }
            _ => {
                let served_three = Rc::new(Cell::new(false));
                let flag = Rc::clone(&served_three);
                shard.serve(move |_from, n: u32| {
                    flag.set(flag.get() || n == 3);
                    async move { n }
                });
                // Stop comes from shard 2's failure, not from the test.
                shard.stopping().await;
                let late = shard.call(ShardId(2), 4).await;
                check(late == Err(RouteError::ShardStopped(ShardId(2))), || format!("late call: {late:?}"))?;
                // Serve shard 0's last call before leaving.
                eventually("shard 0's last call", || served_three.get()).await
            }
        }
    })
    .expect("runtime starts");
    let failure = join_within(runtime, HANG_BOUND).expect_err("shard 2 failed");
    assert_eq!(failure.failures, vec![(ShardId(2), FailureReason::Returned("disk on fire".to_string()))]);
    assert_eq!(failure.to_string(), "shard 2 failed: disk on fire");
}

#[test]
fn a_panicking_shard_main_is_reported_and_stops_the_others() {
    let runtime = start(config(2, 2, 2), |shard: Shard<(), ()>| async move {
        if shard.id() == ShardId(1) {
            sleep(Duration::from_millis(50)).await;
            panic!("shard main exploded");
        }
        shard.stopping().await;
        Ok(())
    })
    .expect("runtime starts");
    let failure = join_within(runtime, HANG_BOUND).expect_err("shard 1 panicked");
    assert_eq!(failure.failures, vec![(ShardId(1), FailureReason::Panicked("shard main exploded".to_string()))]);
}

#[test]
fn a_panicking_handler_fails_its_call_and_the_shard_keeps_serving() {
    let runtime = start(config(2, 2, 2), |shard| async move {
        shard.serve(|_from, n: u32| async move {
            assert_ne!(n, 13, "unlucky number");
            n * 10
        });
        if shard.id() == ShardId(1) {
            shard.stopping().await;
            return Ok(());
        }
        for target in [ShardId(1), ShardId(0)] {
            match shard.call(target, 13).await {
                Err(RouteError::HandlerFailed { shard: failed, reason }) if failed == target => {
                    check(reason.contains("unlucky number"), || format!("panic reason {reason:?}"))?;
                }
                other => return Err(format!("call to {target} with 13 returned {other:?}")),
            }
            let after = shard.call(target, 4).await;
            check(after == Ok(40), || format!("call to {target} after the panic: {after:?}"))?;
        }
        shard.stop_handle().stop();
        Ok(())
    })
    .expect("runtime starts");
    assert_eq!(join_within(runtime, HANG_BOUND), Ok(()));
}

#[test]
fn a_shard_leaving_with_calls_in_flight_hangs_nobody() {
    // shard_main returns while a task it spawned awaits a call that will never be answered: the
    // call fails with `Stopping` (or the task is dropped with the executor), and the runtime stops.
    let (outcome_sender, outcome) = flume::bounded(1);
    let runtime = start(config(2, 2, 2), move |shard| {
        let outcome_sender = outcome_sender.clone();
        async move {
            if shard.id() == ShardId(1) {
                // Receives shard 0's request but never answers before shard 0 is gone.
                shard.serve(|_from, (): ()| async { sleep(Duration::from_secs(3600)).await });
                shard.stopping().await;
                return Ok(());
            }
            let caller = shard.clone();
            glommio::spawn_local(async move {
                let _ = outcome_sender.send(caller.call(ShardId(1), ()).await);
            })
            .detach();
            eventually("the call to be sent", || shard.calls_in_flight() == 1).await?;
            shard.stop_handle().stop();
            Ok(())
        }
    })
    .expect("runtime starts");
    assert_eq!(join_within(runtime, HANG_BOUND), Ok(()));
    let outcome = outcome.recv_timeout(HANG_BOUND);
    assert!(
        matches!(outcome, Ok(Err(RouteError::Stopping)) | Err(flume::RecvTimeoutError::Disconnected)),
        "{outcome:?}"
    );
}

#[test]
fn invalid_configurations_do_not_start() {
    let result = start(config(0, 2, 2), |_shard: Shard<(), ()>| async { Ok(()) });
    assert!(matches!(result, Err(StartError::Config(ConfigError::NoShards))), "{result:?}");
    let result = start(config(2, 3, 2), |_shard: Shard<(), ()>| async { Ok(()) });
    assert!(matches!(result, Err(StartError::Config(ConfigError::QueueCapacity(3)))), "{result:?}");
}

#[test]
fn a_panic_in_a_task_the_shard_spawned_takes_that_shard_down_and_stops_the_others() {
    let runtime = start(config(2, 2, 2), |shard: Shard<u32, u32>| async move {
        shard.serve(|_from, n| async move { n });
        if shard.id() == ShardId(1) {
            // Panics after its first poll, so outside shard_main's own poll: the whole thread unwinds.
            glommio::spawn_local(async {
                sleep(Duration::from_millis(20)).await;
                panic!("background task exploded")
            })
            .detach();
        }
        shard.stopping().await;
        let after = shard.call(ShardId(1), 1).await;
        check(after == Err(RouteError::ShardStopped(ShardId(1))), || format!("call to the dead shard: {after:?}"))
    })
    .expect("runtime starts");
    let failure = join_within(runtime, HANG_BOUND).expect_err("shard 1 panicked");
    assert_eq!(failure.failures, vec![(ShardId(1), FailureReason::Panicked("background task exploded".to_string()))]);
}

#[test]
fn failures_are_reported_in_the_order_they_happened() {
    // Shard 1 fails first; shard 0, stopped by it, fails as a consequence. Reported in shard
    // order, the consequence would read as the cause.
    let runtime = start(config(2, 2, 2), |shard: Shard<(), ()>| async move {
        if shard.id() == ShardId(1) {
            sleep(Duration::from_millis(50)).await;
            return Err("the cause".to_string());
        }
        shard.stopping().await;
        Err("a consequence".to_string())
    })
    .expect("runtime starts");
    let failure = join_within(runtime, HANG_BOUND).expect_err("both failed");
    assert_eq!(
        failure.failures,
        vec![
            (ShardId(1), FailureReason::Returned("the cause".to_string())),
            (ShardId(0), FailureReason::Returned("a consequence".to_string())),
        ]
    );
    assert_eq!(failure.to_string(), "shard 1 failed: the cause; shard 0 failed: a consequence");
}
