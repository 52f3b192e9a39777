//! Fuzzes the native protocol's decoders (`keel_protocol`): frames, request headers, requests and
//! the responses of every API.
//!
//! The checks live in `keel_protocol::fuzz_check_decode` so that the crate's unit and property
//! tests run exactly the same code:
//! - `decode_frame` never panics and a frame it finds lies within the input;
//! - the frame's payload, and the whole input taken as a payload (so that mutations reach the
//!   message decoders without having to keep a size prefix consistent), are decoded as a request
//!   and as a response of every API and version; nothing panics, and the header decoders agree
//!   with the full decoders;
//! - whatever decodes is re-encoded: the new frame holds exactly the original payload bytes
//!   (the encoding is canonical, so byte equality holds for every input) and decodes to the same
//!   value again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_protocol::fuzz_check_decode(data);
});
