//! Buffers and body framing: a connection's read buffers, what is left of a body, copying a
//! body from one side to the other, and streaming a request body while the response may
//! already be coming back.

use std::io;
use std::time::Duration;

use futures::FutureExt;

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::deadline::{Alarm, Due, Step};
use super::exchange::{read_response_head, Failed};
use crate::config::Timeouts;
use crate::http1::{Body, Chunked, Head, Malformed, MAX_HEAD};

/// Initial size of a connection's read buffers.
const BUFFER: usize = 8 * 1024;

/// A read buffer: bytes `start..end` of `data` are unread.
pub(super) struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub(super) fn new() -> Buf {
        Buf {
            data: vec![0; BUFFER],
            start: 0,
            end: 0,
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes; 0 at the end of the stream.
    pub(super) async fn fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        from: &mut R,
    ) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // Only a head still incomplete grows a buffer, and heads are bounded.
                let grown = (self.data.len() * 2).min(MAX_HEAD + BUFFER);
                if grown == self.data.len() {
                    return Err(io::Error::other("buffer full"));
                }
                self.data.resize(grown, 0);
            }
        }
        let n = from.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// What is left of a body to copy.
#[derive(Debug, Clone)]
pub(super) enum Left {
    Bytes(u64),
    Chunks(Chunked),
    UntilClose,
}

impl Left {
    pub(super) fn of(body: Body) -> Left {
        match body {
            Body::Length(n) => Left::Bytes(n),
            Body::Chunked => Left::Chunks(Chunked::default()),
            Body::UntilClose => Left::UntilClose,
        }
    }

    /// How many of `available` bytes belong to the body (and takes them off what is left).
    pub(super) fn take(&mut self, available: &[u8]) -> Result<usize, Malformed> {
        match self {
            Left::Bytes(n) => {
                let take = (*n).min(available.len() as u64);
                *n -= take;
                Ok(take as usize)
            }
            Left::Chunks(c) => c.scan(available),
            Left::UntilClose => Ok(available.len()),
        }
    }

    pub(super) fn done(&self) -> bool {
        match self {
            Left::Bytes(n) => *n == 0,
            Left::Chunks(c) => c.done(),
            Left::UntilClose => false,
        }
    }
}

/// Why a body copy stopped early.
pub(super) enum CopyError {
    /// The sending side ended or failed.
    From,
    /// The receiving side failed.
    To,
    /// The body breaks its framing.
    Framing,
}

/// The deadlines a body copy keeps moving: each read that has to wait, and each write, must
/// make progress within its step's timeout (idle times, not a bound on the whole body).
pub(super) struct Pace<'d> {
    pub(super) due: &'d Due,
    /// Waiting for the sending side.
    pub(super) read: (Step, Duration),
    /// Writing to the receiving side.
    pub(super) write: (Step, Duration),
}

/// Copies the rest of a body: bytes already in `buf` first, then reads from `from`. What was
/// written is flushed whenever `from` has nothing more ready, so a streamed body (server-sent
/// events, long polling, tokens) reaches the other side as it is produced, while a body that
/// arrives in a burst still leaves in few writes. Moves `pace`'s deadline as it goes; the
/// caller runs it under the connection's alarm. `tee` sees every body byte before it is
/// written (a shadow copy keeps the serving answer with it).
pub(super) async fn copy_body<R, W>(
    from: &mut R,
    buf: &mut Buf,
    to: &mut W,
    left: &mut Left,
    pace: &Pace<'_>,
    tee: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let (read_step, read_within) = pace.read;
    let (write_step, write_within) = pace.write;
    loop {
        if !buf.is_empty() {
            let take = left.take(buf.bytes()).map_err(|_| CopyError::Framing)?;
            pace.due.set(write_step, write_within);
            tee(&buf.bytes()[..take]);
            to.write_all(&buf.bytes()[..take])
                .await
                .map_err(|_| CopyError::To)?;
            buf.consume(take);
        }
        if left.done() {
            return Ok(());
        }
        // A read that is not ready at once is cancelled (reads are cancel-safe) and awaited
        // again after the flush.
        let read = match buf.fill(from).now_or_never() {
            Some(read) => read,
            None => {
                pace.due.set(write_step, write_within);
                to.flush().await.map_err(|_| CopyError::To)?;
                pace.due.set(read_step, read_within);
                buf.fill(from).await
            }
        };
        match read {
            Ok(0) if matches!(left, Left::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(CopyError::From),
            Ok(_) => {}
        }
    }
}

/// Sends a request whose body is still arriving, while watching for the response: an upstream
/// may answer (and stop reading) before the body ends. `left` tells what was not sent. The
/// client may be silent for the request-idle timeout, the upstream may take the response-head
/// timeout to read each piece and, once the body is sent, to answer.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_request(
    down: &mut Stream,
    inb: &mut Buf,
    up: &mut TcpStream,
    out: &[u8],
    left: &mut Left,
    upb: &mut Buf,
    resp: &mut Head,
    (alarm, due, t): (&mut Alarm, &Due, &Timeouts),
) -> Result<(), Failed> {
    let (mut from_up, mut to_up) = up.split();
    let pace = Pace {
        due,
        read: (Step::RequestBody, t.request_idle),
        write: (Step::ResponseHead, t.response_head),
    };
    let send = async {
        due.set(Step::ResponseHead, t.response_head);
        to_up.write_all(out).await.map_err(|_| CopyError::To)?;
        copy_body(down, inb, &mut to_up, left, &pace, &mut |_| {}).await
    };
    let recv = read_response_head(&mut from_up, upb, resp);
    tokio::pin!(send, recv);
    let mut sending = true;
    let rung = alarm.rung(due);
    tokio::pin!(rung);
    loop {
        tokio::select! {
            biased;
            head = &mut recv => return head,
            sent = &mut send, if sending => match sent {
                // Sent, or the upstream stopped reading: its answer (or its close) follows.
                Ok(()) | Err(CopyError::To) => {
                    sending = false;
                    due.set(Step::ResponseHead, t.response_head);
                }
                Err(CopyError::From) | Err(CopyError::Framing) => return Err(Failed::Client),
            },
            step = &mut rung => return Err(Failed::Timeout(step)),
        }
    }
}

/// The two directions of an upgraded connection: whatever one side sends goes to the other,
/// until both have closed (a close is passed on as a half-close) or a write fails. Each piece
/// moves the tunnel's deadline in `due`; the caller runs it under the connection's alarm.
pub(super) async fn pump(
    down: &mut Stream,
    up: &mut TcpStream,
    inb: &mut Buf,
    upb: &mut Buf,
    due: &Due,
    within: Duration,
) {
    let (mut down_open, mut up_open) = (true, true);
    while down_open || up_open {
        tokio::select! {
            read = inb.fill(down), if down_open => match read {
                Ok(n) if n > 0 => {
                    due.set(Step::Tunnel, within);
                    if up.write_all(inb.bytes()).await.is_err() {
                        return;
                    }
                    inb.consume(inb.bytes().len());
                }
                _ => {
                    down_open = false;
                    let _ = up.shutdown().await;
                }
            },
            read = upb.fill(up), if up_open => match read {
                Ok(n) if n > 0 => {
                    due.set(Step::Tunnel, within);
                    if down.write_all(upb.bytes()).await.is_err() || down.flush().await.is_err() {
                        return;
                    }
                    upb.consume(upb.bytes().len());
                }
                _ => {
                    up_open = false;
                    let _ = down.shutdown().await;
                }
            },
        }
    }
}
