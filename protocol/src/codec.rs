//! The primitive wire types and the bounds-checked reader every message decoder is built from.
//!
//! Each wire type implements [`Wire`]: how it is written, how it is read back, and the fewest
//! bytes it can take ([`Wire::MIN_LEN`]). Message structs are declared with [`wire_struct!`],
//! which writes their fields in declaration order — the struct definition *is* the schema.
//!
//! | wire type          | Rust type         | encoding                                         |
//! |--------------------|-------------------|--------------------------------------------------|
//! | `u8`…`u64`, `i8`…`i64` | the same       | big-endian                                       |
//! | `bool`             | `bool`            | u8, 0 or 1 (anything else is invalid)            |
//! | `string`           | `String`          | u16 length + UTF-8 bytes                         |
//! | `nullable_string`  | `Option<String>`  | i16 length (−1 = null) + UTF-8 bytes             |
//! | `bytes`            | `Bytes`           | u32 length + raw bytes                           |
//! | `array<T>`         | `Vec<T>`          | u32 count + elements                             |
//! | `nullable_array<T>`| `Option<Vec<T>>`  | i32 count (−1 = null) + elements                 |
//!
//! Decoding never trusts a length or a count: each is compared with the bytes left in the payload
//! *before* anything is allocated (a count is checked against `count × MIN_LEN` of its element),
//! so a 20-byte frame claiming four billion elements fails at once. Errors are [`Malformed`]
//! values that collect the path of the field they occurred in (`topics[0].partitions[2].records`)
//! as they propagate; the request and response decoders turn them into
//! [`DecodeError::Invalid`] with the API name in front.
//!
//! Encoding a value that does not fit its length prefix (a string over 65,535 bytes, an array of
//! more than 2³² − 1 elements) is a programmer error and panics: callers validate user input
//! against [`MAX_STRING_BYTES`] and [`MAX_NULLABLE_STRING_BYTES`] before building a message.

use std::fmt;

use bytes::Bytes;

use crate::error::DecodeError;

/// Longest `string`: its length is a u16.
pub const MAX_STRING_BYTES: usize = u16::MAX as usize;
/// Longest `nullable_string`: its length is an i16, and −1 means null.
pub const MAX_NULLABLE_STRING_BYTES: usize = i16::MAX as usize;

/// A value with a wire form. Implemented by the primitives below and by every message struct
/// (through [`wire_struct!`]).
pub(crate) trait Wire: Sized {
    /// Fewest bytes an encoded value takes. Array counts are checked against it before
    /// allocating, so it must never overstate (a value always takes at least this many bytes).
    const MIN_LEN: usize;

    /// Appends the encoded value to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads one value from `r`, leaving `r` after it.
    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed>;
}

/// One step of the path to a malformed field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(&'static str),
    Index(usize),
}

/// Why a value could not be read, and where: `path` is the chain of fields and array indexes from
/// the body (or header) down to the bad field, innermost first (it is built while the error
/// propagates outwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    path: Vec<Step>,
    reason: String,
}

impl Malformed {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Malformed { path: Vec::new(), reason: reason.into() }
    }

    /// The same error, one level further out: inside the field `name`.
    fn in_field(mut self, name: &'static str) -> Self {
        self.path.push(Step::Field(name));
        self
    }

    /// The same error, one level further out: inside element `index` of an array.
    fn in_element(mut self, index: usize) -> Self {
        self.path.push(Step::Index(index));
        self
    }
}

impl fmt::Display for Malformed {
    /// `topics[0].partitions[2].records: length 100 exceeds the 12 bytes left`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for step in self.path.iter().rev() {
            match step {
                Step::Field(name) if first => write!(f, "{name}")?,
                Step::Field(name) => write!(f, ".{name}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if !first {
            f.write_str(": ")?;
        }
        f.write_str(&self.reason)
    }
}

