//! The four codecs of Kafka's compressed batches, byte for byte as Kafka's clients write them.
//!
//! A compressed batch holds its whole records section as one compressed stream (the header stays
//! plain and the CRC covers the compressed bytes). Keel stores and serves such batches as sent and
//! opens them only where it must read records: compaction ([`crate::cleaner`]) and a lookup by
//! timestamp ([`crate::Log::offset_for_timestamp`]). The formats are those
//! of Kafka's Java client (`org.apache.kafka.common.compress`) and librdkafka:
//!
//! | codec  | stream                                                                            |
//! |--------|-----------------------------------------------------------------------------------|
//! | gzip   | RFC 1952 gzip (members may be concatenated, as `GZIPInputStream` reads them)      |
//! | snappy | snappy-java's "xerial" framing: magic `82 'SNAPPY' 00`, i32 version 1, i32 compatible version 1, then blocks of [i32 length][raw snappy]; a bare raw snappy block (old producers) is read too |
//! | lz4    | LZ4 frame (v1.5+ magic `04 22 4D 18`), 64 KiB independent blocks, as Kafka's `Lz4BlockOutputStream` writes |
//! | zstd   | zstd frame(s)                                                                     |
//!
//! Decompression is bounded: input comes from producers or disks, and a few KiB of gzip or zstd
//! can expand to gigabytes. Every decoder stops one byte past the caller's limit and refuses the
//! batch, so memory stays bounded by the limit whatever the input claims.

use std::io::{Read, Write};

use crate::batch::{Compression, DecodeError};

/// Default bound on a batch's decompressed records section (64 MiB): far above what a producer
/// sends (Kafka's default `message.max.bytes` is 1 MiB, compressed) yet small enough to hold.
pub const MAX_DECOMPRESSED_RECORDS: usize = 64 << 20;

/// snappy-java's stream magic, which starts a "xerial" framed snappy stream.
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, version 1, minimum compatible version 1: what snappy-java writes and Kafka expects.
const XERIAL_HEADER_LEN: usize = 16;
/// snappy-java's default block size, used by Kafka's `SnappyOutputStream`.
const XERIAL_BLOCK: usize = 32 << 10;
/// zstd level used by Kafka's producers by default (`compression.zstd.level`).
const ZSTD_LEVEL: i32 = 3;

/// Compresses a records section with `codec` as Kafka's Java client does. `None` copies it.
pub fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
    // Writers into a Vec cannot fail: an error here is a bug in the codec crate.
    match codec {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).expect("gzip into a Vec");
            enc.finish().expect("gzip into a Vec")
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 16);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = enc.compress_vec(chunk).expect("snappy block of 32 KiB");
                let len = i32::try_from(block.len()).expect("a 32 KiB block compresses to < 2 GiB");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            // Kafka's reader decodes each block on its own: blocks must be independent.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(data).expect("lz4 into a Vec");
            enc.finish().expect("lz4 into a Vec")
        }
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).expect("zstd into a Vec"),
    }
}

/// Decompresses a records section compressed with `codec`, refusing
/// ([`DecodeError::Unsupported`]) output longer than `limit` bytes, and giving
/// [`DecodeError::Invalid`] for a stream that is corrupt or truncated. Never panics.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    match codec {
        Compression::None if data.len() > limit => Err(too_large(codec, limit)),
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), limit),
        Compression::Snappy => match data.strip_prefix(&XERIAL_MAGIC) {
            Some(_) => snappy_xerial(data, limit),
            None => snappy_raw(data, limit, Vec::new()),
        },
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(data), limit),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt(codec, e))?;
            read_bounded(codec, dec, limit)
        }
    }
}

fn too_large(codec: Compression, limit: usize) -> DecodeError {
    DecodeError::Unsupported(format!("{codec} records decompress to more than the limit of {limit} bytes"))
}

fn corrupt(codec: Compression, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Invalid(format!("{codec} records do not decompress: {e}"))
}

/// Reads a decoder to its end, but never more than `limit + 1` bytes (one past is how a bomb is told
/// from a section of exactly `limit` bytes).
fn read_bounded(codec: Compression, dec: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    dec.take(cap).read_to_end(&mut out).map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(too_large(codec, limit));
    }
    Ok(out)
}

/// One raw snappy block appended to `out`; its header states its length, checked before allocating.
fn snappy_raw(block: &[u8], limit: usize, mut out: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, e))?;
    let at = out.len();
    if len > limit.saturating_sub(at) {
        return Err(too_large(codec, limit));
    }
    out.resize(at + len, 0);
    let n = snap::raw::Decoder::new().decompress(block, &mut out[at..]).map_err(|e| corrupt(codec, e))?;
    out.truncate(at + n);
    Ok(out)
}

