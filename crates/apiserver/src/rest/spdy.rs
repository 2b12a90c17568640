//! The slice of SPDY/3.1 that `kubectl port-forward` speaks: it opens one
//! pair of streams (error and data) per local connection, sends bytes on
//! the data stream, pings every few seconds, and resets or half-closes
//! streams when a connection ends. This is the server end of that: frames
//! in and out, header blocks compressed with zlib and SPDY's preset
//! dictionary, no flow control (Kubernetes' spdystream sends no
//! WINDOW_UPDATE either), no server-initiated streams.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// SPDY/3's zlib dictionary for header blocks (from the SPDY/3 draft, as
/// every implementation carries it).
const DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-char\
set\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-\
ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\
\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10c\
ontent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\
\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\
\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\
\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\
\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\
\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0br\
etry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\
\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\
\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\
\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230\
3304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative In\
formation204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden\
404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb \
Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,te\
xt/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-\
8859-1,utf-,*,enq=0.";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// Largest frame accepted: SPDY's 24-bit length allows 16 MiB; kubectl
/// writes at most 32 KiB per data frame.
const MAX_FRAME: usize = 1 << 20;
/// Largest decompressed header block accepted.
const MAX_HEADERS: usize = 64 << 10;

/// `RST_STREAM` status CANCEL.
pub const CANCEL: u32 = 5;

/// A frame the server acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream_id: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY: nothing to do.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY frame of {0} bytes is larger than the {MAX_FRAME} accepted")]
    TooLarge(usize),
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// One connection's framing state: bytes received and not yet framed,
/// and the two zlib streams of header blocks (one per direction).
pub struct Framer {
    buf: BytesMut,
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

impl Framer {
    pub fn new() -> Framer {
        let mut deflate = Compress::new(Compression::default(), true);
        // cannot fail on a fresh stream
        let _ = deflate.set_dictionary(DICTIONARY);
        Framer {
            buf: BytesMut::new(),
            inflate: Decompress::new(true),
            deflate,
        }
    }

    /// Bytes as they arrive (frames may span or share transport messages).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let first = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let flags = self.buf[4];
        let length = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if length > MAX_FRAME {
            return Err(SpdyError::TooLarge(length));
        }
        if self.buf.len() < 8 + length {
            return Ok(None);
        }
        self.buf.advance(8);
        let mut payload = self.buf.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let short = || SpdyError::Headers("a control frame is shorter than its fields".into());
        Ok(Some(match (first & 0xffff) as u16 {
            SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(short());
                }
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                // associated stream, priority and slot
                payload.advance(6);
                Frame::SynStream {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    headers: self.headers(&payload)?,
                }
            }
            RST_STREAM if payload.len() >= 8 => Frame::RstStream {
                stream_id: payload.get_u32() & 0x7fff_ffff,
            },
            PING if payload.len() >= 4 => Frame::Ping { id: payload.get_u32() },
            GOAWAY => Frame::GoAway,
            RST_STREAM | PING => return Err(short()),
            SYN_REPLY | 8 /* HEADERS */ => {
                // their header blocks still advance the shared zlib stream
                if payload.len() < 4 {
                    return Err(short());
                }
                payload.advance(4);
                self.headers(&payload)?;
                Frame::Ignored
            }
            _ => Frame::Ignored,
        }))
    }

    /// Decompresses and parses one header block.
    fn headers(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(1024);
        let mut input = compressed;
        loop {
            if out.len() >= MAX_HEADERS {
                return Err(SpdyError::Headers(format!("larger than {MAX_HEADERS} bytes")));
            }
            out.reserve(1024);
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - in_before) as usize;
            let produced = self.inflate.total_out() - out_before;
            input = &input[used.min(input.len())..];
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Headers(format!("zlib dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Headers(format!("zlib: {e}"))),
                Ok(Status::StreamEnd) if !input.is_empty() => {
                    return Err(SpdyError::Headers("the zlib stream ended early".into()))
                }
                Ok(_) if used == 0 && produced == 0 && !input.is_empty() => {
                    return Err(SpdyError::Headers("the compressed block does not decode".into()))
                }
                Ok(_) => {}
            }
            // done when all input is in and the output did not fill up
            // (a full buffer may mean more is pending inside zlib)
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        parse_header_block(&out)
    }

    /// `SYN_REPLY` accepting a stream (no headers), as Kubernetes answers
    /// every stream kubectl opens.
    pub fn syn_reply(&mut self, stream_id: u32) -> Vec<u8> {
        // an empty header block: zero pairs
        let block = self.compress(&0u32.to_be_bytes());
        let mut frame = control_header(SYN_REPLY, 0, 4 + block.len());
        frame.put_u32(stream_id & 0x7fff_ffff);
        frame.extend_from_slice(&block);
        frame.to_vec()
    }

    fn compress(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            out.reserve(64);
            let before = self.deflate.total_in();
            // a fresh or flushed stream always accepts input into reserved space
            let _ = self.deflate.compress_vec(input, &mut out, FlushCompress::Sync);
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used.min(input.len())..];
            // done when everything is in and the flush fit
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn control_header(kind: u16, flags: u8, length: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(8 + length);
    b.put_u16(0x8000 | VERSION);
    b.put_u16(kind);
    b.put_u32(((flags as u32) << 24) | (length as u32 & 0x00ff_ffff));
    b
}

/// A data frame; `fin` half-closes the stream from this side.
pub fn data(stream_id: u32, payload: &[u8], fin: bool) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u32(stream_id & 0x7fff_ffff);
    b.put_u32((u32::from(if fin { FLAG_FIN } else { 0 }) << 24) | (payload.len() as u32 & 0x00ff_ffff));
    b.extend_from_slice(payload);
    b.to_vec()
}

