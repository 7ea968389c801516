//! The PostgreSQL wire protocol (version 3) as the proxy sees it: frames
//! read with a size limit, typed client messages ([`frontend`]), and the
//! server messages the proxy writes or looks into ([`backend`]).
//!
//! Server messages are passed on as the bytes they arrived as; only the
//! few the proxy acts on (command completion, errors, ready-for-query,
//! key data, authentication) are decoded, and that decoding is as careful
//! as the client side's.

pub mod backend;
pub mod frontend;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why bytes could not be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The message ends before one of its fields.
    #[error("the message is truncated")]
    Truncated,
    /// A field is invalid.
    #[error("invalid message: {0}")]
    Malformed(&'static str),
    /// A string is not UTF-8.
    #[error("invalid message: a string is not valid UTF-8")]
    NotUtf8,
    /// A message type the proxy does not know.
    #[error("invalid message type {:?}", char::from(*.0))]
    UnknownMessage(u8),
    /// A startup code the proxy does not speak.
    #[error("unsupported frontend protocol {}.{}: the proxy speaks 3.0", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocol(i32),
    /// A length word beyond the configured limit.
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Length announced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// A checked reader over a message body: every read says when the body is
/// too short instead of panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Offset of the next byte.
    pub fn position(&self) -> usize {
        self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.take(n).map(|_| ())
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(self.i32()? as u32)
    }
    /// An i16 count, which must not be negative.
    pub fn count16(&mut self) -> Result<usize, WireError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| WireError::Malformed("negative count"))
    }
    /// A NUL-terminated string as raw bytes (a query text in the client's
    /// encoding, which need not be UTF-8).
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Truncated)?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<String, WireError> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Truncated)?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| WireError::NotUtf8)?;
        self.pos += end + 1;
        Ok(s.to_string())
    }
}

/// One message as it travels: its type byte and body.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Type byte.
    pub tag: u8,
    /// Body (without tag and length).
    pub body: Bytes,
    /// The whole frame as received (tag, length, body), to pass it on.
    pub raw: Bytes,
}

/// Reads frames from a stream into a buffer, refusing any whose length
/// word is negative or above `max`.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `inner`, with messages of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
            max,
        }
    }

    /// A frame complete in the buffer, if there is one.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(WireError::Malformed("length word below 4"));
        }
        let len = len as usize;
        if len > self.max {
            return Err(WireError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < len + 1 {
            self.buf.reserve(len + 1 - self.buf.len());
            return Ok(None);
        }
        let raw = self.buf.split_to(len + 1).freeze();
        Ok(Some(Frame {
            tag: raw[0],
            body: raw.slice(5..),
            raw,
        }))
    }

    /// Whether a complete frame is buffered (so the caller can batch writes).
    pub fn has_buffered_frame(&self) -> bool {
        self.buf.len() >= 5 && {
            let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            len >= 4 && self.buf.len() > len as usize
        }
    }

    /// The next frame; `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(WireError::Truncated);
            }
        }
    }

    /// Reads a startup packet (length word, then body; no type byte).
    pub async fn startup(&mut self) -> Result<Option<Bytes>, WireError> {
        loop {
            if self.buf.len() >= 4 {
                let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                // PostgreSQL's own limit for startup packets.
                if !(8..=10_000).contains(&len) {
                    return Err(WireError::Malformed("invalid startup packet length"));
                }
                let len = len as usize;
                if self.buf.len() >= len {
                    let mut packet = self.buf.split_to(len);
                    packet.advance(4);
                    return Ok(Some(packet.freeze()));
                }
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(WireError::Truncated);
            }
        }
    }

    /// The stream, for the rare direct use.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Waits until at least one byte is buffered; false at end of stream.
    pub async fn wait_for_data(&mut self) -> Result<bool, WireError> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        Ok(self.inner.read_buf(&mut self.buf).await? > 0)
    }

    /// The type byte of the next buffered message, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The stream and what is buffered from it.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// A reader over `inner` that first returns what `buf` holds.
    pub fn with_buffer(inner: R, buf: BytesMut, max: usize) -> FrameReader<R> {
        FrameReader { inner, buf, max }
    }
}