/// snappy-java's framing: a 16-byte header, then [i32 big-endian length][raw snappy block]…
fn snappy_xerial(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let codec = Compression::Snappy;
    let Some(mut rest) = data.get(XERIAL_HEADER_LEN..) else {
        return Err(corrupt(codec, format!("xerial header truncated to {} bytes", data.len())));
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt(codec, format!("xerial block length truncated to {} bytes", rest.len())));
        };
        let len = i32::from_be_bytes(*len);
        let Some(block) = usize::try_from(len).ok().and_then(|n| tail.get(..n)) else {
            return Err(corrupt(codec, format!("xerial block length {len} with {} bytes left", tail.len())));
        };
        out = snappy_raw(block, limit, out)?;
        rest = &tail[block.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 4] = [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// Compressible but not trivial: repeated words with a counter.
    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0u32;
        while out.len() < len {
            out.extend_from_slice(format!("record-{i} ").as_bytes());
            i = i.wrapping_mul(31).wrapping_add(7) % 1000;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn round_trip_every_codec_and_size() {
        // 0, one byte, within one block, and several snappy (32 KiB) and lz4 (64 KiB) blocks.
        for len in [0, 1, 1000, XERIAL_BLOCK, XERIAL_BLOCK + 1, 200_000] {
            let data = sample(len);
            for codec in CODECS {
                let packed = compress(codec, &data);
                if len >= 1000 {
                    assert!(packed.len() < data.len(), "{codec} {len}: {} bytes", packed.len());
                }
                assert_eq!(decompress(codec, &packed, len).unwrap(), data, "{codec} {len}");
            }
        }
    }

    #[test]
    fn limit_is_exact() {
        let data = sample(5000);
        for codec in CODECS.into_iter().chain([Compression::None]) {
            let packed = compress(codec, &data);
            assert_eq!(decompress(codec, &packed, 5000).unwrap(), data, "{codec}");
            match decompress(codec, &packed, 4999) {
                Err(DecodeError::Unsupported(msg)) => assert!(msg.contains("limit of 4999"), "{msg}"),
                other => panic!("{codec}: expected the limit to refuse, got {other:?}"),
            }
        }
    }

    #[test]
    fn gzip_and_zstd_streams_have_their_magic() {
        let data = sample(100);
        assert_eq!(&compress(Compression::Gzip, &data)[..3], &[0x1f, 0x8b, 0x08], "RFC 1952 id, deflate");
        assert_eq!(&compress(Compression::Zstd, &data)[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
    }

    /// snappy-java's framing, checked against its definition (SnappyCodec / SnappyOutputStream):
    /// 8-byte magic, i32 version 1, i32 compatible version 1, then [i32 BE length][raw block]
    /// for every 32 KiB of input.
    #[test]
    fn snappy_writes_the_xerial_framing() {
        let data = sample(XERIAL_BLOCK * 2 + 10);
        let packed = compress(Compression::Snappy, &data);
        assert_eq!(&packed[..8], &[0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]);
        assert_eq!(&packed[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        let mut rest = &packed[16..];
        let mut blocks = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            blocks.push(snap::raw::Decoder::new().decompress_vec(&rest[4..4 + len]).unwrap());
            rest = &rest[4 + len..];
        }
        assert_eq!(blocks.iter().map(Vec::len).collect::<Vec<_>>(), vec![XERIAL_BLOCK, XERIAL_BLOCK, 10]);
        assert_eq!(blocks.concat(), data);
    }

    #[test]
    fn snappy_reads_hand_framed_xerial_and_raw_blocks() {
        let (a, b) = (sample(700), b"second block".to_vec());
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for part in [&a, &b] {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(Compression::Snappy, &framed, 1 << 20).unwrap(), [a.clone(), b].concat());
        // A bare raw block, as older producers (Sarama, some librdkafka) send.
        let raw = snap::raw::Encoder::new().compress_vec(&a).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw, 1 << 20).unwrap(), a);
        // Only the header: an empty stream.
        assert_eq!(decompress(Compression::Snappy, &framed[..16], 10).unwrap(), b"");
    }

    /// The LZ4 frame header, checked against the LZ4 frame format spec: magic 0x184D2204 (LE),
    /// FLG = version 01, independent blocks, no block/content checksum, no content size (0x60),
    /// BD = 64 KiB max block (0x40), HC = (xxh32(FLG, BD) >> 8) & 0xff = 0x82; then blocks, and
    /// the end mark 0x00000000.
    #[test]
    fn lz4_writes_a_standard_frame_with_independent_64k_blocks() {
        let data = sample(150_000);
        let packed = compress(Compression::Lz4, &data);
        assert_eq!(&packed[..7], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82]);
        assert_eq!(&packed[packed.len() - 4..], &[0, 0, 0, 0]);
        // Three blocks of at most 64 KiB, each decodable on its own (Kafka's reader needs that).
        let mut rest = &packed[7..packed.len() - 4];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let word = u32::from_le_bytes(rest[..4].try_into().unwrap());
            let (stored_raw, len) = (word & 0x8000_0000 != 0, (word & 0x7fff_ffff) as usize);
            let block = &rest[4..4 + len];
            if stored_raw {
                out.extend_from_slice(block);
            } else {
                out.extend(lz4_flex::block::decompress(block, 64 << 10).unwrap());
            }
            rest = &rest[4 + len..];
        }
        assert_eq!(out, data);
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = sample(100_000);
        for codec in CODECS {
            let packed = compress(codec, &data);
            for cut in [1, 5, packed.len() / 2, packed.len() - 1] {
                match decompress(codec, &packed[..cut], 1 << 20) {
                    Err(DecodeError::Invalid(msg)) => assert!(msg.contains(codec.name()), "{msg}"),
                    // lz4_flex takes a frame that ends where a block would start as complete, so
                    // a cut end mark loses nothing (the batch's CRC and recordsCount catch the rest).
                    Ok(out) if codec == Compression::Lz4 && cut == packed.len() - 1 => assert_eq!(out, data),
                    other => panic!("{codec} cut at {cut}: expected Invalid, got {:?}", other.map(|v| v.len())),
                }
            }
        }
    }

    #[test]
    fn corrupt_streams_never_panic() {
        let data = sample(3000);
        for codec in CODECS {
            let packed = compress(codec, &data);
            for at in 0..packed.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut bad = packed.clone();
                    bad[at] ^= flip;
                    // Some flips still decode (e.g. gzip's mtime); none may panic or pass the limit.
                    if let Ok(out) = decompress(codec, &bad, 4000) {
                        assert!(out.len() <= 4000);
                    }
                }
            }
            assert!(decompress(codec, b"definitely not compressed data", 1 << 20).is_err(), "{codec}");
        }
    }

    /// 1 GiB of zeros, compressed by streaming (never held in memory), is refused at the default
    /// limit after at most limit + 1 bytes.
    #[test]
    fn decompression_bombs_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        let mut zstd_bomb = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let mut gzip_bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..1024 {
            zstd_bomb.write_all(&zeros).unwrap();
            // gzip is slower: 256 MiB of it is bomb enough.
            if i < 256 {
                gzip_bomb.write_all(&zeros).unwrap();
            }
        }
        let zstd_bomb = zstd_bomb.finish().unwrap();
        let gzip_bomb = gzip_bomb.finish().unwrap();
        assert!(zstd_bomb.len() < 100 << 10, "{}", zstd_bomb.len());
        assert!(gzip_bomb.len() < 2 << 20, "{}", gzip_bomb.len());
        for (codec, bomb) in [(Compression::Zstd, &zstd_bomb), (Compression::Gzip, &gzip_bomb)] {
            match decompress(codec, bomb, MAX_DECOMPRESSED_RECORDS) {
                Err(DecodeError::Unsupported(msg)) => assert!(msg.contains("limit"), "{msg}"),
                other => panic!("{codec}: expected refusal, got {:?}", other.map(|v| v.len())),
            }
        }
        // lz4 and snappy (whose block header states its length) with a small limit.
        let lz4 = compress(Compression::Lz4, &zeros);
        let snappy = compress(Compression::Snappy, &zeros);
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        for (codec, bomb) in
            [(Compression::Lz4, &lz4), (Compression::Snappy, &snappy), (Compression::Snappy, &raw_snappy)]
        {
            assert!(matches!(decompress(codec, bomb, 1 << 16), Err(DecodeError::Unsupported(_))), "{codec}");
        }
        // A raw snappy header claiming 2 GiB is refused before anything is allocated.
        let liar = [0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        assert!(matches!(decompress(Compression::Snappy, &liar, 1 << 20), Err(DecodeError::Unsupported(_))));
    }
}
