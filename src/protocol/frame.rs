//! Splitting a byte stream into `{tag, length, body}` frames without copying.

/// Bytes in a regular message header: one tag byte and a big-endian i32 length
/// that counts itself but not the tag.
pub(crate) const HEADER_LEN: usize = 5;

/// The header of one tagged protocol message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tag: u8,
    /// Length of the whole frame on the wire, tag included.
    pub frame_len: usize,
}

/// Why a header cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below 4, which no valid message has.
    BadLength(i32),
    /// The frame is larger than the configured limit.
    TooLarge { tag: u8, frame_len: usize },
}

/// Reads the header at the start of `buf`, if five bytes are there.
pub fn peek_header(buf: &[u8], max_frame_len: usize) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(FrameError::BadLength(declared));
    }
    let frame_len = declared as usize + 1;
    if frame_len > max_frame_len {
        return Err(FrameError::TooLarge { tag: buf[0], frame_len });
    }
    Ok(Some(FrameHeader { tag: buf[0], frame_len }))
}

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest.
pub(crate) fn read_cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.iter().position(|b| *b == 0)?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    Some((text, &buf[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffer_has_no_header() {
        assert_eq!(peek_header(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn header_counts_the_tag() {
        let h = peek_header(b"Q\0\0\0\x09abcd\0", 100).unwrap().unwrap();
        assert_eq!(h, FrameHeader { tag: b'Q', frame_len: 10 });
    }

    #[test]
    fn negative_and_oversized_lengths_are_refused() {
        assert_eq!(peek_header(b"Q\xff\xff\xff\xff", 100), Err(FrameError::BadLength(-1)));
        assert_eq!(peek_header(b"Q\0\0\x10\0", 100), Err(FrameError::TooLarge { tag: b'Q', frame_len: 4097 }));
    }

    #[test]
    fn cstr_stops_at_nul() {
        assert_eq!(read_cstr(b"ab\0cd"), Some(("ab", &b"cd"[..])));
        assert_eq!(read_cstr(b"ab"), None);
    }
}
