//! HTTP/1.x messages as the proxy loop needs them, with no IO: heads parsed by `httparse` into
//! offsets of the connection's buffer (nothing copied, nothing allocated once the header list
//! has grown), how a body is framed, the chunked-body scanner that finds where a message ends,
//! and which headers are hop-by-hop.

use std::fmt;

/// Most header lines a head may carry.
pub const MAX_HEADERS: usize = 128;
/// Largest head, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// A byte range of the buffer a [`Head`] was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes of this span in `buf`.
    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// Why a message cannot be proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not HTTP/1.x syntax.
    Syntax,
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] lines.
    TooLarge,
    /// `Content-Length` is not a number, or two of them disagree.
    Length,
    /// A `Transfer-Encoding` other than chunked (last), or together with `Content-Length`.
    Encoding,
    /// A chunked body that breaks the chunk syntax.
    Chunk,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Syntax => "malformed HTTP/1 message",
            Malformed::TooLarge => "request head too large",
            Malformed::Length => "invalid Content-Length",
            Malformed::Encoding => "unsupported Transfer-Encoding",
            Malformed::Chunk => "malformed chunked body",
        })
    }
}

/// A parsed request or response head: offsets into the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct Head {
    /// Bytes the head takes, blank line included.
    pub len: usize,
    /// The `x` of `HTTP/1.x`.
    pub minor: u8,
    /// Request method.
    pub method: Span,
    /// Request target.
    pub target: Span,
    /// Response status.
    pub status: u16,
    /// Response reason phrase.
    pub reason: Span,
    /// Header names and values, in order.
    pub headers: Vec<(Span, Span)>,
}

impl Head {
    /// Parses a request head at the start of `buf`: `Ok(false)` when more bytes are needed.
    pub fn parse_request(&mut self, buf: &[u8]) -> Result<bool, Malformed> {
        let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut lines);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                self.len = len;
                self.minor = req.version.unwrap_or(1);
                self.method = Span::within(buf, req.method.unwrap_or_default().as_bytes());
                self.target = Span::within(buf, req.path.unwrap_or_default().as_bytes());
                self.keep(buf, req.headers);
                Ok(true)
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(Malformed::TooLarge),
            Ok(httparse::Status::Partial) => Ok(false),
            Err(httparse::Error::TooManyHeaders) => Err(Malformed::TooLarge),
            Err(_) => Err(Malformed::Syntax),
        }
    }

    /// Parses a response head at the start of `buf`: `Ok(false)` when more bytes are needed.
    pub fn parse_response(&mut self, buf: &[u8]) -> Result<bool, Malformed> {
        let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut lines);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                self.len = len;
                self.minor = resp.version.unwrap_or(1);
                self.status = resp.code.unwrap_or(502);
                self.reason = Span::within(buf, resp.reason.unwrap_or_default().as_bytes());
                self.keep(buf, resp.headers);
                Ok(true)
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(Malformed::TooLarge),
            Ok(httparse::Status::Partial) => Ok(false),
            Err(httparse::Error::TooManyHeaders) => Err(Malformed::TooLarge),
            Err(_) => Err(Malformed::Syntax),
        }
    }

    fn keep(&mut self, buf: &[u8], lines: &[httparse::Header<'_>]) {
        self.headers.clear();
        self.headers.extend(lines.iter().map(|h| {
            (
                Span::within(buf, h.name.as_bytes()),
                Span::within(buf, h.value),
            )
        }));
    }

    /// The headers as `(name, value)`.
    pub fn fields<'b>(&'b self, buf: &'b [u8]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> {
        self.headers.iter().map(|(n, v)| (n.of(buf), v.of(buf)))
    }

    /// The first value of header `name` (any case).
    pub fn get<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.of(buf))
    }

    /// How the message's body is framed and what its headers say about the connection.
    /// `request` selects the request rules (a request without length has no body; a response
    /// without one runs until the connection closes).
    pub fn meta(&self, buf: &[u8], request: bool) -> Result<Meta, Malformed> {
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut encoded = false;
        let mut meta = Meta {
            body: Body::Length(0),
            keep_alive: self.minor >= 1,
            upgrade: false,
            expect_continue: false,
        };
        let mut upgrade_header = false;
        for (name, value) in self.fields(buf) {
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(value).ok_or(Malformed::Length)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed::Length);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                encoded = true;
                // Only the last coding matters for framing; it must be chunked.
                chunked = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        meta.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && self.minor == 0 {
                        meta.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        meta.upgrade = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade_header = true;
            } else if request && name.eq_ignore_ascii_case(b"expect") {
                meta.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
        }
        meta.upgrade &= upgrade_header;
        meta.body = match (encoded, chunked, length) {
            (true, _, Some(_)) if request => return Err(Malformed::Encoding),
            (true, false, _) if request => return Err(Malformed::Encoding),
            (true, true, _) => Body::Chunked,
            (true, false, _) => Body::UntilClose,
            (false, _, Some(n)) => Body::Length(n),
            (false, _, None) if request => Body::Length(0),
            (false, _, None) => Body::UntilClose,
        };
        if encoded && length.is_some() {
            // A response with both: trust the chunks, never reuse the connection.
            meta.keep_alive = false;
        }
        Ok(meta)
    }
}