/// A cursor over one complete payload. Every read is bounds-checked; running out of bytes is
/// [`Malformed`] (never "incomplete": a frame is always complete, see [`crate::frame`]).
pub(crate) struct Reader<'a> {
    /// The whole payload.
    buf: &'a [u8],
    /// Next byte to read, `<= buf.len()`.
    pos: usize,
    /// The `Bytes` that `buf` is, when there is one: `bytes` fields are then sub-slices of it
    /// instead of copies.
    owner: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// Reads `payload[pos..]`, copying `bytes` fields (for headers, which have none).
    pub(crate) fn new(payload: &'a [u8], pos: usize) -> Self {
        assert!(pos <= payload.len(), "reader starts at {pos}, past the {}-byte payload", payload.len());
        Reader { buf: payload, pos, owner: None }
    }

    /// Reads `payload[pos..]`; `bytes` fields share `payload`'s memory.
    pub(crate) fn shared(payload: &'a Bytes, pos: usize) -> Self {
        Reader { owner: Some(payload), ..Reader::new(payload, pos) }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Offset of the next byte in the payload.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Reads the field `name` of a struct, recording the name in the error path.
    pub(crate) fn field<T: Wire>(&mut self, name: &'static str) -> Result<T, Malformed> {
        T::decode(self).map_err(|e| e.in_field(name))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let left = self.remaining();
        if n > left {
            return Err(Malformed::new(format!("needs {n} bytes but only {left} are left")));
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Takes a length-prefixed run of `len` bytes, checking it against what is left.
    fn take_len(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        let left = self.remaining();
        if len > left {
            return Err(Malformed::new(format!("length {len} exceeds the {left} bytes left")));
        }
        self.take(len)
    }

    fn utf8(&mut self, len: usize) -> Result<String, Malformed> {
        let raw = self.take_len(len)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Malformed::new(format!("invalid UTF-8 after {} of {len} bytes", e.valid_up_to()))),
        }
    }

    /// Checks that `count` elements of at least `min_len` bytes each fit in what is left, so that
    /// a hostile count is refused before anything is allocated for it.
    fn check_count(&self, count: usize, min_len: usize) -> Result<(), Malformed> {
        let left = self.remaining();
        if count.saturating_mul(min_len) > left {
            return Err(Malformed::new(format!(
                "count {count} exceeds the {left} bytes left (each element takes at least {min_len})"
            )));
        }
        Ok(())
    }

    fn elements<T: Wire>(&mut self, count: usize) -> Result<Vec<T>, Malformed> {
        const { assert!(T::MIN_LEN > 0, "array elements must take at least one byte") };
        self.check_count(count, T::MIN_LEN)?;
        let mut items = Vec::with_capacity(count);
        for i in 0..count {
            items.push(T::decode(self).map_err(|e| e.in_element(i))?);
        }
        Ok(items)
    }
}

/// Reads a `T` that must end exactly where the payload does (a request or response body).
/// `context` (`Produce v1`) starts the reason of any error.
pub(crate) fn decode_exact<T: Wire>(r: &mut Reader<'_>, context: &dyn fmt::Display) -> Result<T, DecodeError> {
    let value = T::decode(r).map_err(|e| DecodeError::Invalid(format!("{context}: {e}")))?;
    match r.remaining() {
        0 => Ok(value),
        left => Err(DecodeError::Invalid(format!("{context}: {left} bytes left after the body"))),
    }
}

/// Converts a length to its prefix type; a value too long for it is a programmer error.
fn prefix<T: TryFrom<usize>>(len: usize, what: &str) -> T {
    T::try_from(len).unwrap_or_else(|_| panic!("{what} of {len} does not fit its length prefix"))
}

macro_rules! wire_int {
    ($($ty:ty),*) => {$(
        impl Wire for $ty {
            const MIN_LEN: usize = std::mem::size_of::<$ty>();

            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }

            fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
                r.array().map(<$ty>::from_be_bytes)
            }
        }
    )*};
}

wire_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Wire for bool {
    const MIN_LEN: usize = 1;

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match u8::decode(r)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Malformed::new(format!("bool {other} is neither 0 nor 1"))),
        }
    }
}

impl<const N: usize> Wire for [u8; N] {
    const MIN_LEN: usize = N;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        r.array()
    }
}

impl Wire for String {
    const MIN_LEN: usize = 2;

    fn encode(&self, out: &mut Vec<u8>) {
        prefix::<u16>(self.len(), "string length").encode(out);
        out.extend_from_slice(self.as_bytes());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let len = u16::decode(r)?;
        r.utf8(usize::from(len))
    }
}

