//! Every reply the router writes itself: refusals of a request (400, 404, 405, 408, 431) and
//! failures of its upstream (502, 503, 504), each a status and a one-line body that says why.

use std::time::Instant;

use pingora::protocols::Stream;
use tokio::io::AsyncWriteExt;

use super::exchange::count;
use super::Next;
use crate::decide::{Target, SERVED_BY_HEADER};
use crate::http1::push_header;

/// A response the router writes itself.
pub(super) struct Reply {
    status: u16,
    body: String,
    served_by: Option<String>,
    pub(super) head_request: bool,
}

impl Reply {
    pub(super) fn new(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            served_by: None,
            head_request: false,
        }
    }

    /// The answer to a request its backend failed: counted as that backend's error, and named
    /// in `x-switchyard-served-by`.
    pub(super) fn failed(
        target: &Target,
        started: Instant,
        head_request: bool,
        status: u16,
        body: String,
    ) -> Reply {
        count(target, started, true);
        Reply {
            status,
            body,
            served_by: Some(target.served_by().to_string()),
            head_request,
        }
    }

    /// Writes it; returns `next`, or [`Next::Close`] when the client is gone.
    pub(super) async fn send(&self, down: &mut Stream, out: &mut Vec<u8>, next: Next) -> Next {
        use std::io::Write;
        out.clear();
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        if let Some(served_by) = &self.served_by {
            push_header(out, SERVED_BY_HEADER.as_bytes(), served_by.as_bytes());
        }
        if next == Next::Close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_request {
            out.extend_from_slice(self.body.as_bytes());
        }
        if down.write_all(out).await.is_err() || down.flush().await.is_err() {
            return Next::Close;
        }
        next
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
