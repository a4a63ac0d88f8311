//! The subset of MessagePack that the wire protocol uses, written by hand.
//!
//! Requests and replies are small positional arrays (`[op, id, args…]`), so a
//! strict reader over a byte slice is both simpler and faster than a generic
//! serde pass: every field is checked for its exact type, strings and binary
//! payloads are *borrowed* from the frame (no copy until the broker decides to
//! keep a message), and the position is always known, so trailing bytes are
//! caught. The two map-shaped bodies (the handshake reply and stats) go through
//! serde and rmp-serde instead, where field names and forward compatibility
//! matter more than speed.
//!
//! Writers append to a `Vec<u8>` and cannot fail. Integers are always written
//! in their shortest form; readers accept every width.

use std::fmt;

/// Why a MessagePack value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The value continues past the end of the input.
    Truncated,
    /// The marker byte is not the type the protocol expects here.
    UnexpectedType,
    /// An integer does not fit the range the protocol allows here.
    OutOfRange,
    /// A string is not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadError::Truncated => "value is truncated",
            ReadError::UnexpectedType => "value has the wrong MessagePack type",
            ReadError::OutOfRange => "integer is out of range",
            ReadError::InvalidUtf8 => "string is not valid UTF-8",
        })
    }
}

/// A cursor over one MessagePack-encoded byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos == self.input.len()
    }

    /// The bytes not yet consumed.
    pub fn rest(&self) -> &'a [u8] {
        &self.input[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self.pos.checked_add(n).ok_or(ReadError::Truncated)?;
        let bytes = self.input.get(self.pos..end).ok_or(ReadError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, ReadError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, ReadError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// The next marker byte, without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// `nil`: true if the next value is nil (and consumes it).
    pub fn read_nil(&mut self) -> Result<bool, ReadError> {
        if self.peek() == Some(0xc0) {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    pub fn read_bool(&mut self) -> Result<bool, ReadError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(ReadError::UnexpectedType),
        }
    }

    /// Any non-negative integer, of any encoded width.
    pub fn read_u64(&mut self) -> Result<u64, ReadError> {
        let marker = self.byte()?;
        match marker {
            0x00..=0x7f => Ok(u64::from(marker)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            // Signed encodings are accepted when the value is not negative:
            // some encoders pick them for small positive numbers.
            0xd0 => non_negative(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => non_negative(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => non_negative(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => non_negative(self.be(8)? as i64),
            0xe0..=0xff => Err(ReadError::OutOfRange),
            _ => Err(ReadError::UnexpectedType),
        }
    }

    pub fn read_u32(&mut self) -> Result<u32, ReadError> {
        u32::try_from(self.read_u64()?).map_err(|_| ReadError::OutOfRange)
    }

    pub fn read_u16(&mut self) -> Result<u16, ReadError> {
        u16::try_from(self.read_u64()?).map_err(|_| ReadError::OutOfRange)
    }

    pub fn read_array_len(&mut self) -> Result<u32, ReadError> {
        let marker = self.byte()?;
        match marker {
            0x90..=0x9f => Ok(u32::from(marker & 0x0f)),
            0xdc => Ok(self.be(2)? as u32),
            0xdd => Ok(self.be(4)? as u32),
            _ => Err(ReadError::UnexpectedType),
        }
    }

    pub fn read_map_len(&mut self) -> Result<u32, ReadError> {
        let marker = self.byte()?;
        match marker {
            0x80..=0x8f => Ok(u32::from(marker & 0x0f)),
            0xde => Ok(self.be(2)? as u32),
            0xdf => Ok(self.be(4)? as u32),
            _ => Err(ReadError::UnexpectedType),
        }
    }

    /// A `str` value, borrowed.
    pub fn read_str(&mut self) -> Result<&'a str, ReadError> {
        let marker = self.byte()?;
        let len = match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return Err(ReadError::UnexpectedType),
        };
        std::str::from_utf8(self.take(len)?).map_err(|_| ReadError::InvalidUtf8)
    }

    /// A `bin` value, borrowed.
    pub fn read_bin(&mut self) -> Result<&'a [u8], ReadError> {
        let marker = self.byte()?;
        let len = match marker {
            0xc4 => self.be(1)? as usize,
            0xc5 => self.be(2)? as usize,
            0xc6 => self.be(4)? as usize,
            _ => return Err(ReadError::UnexpectedType),
        };
        self.take(len)
    }

    /// A payload: `bin`, or `str` taken as its UTF-8 bytes (many MessagePack
    /// libraries pack byte strings as `str` unless told otherwise).
    pub fn read_payload(&mut self) -> Result<&'a [u8], ReadError> {
        match self.peek() {
            Some(0xa0..=0xbf | 0xd9..=0xdb) => self.read_str().map(str::as_bytes),
            _ => self.read_bin(),
        }
    }
}

fn non_negative(value: i64) -> Result<u64, ReadError> {
    u64::try_from(value).map_err(|_| ReadError::OutOfRange)
}

pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { 0xc3 } else { 0xc2 });
}

pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
    } else if value <= 0xff {
        out.extend_from_slice(&[0xcc, value as u8]);
    } else if value <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Encoded size of `write_u64(value)`.
pub fn u64_len(value: u64) -> usize {
    match value {
        0..0x80 => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

pub fn write_array_len(out: &mut Vec<u8>, len: u32) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= 0xffff {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Encoded size of an array (or map) header for `len` elements.
pub fn array_len_len(len: u32) -> usize {
    match len {
        0..16 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

pub fn write_str(out: &mut Vec<u8>, value: &str) {
    let len = value.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(value.as_bytes());
}

/// Encoded size of `write_str` for a string of `len` bytes.
pub fn str_len(len: usize) -> usize {
    len + match len {
        0..32 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Writes only the header of a `bin` value of `len` bytes.
pub fn write_bin_header(out: &mut Vec<u8>, len: usize) {
    if len <= 0xff {
        out.extend_from_slice(&[0xc4, len as u8]);
    } else if len <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

pub fn write_bin(out: &mut Vec<u8>, value: &[u8]) {
    write_bin_header(out, value.len());
    out.extend_from_slice(value);
}

/// Encoded size of `write_bin` for `len` bytes.
pub fn bin_len(len: usize) -> usize {
    len + match len {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_at_every_width_boundary() {
        for &value in crate::testing::INT_WIDTH_EDGES.iter().chain(&[1]) {
            let mut out = Vec::new();
            write_u64(&mut out, value);
            assert_eq!(out.len(), u64_len(value));
            let mut reader = Reader::new(&out);
            assert_eq!(reader.read_u64(), Ok(value));
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn signed_encodings_of_non_negative_values_are_accepted() {
        assert_eq!(Reader::new(&[0xd0, 0x05]).read_u64(), Ok(5));
        assert_eq!(Reader::new(&[0xd1, 0x01, 0x00]).read_u64(), Ok(256));
        assert_eq!(
            Reader::new(&[0xd0, 0xff]).read_u64(),
            Err(ReadError::OutOfRange)
        );
        assert_eq!(Reader::new(&[0xff]).read_u64(), Err(ReadError::OutOfRange));
    }

    #[test]
    fn strings_and_binaries_round_trip_with_exact_sizes() {
        for len in [0usize, 1, 31, 32, 255, 256, 65535, 65536] {
            let text = "x".repeat(len);
            let mut out = Vec::new();
            write_str(&mut out, &text);
            assert_eq!(out.len(), str_len(len));
            assert_eq!(Reader::new(&out).read_str(), Ok(text.as_str()));

            let data = vec![7u8; len];
            let mut out = Vec::new();
            write_bin(&mut out, &data);
            assert_eq!(out.len(), bin_len(len));
            assert_eq!(Reader::new(&out).read_bin(), Ok(&data[..]));
            assert_eq!(Reader::new(&out).read_payload(), Ok(&data[..]));
        }
    }

    #[test]
    fn array_headers_round_trip() {
        for len in [0u32, 15, 16, 65535, 65536] {
            let mut out = Vec::new();
            write_array_len(&mut out, len);
            assert_eq!(out.len(), array_len_len(len));
            assert_eq!(Reader::new(&out).read_array_len(), Ok(len));
        }
    }

    #[test]
    fn truncated_and_mistyped_values_are_errors_not_panics() {
        assert_eq!(Reader::new(&[]).read_u64(), Err(ReadError::Truncated));
        assert_eq!(
            Reader::new(&[0xcf, 1]).read_u64(),
            Err(ReadError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0xc6, 0xff, 0xff, 0xff, 0xff]).read_bin(),
            Err(ReadError::Truncated)
        );
        assert_eq!(Reader::new(&[0xa1]).read_str(), Err(ReadError::Truncated));
        assert_eq!(
            Reader::new(&[0xa1, 0xff]).read_str(),
            Err(ReadError::InvalidUtf8)
        );
        assert_eq!(
            Reader::new(&[0xa1, b'x']).read_bin(),
            Err(ReadError::UnexpectedType)
        );
        assert_eq!(
            Reader::new(&[0x01]).read_array_len(),
            Err(ReadError::UnexpectedType)
        );
    }
}