impl Wire for Option<String> {
    const MIN_LEN: usize = 2;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => (-1i16).encode(out),
            Some(s) => {
                prefix::<i16>(s.len(), "nullable string length").encode(out);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match i16::decode(r)? {
            -1 => Ok(None),
            len => match usize::try_from(len) {
                Ok(len) => r.utf8(len).map(Some),
                Err(_) => Err(Malformed::new(format!("string length {len} is negative (only -1, null, is allowed)"))),
            },
        }
    }
}

impl Wire for Bytes {
    const MIN_LEN: usize = 4;

    fn encode(&self, out: &mut Vec<u8>) {
        prefix::<u32>(self.len(), "bytes length").encode(out);
        out.extend_from_slice(self);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let len = u32::decode(r)?;
        let slice = r.take_len(len as usize)?; // lossless: keel-protocol needs a 64-bit target
        Ok(match r.owner {
            Some(owner) => owner.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_LEN: usize = 4;

    fn encode(&self, out: &mut Vec<u8>) {
        prefix::<u32>(self.len(), "array count").encode(out);
        for item in self {
            item.encode(out);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let count = u32::decode(r)?;
        r.elements(count as usize) // lossless: keel-protocol needs a 64-bit target
    }
}

impl<T: Wire> Wire for Option<Vec<T>> {
    const MIN_LEN: usize = 4;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => (-1i32).encode(out),
            Some(items) => {
                prefix::<i32>(items.len(), "nullable array count").encode(out);
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match i32::decode(r)? {
            -1 => Ok(None),
            count => match usize::try_from(count) {
                Ok(count) => r.elements(count).map(Some),
                Err(_) => Err(Malformed::new(format!("count {count} is negative (only -1, null, is allowed)"))),
            },
        }
    }
}

/// Declares a message struct whose wire form is its fields in declaration order, and implements
/// [`Wire`] for it (and, in tests, a proptest strategy generating arbitrary values).
///
/// A field that a future API version appends would need the version in [`Reader`]; every API is
/// at version 1 so far, so the macro does not take one.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {}
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {}

        impl $crate::codec::Wire for $name {
            const MIN_LEN: usize = 0;

            fn encode(&self, _: &mut Vec<u8>) {}

            fn decode(_: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::Malformed> {
                Ok($name {})
            }
        }

        #[cfg(test)]
        impl $crate::arb::Arb for $name {
            fn arb() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                proptest::strategy::Just($name {}).boxed()
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty ),+
        }

        impl $crate::codec::Wire for $name {
            const MIN_LEN: usize = 0 $( + <$ty as $crate::codec::Wire>::MIN_LEN )+;

            fn encode(&self, out: &mut Vec<u8>) {
                $( $crate::codec::Wire::encode(&self.$field, out); )+
            }

            fn decode(r: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::Malformed> {
                Ok($name { $( $field: r.field(stringify!($field))?, )+ })
            }
        }

        #[cfg(test)]
        impl $crate::arb::Arb for $name {
            fn arb() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                ( $( <$ty as $crate::arb::Arb>::arb(), )+ )
                    .prop_map(|( $($field,)+ )| $name { $($field),+ })
                    .boxed()
            }
        }
    };
}

pub(crate) use wire_struct;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all<T: Wire>(bytes: &[u8]) -> Result<T, String> {
        let payload = Bytes::copy_from_slice(bytes);
        let mut r = Reader::shared(&payload, 0);
        let value = r.field::<T>("x").map_err(|e| e.to_string())?;
        assert_eq!(r.remaining(), 0, "trailing bytes");
        Ok(value)
    }

    fn encoded<T: Wire>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    #[test]
    fn integers_are_big_endian() {
        assert_eq!(encoded(&0x0102u16), [1, 2]);
        assert_eq!(encoded(&-2i32), [0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(encoded(&0x0102_0304_0506_0708u64), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_all::<i64>(&[0xff; 8]), Ok(-1));
        assert_eq!(decode_all::<u32>(&[0, 0, 1]), Err("x: needs 4 bytes but only 3 are left".into()));
    }

    #[test]
    fn bools_are_strict() {
        assert_eq!(decode_all::<bool>(&[0]), Ok(false));
        assert_eq!(decode_all::<bool>(&[1]), Ok(true));
        assert_eq!(decode_all::<bool>(&[2]), Err("x: bool 2 is neither 0 nor 1".into()));
    }

    #[test]
    fn strings() {
        assert_eq!(encoded(&"hé".to_string()), [0, 3, b'h', 0xc3, 0xa9]);
        assert_eq!(decode_all::<String>(&[0, 3, b'h', 0xc3, 0xa9]), Ok("hé".into()));
        assert_eq!(decode_all::<String>(&[0, 0]), Ok(String::new()));
        assert_eq!(decode_all::<String>(&[0, 5, b'a']), Err("x: length 5 exceeds the 1 bytes left".into()));
        assert_eq!(decode_all::<String>(&[0, 2, b'a', 0xff]), Err("x: invalid UTF-8 after 1 of 2 bytes".into()));
        assert_eq!(encoded(&None::<String>), [0xff, 0xff]);
        assert_eq!(encoded(&Some(String::new())), [0, 0]);
        assert_eq!(decode_all::<Option<String>>(&[0xff, 0xff]), Ok(None));
        assert_eq!(decode_all::<Option<String>>(&[0, 1, b'z']), Ok(Some("z".into())));
        assert_eq!(
            decode_all::<Option<String>>(&[0xff, 0xfe]),
            Err("x: string length -2 is negative (only -1, null, is allowed)".into())
        );
    }

    #[test]
    #[should_panic(expected = "string length of 65536 does not fit its length prefix")]
    fn encoding_an_overlong_string_panics() {
        encoded(&"a".repeat(MAX_STRING_BYTES + 1));
    }

    #[test]
    #[should_panic(expected = "nullable string length of 32768 does not fit")]
    fn encoding_an_overlong_nullable_string_panics() {
        encoded(&Some("a".repeat(MAX_NULLABLE_STRING_BYTES + 1)));
    }

    #[test]
    fn bytes_share_the_payload() {
        let payload = Bytes::from_static(&[0, 0, 0, 2, 7, 8, 9]);
        let mut r = Reader::shared(&payload, 0);
        let b = Bytes::decode(&mut r).unwrap();
        assert_eq!(&b[..], [7, 8]);
        assert_eq!(b.as_ptr(), payload[4..].as_ptr(), "a slice of the payload, not a copy");
        assert_eq!(r.remaining(), 1);
        assert_eq!(decode_all::<Bytes>(&[0, 0, 0, 3, 1]), Err("x: length 3 exceeds the 1 bytes left".into()));
        // A plain slice gets a copy.
        let mut r = Reader::new(&payload[..], 0);
        assert_eq!(&Bytes::decode(&mut r).unwrap()[..], [7, 8]);
    }

    #[test]
    fn arrays() {
        assert_eq!(encoded(&vec![1u16, 2]), [0, 0, 0, 2, 0, 1, 0, 2]);
        assert_eq!(decode_all::<Vec<u16>>(&[0, 0, 0, 2, 0, 1, 0, 2]), Ok(vec![1, 2]));
        assert_eq!(encoded(&None::<Vec<u16>>), [0xff; 4]);
        assert_eq!(decode_all::<Option<Vec<u16>>>(&[0xff; 4]), Ok(None));
        assert_eq!(decode_all::<Option<Vec<u16>>>(&[0, 0, 0, 0]), Ok(Some(vec![])));
        assert_eq!(
            decode_all::<Option<Vec<u16>>>(&[0xff, 0xff, 0xff, 0xfe]),
            Err("x: count -2 is negative (only -1, null, is allowed)".into())
        );
        // An element that is cut short names its index.
        assert_eq!(
            decode_all::<Vec<u16>>(&[0, 0, 0, 2, 0, 1, 0]),
            Err("x: count 2 exceeds the 3 bytes left (each element takes at least 2)".into())
        );
        assert_eq!(
            decode_all::<Vec<String>>(&[0, 0, 0, 2, 0, 0, 0, 3, 0, 0]),
            Err("x[1]: length 3 exceeds the 2 bytes left".into())
        );
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        let e = decode_all::<Vec<u64>>(&[0xee, 0x6b, 0x28, 0x00, 1, 2, 3]).unwrap_err();
        assert_eq!(e, "x: count 4000000000 exceeds the 3 bytes left (each element takes at least 8)");
        let e = decode_all::<Option<Vec<String>>>(&[0x7f, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.contains("count 2147483647 exceeds the 0 bytes left"), "{e}");
    }
}
