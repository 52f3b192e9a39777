//! `start` and `Runtime`: one thread per shard, each running a glommio executor that runs
//! `shard_main`, and the supervision that reports how each shard ended.
//!
//! Start-up is all or nothing. Each shard thread creates its executor, then connects its ends of
//! the mesh, which completes only once every shard has done the same; only then does it report
//! "up" and run `shard_main`. If one executor cannot be created, `start` raises an abort latch, the
//! other shards give up connecting, and `start` joins them and returns the error: no `shard_main`
//! ever ran.
//!
//! Shutdown: a shard ends when its `shard_main` returns. If it returned an error or panicked, the
//! shard requests a stop of the whole runtime so the other shards do not wait for it forever. Its
//! side of the mesh is closed on its executor, so calls to it fail instead of hanging. A panic in a
//! task the shard spawned itself unwinds the whole thread and skips that orderly close; for that
//! case every shard thread also announces its end through a latch per shard (set from a drop guard,
//! whatever the way out), on which every other shard fails its calls to it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use futures_lite::FutureExt;
use glommio::LocalExecutorBuilder;

use crate::config::RuntimeConfig;
use crate::error::{panic_message, FailureReason, ShardFailure, StartError};
use crate::id::ShardId;
use crate::mesh::{self, Endpoints};
use crate::router::Shard;
use crate::stop::{Latch, StopHandle};

/// The running shards, owned by the thread that started them.
///
/// Dropping a `Runtime` without [`join`](Self::join)ing it requests a stop and waits for every shard
/// thread (so it blocks until every `shard_main` has returned).
#[derive(Debug)]
pub struct Runtime {
    /// Shard threads in shard order; empty once joined.
    threads: Vec<(ShardId, JoinHandle<Ended>)>,
    stop: StopHandle,
}

/// Starts `config.shards` shards, each on its own thread with its own glommio executor (pinned as
/// `config.pin` says), connected by bounded request and response queues, and runs
/// `shard_main(shard)` on each. Returns once every shard is up and running `shard_main`.
pub fn start<Req, Resp, F, Fut>(config: RuntimeConfig, shard_main: F) -> Result<Runtime, StartError>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Shard<Req, Resp>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    config.validate()?;
    let config = Arc::new(config);
    let stop = StopHandle::new();
    let abort = Arc::new(Latch::new());
    let ended: Arc<[Latch]> = (0..config.shards).map(|_| Latch::new()).collect();
    let failures_so_far = Arc::new(AtomicUsize::new(0));
    let (report_sender, reports) = mpsc::channel();
    let mut threads = Vec::with_capacity(config.shards);
    let ends = mesh::build::<Req, Resp>(config.shards, config.queue_capacity);
    for (shard, ends) in ShardId::all(config.shards).zip(ends) {
        let launch = Launch {
            shard,
            config: Arc::clone(&config),
            ends,
            stop: stop.clone(),
            abort: Arc::clone(&abort),
            ended: Arc::clone(&ended),
            reporter: Reporter { shard, sender: Some(report_sender.clone()) },
            shard_main: shard_main.clone(),
            failures_so_far: Arc::clone(&failures_so_far),
        };
        let thread = std::thread::Builder::new().name(format!("{}-{}", config.thread_name, shard.0));
        match thread.spawn(move || launch.run()) {
            Ok(handle) => threads.push((shard, handle)),
            Err(error) => {
                abort.set();
                join_all(threads);
                return Err(StartError::Spawn { shard, error });
            }
        }
    }
    drop(report_sender);
    if let Some(error) = await_start_up(&reports, config.shards, &abort) {
        join_all(threads);
        return Err(error);
    }
    tracing::info!(shards = config.shards, "runtime started");
    Ok(Runtime { threads, stop })
}

impl Runtime {
    /// A handle to request a graceful stop, usable from any thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for every shard thread to end. `Ok` if every `shard_main` returned `Ok`; otherwise
    /// every shard that failed, with its reason, in the order they failed: the first is usually
    /// the cause, the others its consequences (a shard's failure also made the others'
    /// `stopping()` complete, so this does not wait for a shard that is waiting for a dead one).
    pub fn join(mut self) -> Result<(), ShardFailure> {
        let mut failures: Vec<_> = join_all(std::mem::take(&mut self.threads))
            .into_iter()
            .filter_map(|(shard, ended)| ended.result.err().map(|reason| (ended.order, shard, reason)))
            .collect();
        // A thread that died outside `run` (no order) counts as failing last.
        failures.sort_by_key(|(order, shard, _)| (order.unwrap_or(usize::MAX), *shard));
        let failures: Vec<_> = failures.into_iter().map(|(_, shard, reason)| (shard, reason)).collect();
        if failures.is_empty() {
            tracing::info!("runtime stopped");
            Ok(())
        } else {
            Err(ShardFailure { failures })
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.stop();
            join_all(std::mem::take(&mut self.threads));
        }
    }
}

/// Joins shard threads; a thread that panicked outside `shard_main` (say, in a task it spawned)
/// counts as a panicked shard.
/// How a shard thread ended: its `shard_main`'s result, and, if it failed, how many shards had
/// failed before it.
struct Ended {
    result: Result<(), FailureReason>,
    order: Option<usize>,
}

impl Ended {
    fn failed(reason: FailureReason, failures_so_far: &AtomicUsize) -> Ended {
        Ended { result: Err(reason), order: Some(failures_so_far.fetch_add(1, Ordering::SeqCst)) }
    }
}

