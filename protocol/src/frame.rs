//! Frames: a u32 size prefix, then that many payload bytes. Every request and every response is
//! one frame.
//!
//! [`decode_frame`] is meant for a connection's growing read buffer: call it after each read; on
//! `Ok(None)` read more; on `Ok(Some(frame))` decode `buf[frame.payload]`, drop
//! `frame.consumed` bytes from the front and call it again (a read may have brought several
//! frames). The size is checked against `max_frame_bytes` as soon as the 4-byte prefix is there,
//! so an oversized frame is refused before the reader buffers or allocates anything for it.
//!
//! ```
//! # use keel_protocol::{decode_frame, Frame};
//! let mut buf: Vec<u8> = vec![0, 0, 0, 2, 0xaa, 0xbb, 0, 0];
//! let frame = decode_frame(&buf, 1 << 20).unwrap().unwrap();
//! assert_eq!(&buf[frame.payload.clone()], [0xaa, 0xbb]);
//! buf.drain(..frame.consumed);
//! assert_eq!(decode_frame(&buf, 1 << 20), Ok(None)); // half a prefix: read more
//! ```

use std::ops::Range;

use bytes::{BufMut, Bytes};

use crate::error::FrameError;

/// Bytes of the size prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

// A u32 size always fits in a usize, so `prefix + size` cannot overflow.
const _: () = assert!(usize::BITS >= 64, "keel-protocol needs a 64-bit target");

/// A frame sent in pieces (a gathered write): `skeleton`, a frame encoded without some byte
/// runs, with each run of `splices` put back at its point, a position in the skeleton. Returns
/// the pieces in order: the skeleton up to the first point, the run there, ..., the rest of the
/// skeleton. Points must come in order and lie inside the skeleton. The client's gathered
/// Produce requests and the broker's gathered Fetch answers are sent this way.
pub fn interleave<'a>(skeleton: &'a [u8], splices: impl IntoIterator<Item = (usize, &'a [u8])>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for (point, run) in splices {
        assert!(at <= point && point <= skeleton.len(), "splice point {point} out of order or past the skeleton");
        out.push(&skeleton[at..point]);
        out.push(run);
        at = point;
    }
    out.push(&skeleton[at..]);
    out
}

/// Runs smaller than this are copied into a [`SkeletonBuf`]'s skeleton: a splice costs an iovec.
pub const SPLICE_MIN_BYTES: usize = 1 << 10;

/// A buffer that encodes a frame into `out` leaving chosen byte runs out (a skeleton): a
/// `put_slice` of the next of them (the same bytes in memory, not merely equal bytes) becomes a
/// splice at the current position instead of a copy. Any other bytes, and a run put in another
/// order, are copied, so the frame's bytes never depend on the match; only the copy is saved.
/// [`SkeletonBuf::frame`] starts the frame with room for its size prefix,
/// [`SkeletonBuf::finish_frame`] fills it in; send it with [`interleave`]`(skeleton, splices)`.
///
/// It is how frames encoded by a codec that copies record sets in (the `kafka-protocol` crate,
/// through `ByteBufMut`, with the `kafka` feature) leave their records where they are: the
/// broker's Kafka Fetch answers, keel-bench's Kafka Produce requests.
pub struct SkeletonBuf<'a> {
    out: &'a mut Vec<u8>,
    /// Where the frame starts in `out`: splice positions count from here.
    start: usize,
    /// The runs to leave out, in the order the encoder puts them.
    runs: Vec<Bytes>,
    next: usize,
    splices: Vec<(usize, Bytes)>,
    spliced_bytes: usize,
}

impl<'a> SkeletonBuf<'a> {
    /// Starts a frame at the end of `out`: its size prefix, to be filled in by
    /// [`SkeletonBuf::finish_frame`], then whatever is put. The runs of `runs` (in encoding order)
    /// of at least [`SPLICE_MIN_BYTES`] are left out.
    pub fn frame(out: &'a mut Vec<u8>, mut runs: Vec<Bytes>) -> SkeletonBuf<'a> {
        runs.retain(|r| r.len() >= SPLICE_MIN_BYTES);
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
        SkeletonBuf { start, out, runs, next: 0, splices: Vec::new(), spliced_bytes: 0 }
    }

    /// Fills in the frame's size prefix, counting the bytes left out, and returns where the
    /// left-out runs go: (position from the frame's start in `out`, run), in order. `None` if the
    /// frame is too large for its prefix (over 4 GiB).
    pub fn finish_frame(self) -> Option<Vec<(usize, Bytes)>> {
        let size = u32::try_from(self.out.len() - self.start + self.spliced_bytes - FRAME_PREFIX_BYTES).ok()?;
        // No run is ever left out before the prefix: the frame's first bytes are the prefix.
        debug_assert!(self.splices.first().is_none_or(|(point, _)| *point >= FRAME_PREFIX_BYTES));
        self.out[self.start..self.start + FRAME_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
        Some(self.splices)
    }
}

// SAFETY: every method hands on to `Vec<u8>`'s own implementation, which upholds the contract;
// `put_slice` only chooses not to write some slices, which writes nothing.
unsafe impl BufMut for SkeletonBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.out.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (`cnt` bytes of `chunk_mut` initialized) is passed on.
        unsafe { self.out.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.out.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(run) = self.runs.get(self.next) {
            if src.len() == run.len() && std::ptr::eq(src.as_ptr(), run.as_ptr()) {
                self.splices.push((self.out.len() - self.start, run.clone()));
                self.spliced_bytes += src.len();
                self.next += 1;
                return;
            }
        }
        self.out.extend_from_slice(src);
    }
}

#[cfg(feature = "kafka")]
impl kafka_protocol::protocol::buf::ByteBufMut for SkeletonBuf<'_> {
    // Positions in the skeleton. The message encoders compute sizes up front and never seek back
    // over a splice (asserted); the users' tests check the bytes against a plain encoding.
    fn offset(&self) -> usize {
        self.out.len()
    }

