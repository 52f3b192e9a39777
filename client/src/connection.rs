//! One TCP connection to the broker, moving whole frames: write a request frame, read the next
//! response frame. It only moves bytes and enforces deadlines and the response size bound;
//! what the bytes mean is `keel-protocol`'s business (and [`Client`](crate::Client)'s).

use std::{
    io::{IoSlice, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use keel_protocol::{decode_frame, FrameError};

use crate::error::ClientError;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// A connected socket and the bytes read from it that are not yet a whole frame.
pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes received after the last frame handed out: the start of the next frame.
    buf: BytesMut,
    /// Largest response payload accepted; a larger size prefix fails the read.
    max_response_bytes: u32,
}

impl Connection {
    /// Connects to the first address `addr` (`HOST:PORT`) resolves to that accepts within
    /// `connect_timeout`.
    pub(crate) fn open(
        addr: &str,
        connect_timeout: Duration,
        max_response_bytes: u32,
    ) -> Result<Connection, ClientError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::InvalidArgument(format!("cannot resolve {addr:?} (HOST:PORT): {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::InvalidArgument(format!("{addr:?} resolves to no address")));
        }
        let mut last_error = ClientError::Timeout;
        for a in addrs {
            match TcpStream::connect_timeout(&a, connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Connection { stream, buf: BytesMut::new(), max_response_bytes });
                }
                Err(e) => last_error = e.into(),
            }
        }
        Err(last_error)
    }

    /// Writes `frame` completely, giving up at `timeout`.
    pub(crate) fn send(&mut self, frame: &[u8], timeout: Duration) -> Result<(), ClientError> {
        self.stream.set_write_timeout(Some(nonzero(timeout)))?;
        self.stream.write_all(frame)?;
        Ok(())
    }

    /// Writes `pieces` back to back, completely, with vectored writes (no copy into one buffer),
    /// giving up when one write waits longer than `timeout`.
    pub(crate) fn send_gathered(&mut self, pieces: &[&[u8]], timeout: Duration) -> Result<(), ClientError> {
        self.stream.set_write_timeout(Some(nonzero(timeout)))?;
        Ok(write_all_gathered(&mut self.stream, pieces)?)
    }

    /// Reads the next response frame and returns its payload, giving up at `timeout` from now.
    pub(crate) fn receive(&mut self, timeout: Duration) -> Result<Bytes, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match decode_frame(&self.buf, self.max_response_bytes) {
                Ok(Some(frame)) => {
                    let mut whole = self.buf.split_to(frame.consumed).freeze();
                    return Ok(whole.split_off(frame.payload.start));
                }
                Ok(None) => {}
                Err(FrameError::TooLarge { size, max }) => {
                    return Err(ClientError::Protocol(format!(
                        "response of {size} bytes exceeds max_response_bytes ({max})"
                    )))
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.read_some(left)?;
        }
    }

    /// One read of at most [`READ_CHUNK_BYTES`] into `buf`.
    fn read_some(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.stream.set_read_timeout(Some(nonzero(timeout)))?;
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK_BYTES, 0);
        let read = self.stream.read(&mut self.buf[start..]);
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        match read {
            Ok(0) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ))),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Socket timeouts must not be zero (`set_read_timeout(Some(0))` is an error).
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// Writes `pieces` back to back, completely, with vectored writes (no copy into one buffer): a
/// frame sent in pieces ([`keel_protocol::interleave`]) on a blocking stream.
pub fn write_all_gathered(stream: &mut impl Write, pieces: &[&[u8]]) -> std::io::Result<()> {
    // The first piece not completely written, and how much of it was.
    let (mut first, mut done) = (0usize, 0usize);
    loop {
        while first < pieces.len() && done == pieces[first].len() {
            first += 1;
            done = 0;
        }
        if first == pieces.len() {
            return Ok(());
        }
        let slices: Vec<IoSlice<'_>> = std::iter::once(&pieces[first][done..])
            .chain(pieces[first + 1..].iter().copied())
            .filter(|p| !p.is_empty())
            .map(IoSlice::new)
            .collect();
        let mut written = match stream.write_vectored(&slices) {
            Ok(0) => {
                return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the connection accepts no more bytes"))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        while written > 0 {
            let left = pieces[first].len() - done;
            if written < left {
                done += written;
                written = 0;
            } else {
                written -= left;
                first += 1;
                done = 0;
            }
        }
    }
}
