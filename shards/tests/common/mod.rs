//! Helpers shared by the runtime's integration tests.

use std::sync::mpsc;
use std::time::Duration;

use keel_shards::{Runtime, ShardFailure};

/// `runtime.join()`, failing the test instead of hanging if it takes longer than `bound`.
pub fn join_within(runtime: Runtime, bound: Duration) -> Result<(), ShardFailure> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(runtime.join());
    });
    receiver.recv_timeout(bound).unwrap_or_else(|_| panic!("runtime.join() did not return within {bound:?}"))
}
