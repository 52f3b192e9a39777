//! Fuzzes RecordBatch v2 decoding (`keel_storage::batch`).
//!
//! The checks live in `keel_storage::batch::fuzz_check_decode` so that the
//! crate's unit tests and property tests run exactly the same code:
//! - `parse`/`parse_unchecked_crc`/`peek_total_len` never panic, and
//!   `Incomplete { needed }` always asks for more bytes than were given;
//! - a parsed batch lies within the input (`total_len <= input len`), has a
//!   matching CRC and `last_offset >= base_offset`;
//! - its records iterate to the end without panicking (compressed batches
//!   give `Unsupported`);
//! - an uncompressed batch rebuilt with `BatchBuilder` from the parsed fields
//!   (base offset, leader epoch, producer fields, attributes, base and max
//!   timestamps, last offset delta, explicit record offset deltas) parses to
//!   the same fields and records.
//!
//! Byte equality with the input cannot be asserted for every input: the
//! decoder accepts non-minimal varints (e.g. `80 00` for 0), as Kafka does,
//! and the builder writes minimal ones, and the builder always writes record
//! attributes as 0. The check asserts byte equality whenever the rebuilt
//! batch has the input's length and all record attributes are 0, which is
//! exactly when every input varint was minimal.
//!
//! Since nearly every mutation breaks the CRC, the checks also run on a copy
//! of the input with its CRC fixed, so that mutations reach the record decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_storage::batch::fuzz_check_decode(data);
});