fn join_all(threads: Vec<(ShardId, JoinHandle<Ended>)>) -> Vec<(ShardId, Ended)> {
    threads
        .into_iter()
        .map(|(shard, handle)| {
            let ended = handle.join().unwrap_or_else(|payload| Ended {
                result: Err(FailureReason::Panicked(panic_message(&*payload))),
                order: None,
            });
            (shard, ended)
        })
        .collect()
}

/// What a shard thread tells `start` once: up, failed to come up, or gave up because another failed.
enum StartUp {
    Up,
    Failed(StartError),
    GaveUp,
}

/// Waits for every shard's start-up report; on the first failure raises `abort` so the others give
/// up. Returns the first failure.
fn await_start_up(reports: &mpsc::Receiver<(ShardId, StartUp)>, shards: usize, abort: &Latch) -> Option<StartError> {
    let mut failure = None;
    for _ in 0..shards {
        // Every reporter sends exactly once (on drop at the latest), so this sees `shards` reports.
        let Ok((shard, report)) = reports.recv() else { break };
        match report {
            StartUp::Up => {}
            StartUp::Failed(error) => {
                abort.set();
                failure.get_or_insert(error);
            }
            StartUp::GaveUp => {
                abort.set();
                let reason = "gave up starting".to_string();
                failure.get_or_insert(StartError::Executor { shard, reason });
            }
        }
    }
    failure
}

/// Sends a shard's start-up report exactly once; if dropped unsent (the thread died early), reports
/// a failure so `start` never waits forever.
struct Reporter {
    shard: ShardId,
    sender: Option<mpsc::Sender<(ShardId, StartUp)>>,
}

impl Reporter {
    fn report(&mut self, report: StartUp) {
        if let Some(sender) = self.sender.take() {
            // `start` may have returned already (it got another failure): nobody to tell then.
            let _ = sender.send((self.shard, report));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let reason = "the shard thread ended before its executor was up".to_string();
        self.report(StartUp::Failed(StartError::Executor { shard: self.shard, reason }));
    }
}

/// Dropped last on a shard thread, however the thread ends: announces the end to the other shards
/// (they fail their calls to it; see `Shard::new`), and if the thread is unwinding (a panic outside
/// `shard_main`, which skipped the orderly shutdown) requests a stop of the runtime.
struct ThreadEnd {
    shard: ShardId,
    ended: Arc<[Latch]>,
    stop: StopHandle,
}

impl Drop for ThreadEnd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(shard = %self.shard, "shard thread panicked; requesting a stop of the runtime");
            self.stop.stop();
        }
        self.ended[self.shard.index()].set();
    }
}

/// Everything one shard thread needs.
struct Launch<Req: Send, Resp: Send, F> {
    shard: ShardId,
    config: Arc<RuntimeConfig>,
    ends: Endpoints<Req, Resp>,
    stop: StopHandle,
    abort: Arc<Latch>,
    /// `[shard]`: set when that shard's thread has ended.
    ended: Arc<[Latch]>,
    reporter: Reporter,
    shard_main: F,
    /// Shards whose `shard_main` has failed so far: a failing shard's place in the report.
    failures_so_far: Arc<AtomicUsize>,
}

impl<Req, Resp, F, Fut> Launch<Req, Resp, F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Shard<Req, Resp>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    /// The body of a shard thread.
    fn run(mut self) -> Ended {
        let shard = self.shard;
        let _thread_end = ThreadEnd { shard, ended: Arc::clone(&self.ended), stop: self.stop.clone() };
        match LocalExecutorBuilder::new(self.config.placement(shard)).make() {
            Ok(executor) => executor.run(self.run_shard()),
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%shard, %reason, "cannot create the shard's executor");
                self.reporter.report(StartUp::Failed(StartError::Executor { shard, reason: reason.clone() }));
                Ended::failed(FailureReason::Returned(format!("executor not created: {reason}")), &self.failures_so_far)
            }
        }
    }

    async fn run_shard(self) -> Ended {
        let Launch { shard, config, ends, stop, abort, ended, mut reporter, shard_main, failures_so_far } = self;
        let connect = async { Some(ends.connect(shard).await) };
        let give_up = async {
            abort.wait().await;
            None
        };
        let Some(links) = connect.or(give_up).await else {
            reporter.report(StartUp::GaveUp);
            return Ended::failed(FailureReason::Returned("start-up aborted".to_string()), &failures_so_far);
        };
        let handle = Shard::new(shard, &config, links, stop.clone(), ended);
        reporter.report(StartUp::Up);
        tracing::debug!(%shard, "shard running");
        let main = {
            let handle = handle.clone();
            AssertUnwindSafe(async move { shard_main(handle).await }).catch_unwind().await
        };
        // Its place among the failures is taken now, before the shutdown below lets the others
        // see it and fail in turn.
        let order = (!matches!(main, Ok(Ok(())))).then(|| failures_so_far.fetch_add(1, Ordering::SeqCst));
        handle.shutdown().await;
        let result = match main {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(FailureReason::Returned(message)),
            Err(payload) => Err(FailureReason::Panicked(panic_message(&*payload))),
        };
        match &result {
            Ok(()) => tracing::debug!(%shard, "shard stopped"),
            Err(reason) => {
                tracing::error!(%shard, %reason, "shard failed; requesting a stop of the runtime");
                stop.stop();
            }
        }
        Ended { result, order }
    }
}
