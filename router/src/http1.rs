//! HTTP/1.x messages as the proxy loop needs them, with no IO: heads parsed by `httparse` into
//! offsets of the connection's buffer (nothing copied, nothing allocated once the header list
//! has grown), how a body is framed, the chunked-body scanner that finds where a message ends,
//! which headers are hop-by-hop, and the heads the proxy writes (request to the upstream,
//! response to the client).

use std::fmt;
use std::mem::MaybeUninit;

use switchyard_core::table::Route;

use crate::decide::{PIN_HEADER, SERVED_BY_HEADER};

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
        if part.is_empty() {
            // An empty part may not point into `buf` at all.
            return Span::default();
        }
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

    /// Nothing in it.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
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
    /// A request's `Transfer-Encoding` other than one line of exactly `chunked`, together with
    /// `Content-Length`, or in HTTP/1.0 (RFC 9112 §6.1: faulty framing).
    Encoding,
    /// An HTTP/1.1 request without a `Host` header, or any request with more than one.
    Host,
    /// A path with a `.` or `..` segment (also percent-encoded): refused rather than routed by
    /// one reading and served by another.
    DotSegment,
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
            Malformed::Host => "a request needs exactly one Host header",
            Malformed::DotSegment => "path has a dot-segment",
        })
    }
}

/// One header line: where its name and value are, and whether it is hop-by-hop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Field {
    /// The name.
    pub name: Span,
    /// The value, trimmed.
    pub value: Span,
    /// Describes this connection only (the fixed set, or named by `Connection`): never forwarded.
    pub hop: bool,
}

