//! Fetch answers sent without copying their records into the frame.
//!
//! [`encode_response`] copies every partition's records into the connection's answer buffer. For
//! a consumer reading a topic back that copy was over half of the broker's `memmove` time, a
//! quarter of its CPU (docs/benchmarks.md, "Fetch answers without a copy"). Instead the answer is
//! encoded with every partition's records left empty (a "skeleton"), its length fields and frame
//! size are fixed up, and the records go to the socket from where they are, between the
//! skeleton's pieces, in vectored sends ([`write_gathered`]). The bytes on the wire are exactly
//! [`encode_response`]'s (checked by the tests below); an answer with few records, or whose
//! skeleton does not have the expected layout, is encoded whole ([`encode_answer`] decides). The native protocol's
//! counterpart of the client's `keel_client` gather, which does the same for Produce requests.
//!
//! The Kafka listener's Fetch answers, encoded by the `kafka-protocol` crate, are sent the same
//! way: they are encoded into a [`keel_protocol::SkeletonBuf`], which leaves their record sets
//! out as the encoder puts them (so the lengths before them, varints included, are the encoder's
//! own). keel-bench's Kafka Produce requests are encoded the same way.

use std::{
    io::{self, IoSlice},
    os::fd::AsRawFd,
};

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use keel_protocol::{
    encode_response,
    messages::{FetchPartitionResponse, FetchResponse, FetchTopicResponse},
    ErrorCode, Response, TopLevelError, FRAME_PREFIX_BYTES,
};

/// Below this many bytes of records in an answer, copying them is cheaper than vectored sends.
const GATHER_MIN_RECORD_BYTES: usize = 16 << 10;

/// Records to send in the middle of an answer: (position in the skeleton, records), in order.
pub(crate) type Splices = Vec<(usize, Bytes)>;

/// Appends the frame of `response` to `out`: a Fetch answer with [`GATHER_MIN_RECORD_BYTES`] of
/// records or more as a skeleton, returning where its records go (positions from where the
/// frame starts in `out`); anything else whole, returning no splices.
pub(crate) fn encode_answer(
    correlation_id: u32,
    api_version: u16,
    response: &Result<Response, TopLevelError>,
    out: &mut Vec<u8>,
) -> Splices {
    let start = out.len();
    if let Ok(Response::Fetch(fetch)) = response {
        if record_bytes(fetch) >= GATHER_MIN_RECORD_BYTES {
            if let Some(splices) = encode_fetch_skeleton(correlation_id, api_version, fetch, out) {
                return splices;
            }
            out.truncate(start); // not the layout expected: encoded whole below
        }
    }
    encode_response(correlation_id, api_version, response, out);
    Splices::new()
}

/// Appends to `out` the frame of a successful Fetch answer without its records, with lengths
/// and frame size as if they were there, and returns where each partition's records belong.
/// `None` if the layout is not the expected one (`out` is then unspecified).
fn encode_fetch_skeleton(
    correlation_id: u32,
    api_version: u16,
    response: &FetchResponse,
    out: &mut Vec<u8>,
) -> Option<Splices> {
    let start = out.len();
    let skeleton = FetchResponse {
        topics: response
            .topics
            .iter()
            .map(|t| FetchTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| FetchPartitionResponse { records: Bytes::new(), ..p.clone() })
                    .collect(),
            })
            .collect(),
    };
    encode_response(correlation_id, api_version, &Ok(Response::Fetch(skeleton)), out);
    // Frame prefix; header: correlation id u32, error code u16 (NONE), error message (null:
    // u16 0xffff); body: topic count u32; per topic: name (u16 length + bytes), partition count
    // u32; per partition: partition u32, error code u16, high watermark u64, log start offset
    // u64, records (u32 length + bytes).
    let none = ErrorCode::None.code().to_be_bytes();
    if out.get(start + FRAME_PREFIX_BYTES + 4..start + FRAME_PREFIX_BYTES + 8)? != [none[0], none[1], 0xff, 0xff] {
        return None;
    }
    let mut pos = start + FRAME_PREFIX_BYTES + 4 + 2 + 2 + 4;
    let mut splices = Vec::new();
    let mut records = 0usize;
    for t in &response.topics {
        pos += 2 + t.name.len() + 4;
        for p in &t.partitions {
            if out.get(pos..pos + 4)? != p.partition.0.to_be_bytes() {
                return None;
            }
            pos += 4 + 2 + 8 + 8;
            if out.get(pos..pos + 4)? != [0; 4] {
                return None;
            }
            let len = u32::try_from(p.records.len()).ok()?;
            out[pos..pos + 4].copy_from_slice(&len.to_be_bytes());
            pos += 4;
            if !p.records.is_empty() {
                splices.push((pos - start, p.records.clone()));
            }
            records += p.records.len();
        }
    }
    if pos != out.len() {
        return None;
    }
    let prefix: [u8; FRAME_PREFIX_BYTES] = out[start..start + FRAME_PREFIX_BYTES].try_into().ok()?;
    let size = u32::try_from(u32::from_be_bytes(prefix) as usize + records).ok()?;
    out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Some(splices)
}

