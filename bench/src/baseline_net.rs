//! `keel-bench baseline net`: the physical limit of loopback TCP on this machine, the ceiling of
//! every broker figure measured over it (client and broker on one host).
//!
//! Two figures, both over one connection on 127.0.0.1 with TCP_NODELAY, from plain blocking
//! sockets (the cheapest path a client could take):
//! - throughput: one thread writes 1 MiB buffers as fast as the other reads them, for
//!   `--duration-secs`;
//! - round trip: a 64-byte ping answered by a 64-byte pong, `--samples` times, one at a time.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Args;
use serde::Serialize;

use crate::report::{self, LatencySummary};

const CHUNK: usize = 1 << 20;
const PING: usize = 64;

#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// Seconds of streaming for the throughput figure.
    #[arg(long, default_value_t = 3.0)]
    pub duration_secs: f64,
    /// Round trips timed for the latency figure.
    #[arg(long, default_value_t = 20_000)]
    pub samples: u64,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// The result of `baseline net`, also the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct NetBaseline {
    pub kind: &'static str,
    /// Loopback TCP stream throughput, 10^6 bytes per second.
    pub mb_per_s: f64,
    pub duration_s: f64,
    /// 64-byte request/response round trip, µs.
    pub round_trip_us: LatencySummary,
}

pub fn run_net(args: &NetArgs) -> Result<(), String> {
    report::print_result(&measure_net(args)?, args.json, |r| {
        println!("baseline net (loopback TCP, one connection)");
        println!("  stream throughput: {:.0} MB/s over {:.1} s", r.mb_per_s, r.duration_s);
        println!("  64-byte round trip: {}", r.round_trip_us.human());
    })
}

pub fn measure_net(args: &NetArgs) -> Result<NetBaseline, String> {
    if !(args.duration_secs > 0.0 && args.duration_secs <= 600.0) || args.samples == 0 {
        return Err("--duration-secs must be in (0, 600] and --samples positive".into());
    }
    let io = |e: std::io::Error| format!("loopback TCP: {e}");
    let (mb_per_s, duration_s) = stream(Duration::from_secs_f64(args.duration_secs)).map_err(io)?;
    let round_trip_us = ping_pong(args.samples).map_err(io)?;
    Ok(NetBaseline { kind: "baseline_net", mb_per_s, duration_s, round_trip_us })
}

/// A connected pair (client, server side).
fn pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

fn stream(duration: Duration) -> std::io::Result<(f64, f64)> {
    let (mut tx, mut rx) = pair()?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let buf = vec![0x5au8; CHUNK];
        while !writer_stop.load(Ordering::Relaxed) {
            tx.write_all(&buf)?;
        }
        Ok(())
    });
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut elapsed = Duration::ZERO;
    while elapsed < duration {
        let n = rx.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        elapsed = start.elapsed();
    }
    stop.store(true, Ordering::Relaxed);
    // Unblock a writer waiting for buffer space, then let it finish.
    drop(rx);
    let _ = writer.join();
    let secs = elapsed.as_secs_f64();
    Ok((report::mb_per_s(bytes, secs), secs))
}

fn ping_pong(samples: u64) -> std::io::Result<LatencySummary> {
    let (mut client, mut server) = pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = [0u8; PING];
        loop {
            match server.read_exact(&mut buf) {
                Ok(()) => server.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut hist = report::latency_histogram();
    let mut buf = [0u8; PING];
    for i in 0..samples {
        buf[0] = i as u8;
        let t = Instant::now();
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
        report::record_us(&mut hist, t.elapsed());
    }
    drop(client);
    let _ = echo.join();
    Ok(LatencySummary::with_p9999(&hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_figures_are_measured() {
        let r = measure_net(&NetArgs { duration_secs: 0.3, samples: 500, json: true }).unwrap();
        assert!(r.mb_per_s > 10.0, "{r:?}");
        assert!(r.duration_s >= 0.3, "{r:?}");
        assert_eq!(r.round_trip_us.samples, 500);
        assert!(r.round_trip_us.p50 >= 1 && r.round_trip_us.p50 <= r.round_trip_us.max, "{r:?}");
    }
}