impl Field {
    /// Appends the line to `out` as `name: value` and CRLF: the original bytes from the name
    /// to the end of the value when they are contiguous (one copy), else name and value.
    pub fn write_to(&self, buf: &[u8], out: &mut Vec<u8>) {
        if self.value.is_empty() {
            out.extend_from_slice(self.name.of(buf));
            out.extend_from_slice(b": \r\n");
        } else {
            out.extend_from_slice(&buf[self.name.start as usize..self.value.end as usize]);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Where the parts of a request target are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target {
    /// The target is a path (origin form), `*`, or an absolute `http://` URL.
    pub proxyable: bool,
    /// From an absolute-form target.
    pub authority: Option<Span>,
    /// The path (`/` when an absolute URL has none).
    pub path: Span,
    /// After the `?`.
    pub query: Option<Span>,
}

/// A parsed request or response head: offsets into the buffer it was parsed from, each header
/// classified once, the framing worked out once.
#[derive(Debug)]
pub struct Head {
    /// Bytes the head takes, blank line included.
    pub len: usize,
    /// The `x` of `HTTP/1.x`.
    pub minor: u8,
    /// Request method.
    pub method: Span,
    /// Request target, whole.
    pub target: Span,
    /// Request target, in parts.
    pub parts: Target,
    /// Response status.
    pub status: u16,
    /// Response reason phrase.
    pub reason: Span,
    /// Header lines, in order.
    pub fields: Vec<Field>,
    /// The framing and connection facts, or why the message cannot be proxied.
    pub meta: Result<Meta, Malformed>,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            len: 0,
            minor: 1,
            method: Span::default(),
            target: Span::default(),
            parts: Target::default(),
            status: 0,
            reason: Span::default(),
            fields: Vec::new(),
            meta: Err(Malformed::Syntax),
        }
    }
}

impl Head {
    /// Parses a request head at the start of `buf`: `Ok(false)` when more bytes are needed.
    pub fn parse_request(&mut self, buf: &[u8]) -> Result<bool, Malformed> {
        let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(buf, &mut lines) {
            Ok(httparse::Status::Complete(len)) => {
                self.len = len;
                self.minor = req.version.unwrap_or(1);
                self.method = Span::within(buf, req.method.unwrap_or_default().as_bytes());
                let target = req.path.unwrap_or_default();
                self.target = Span::within(buf, target.as_bytes());
                self.parts = split_target(buf, target);
                self.keep(buf, req.headers, true);
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
        let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut lines)
        {
            Ok(httparse::Status::Complete(len)) => {
                self.len = len;
                self.minor = resp.version.unwrap_or(1);
                self.status = resp.code.unwrap_or(502);
                self.reason = Span::within(buf, resp.reason.unwrap_or_default().as_bytes());
                self.keep(buf, resp.headers, false);
                Ok(true)
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(Malformed::TooLarge),
            Ok(httparse::Status::Partial) => Ok(false),
            Err(httparse::Error::TooManyHeaders) => Err(Malformed::TooLarge),
            Err(_) => Err(Malformed::Syntax),
        }
    }

    /// Records the header lines, classifies them and works out the framing, in one pass.
    fn keep(&mut self, buf: &[u8], lines: &[httparse::Header<'_>], request: bool) {
        self.fields.clear();
        let mut facts = Facts::new(self.minor);
        let mut named_by_connection = false;
        for line in lines {
            let name = line.name.as_bytes();
            let value = line.value.trim_ascii();
            let hop = facts.see(name, value, request);
            if hop && name.eq_ignore_ascii_case(b"connection") {
                for t in tokens(value) {
                    if is_framing(t) {
                        facts.names_framing = true;
                    } else if !(t.eq_ignore_ascii_case(b"close")
                        || t.eq_ignore_ascii_case(b"keep-alive")
                        || t.eq_ignore_ascii_case(b"upgrade"))
                    {
                        named_by_connection = true;
                    }
                }
            }
            self.fields.push(Field {
                name: Span::within(buf, name),
                value: Span::within(buf, value),
                hop,
            });
        }
        if named_by_connection {
            self.mark_named(buf);
        }
        if !request && facts.encoded && facts.length.is_some() {
            // RFC 9112 §6.3: chunks win; a Content-Length beside them is dropped, never passed on
            // for the next hop to believe instead.
            for f in &mut self.fields {
                f.hop |= f.name.of(buf).eq_ignore_ascii_case(b"content-length");
            }
        }
        self.meta = facts.meta(request);
        if request
            && self.meta.is_ok()
            && self.parts.proxyable
            && has_dot_segment(self.parts.path.of(buf))
        {
            self.meta = Err(Malformed::DotSegment);
        }
    }

    /// Marks the headers a `Connection` header names as hop-by-hop (rare: most name none). The
    /// framing headers and `Host` are never removed this way: the body is still framed by them.
    fn mark_named(&mut self, buf: &[u8]) {
        for i in 0..self.fields.len() {
            let name = self.fields[i].name.of(buf);
            if is_framing(name) {
                continue;
            }
            let named = self.fields.iter().any(|f| {
                f.name.of(buf).eq_ignore_ascii_case(b"connection")
                    && tokens(f.value.of(buf)).any(|t| t.eq_ignore_ascii_case(name))
            });
            self.fields[i].hop |= named;
        }
    }

    /// The first value of header `name` (any case).
    pub fn get<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.fields
            .iter()
            .find(|f| f.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.of(buf))
    }
}

/// `Content-Length`, `Transfer-Encoding` or `Host`: headers a `Connection` header may not remove.
fn is_framing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"host")
}

/// A `.` or `..` path segment, plain or percent-encoded (`%2e`), which different servers resolve
/// differently.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|segment| {
        let mut rest = segment;
        let mut dots = 0;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && rest[2] | 0x20 == b'e'
            {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

/// What the header lines say, gathered while they are classified.
struct Facts {
    minor: u8,
    length: Option<u64>,
    bad_length: bool,
    encoded: bool,
    chunked: bool,
    /// `Transfer-Encoding` lines, and whether every one of them is exactly `chunked`.
    encodings: u8,
    only_chunked: bool,
    hosts: u8,
    /// `Connection` names `Content-Length`, `Transfer-Encoding` or `Host`.
    names_framing: bool,
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    upgrade_header: bool,
    expect_continue: bool,
}

impl Facts {
    fn new(minor: u8) -> Facts {
        Facts {
            minor,
            length: None,
            bad_length: false,
            encoded: false,
            chunked: false,
            encodings: 0,
            only_chunked: true,
            hosts: 0,
            names_framing: false,
            close: false,
            keep_alive: false,
            connection_upgrade: false,
            upgrade_header: false,
            expect_continue: false,
        }
    }

    /// Takes in one header line; true when it is hop-by-hop by name.
    fn see(&mut self, name: &[u8], value: &[u8], request: bool) -> bool {
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        match name.len() {
            2 => is(b"te"),
            4 if request && is(b"host") => {
                self.hosts = self.hosts.saturating_add(1);
                false
            }
            6 if request && is(b"expect") => {
                self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
                false
            }
            7 if is(b"upgrade") => {
                self.upgrade_header = true;
                true
            }
            10 if is(b"connection") => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        self.connection_upgrade = true;
                    }
                }
                true
            }
            10 => is(b"keep-alive"),
            14 if is(b"content-length") => {
                match parse_length(value) {
                    Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                    _ => self.bad_length = true,
                }
                false
            }
            16 => is(b"proxy-connection"),
            17 if is(b"transfer-encoding") => {
                self.encoded = true;
                self.encodings = self.encodings.saturating_add(1);
                self.only_chunked &= value.eq_ignore_ascii_case(b"chunked");
                // Only the last coding decides the framing; it must be chunked.
                self.chunked = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                false
            }
            _ => false,
        }
    }

    /// The framing: a request without length has no body; a response without one runs until
    /// the connection closes.
    fn meta(&self, request: bool) -> Result<Meta, Malformed> {
        if self.bad_length {
            return Err(Malformed::Length);
        }
        if request {
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; and a request
            // carries one line of exactly `chunked`, nothing a next hop could read otherwise.
            if self.encoded && (self.minor == 0 || self.encodings > 1 || !self.only_chunked) {
                return Err(Malformed::Encoding);
            }
            if self.hosts > 1 || (self.hosts == 0 && self.minor > 0) {
                return Err(Malformed::Host);
            }
        }
        let body = match (self.encoded, self.chunked, self.length) {
            (true, _, Some(_)) if request => return Err(Malformed::Encoding),
            (true, false, _) if request => return Err(Malformed::Encoding),
            (true, true, _) => Body::Chunked,
            (true, false, _) => Body::UntilClose,
            (false, _, Some(n)) => Body::Length(n),
            (false, _, None) if request => Body::Length(0),
            (false, _, None) => Body::UntilClose,
        };
        let keep_alive = if self.minor == 0 {
            self.keep_alive && !self.close
        } else {
            !self.close
        };
        Ok(Meta {
            body,
            // A response with both a length and chunks (trust the chunks), or whose Connection
            // header names a framing header: its framing is in doubt, never reuse.
            keep_alive: keep_alive
                && !(self.encoded && self.length.is_some())
                && !self.names_framing,
            upgrade: self.connection_upgrade && self.upgrade_header,
            // RFC 9110 §10.1.1: an HTTP/1.0 client does not understand 100 Continue.
            expect_continue: self.expect_continue && self.minor > 0,
        })
    }
}