/// Whether an answer carrying these record sets is worth sending as a skeleton.
pub(crate) fn worth_gathering<'r>(records: impl IntoIterator<Item = &'r Bytes>) -> bool {
    records.into_iter().map(Bytes::len).sum::<usize>() >= GATHER_MIN_RECORD_BYTES
}

/// The total bytes of records in `response`.
fn record_bytes(response: &FetchResponse) -> usize {
    response.topics.iter().flat_map(|t| &t.partitions).map(|p| p.records.len()).sum()
}

/// The pieces to send, in order: the skeleton up to each splice point, the records there, ...,
/// the rest of the skeleton.
pub(crate) fn pieces<'a>(skeleton: &'a [u8], splices: &'a [(usize, Bytes)]) -> Vec<&'a [u8]> {
    keel_protocol::interleave(skeleton, splices.iter().map(|(point, records)| (*point, &records[..])))
}

/// Most iovecs one `sendmsg` takes (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Sends `skeleton` with the records of `splices` spliced in. As much as the socket takes at
/// once goes in one vectored send without waiting; when it is full, the rest of the current
/// piece is written the stream's own way (which waits for room), then the next send is tried.
pub(crate) async fn write_gathered(
    stream: &mut TcpStream,
    skeleton: &[u8],
    splices: &[(usize, Bytes)],
) -> io::Result<()> {
    let pieces = pieces(skeleton, splices);
    let (mut first, mut done) = (0, 0); // the first piece not sent whole, and its bytes sent
    while first < pieces.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&pieces[first][done..])
            .chain(pieces[first + 1..].iter().copied())
            .take(MAX_IOVECS)
            .map(IoSlice::new)
            .collect();
        match send_now(stream, &slices) {
            Ok(mut sent) => {
                while first < pieces.len() && sent >= pieces[first].len() - done {
                    sent -= pieces[first].len() - done;
                    first += 1;
                    done = 0;
                }
                done += sent;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.write_all(&pieces[first][done..]).await?;
                first += 1;
                done = 0;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `sendmsg` of `slices` that does not wait for room in the socket.
fn send_now(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the slices outlive the call, and
    // the kernel only reads them. A zeroed msghdr has no address, control data or flags.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = slices.len() as _;
        libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use keel_protocol::{Offset, PartitionId};

    use super::*;

    /// Topics by name, each with its partitions as (partition, bytes of records).
    type Shape<'a> = &'a [(&'a str, &'a [(u32, usize)])];

    fn response(shape: Shape<'_>) -> FetchResponse {
        FetchResponse {
            topics: shape
                .iter()
                .map(|(name, parts)| FetchTopicResponse {
                    name: (*name).into(),
                    partitions: parts
                        .iter()
                        .map(|&(p, len)| FetchPartitionResponse {
                            partition: PartitionId(p),
                            error_code: if len == 0 { ErrorCode::OffsetOutOfRange } else { ErrorCode::None },
                            high_watermark: Offset(1_000 + u64::from(p)),
                            log_start_offset: Offset(u64::from(p)),
                            records: Bytes::from((0..len).map(|i| (i * 7 + p as usize) as u8).collect::<Vec<_>>()),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn gathered_bytes_are_encode_responses_bytes() {
        let shapes: &[Shape<'_>] = &[
            &[("t", &[(0, 70_000)])],
            &[("events", &[(0, 20_000), (1, 0), (2, 5)]), ("other-topic", &[(7, 1 << 20)])],
            &[("a", &[]), ("b", &[(3, 0)])],
            &[],
        ];
        for shape in shapes {
            let response = response(shape);
            let mut expected = vec![9, 9]; // the skeleton may follow other bytes in `out`
            encode_response(41, 1, &Ok(Response::Fetch(response.clone())), &mut expected);
            let mut out = vec![9, 9];
            let splices = encode_fetch_skeleton(41, 1, &response, &mut out).expect("the expected layout");
            let mut gathered = out[..2].to_vec();
            gathered.extend(pieces(&out[2..], &splices).concat());
            assert_eq!(gathered, expected, "shape {shape:?}");
            assert_eq!(splices.iter().map(|(_, r)| r.len()).sum::<usize>(), record_bytes(&response));
        }
    }

    #[test]
    fn pieces_alternate_skeleton_and_records() {
        let skeleton = b"0123456789";
        let splices =
            vec![(3, Bytes::from_static(b"ab")), (3, Bytes::from_static(b"cd")), (10, Bytes::from_static(b"e"))];
        let pieces = pieces(skeleton, &splices);
        assert_eq!(pieces, [&b"012"[..], b"ab", b"", b"cd", b"3456789", b"e", b""]);
    }
}
