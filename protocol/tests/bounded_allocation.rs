//! Hostile counts and lengths must fail before anything is allocated for them: this binary counts
//! the bytes of every allocation made while decoding (per thread, so parallel tests do not mix)
//! and checks that decoding never allocates more than a small multiple of the payload's size.
//!
//! Why a multiple: a count is checked against the bytes left times its element's minimum wire
//! size, and an element in memory is larger than on the wire (a `String` is 24 bytes, its
//! smallest encoding 2), so an honest payload of N bytes may need up to 12 N bytes of `Vec`s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use keel_protocol::{decode_request, decode_response, ApiKey, DecodeError, SUPPORTED};
use proptest::prelude::*;

struct Counting;

thread_local! {
    /// Largest single allocation on this thread since the last `largest_allocation` call.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Allocation allowed for decoding `payload_len` bytes: 12 bytes of memory per wire byte, plus
/// room for an error message.
fn budget(payload_len: usize) -> usize {
    12 * payload_len + 1024
}

/// A request payload: header for `api_key` v1, correlation id 1, client id "c", then `body`.
fn request(api_key: u16, body: &[u8]) -> Bytes {
    let mut payload = vec![(api_key >> 8) as u8, api_key as u8, 0, 1, 0, 0, 0, 1, 0, 1, b'c'];
    payload.extend_from_slice(body);
    Bytes::from(payload)
}

/// A response payload: correlation id 1, no error, then `body`.
fn response(body: &[u8]) -> Bytes {
    let mut payload = vec![0, 0, 0, 1, 0, 0, 0xff, 0xff];
    payload.extend_from_slice(body);
    Bytes::from(payload)
}

#[test]
fn four_billion_topics_in_a_20_byte_frame() {
    // Produce: acks -1, timeout 10, topics count 4_000_000_000; 20 bytes in all.
    let payload = request(4, &[0xff, 0, 0, 0, 10, 0xee, 0x6b, 0x28, 0x00]);
    assert_eq!(payload.len(), 20);
    let (result, largest) = largest_allocation(|| decode_request(&payload));
    match result {
        Err(DecodeError::Invalid(reason)) => assert!(reason.contains("count 4000000000 exceeds"), "{reason}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(largest <= 256, "decoding a 20-byte payload allocated {largest} bytes at once");
}

#[test]
fn maximal_counts_at_every_position() {
    // For every API, a body of 0xff bytes: every count and length it meets is at its maximum.
    for &(api, _, _) in SUPPORTED {
        for len in 0..64 {
            let body = vec![0xff; len];
            let payload = request(api.code(), &body);
            let (_, largest) = largest_allocation(|| decode_request(&payload));
            assert!(largest <= budget(payload.len()), "{api} request: {largest} bytes for a {len}-byte body");
            let response = response(&body);
            let (_, largest) = largest_allocation(|| decode_response(api, 1, &response));
            assert!(largest <= budget(response.len()), "{api} response: {largest} bytes for a {len}-byte body");
        }
    }
}

proptest! {
    #[test]
    fn prop_decoding_allocates_in_proportion_to_the_input(
        key in 0u16..13,
        body in proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), Just(1), any::<u8>()], 0..128),
    ) {
        let payload = request(key, &body);
        let (_, largest) = largest_allocation(|| decode_request(&payload));
        prop_assert!(largest <= budget(payload.len()), "{} bytes for a {}-byte payload", largest, payload.len());
        let api = ApiKey::from_u16(key).expect("key < 13");
        let response = response(&body);
        let (_, largest) = largest_allocation(|| decode_response(api, 1, &response));
        prop_assert!(largest <= budget(response.len()), "{} bytes for a {}-byte payload", largest, response.len());
    }
}