/// What a head says about its message and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// How the body is framed.
    pub body: Body,
    /// The sender allows another message on the connection.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// Chunked transfer coding, ended by the zero chunk and the trailer section.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The comma-separated tokens of a header value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Headers that describe one connection, never forwarded: the fixed set, plus any the
/// message's own `Connection` header names (`listed`: that header's values).
pub fn hop_by_hop(name: &[u8], listed: &[&[u8]]) -> bool {
    const FIXED: [&[u8]; 5] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
    ];
    FIXED.iter().any(|h| name.eq_ignore_ascii_case(h))
        || listed
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(name)))
}

/// Finds the end of a chunked body in the bytes as they arrive.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: ChunkState,
    left: u64,
    digits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    /// Scans `buf`, the next bytes of the body; returns how many of them belong to it (fewer
    /// than `buf.len()` only when the body ends inside `buf`).
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, Malformed> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() && self.state != Done {
            let b = buf[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(Malformed::Chunk);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.left = self.left * 16 + u64::from(d);
                    }
                    _ if self.digits == 0 => return Err(Malformed::Chunk),
                    b'\r' => self.state = SizeLf,
                    b';' | b' ' | b'\t' => self.state = Extension,
                    _ => return Err(Malformed::Chunk),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err(Malformed::Chunk),
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(Malformed::Chunk);
                    }
                    self.digits = 0;
                    self.state = if self.left == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take = self.left.min((buf.len() - i) as u64);
                    self.left -= take;
                    i += take as usize;
                    if self.left == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if b == b'\r' => self.state = DataLf,
                DataLf if b == b'\n' => self.state = Size,
                DataCr | DataLf => return Err(Malformed::Chunk),
                TrailerStart if b == b'\r' => self.state = EndLf,
                TrailerStart | TrailerLine if b == b'\r' => self.state = TrailerLf,
                TrailerStart | TrailerLine if b == b'\n' => return Err(Malformed::Chunk),
                TrailerStart | TrailerLine => self.state = TrailerLine,
                TrailerLf if b == b'\n' => self.state = TrailerStart,
                EndLf if b == b'\n' => self.state = Done,
                TrailerLf | EndLf => return Err(Malformed::Chunk),
                Done => {}
            }
            i += 1;
        }
        Ok(i)
    }

    /// The whole body, trailers included, has been scanned.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> (Head, Result<Meta, Malformed>) {
        let mut head = Head::default();
        assert_eq!(head.parse_request(text.as_bytes()), Ok(true), "{text}");
        let meta = head.meta(text.as_bytes(), true);
        (head, meta)
    }

    #[test]
    fn a_request_head_is_parsed_into_spans_of_its_buffer() {
        let text = "GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nX-Two: 2\r\n\r\nrest";
        let (head, meta) = request(text);
        let buf = text.as_bytes();
        assert_eq!(head.len, text.len() - 4);
        assert_eq!(head.method.of(buf), b"GET");
        assert_eq!(head.target.of(buf), b"/a?b=1");
        assert_eq!(head.get(buf, "host"), Some(&b"x.test"[..]));
        assert_eq!(head.get(buf, "x-two"), Some(&b"2"[..]));
        assert_eq!(head.get(buf, "missing"), None);
        let meta = meta.expect("valid");
        assert_eq!(meta.body, Body::Length(0));
        assert!(meta.keep_alive);
    }

    #[test]
    fn partial_heads_ask_for_more_and_garbage_is_refused() {
        let mut head = Head::default();
        assert_eq!(head.parse_request(b"GET / HTTP/1.1\r\nHost: a"), Ok(false));
        assert_eq!(
            head.parse_request(b"GET / HTTP/9.9\r\n\r\n"),
            Err(Malformed::Syntax)
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            head.parse_request(huge.as_bytes()),
            Err(Malformed::TooLarge)
        );
    }

    #[test]
    fn framing_follows_rfc_9112_and_refuses_smuggling_shapes() {
        let meta = |t: &str| request(t).1;
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").map(|m| m.body),
            Ok(Body::Length(5))
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").map(|m| m.body),
            Ok(Body::Chunked)
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(Malformed::Length)
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(Malformed::Length)
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Malformed::Encoding)
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(Malformed::Encoding)
        );
        let m = meta("GET / HTTP/1.0\r\n\r\n").expect("valid");
        assert!(!m.keep_alive);
        let m = meta("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("valid");
        assert!(m.keep_alive);
        let m = meta("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").expect("valid");
        assert!(!m.keep_alive);
        let m = meta("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .expect("valid");
        assert!(m.upgrade);
        let m = meta("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n").expect("valid");
        assert!(!m.upgrade, "no Upgrade header, no upgrade");
        let m = meta("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .expect("valid");
        assert!(m.expect_continue);
    }

    #[test]
    fn a_response_without_length_runs_until_close() {
        let text = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
        let mut head = Head::default();
        assert_eq!(head.parse_response(text), Ok(true));
        assert_eq!(head.status, 200);
        assert_eq!(head.reason.of(text), b"OK");
        assert_eq!(head.meta(text, false).map(|m| m.body), Ok(Body::UntilClose));
    }

    #[test]
    fn hop_by_hop_headers_include_those_the_connection_header_names() {
        assert!(hop_by_hop(b"Keep-Alive", &[]));
        assert!(hop_by_hop(b"TE", &[]));
        assert!(!hop_by_hop(b"x-custom", &[]));
        assert!(hop_by_hop(b"X-Custom", &[b"close, x-custom"]));
        assert!(!hop_by_hop(b"content-length", &[b"close"]));
    }

    #[test]
    fn the_chunk_scanner_finds_the_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let a = c.scan(&body[..split]).expect("valid");
            assert_eq!(a, split.min(end));
            let b = c.scan(&body[split..]).expect("valid");
            assert!(c.done(), "split at {split}");
            assert_eq!(a + b, end, "split at {split}");
        }
        let mut c = Chunked::default();
        assert_eq!(c.scan(b"0\r\n\r\n"), Ok(5));
        assert!(c.done());
    }

    #[test]
    fn broken_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello",
            b"ffffffffffffffff1\r\n",
            b"\r\n",
        ] {
            let mut c = Chunked::default();
            assert_eq!(c.scan(bad), Err(Malformed::Chunk), "{bad:?}");
        }
    }
}