    fn seek(&mut self, offset: usize) {
        debug_assert!(self.splices.last().is_none_or(|(point, _)| offset >= self.start + point));
        self.out.resize(offset, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.out[r]
    }
}

/// A complete frame at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the payload lies in the buffer: `FRAME_PREFIX_BYTES..consumed`.
    pub payload: Range<usize>,
    /// Bytes the frame takes from the start of the buffer, prefix included.
    pub consumed: usize,
}

/// Finds the frame at the start of `buf`: `Ok(None)` if `buf` does not hold all of it yet,
/// [`FrameError::TooLarge`] if its prefix announces more than `max_frame_bytes` payload bytes
/// (decided from the prefix alone). Bytes after the frame are left alone.
pub fn decode_frame(buf: &[u8], max_frame_bytes: u32) -> Result<Option<Frame>, FrameError> {
    let Some(prefix) = buf.first_chunk::<FRAME_PREFIX_BYTES>() else {
        return Ok(None);
    };
    let size = u32::from_be_bytes(*prefix);
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge { size, max: max_frame_bytes });
    }
    let consumed = FRAME_PREFIX_BYTES + size as usize; // lossless: see the assertion below
    if buf.len() < consumed {
        return Ok(None);
    }
    Ok(Some(Frame { payload: FRAME_PREFIX_BYTES..consumed, consumed }))
}

/// Starts a frame at the end of `out` by reserving its prefix; returns where the frame starts,
/// for [`end_frame`].
pub(crate) fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
    start
}

/// Writes the size prefix of the frame begun at `start`, now that its payload is in `out`.
/// A payload over 4 GiB is a programmer error (nothing Keel sends comes near it).
pub(crate) fn end_frame(out: &mut [u8], start: usize) {
    let payload = out.len() - start - FRAME_PREFIX_BYTES;
    let size = u32::try_from(payload).unwrap_or_else(|_| panic!("frame payload of {payload} bytes exceeds 4 GiB"));
    out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
}

/// A connection loop in miniature: feeds `stream` to [`decode_frame`] in reads of the given sizes
/// and returns every payload found, or the first error.
#[cfg(test)]
pub(crate) fn read_frames(stream: &[u8], reads: &[usize], max_frame_bytes: u32) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut buf = Vec::new();
    let mut payloads = Vec::new();
    let mut at = 0;
    let mut reads = reads.iter().copied();
    while at < stream.len() {
        let n = reads.next().unwrap_or(stream.len() - at).min(stream.len() - at);
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        while let Some(frame) = decode_frame(&buf, max_frame_bytes)? {
            assert_eq!(frame.payload.end, frame.consumed);
            payloads.push(buf[frame.payload].to_vec());
            buf.drain(..frame.consumed);
        }
    }
    assert!(buf.is_empty(), "{} bytes of a partial frame left at the end of the stream", buf.len());
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            let start = begin_frame(&mut out);
            out.extend_from_slice(p);
            end_frame(&mut out, start);
        }
        out
    }

    #[test]
    fn waits_for_the_prefix_and_the_payload() {
        let bytes = framed(&[vec![1, 2, 3]]);
        assert_eq!(bytes, [0, 0, 0, 3, 1, 2, 3]);
        for n in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..n], 3), Ok(None), "{n} bytes");
        }
        assert_eq!(decode_frame(&bytes, 3), Ok(Some(Frame { payload: 4..7, consumed: 7 })));
        // An empty payload is a frame (it is an invalid request, but that is not framing's call).
        assert_eq!(decode_frame(&[0, 0, 0, 0, 9], 0), Ok(Some(Frame { payload: 4..4, consumed: 4 })));
    }

    #[test]
    fn oversize_is_rejected_from_the_prefix_alone() {
        assert_eq!(decode_frame(&[0xff; 4], 1 << 20), Err(FrameError::TooLarge { size: u32::MAX, max: 1 << 20 }));
        assert_eq!(decode_frame(&[0, 0, 0, 4], 3), Err(FrameError::TooLarge { size: 4, max: 3 }));
        assert_eq!(decode_frame(&[0, 0, 0, 3], 3), Ok(None));
        assert_eq!(decode_frame(&[0, 0, 0, 0xff, 0x01], u32::MAX), Ok(None));
    }

    proptest! {
        #[test]
        fn prop_every_split_point(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..4),
        ) {
            let stream = framed(&payloads);
            for split in 0..=stream.len() {
                prop_assert_eq!(&read_frames(&stream, &[split], 64).unwrap(), &payloads);
            }
            // And one byte at a time.
            prop_assert_eq!(&read_frames(&stream, &vec![1; stream.len()], 64).unwrap(), &payloads);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..64), max in any::<u32>()) {
            match decode_frame(&buf, max) {
                Ok(Some(frame)) => {
                    prop_assert!(frame.consumed <= buf.len());
                    prop_assert_eq!(frame.payload.len() as u64, u64::from(u32::from_be_bytes(buf[..4].try_into().unwrap())));
                }
                Ok(None) => prop_assert!(buf.len() < 4 || u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize > buf.len() - 4),
                Err(FrameError::TooLarge { size, max: m }) => prop_assert!(size > m && m == max),
            }
        }
    }
}
