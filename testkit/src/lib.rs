//! Integration-test support shared by the crates whose tests run the real broker: `keel serve`
//! as a child process on free loopback ports, ready once it answers a native ApiVersions
//! request, stopped with SIGTERM (and its exit status checked) or SIGKILL, killed when dropped.
//!
//! Each test crate finds the binary its own way (only the `keel` crate's tests get
//! `CARGO_BIN_EXE_keel`), so [`keel_bin`] takes that path as a hint and falls back on `KEEL_BIN`
//! and the target directory.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use keel_protocol::{
    decode_frame, decode_response, encode_request, messages::ApiVersionsRequest, ApiKey, Request, RequestHeader,
};

/// How long a broker may take to answer after it was started, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `keel` binary: `KEEL_BIN` if set, else `hint` (e.g. `env!("CARGO_BIN_EXE_keel")`), else
/// `$CARGO_TARGET_DIR/debug/keel`, else `keel` next to the running test's `deps/` directory.
/// Panics with how to build it if it is not there.
pub fn keel_bin(hint: Option<&Path>) -> PathBuf {
    let path = match (std::env::var_os("KEEL_BIN"), hint, std::env::var_os("CARGO_TARGET_DIR")) {
        (Some(bin), _, _) => PathBuf::from(bin),
        (None, Some(hint), _) => hint.to_path_buf(),
        (None, None, Some(target)) => PathBuf::from(target).join("debug").join("keel"),
        (None, None, None) => {
            let exe = std::env::current_exe().expect("the test's own path");
            exe.parent().and_then(|deps| deps.parent()).expect("target/debug/deps/<test>").join("keel")
        }
    };
    assert!(
        path.is_file(),
        "the keel broker binary is missing at {}: build it with `cargo build -p keel --bin keel` (same profile \
         and CARGO_TARGET_DIR), run `cargo test --workspace`, or point KEEL_BIN at it",
        path.display()
    );
    path
}

/// A free port below the ephemeral range, so no outgoing connection can be using it (see
/// `/proc/sys/net/ipv4/ip_local_port_range`). Never the same port twice in one test process: a
/// test that restarts its broker on its port must not find another test's listener there (the
/// broker refuses a port in use).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let port = (0..1000u32)
        .map(|i| 20_000 + ((seed.wrapping_add(i.wrapping_mul(7919)) ^ std::process::id()) % 12_000) as u16)
        .find(|&p| !handed_out.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port");
    handed_out.push(port);
    port
}

/// `127.0.0.1:` a [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Whether a native ApiVersions request to `addr` gets its answer. A bare connect is not proof
/// that the broker listens: a connect can reach itself while nothing listens yet.
pub fn answers_api_versions(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let header = RequestHeader {
        api_key: ApiKey::ApiVersions.code(),
        api_version: 1,
        correlation_id: 1,
        client_id: "readiness-probe".into(),
    };
    let mut out = Vec::new();
    encode_request(&header, &Request::ApiVersions(ApiVersionsRequest {}), &mut out);
    if stream.write_all(&out).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match decode_frame(&buf, 1 << 20) {
            Ok(Some(frame)) => {
                let payload = bytes::Bytes::from(buf).slice(frame.payload);
                return matches!(decode_response(ApiKey::ApiVersions, 1, &payload), Ok((1, Ok(_))));
            }
            Ok(None) => {}
            Err(_) => return false,
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// How to start a broker: `keel serve --data-dir DATA --listen 127.0.0.1:PORT --admin-listen
/// 127.0.0.1:FREE --memory 256MiB --kafka-listen off|127.0.0.1:FREE` plus any further flags.
pub struct BrokerConfig {
    bin: PathBuf,
    data: PathBuf,
    scratch: bool,
    port: Option<u16>,
    kafka: bool,
    args: Vec<String>,
    stderr: Option<PathBuf>,
}

impl BrokerConfig {
    /// A broker on the data directory `data`, which the test owns (it is kept, so a test can
    /// restart a broker on it).
    pub fn new(bin: PathBuf, data: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            bin,
            data: data.into(),
            scratch: false,
            port: None,
            kafka: false,
            args: Vec::new(),
            stderr: None,
        }
    }

    /// A broker on a fresh data directory `data`: emptied before the start, removed when the
    /// broker is dropped. Put it under the target directory (`CARGO_TARGET_TMPDIR`), not /tmp:
    /// the log writes with O_DIRECT, which tmpfs may refuse.
    pub fn scratch(bin: PathBuf, data: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig { scratch: true, ..BrokerConfig::new(bin, data) }
    }

    /// The native listener's port (default: a [`free_port`]).
    pub fn port(mut self, port: u16) -> BrokerConfig {
        self.port = Some(port);
        self
    }

    /// Turns the Kafka listener on, on a free port.
    pub fn kafka(mut self) -> BrokerConfig {
        self.kafka = true;
        self
    }

    /// Further `keel serve` flags.
    pub fn args(mut self, args: &[&str]) -> BrokerConfig {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The broker's log (stderr) to this file instead of the test's stderr.
    pub fn stderr_to(mut self, path: impl Into<PathBuf>) -> BrokerConfig {
        self.stderr = Some(path.into());
        self
    }

    /// Starts the broker and waits until it answers (panics after 30 s).
    pub fn start(self) -> Broker {
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.data);
            std::fs::create_dir_all(&self.data).unwrap();
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port.unwrap_or_else(free_port)));
        let admin = free_addr();
        let kafka = self.kafka.then(free_addr);
        let kafka_listen = kafka.map_or_else(|| "off".to_string(), |a| a.to_string());
        let child = Command::new(&self.bin)
            .args(["serve", "--data-dir", self.data.to_str().expect("a UTF-8 data path")])
            .args(["--listen", &addr.to_string(), "--admin-listen", &admin.to_string()])
            .args(["--kafka-listen", &kafka_listen, "--memory", "256MiB"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(match &self.stderr {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("create the broker's log file")),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start keel serve");
        let mut broker = Broker { child: Some(child), addr, admin, kafka, data: self.data, scratch: self.scratch };
        // Each shard binds its Kafka listener before it accepts native connections, so a native
        // answer means both listen.
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_api_versions(addr) {
            if let Some(status) = broker.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("keel serve exited before it answered on {addr}: {status}");
            }
            assert!(Instant::now() < deadline, "keel serve did not answer on {addr} within {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

/// A running `keel serve`; killed (SIGKILL) when dropped, and its data directory removed if it
/// was a scratch one.
pub struct Broker {
    child: Option<Child>,
    /// The native listener.
    pub addr: SocketAddr,
    /// The admin HTTP listener (`/metrics`).
    pub admin: SocketAddr,
    /// The Kafka listener, if turned on.
    pub kafka: Option<SocketAddr>,
    data: PathBuf,
    scratch: bool,
}

impl Broker {
    /// The Kafka listener's address; panics if it was not turned on.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka.expect("the broker was started without its Kafka listener")
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running broker").id()
    }

    /// SIGTERM, then the exit status (panics if it does not exit within 30 s).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("a running broker");
        // SAFETY: a plain syscall on the pid of a child not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("keel serve did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and waits until it is gone (a crash: nothing is flushed or closed).
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL keel serve");
            child.wait().expect("reap keel serve");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}