/// Origin form (`/p?q`), `*`, or absolute form (`http://host/p?q`); anything else (the
/// authority form of CONNECT, other schemes) is not proxyable.
fn split_target(buf: &[u8], target: &str) -> Target {
    let (authority, rest) = if target.starts_with('/') || target == "*" {
        (None, target)
    } else {
        match target.find("://") {
            Some(i) if target[..i].eq_ignore_ascii_case("http") => {
                let rest = &target[i + 3..];
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                (Some(&rest[..end]), &rest[end..])
            }
            _ => return Target::default(),
        }
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    Target {
        proxyable: true,
        authority: authority.map(|a| Span::within(buf, a.as_bytes())),
        // An absolute URL without a path means `/`: the span of the `/`-less rest is empty and
        // the proxy writes `/` for it.
        path: Span::within(buf, path.as_bytes()),
        query: query.map(|q| Span::within(buf, q.as_bytes())),
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

/// A `Content-Length` value; a list of equal values (`5, 5`, RFC 9110 §8.6) is that value.
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut values = value.split(|&b| b == b',').map(parse_one_length);
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

fn parse_one_length(value: &[u8]) -> Option<u64> {
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
                    // Only `;` may follow a size: whitespace there is read differently by
                    // different servers.
                    b';' => self.state = Extension,
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

/// RFC 9112 §2.3: a request line whose version is `HTTP/1.x` with `x` above 1 is handled as
/// HTTP/1.1 (the highest minor version we speak); httparse refuses it, so the digit is
/// rewritten in place, in the buffer the head will be parsed from. True when it rewrote one.
/// Only the request line is looked at, and only once its version is whole.
pub fn newer_minor_as_one(buf: &mut [u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // `HTTP/1.x` is the line's last 8 bytes once the line is complete; before that, the last
    // 8 bytes read so far (a later byte other than CR LF is refused by httparse as before).
    let Some(at) = line.len().checked_sub(8) else {
        return false;
    };
    let version = &line[at..];
    if at == 0
        || line[at - 1] != b' '
        || !version.starts_with(b"HTTP/1.")
        || !(b'2'..=b'9').contains(&version[7])
    {
        return false;
    }
    buf[at + 7] = b'1';
    true
}

/// A request that may be sent again after a connection failed under it: an idempotent method,
/// or one the client marked with an idempotency key.
pub fn replayable(head: &Head, buf: &[u8]) -> bool {
    matches!(
        head.method.of(buf),
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    ) || head.get(buf, "idempotency-key").is_some()
}

/// Appends one header line `name: value` and CRLF.
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the router tells a function about its client.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The address of the peer connected to the router, as text (`127.0.0.1`, `::1`).
    pub peer: &'a [u8],
    /// Proxies in front of the router whose forwarding headers are believed (0: none): the
    /// last this many `X-Forwarded-For` addresses are kept, and their `X-Forwarded-Proto`,
    /// `X-Forwarded-Host` and `Forwarded` pass; else the router's own replace them.
    pub trusted_hops: usize,
    /// Also write an RFC 7239 `Forwarded` header.
    pub forwarded_header: bool,
}

const XFF: u8 = 1;
const XF_PROTO: u8 = 2;
const XF_HOST: u8 = 4;
const FORWARDED: u8 = 8;

/// Which forwarding header `name` is, as a bit (0: none).
fn forwarding_kind(name: &[u8]) -> Option<u8> {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        15 if is(b"x-forwarded-for") => Some(XFF),
        16 if is(b"x-forwarded-host") => Some(XF_HOST),
        17 if is(b"x-forwarded-proto") => Some(XF_PROTO),
        9 if is(b"forwarded") => Some(FORWARDED),
        _ => None,
    }
}

/// `X-Forwarded-For` (the trusted part of the client's, then the peer), `-Proto`, `-Host`, and
/// `Forwarded` when asked for; `seen`: the kinds passed on from trusted proxies.
fn write_forwarding(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    fwd: &Forwarding<'_>,
    host: Option<&[u8]>,
    seen: u8,
) {
    out.extend_from_slice(b"x-forwarded-for: ");
    if fwd.trusted_hops > 0 {
        let sent = |f: &&Field| f.name.of(buf).eq_ignore_ascii_case(b"x-forwarded-for");
        let total: usize = head
            .fields
            .iter()
            .filter(sent)
            .map(|f| tokens(f.value.of(buf)).count())
            .sum();
        let skip = total.saturating_sub(fwd.trusted_hops);
        let kept = head
            .fields
            .iter()
            .filter(sent)
            .flat_map(|f| tokens(f.value.of(buf)))
            .skip(skip);
        for address in kept {
            out.extend_from_slice(address);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.peer);
    out.extend_from_slice(b"\r\n");
    if seen & XF_PROTO == 0 {
        out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    }
    if let Some(host) = host.filter(|_| seen & XF_HOST == 0) {
        push_header(out, b"x-forwarded-host", host);
    }
    if fwd.forwarded_header {
        // RFC 7239: an IPv6 address is bracketed and quoted; the host is quoted (it may hold
        // a port's colon).
        out.extend_from_slice(b"forwarded: for=");
        if fwd.peer.contains(&b':') {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(fwd.peer);
            out.extend_from_slice(b"]\"");
        } else {
            out.extend_from_slice(fwd.peer);
        }
        out.extend_from_slice(b";proto=http");
        if let Some(host) = host.filter(|h| !h.contains(&b'"')) {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(host);
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, written into `digits`, with no allocation.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// Names the router owns (`x-switchyard-*`): a client's own values are never passed on as if
/// the router had set them.
fn is_switchyard(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-switchyard-";
    name.len() >= PREFIX.len() && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
}

/// The request head as the upstream gets it: the path rewritten for the backend, hop-by-hop
/// headers and `Expect` dropped (`100 Continue` is the router's to send), the client's
/// `x-switchyard-*` headers dropped (but the pin header when the function honours pins), and
/// an absolute-form target's authority as the Host.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    meta: &Meta,
    route: &Route,
    backend: usize,
    fwd: &Forwarding<'_>,
) {
    let base = &route.backends[backend].upstream.base_path;
    let parts = &head.parts;
    out.extend_from_slice(head.method.of(buf));
    out.push(b' ');
    let path = parts.path.of(buf);
    let rewrite = parts.authority.is_some() || route.strip_prefix || !base.is_empty();
    if rewrite && (path.is_empty() || path.starts_with(b"/")) {
        let path = std::str::from_utf8(path).unwrap_or_default();
        out.extend_from_slice(base.as_bytes());
        out.extend_from_slice(
            route
                .upstream_path(if path.is_empty() { "/" } else { path })
                .as_bytes(),
        );
        if let Some(q) = parts.query {
            out.push(b'?');
            out.extend_from_slice(q.of(buf));
        }
    } else {
        out.extend_from_slice(head.target.of(buf));
    }
    out.extend_from_slice(if head.minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    // RFC 9112 §3.2.2: an absolute-form target's authority is the host; it replaces Host.
    let authority = parts.authority.map(|a| a.of(buf));
    let mut length_written = false;
    let mut seen_forwarding = 0u8;
    for field in &head.fields {
        let name = field.name.of(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            // Equal lengths on several lines or as a list (`5, 5`) were accepted as one: the
            // upstream gets that one, in one line, and cannot read them another way.
            if !length_written {
                length_written = true;
                match meta.body {
                    Body::Length(n) if field.value.of(buf).contains(&b',') => {
                        let mut digits = [0u8; 20];
                        push_header(out, name, decimal(n, &mut digits));
                    }
                    _ => field.write_to(buf, out),
                }
            }
            continue;
        }
        if let Some(kind) = forwarding_kind(name) {
            // A client's own forwarding headers are believed only through trusted proxies;
            // X-Forwarded-For is rewritten below either way.
            if fwd.trusted_hops > 0 && kind != XFF {
                seen_forwarding |= kind;
                field.write_to(buf, out);
            }
            continue;
        }
        if field.hop
            || name.eq_ignore_ascii_case(b"expect")
            || (authority.is_some() && name.eq_ignore_ascii_case(b"host"))
            || (is_switchyard(name)
                && !(route.pinning && name.eq_ignore_ascii_case(PIN_HEADER.as_bytes())))
        {
            continue;
        }
        field.write_to(buf, out);
    }
    if let Some(authority) = authority {
        push_header(out, b"host", authority);
    }
    let host = authority.or_else(|| head.get(buf, "host"));
    write_forwarding(out, buf, head, fwd, host, seen_forwarding);
    if meta.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        if let Some(protocol) = head.get(buf, "upgrade") {
            push_header(out, b"upgrade", protocol);
        }
    } else if head.minor == 0 {
        // HTTP/1.0 to the upstream too (so no chunked answer), kept alive if it agrees.
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The response head as the client gets it: hop-by-hop headers dropped, the router's
/// `x-switchyard-served-by`, and the client connection's own `Connection` header.
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    served_by: &str,
    keep_alive: bool,
    client_minor: u8,
) {
    let status = head.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(head.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    for field in &head.fields {
        if field.hop
            || field
                .name
                .of(buf)
                .eq_ignore_ascii_case(SERVED_BY_HEADER.as_bytes())
        {
            continue;
        }
        field.write_to(buf, out);
    }
    push_header(out, SERVED_BY_HEADER.as_bytes(), served_by.as_bytes());
    if status == 101 {
        out.extend_from_slice(b"connection: upgrade\r\n");
        if let Some(protocol) = head.get(buf, "upgrade") {
            push_header(out, b"upgrade", protocol);
        }
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client_minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_with_a_newer_minor_version_becomes_http_1_1() {
        for (before, after, rewritten) in [
            (
                &b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"[..],
                &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                true,
            ),
            (b"GET /a HTTP/1.9\r\n", b"GET /a HTTP/1.1\r\n", true),
            (b"GET /a HTTP/1.2", b"GET /a HTTP/1.1", true),
            (b"GET / HTTP/1.0\r\n", b"GET / HTTP/1.0\r\n", false),
            (b"GET / HTTP/2.0\r\n", b"GET / HTTP/2.0\r\n", false),
            (b"GET / HTTP/1.", b"GET / HTTP/1.", false),
            (b"GET /HTTP/1.2\r\n", b"GET /HTTP/1.2\r\n", false),
            (b"HTTP/1.2\r\n", b"HTTP/1.2\r\n", false),
            (
                b"GET / HTTP/1.2\r\nX: HTTP/1.3\r\n",
                b"GET / HTTP/1.1\r\nX: HTTP/1.3\r\n",
                true,
            ),
        ] {
            let mut buf = before.to_vec();
            assert_eq!(
                newer_minor_as_one(&mut buf),
                rewritten,
                "{:?}",
                String::from_utf8_lossy(before)
            );
            assert_eq!(buf, after);
        }
        let mut buf = b"GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_vec();
        let mut head = Head::default();
        assert_eq!(
            head.parse_request(&buf),
            Err(Malformed::Syntax),
            "httparse refuses 1.2"
        );
        newer_minor_as_one(&mut buf);
        assert_eq!(head.parse_request(&buf), Ok(true));
        assert_eq!(head.minor, 1);
    }

    fn request(text: &str) -> (Head, Result<Meta, Malformed>) {
        let mut head = Head::default();
        assert_eq!(head.parse_request(text.as_bytes()), Ok(true), "{text}");
        let meta = head.meta;
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
        // Every request below gets a Host line after its request line.
        let meta = |t: &str| request(&t.replacen("\r\n", "\r\nHost: h\r\n", 1)).1;
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").map(|m| m.body),
            Ok(Body::Length(5))
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").map(|m| m.body),
            Ok(Body::Chunked)
        );
        for faulty in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(meta(faulty), Err(Malformed::Encoding), "{faulty}");
        }
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").map(|m| m.body),
            Ok(Body::Length(5)),
            "a list of equal lengths is that length"
        );
        assert_eq!(
            meta("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"),
            Err(Malformed::Length)
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
    fn a_request_has_exactly_one_host_and_no_dot_segment() {
        let meta = |t: &str| {
            let mut head = Head::default();
            assert_eq!(head.parse_request(t.as_bytes()), Ok(true), "{t}");
            head.meta.map(|m| m.body)
        };
        assert_eq!(meta("GET / HTTP/1.1\r\n\r\n"), Err(Malformed::Host));
        assert_eq!(
            meta("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            Err(Malformed::Host)
        );
        assert_eq!(meta("GET / HTTP/1.0\r\n\r\n"), Ok(Body::Length(0)));
        for (path, refused) in [
            ("/a/../b", true),
            ("/a/./b", true),
            ("/a/%2e%2E", true),
            ("/a/.%2e/b", true),
            ("/..", true),
            ("/a/...", false),
            ("/a/.b/c..d", false),
            ("/a//b", false),
        ] {
            let text = format!("GET {path}?x=/../ HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(meta(&text) == Err(Malformed::DotSegment), refused, "{path}");
        }
    }

    #[test]
    fn connection_never_makes_framing_headers_or_host_hop_by_hop() {
        let text = "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, host, x-a\r\n\
X-A: 1\r\nContent-Length: 3\r\n\r\n";
        let (head, meta) = request(text);
        let hop: Vec<&[u8]> = head
            .fields
            .iter()
            .filter(|f| f.hop)
            .map(|f| f.name.of(text.as_bytes()))
            .collect();
        assert_eq!(hop, [&b"Connection"[..], b"X-A"]);
        assert_eq!(meta.map(|m| m.body), Ok(Body::Length(3)));

        let mut resp = Head::default();
        let text = b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(resp.parse_response(text), Ok(true));
        let meta = resp.meta.expect("valid");
        assert_eq!(meta.body, Body::Length(2));
        assert!(!meta.keep_alive, "its framing is in doubt: never reused");
        assert!(resp
            .fields
            .iter()
            .any(|f| !f.hop && f.name.of(text) == b"Content-Length"));
    }

    #[test]
    fn a_response_with_chunks_and_a_length_drops_the_length_and_is_not_reused() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut resp = Head::default();
        assert_eq!(resp.parse_response(text), Ok(true));
        let meta = resp.meta.expect("valid");
        assert_eq!(meta.body, Body::Chunked);
        assert!(!meta.keep_alive);
        let kept: Vec<&[u8]> = resp
            .fields
            .iter()
            .filter(|f| !f.hop)
            .map(|f| f.name.of(text))
            .collect();
        assert_eq!(kept, [&b"Transfer-Encoding"[..]]);
    }

    #[test]
    fn a_response_without_length_runs_until_close() {
        let text = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
        let mut head = Head::default();
        assert_eq!(head.parse_response(text), Ok(true));
        assert_eq!(head.status, 200);
        assert_eq!(head.reason.of(text), b"OK");
        assert_eq!(head.meta.map(|m| m.body), Ok(Body::UntilClose));
    }

    #[test]
    fn hop_by_hop_headers_include_those_the_connection_header_names() {
        let text = "GET / HTTP/1.1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Custom: 1\r\n\
X-Other: 2\r\nConnection: close, x-custom\r\nContent-Length: 0\r\n\r\n";
        let (head, _) = request(text);
        let buf = text.as_bytes();
        let hop: Vec<&[u8]> = head
            .fields
            .iter()
            .filter(|f| f.hop)
            .map(|f| f.name.of(buf))
            .collect();
        assert_eq!(
            hop,
            [&b"Keep-Alive"[..], b"TE", b"X-Custom", b"Connection"],
            "X-Other and Content-Length are end-to-end"
        );
    }

    #[test]
    fn targets_split_into_authority_path_and_query() {
        let parts = |t: &str| {
            let text = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (head, _) = request(&text);
            let buf = text.as_bytes();
            let p = head.parts;
            let s = |span: Span| String::from_utf8_lossy(span.of(buf)).into_owned();
            (p.proxyable, p.authority.map(s), s(p.path), p.query.map(s))
        };
        assert_eq!(
            parts("/a/b?x=1"),
            (true, None, "/a/b".into(), Some("x=1".into()))
        );
        assert_eq!(
            parts("http://h.test:8080/a?q"),
            (
                true,
                Some("h.test:8080".into()),
                "/a".into(),
                Some("q".into())
            )
        );
        assert_eq!(
            parts("HTTP://h.test"),
            (true, Some("h.test".into()), "".into(), None)
        );
        assert!(!parts("h.test:443").0, "authority form");
        assert!(!parts("ftp://h/").0);
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
            b"5 \r\nhello\r\n",
            b"5\t;x\r\nhello\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"ffffffffffffffff1\r\n",
            b"\r\n",
        ] {
            let mut c = Chunked::default();
            assert_eq!(c.scan(bad), Err(Malformed::Chunk), "{bad:?}");
        }
    }

    fn route(f: switchyard_core::Function, endpoint: &str) -> Route {
        let v = switchyard_core::FunctionVersion::test_endpoint("hello", "1.0.0", endpoint);
        Route::build(
            &f.with_weight("1.0.0", 1_000_000),
            [&v],
            &Default::default(),
        )
        .expect("a route")
    }

    /// The request head `text` as the upstream gets it through `route`.
    fn forwarded(text: &str, route: &Route) -> String {
        let (head, meta) = request(text);
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            text.as_bytes(),
            &head,
            &meta.expect("valid"),
            route,
            0,
            &Forwarding {
                peer: b"10.0.0.9",
                trusted_hops: 0,
                forwarded_header: false,
            },
        );
        String::from_utf8(out).expect("utf-8")
    }

    /// The forwarding lines the router adds for peer 10.0.0.9 and this Host.
    fn xf(host: &str) -> String {
        format!(
            "x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: {host}\r\n"
        )
    }

    #[test]
    fn a_request_head_is_forwarded_byte_for_byte_less_hop_by_hop_and_expect() {
        let plain = route(
            switchyard_core::Function::test("hello"),
            "http://127.0.0.1:9",
        );
        assert_eq!(
            forwarded(
                "POST /hello/a?x=1 HTTP/1.1\r\nHost: h\r\nX-A:  1 \r\nConnection: keep-alive, x-a\r\n\
Keep-Alive: 5\r\nExpect: 100-continue\r\nx-switchyard-version: 2.0.0\r\nContent-Length: 2\r\n\r\nhi",
                &plain
            ),
            format!("POST /hello/a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n{}\r\n", xf("h")),
            "X-A named by Connection, Keep-Alive, Expect and the pin (pinning off) are dropped"
        );
        let pinning = route(
            switchyard_core::Function::test("hello").with_pinning(),
            "http://127.0.0.1:9",
        );
        assert_eq!(
            forwarded(
                "GET /hello HTTP/1.0\r\nx-switchyard-version: 2.0.0\r\nEmpty:\r\n\r\n",
                &pinning
            ),
            "GET /hello HTTP/1.0\r\nx-switchyard-version: 2.0.0\r\nEmpty: \r\n\
x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nconnection: keep-alive\r\n\r\n",
            "an HTTP/1.0 request stays 1.0 and asks to be kept alive"
        );
        assert_eq!(
            forwarded(
                "GET /hello/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                &plain
            ),
            format!("GET /hello/ws HTTP/1.1\r\nHost: h\r\n{}connection: upgrade\r\nupgrade: websocket\r\n\r\n", xf("h"))
        );
    }

    #[test]
    fn forwarding_headers_are_the_routers_unless_a_trusted_proxy_sent_them() {
        let text = "GET /p HTTP/1.1\r\nHost: fn.test\r\nX-Forwarded-For: 6.6.6.6, 10.1.1.1\r\n\
X-Forwarded-Host: evil\r\nx-forwarded-for: 10.2.2.2\r\nX-Forwarded-Proto: https\r\n\
Forwarded: for=6.6.6.6\r\n\r\n";
        let plain = route(
            switchyard_core::Function::test("hello"),
            "http://127.0.0.1:9",
        );
        let write = |trusted_hops, forwarded_header, peer: &[u8]| {
            let (head, meta) = request(text);
            let mut out = Vec::new();
            let fwd = Forwarding {
                peer,
                trusted_hops,
                forwarded_header,
            };
            write_request_head(
                &mut out,
                text.as_bytes(),
                &head,
                &meta.expect("valid"),
                &plain,
                0,
                &fwd,
            );
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(
            write(0, false, b"10.0.0.9"),
            format!("GET /p HTTP/1.1\r\nHost: fn.test\r\n{}\r\n", xf("fn.test")),
            "no trusted proxy: every client value is replaced"
        );
        assert_eq!(
            write(2, true, b"::1"),
            "GET /p HTTP/1.1\r\nHost: fn.test\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\
Forwarded: for=6.6.6.6\r\nx-forwarded-for: 10.1.1.1, 10.2.2.2, ::1\r\n\
forwarded: for=\"[::1]\";proto=http;host=\"fn.test\"\r\n\r\n",
            "two trusted proxies: their two addresses, then the peer"
        );
    }

    #[test]
    fn equal_lengths_reach_the_upstream_as_one() {
        let plain = route(
            switchyard_core::Function::test("hello"),
            "http://127.0.0.1:9",
        );
        assert_eq!(
            forwarded(
                "POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 12, 12\r\nContent-Length: 12\r\n\r\n",
                &plain
            ),
            format!("POST /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n{}\r\n", xf("h"))
        );
        assert_eq!(decimal(0, &mut [0; 20]), b"0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    #[test]
    fn the_forwarded_path_gets_the_base_path_and_loses_a_stripped_prefix() {
        let f = switchyard_core::Function::test("hello").with_prefix("/api");
        let mut stripping = f.clone();
        stripping.spec.strip_prefix = true;
        let stripping = route(stripping, "http://127.0.0.1:9/base/");
        assert_eq!(
            forwarded("GET /api/v1?q=2 HTTP/1.1\r\nHost: h\r\n\r\n", &stripping),
            format!("GET /base/v1?q=2 HTTP/1.1\r\nHost: h\r\n{}\r\n", xf("h"))
        );
        assert_eq!(
            forwarded(
                "GET http://a.test/api HTTP/1.1\r\nHost: h\r\n\r\n",
                &stripping
            ),
            format!(
                "GET /base/ HTTP/1.1\r\nhost: a.test\r\n{}\r\n",
                xf("a.test")
            ),
            "an absolute-form target goes upstream in origin form, its authority the Host"
        );
        let kept = route(f, "http://127.0.0.1:9");
        assert_eq!(
            forwarded("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &kept),
            format!("OPTIONS * HTTP/1.1\r\nHost: h\r\n{}\r\n", xf("h"))
        );
    }

    /// The response head `text` as the client gets it.
    fn returned(text: &str, keep_alive: bool, client_minor: u8) -> String {
        let mut head = Head::default();
        assert_eq!(head.parse_response(text.as_bytes()), Ok(true), "{text}");
        let mut out = Vec::new();
        write_response_head(
            &mut out,
            text.as_bytes(),
            &head,
            "hello@1.0.0",
            keep_alive,
            client_minor,
        );
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_response_head_is_returned_byte_for_byte_with_served_by_and_our_connection_header() {
        let text = "HTTP/1.1 200 Fine\r\nConnection: x-up\r\nX-Up: 1\r\nX-Kept: yes\r\n\
x-switchyard-served-by: forged\r\nContent-Length: 3\r\n\r\nhop";
        assert_eq!(
            returned(text, true, 1),
            "HTTP/1.1 200 Fine\r\nX-Kept: yes\r\nContent-Length: 3\r\n\
x-switchyard-served-by: hello@1.0.0\r\n\r\n"
        );
        assert_eq!(
            returned(text, false, 1),
            "HTTP/1.1 200 Fine\r\nX-Kept: yes\r\nContent-Length: 3\r\n\
x-switchyard-served-by: hello@1.0.0\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            returned("HTTP/1.0 404 \r\n\r\n", true, 0),
            "HTTP/1.1 404 \r\nx-switchyard-served-by: hello@1.0.0\r\nconnection: keep-alive\r\n\r\n",
            "an HTTP/1.0 client kept alive is told so"
        );
        assert_eq!(
            returned(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
                true,
                1
            ),
            "HTTP/1.1 101 Switching Protocols\r\nx-switchyard-served-by: hello@1.0.0\r\n\
connection: upgrade\r\nupgrade: echo\r\n\r\n"
        );
    }

    #[test]
    fn only_idempotent_or_keyed_requests_are_replayable() {
        for (text, replay) in [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("HEAD / HTTP/1.1\r\n\r\n", true),
            ("PUT / HTTP/1.1\r\n\r\n", true),
            ("DELETE / HTTP/1.1\r\n\r\n", true),
            ("POST / HTTP/1.1\r\n\r\n", false),
            ("PATCH / HTTP/1.1\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nIdempotency-Key: k1\r\n\r\n", true),
        ] {
            let (head, _) = request(text);
            assert_eq!(replayable(&head, text.as_bytes()), replay, "{text}");
        }
    }
}
