//! `keel`: the Keel command line: `keel serve` runs the broker; `topic`, `produce`, `consume`
//! and `cluster` talk to one (see `keel::cli`); `keel log` inspects partition log directories.

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
    /// Run the broker: one shard per core, the native protocol on --listen, the Kafka protocol on
    /// --kafka-listen. Settings come from defaults, then --config FILE (TOML), then KEEL_*
    /// variables, then flags.
    Serve(Box<keel::serve_config::ServeArgs>),
    /// Create, list, describe, delete topics and change their configs.
    Topic {
        #[command(flatten)]
        bootstrap: keel::cli::Bootstrap,
        #[command(subcommand)]
        command: keel::cli::TopicCommand,
    },
    /// Send one record per line of stdin (optionally `key<SEP>value`).
    Produce {
        #[command(flatten)]
        bootstrap: keel::cli::Bootstrap,
        #[command(flatten)]
        args: keel::cli::ProduceArgs,
    },
    /// Print records of a topic, one per line.
    Consume {
        #[command(flatten)]
        bootstrap: keel::cli::Bootstrap,
        #[command(flatten)]
        args: keel::cli::ConsumeArgs,
    },
    /// Consumer groups: list, committed offsets and lag, reset.
    Group {
        #[command(flatten)]
        bootstrap: keel::cli::Bootstrap,
        #[command(subcommand)]
        command: keel::cli::GroupCommand,
    },
    /// The broker's state.
    Cluster {
        #[command(flatten)]
        bootstrap: keel::cli::Bootstrap,
        #[command(subcommand)]
        command: keel::cli::ClusterCommand,
    },
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
    let cli = Cli::parse();
    // Before any thread starts: large buffers freed are reused, not faulted in again.
    let freed_memory = keel_storage::io::heap::retain_freed_memory();
    match cli.command {
        Command::Serve(args) => serve(&args, freed_memory),
        Command::Topic { bootstrap, command } => client_exit(keel::cli::topic(&bootstrap, command)),
        Command::Produce { bootstrap, args } => client_exit(keel::cli::produce(&bootstrap, args)),
        Command::Consume { bootstrap, args } => client_exit(keel::cli::consume(&bootstrap, args)),
        Command::Group { bootstrap, command } => client_exit(keel::cli::group(&bootstrap, command)),
        Command::Cluster { bootstrap, command } => client_exit(keel::cli::cluster(&bootstrap, command)),
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

fn client_exit(result: Result<(), keel::cli::Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(keel::cli::Failure(code, message)) => {
            eprintln!("keel: {message}");
            ExitCode::from(code)
        }
    }
}

fn serve(args: &keel::serve_config::ServeArgs, freed_memory: keel_storage::io::heap::FreedMemory) -> ExitCode {
    let cpus = match keel::broker::online_cpus() {
        Ok(cpus) => cpus.len(),
        Err(e) => {
            eprintln!("keel serve: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.resolve(cpus) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keel serve: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    tracing::debug!(?freed_memory, "freed memory and malloc (keel_storage::io::heap)");
    match keel::broker::serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `KEEL_LOG` (or `RUST_LOG`) filters events, e.g. `KEEL_LOG=debug` or `KEEL_LOG=keel=debug`;
/// the default is `info`.
fn init_logging(format: keel::serve_config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KEEL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        keel::serve_config::LogFormat::Human => builder.init(),
        keel::serve_config::LogFormat::Json => builder.json().init(),
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