/// The answer to a `PING`: the same id back.
pub fn ping(id: u32) -> Vec<u8> {
    let mut b = control_header(PING, 0, 4);
    b.put_u32(id);
    b.to_vec()
}

/// Abandons a stream.
pub fn rst_stream(stream_id: u32, status: u32) -> Vec<u8> {
    let mut b = control_header(RST_STREAM, 0, 8);
    b.put_u32(stream_id & 0x7fff_ffff);
    b.put_u32(status);
    b.to_vec()
}

/// The pairs of a decompressed header block (SPDY/3: 32-bit counts and
/// lengths; several values of one name are NUL-separated).
fn parse_header_block(mut b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError::Headers("a header block is shorter than its lengths say".into());
    let take = |b: &mut &[u8]| -> Result<String, SpdyError> {
        if b.len() < 4 {
            return Err(bad());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(bad());
    }
    let count = b.get_u32();
    let mut out = Vec::new();
    for _ in 0..count {
        let name = take(&mut b)?.to_ascii_lowercase();
        let value = take(&mut b)?;
        out.push((name, value));
    }
    Ok(out)
}

/// The first value of `name` in a stream's headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's framer: compresses header blocks as spdystream does.
    fn syn_stream(deflate: &mut Compress, stream_id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = BytesMut::new();
        raw.put_u32(headers.len() as u32);
        for (n, v) in headers {
            raw.put_u32(n.len() as u32);
            raw.extend_from_slice(n.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        let mut block = Vec::with_capacity(raw.len() + 128);
        deflate
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut frame = control_header(SYN_STREAM, 0, 10 + block.len());
        frame.put_u32(stream_id);
        frame.put_u32(0);
        frame.put_u16(0);
        frame.extend_from_slice(&block);
        frame.to_vec()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
    }

    #[test]
    fn frames_split_across_messages_are_read_in_order() {
        let mut client = Compress::new(Compression::default(), true);
        client.set_dictionary(DICTIONARY).unwrap();
        let mut wire = syn_stream(
            &mut client,
            1,
            &[("streamtype", "error"), ("port", "8080"), ("requestid", "0")],
        );
        wire.extend(syn_stream(
            &mut client,
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ));
        wire.extend(data(3, b"GET / HTTP/1.0\r\n\r\n", false));
        wire.extend(data(1, b"", true));
        wire.extend(ping(7));
        let mut f = Framer::new();
        let mut frames = Vec::new();
        // one byte at a time: no frame may be read before it is whole
        for b in wire {
            f.push(&[b]);
            while let Some(frame) = f.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 5, "{frames:?}");
        let Frame::SynStream {
            stream_id, headers, ..
        } = &frames[1]
        else {
            panic!("{:?}", frames[1]);
        };
        assert_eq!(*stream_id, 3);
        assert_eq!(header(headers, "streamtype"), Some("data"));
        assert_eq!(header(headers, "port"), Some("8080"));
        assert_eq!(
            frames[2],
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n")
            }
        );
        assert_eq!(
            frames[3],
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new()
            }
        );
        assert_eq!(frames[4], Frame::Ping { id: 7 });
    }

    #[test]
    fn replies_decompress_with_the_dictionary() {
        let mut f = Framer::new();
        let mut client = Decompress::new(true);
        for id in [1u32, 3, 5] {
            let reply = f.syn_reply(id);
            assert_eq!(&reply[..4], &[0x80, 0x03, 0x00, 0x02]);
            let length = u32::from_be_bytes([0, reply[5], reply[6], reply[7]]) as usize;
            assert_eq!(reply.len(), 8 + length);
            assert_eq!(&reply[8..12], &id.to_be_bytes());
            let mut out = Vec::with_capacity(64);
            let block = &reply[12..];
            let mut used = 0;
            while used < block.len() {
                let before = client.total_in();
                match client.decompress_vec(&block[used..], &mut out, FlushDecompress::Sync) {
                    Err(e) if e.needs_dictionary().is_some() => {
                        client.set_dictionary(DICTIONARY).unwrap();
                    }
                    r => {
                        r.unwrap();
                    }
                }
                used += (client.total_in() - before) as usize;
            }
            assert_eq!(out, vec![0, 0, 0, 0], "no headers in reply {id}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut f = Framer::new();
        f.push(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0]);
        assert!(matches!(f.next_frame(), Err(SpdyError::Version(2))));
        let mut f = Framer::new();
        let mut frame = control_header(SYN_STREAM, 0, 14);
        frame.put_u32(1);
        frame.put_u32(0);
        frame.put_u16(0);
        frame.extend_from_slice(b"junk");
        f.push(&frame);
        assert!(f.next_frame().is_err());
        let mut f = Framer::new();
        f.push(&[0x80, 0x03, 0x00, 0x06, 0, 0xff, 0xff, 0xff]);
        assert!(matches!(f.next_frame(), Err(SpdyError::TooLarge(_))));
    }
}
