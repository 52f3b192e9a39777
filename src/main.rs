//! `keel`: the Keel command line.
//!
//! The broker itself (`keel serve`) and the client commands arrive with the shard runtime;
//! today the binary carries the operator tools for partition log directories.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keel", version, about = "Keel: a thread-per-core, replicated log broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a partition log directory (read-only).
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Scan every segment like recovery does (lengths, CRC-32C, offsets) and report damage.
    /// Exit code 0: healthy; 1: damage found; 2: the directory could not be read.
    Verify {
        /// The partition's log directory (holds <base offset>.log files).
        dir: PathBuf,
    },
    /// Print every batch header, segment by segment.
    Dump {
        /// The partition's log directory.
        dir: PathBuf,
        /// Also print every record (offset, timestamp, key, value).
        #[arg(long)]
        records: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Log(LogCommand::Verify { dir }) => verify(&dir),
        Command::Log(LogCommand::Dump { dir, records }) => {
            match keel_tools::logdir::dump(&dir, records, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keel log dump: {}: {e}", dir.display());
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn verify(dir: &std::path::Path) -> ExitCode {
    let checks = match keel_tools::logdir::verify(dir) {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("keel log verify: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    let mut healthy = true;
    let count = checks.len();
    for (i, c) in checks.iter().enumerate() {
        let ok = c.healthy(i + 1 == count);
        healthy &= ok;
        println!(
            "{} {}: {} batches, offsets {}..{}, {} of {} bytes valid, end: {:?}",
            if ok { "ok  " } else { "BAD " },
            c.name,
            c.batches,
            c.base,
            c.next_offset,
            c.valid_bytes,
            c.file_bytes,
            c.end
        );
        for d in &c.damaged {
            println!("     damaged {d}");
        }
    }
    println!("{count} segments, {}", if healthy { "healthy" } else { "damage found" });
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
