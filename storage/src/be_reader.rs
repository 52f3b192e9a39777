//! A bounds-checked cursor over big-endian fixed-width fields, for the small binary files and
//! records Keel writes itself (producer-state snapshots, committed-offset records). Every read
//! returns `None` instead of panicking when the bytes run out: the input may be a torn or
//! corrupt file.

pub struct BeReader<'a>(pub &'a [u8]);

impl<'a> BeReader<'a> {
    /// What is left unread.
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_stops_at_the_end() {
        let bytes = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 9];
        let mut r = BeReader(&bytes);
        assert_eq!((r.u16(), r.u32(), r.u64()), (Some(1), Some(2), Some(3)));
        assert_eq!(r.u16(), None, "one byte left is not a u16");
        assert_eq!(r.rest(), [9], "a failed read consumes nothing");
        assert_eq!(r.take(1), Some(&[9][..]));
        assert!(r.rest().is_empty());
    }
}
