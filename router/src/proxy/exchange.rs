//! One request's exchange: route it, connect to its version, send the request, forward the
//! response (or tunnel after a `101`), and count it against the version that served it.

use std::net::SocketAddr;
use std::time::Instant;

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::body::{copy_body, pump, stream_request, Buf, Left, Pace};
use super::deadline::{guard, Step};
use super::reply::Reply;
use super::{Conn, Next};
use crate::decide::{decide, Decision, RequestView, Target, PIN_HEADER};
use crate::http1::{
    replayable, write_request_head, write_response_head, Body, Forwarding, Head, Meta,
};
use crate::upstream::{connect_with_failover, warn, UpConn, Upstreams};

use super::mirror;

/// Body bytes copied beside a head so both go out in one write.
const INLINE_BODY: usize = 16 * 1024;

/// How an upstream exchange failed before a response head arrived.
pub(super) enum Failed {
    /// Nothing came back on a reused connection: it may have been closed while idle.
    Stale,
    /// The upstream closed, reset or sent garbage.
    Upstream(String),
    /// The client went away or broke its body.
    Client,
    /// A step ran out of time.
    Timeout(Step),
}

impl Conn<'_> {
    /// Serves the request whose head is in `self.req`.
    pub(super) async fn exchange(&mut self, down: &mut Stream) -> Next {
        let started = Instant::now();
        let head_request = self.req.method.of(self.inb.bytes()) == b"HEAD";
        let meta = match self.req.meta {
            Ok(meta) => meta,
            Err(bad) => {
                let reply = Reply::new(400, format!("{bad}\n"));
                return self.send(down, &reply, Next::Close).await;
            }
        };
        let mut target = match self.route() {
            Ok(target) => target,
            Err(mut reply) => {
                reply.head_request = head_request;
                let next = self.skip_request(&meta);
                return self.send(down, &reply, next).await;
            }
        };
        self.timeouts = self
            .proxy
            .bounds
            .timeouts
            .with(&target.extras.safety.timeouts);
        let t = self.timeouts;
        let (addr, mut up, reused) =
            match connect_with_failover(&self.proxy.upstreams, &mut target, started, &t).await {
                Ok(connected) => connected,
                Err((status, why)) => {
                    let reply = Reply::failed(&target, started, head_request, status, why);
                    let next = self.skip_request(&meta);
                    return self.send(down, &reply, next).await;
                }
            };

        // The upstream's request head, and as much of the body as is already here.
        self.out.clear();
        write_request_head(
            &mut self.out,
            self.inb.bytes(),
            &self.req,
            &meta,
            &target.route,
            target.backend,
            &Forwarding {
                peer: self.peer.bytes(),
                trusted_hops: self.proxy.trust.hops,
                forwarded_header: self.proxy.trust.forwarded_header,
            },
        );
        let head_len = self.req.len;
        let mut left = Left::of(meta.body);
        let early = match left.take(&self.inb.bytes()[head_len..]) {
            Ok(n) => n,
            Err(bad) => {
                let reply = Reply::new(400, format!("{bad}\n"));
                return self.send(down, &reply, Next::Close).await;
            }
        };
        let whole = left.done();
        let mirror = mirror::offer(
            &target,
            &self.req,
            &meta,
            self.inb.bytes(),
            early,
            whole,
            &Forwarding {
                peer: self.peer.bytes(),
                trusted_hops: self.proxy.trust.hops,
                forwarded_header: self.proxy.trust.forwarded_header,
            },
        );
        let outcome = if whole {
            // All of it is here: send it (one write when small) and read the response head,
            // within the response-head timeout. A reused connection that turns out closed is
            // replaced once when the request may be sent twice (RFC 9110 §9.2.2): the upstream
            // may have closed it before reading the request, or after acting on it, and
            // nothing tells the two apart.
            let body = &self.inb.bytes()[head_len..head_len + early];
            let (inline, rest) = if early <= INLINE_BODY {
                (body, &[][..])
            } else {
                (&[][..], body)
            };
            self.out.extend_from_slice(inline);
            self.due.set(Step::ResponseHead, t.response_head);
            let sent = send_whole(&mut up, &self.out, rest, &mut self.upb, &mut self.resp);
            let mut outcome = guard(&mut self.alarm, &self.due, sent)
                .await
                .unwrap_or_else(|step| Err(Failed::Timeout(step)));
            if reused
                && replayable(&self.req, self.inb.bytes())
                && matches!(outcome, Err(Failed::Stale))
            {
                up = match Upstreams::reconnect(up, addr, t.connect).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        self.inb.consume(head_len + early);
                        let why = Failed::Upstream(e.to_string());
                        return self
                            .failed(down, &target, started, head_request, why, true, &meta)
                            .await;
                    }
                };
                self.due.set(Step::ResponseHead, t.response_head);
                let sent = send_whole(&mut up, &self.out, rest, &mut self.upb, &mut self.resp);
                outcome = guard(&mut self.alarm, &self.due, sent)
                    .await
                    .unwrap_or_else(|step| Err(Failed::Timeout(step)));
            }
            self.inb.consume(head_len + early);
            outcome
        } else {
            // The body bytes already here go out right behind the head.
            let body = &self.inb.bytes()[head_len..head_len + early];
            self.out.extend_from_slice(body);
            self.inb.consume(head_len + early);
            if meta.expect_continue {
                self.due.set(Step::ClientWrite, t.client_write);
                let written = async {
                    down.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                    down.flush().await
                };
                let written = guard(&mut self.alarm, &self.due, written).await;
                if !matches!(written, Ok(Ok(()))) {
                    return Next::Close;
                }
            }
            stream_request(
                down,
                &mut self.inb,
                &mut up,
                &self.out,
                &mut left,
                &mut self.upb,
                &mut self.resp,
                (&mut self.alarm, &self.due, &t),
            )
            .await
        };
        let body_sent = left.done();
        if let Err(why) = outcome {
            return self
                .failed(down, &target, started, head_request, why, body_sent, &meta)
                .await;
        }
        let response = Exchange {
            addr,
            target: &target,
            request: meta,
            head_request,
            body_sent,
            started,
            mirror,
        };
        self.respond(down, up, response).await
    }

    /// Answers a request whose upstream exchange failed before a response head: 502, 504 for
    /// an upstream too slow, 408 for a client too slow with its body.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &mut self,
        down: &mut Stream,
        target: &Target,
        started: Instant,
        head_request: bool,
        why: Failed,
        body_sent: bool,
        meta: &Meta,
    ) -> Next {
        let (status, what) = match why {
            Failed::Client => {
                count(target, started, true);
                return Next::Close;
            }
            Failed::Timeout(Step::RequestBody) => {
                count(target, started, true);
                let reply = Reply::new(408, "the request body stopped arriving\n".into());
                return self.send(down, &reply, Next::Close).await;
            }
            Failed::Timeout(Step::ClientWrite) => {
                count(target, started, true);
                return Next::Close;
            }
            Failed::Timeout(_) => {
                let after = self.timeouts.response_head;
                warn(
                    target,
                    Instant::now(),
                    format_args!("no response head within {after:?} (504)"),
                );
                (504, "did not answer in time")
            }
            Failed::Stale => {
                warn(
                    target,
                    Instant::now(),
                    format_args!("closed the connection without answering (502)"),
                );
                (502, "failed before answering")
            }
            Failed::Upstream(why) => {
                // The detail (an OS error, what was malformed) is the operator's, not the
                // client's.
                warn(target, Instant::now(), format_args!("{why} (502)"));
                (502, "failed before answering")
            }
        };
        let body = format!("{} {what}\n", target.served_by());
        let reply = Reply::failed(target, started, head_request, status, body);
        let next = if body_sent && meta.keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        };
        self.send(down, &reply, next).await
    }

    /// The routing decision for the request in `self.req`, or the reply that refuses it.
    fn route(&self) -> Result<Target, Reply> {
        let buf = self.inb.bytes();
        let parts = self.req.parts;
        if self.req.method.of(buf) == b"CONNECT" {
            // A tunnel to anywhere is not what a function router offers.
            return Err(Reply::new(405, "CONNECT is not supported\n".into()));
        }
        if !parts.proxyable {
            return Err(Reply::new(
                400,
                "request target must be a path or an absolute http URL\n".into(),
            ));
        }
        // Parts of a target httparse accepted as text, split at ASCII: always UTF-8.
        let text = |span: crate::http1::Span| std::str::from_utf8(span.of(buf)).unwrap_or_default();
        let path = match text(parts.path) {
            "" => "/",
            path => path,
        };
        // RFC 9112 §3.2.2: an absolute-form target is routed by its authority, which the
        // upstream also gets as Host; the Host header is then ignored.
        let host = match parts.authority {
            Some(authority) => text(authority),
            None => self
                .req
                .get(buf, "host")
                .map(|h| std::str::from_utf8(h).unwrap_or_default())
                .unwrap_or_default(),
        };
        let view = RequestView {
            host,
            path,
            header: |name: &str| self.req.get(buf, name),
        };
        let metrics = &self.proxy.shared.metrics;
        match decide(&self.proxy.shared.live.load(), &view) {
            Decision::Forward(target) => Ok(target),
            Decision::NoRoute => {
                metrics.unmatched.inc();
                Err(Reply::new(
                    404,
                    format!("no function matches host {host} and path {path}\n"),
                ))
            }
            Decision::UnknownPin { function, pin } => {
                metrics.refused.inc();
                Err(Reply::new(
                    400,
                    format!("{PIN_HEADER}: {pin} is not a version or tag of function {function}\n"),
                ))
            }
        }
    }

    /// After answering a request here: drops it from the buffer when its body is all in it
    /// (the connection can go on), else the connection must close.
    fn skip_request(&mut self, meta: &Meta) -> Next {
        let head_len = self.req.len;
        let mut left = Left::of(meta.body);
        match left.take(&self.inb.bytes()[head_len..]) {
            Ok(n) if left.done() && meta.keep_alive => {
                self.inb.consume(head_len + n);
                Next::KeepAlive
            }
            _ => Next::Close,
        }
    }

    /// Forwards the response whose head is in `self.upb`, then its body: each write within
    /// the client-write timeout, each silence of the upstream within the response-idle one.
    async fn respond(&mut self, down: &mut Stream, mut up: UpConn, mut x: Exchange<'_>) -> Next {
        let served_by = x.target.served_by();
        let status = self.resp.status;
        let meta = match self.resp.meta {
            Ok(meta) => meta,
            Err(bad) => {
                let body = format!("{served_by} answered badly: {bad}\n");
                return self.send(down, &x.failed(body), Next::Close).await;
            }
        };
        if status == 101 {
            if !x.request.upgrade {
                let body = format!("{served_by} switched protocols unasked\n");
                return self.send(down, &x.failed(body), Next::Close).await;
            }
            return self.tunnel(down, up, &x).await;
        }
        let body = if x.head_request || status == 204 || status == 304 {
            Body::Length(0)
        } else {
            meta.body
        };
        let framed = body != Body::UntilClose;
        let keep_down = x.request.keep_alive && x.body_sent && framed && !self.stopping();
        let keep_up = meta.keep_alive && x.body_sent && framed;

        let rbuf = self.upb.bytes();
        self.out.clear();
        write_response_head(
            &mut self.out,
            rbuf,
            &self.resp,
            served_by,
            keep_down,
            self.req.minor,
        );
        let head_len = self.resp.len;
        let mut left = Left::of(body);
        let Ok(early) = left.take(&rbuf[head_len..]) else {
            let body = format!("{served_by} sent a malformed chunked body\n");
            return self.send(down, &x.failed(body), Next::Close).await;
        };
        let mut mirror = x.mirror.take();
        if let Some(copy) = mirror.as_mut() {
            copy.primary(&rbuf[..head_len + early]);
        }
        let mut tee = |bytes: &[u8]| {
            if let Some(copy) = mirror.as_mut() {
                copy.primary(bytes);
            }
        };
        let t = self.timeouts;
        let pace = Pace {
            due: &self.due,
            read: (Step::ResponseBody, t.response_idle),
            write: (Step::ClientWrite, t.client_write),
        };
        let (out, upb) = (&mut self.out, &mut self.upb);
        let forward = async {
            let body_bytes = &upb.bytes()[head_len..head_len + early];
            pace.due.set(Step::ClientWrite, t.client_write);
            let written = if early <= INLINE_BODY {
                out.extend_from_slice(body_bytes);
                down.write_all(out).await.is_ok()
            } else {
                down.write_all(out).await.is_ok() && down.write_all(body_bytes).await.is_ok()
            };
            upb.consume(head_len + early);
            if !written {
                return false;
            }
            if !left.done()
                && copy_body(&mut up.io, upb, down, &mut left, &pace, &mut tee)
                    .await
                    .is_err()
            {
                return false;
            }
            pace.due.set(Step::ClientWrite, t.client_write);
            down.flush().await.is_ok()
        };
        let complete = match guard(&mut self.alarm, &self.due, forward).await {
            Ok(complete) => complete,
            Err(step) => {
                if step == Step::ResponseBody {
                    let after = t.response_idle;
                    warn(
                        x.target,
                        Instant::now(),
                        format_args!(
                            "silent for {after:?} inside a response body; both connections closed"
                        ),
                    );
                }
                false
            }
        };
        let ended = left.done() || (body == Body::UntilClose && complete);
        count(x.target, x.started, status >= 500 || !complete || !ended);
        if let Some(copy) = mirror {
            copy.finish(complete && ended, x.started.elapsed());
        }
        if complete && ended && keep_up && self.upb.is_empty() {
            self.proxy.upstreams.put(x.addr, up, x.started);
        }
        let leftover = self.upb.bytes().len();
        self.upb.consume(leftover);
        if complete && ended && keep_down {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// After a `101`: the response head, then bytes both ways until both sides close or both
    /// are silent for the tunnel-idle timeout (an hour unless the function says otherwise).
    async fn tunnel(&mut self, down: &mut Stream, mut up: UpConn, x: &Exchange<'_>) -> Next {
        let rbuf = self.upb.bytes();
        self.out.clear();
        write_response_head(
            &mut self.out,
            rbuf,
            &self.resp,
            x.target.served_by(),
            true,
            self.req.minor,
        );
        self.out.extend_from_slice(&rbuf[self.resp.len..]);
        let upstream_early = rbuf.len();
        self.upb.consume(upstream_early);
        count(x.target, x.started, false);
        let within = self.timeouts.client_write;
        self.due.set(Step::ClientWrite, within);
        let out = &self.out;
        let written = async {
            down.write_all(out).await?;
            down.flush().await
        };
        if !matches!(guard(&mut self.alarm, &self.due, written).await, Ok(Ok(()))) {
            return Next::Close;
        }
        // Whatever the client sent after its request head already speaks the new protocol.
        // Then bytes both ways until both sides close, or both are silent for the tunnel
        // timeout (a write the other side does not take counts as silence).
        let within = self.timeouts.tunnel_idle;
        self.due.set(Step::Tunnel, within);
        let (inb, upb, due) = (&mut self.inb, &mut self.upb, &self.due);
        let pump = async {
            if up.write_all(inb.bytes()).await.is_err() {
                return;
            }
            inb.consume(inb.bytes().len());
            pump(down, &mut up.io, inb, upb, due, within).await
        };
        let _ = guard(&mut self.alarm, &self.due, pump).await;
        Next::Close
    }
}

/// What [`Conn::respond`] needs to know about the request it answers.
struct Exchange<'t> {
    addr: SocketAddr,
    target: &'t Target,
    request: Meta,
    head_request: bool,
    body_sent: bool,
    started: Instant,
    /// The shadow copy of this request, when it is mirrored.
    mirror: Option<mirror::Claim<'t>>,
}

impl Exchange<'_> {
    /// The 502 for a response that cannot be forwarded.
    fn failed(&self, body: String) -> Reply {
        Reply::failed(self.target, self.started, self.head_request, 502, body)
    }
}

/// Counts one finished request against the backend that served (or failed) it.
pub(super) fn count(target: &Target, started: Instant, failed: bool) {
    if let Some(m) = target.extras.backends.get(target.backend) {
        m.record(started.elapsed(), failed);
    }
}

/// Sends a whole request and reads the response head.
async fn send_whole(
    up: &mut UpConn,
    out: &[u8],
    rest: &[u8],
    upb: &mut Buf,
    resp: &mut Head,
) -> Result<(), Failed> {
    if up.write_all(out).await.is_err() || up.write_all(rest).await.is_err() {
        return Err(Failed::Stale);
    }
    read_response_head(&mut up.io, upb, resp).await
}

/// Reads a final response head into `upb` (interim `1xx` heads other than `101` are dropped:
/// `100 Continue` is the router's to send).
pub(super) async fn read_response_head<R: AsyncRead + Unpin + ?Sized>(
    up: &mut R,
    upb: &mut Buf,
    resp: &mut Head,
) -> Result<(), Failed> {
    let mut answered = false;
    loop {
        if !upb.is_empty() {
            match resp.parse_response(upb.bytes()) {
                Ok(true) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    upb.consume(resp.len);
                    continue;
                }
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(bad) => return Err(Failed::Upstream(format!("invalid response: {bad}"))),
            }
        }
        match upb.fill(up).await {
            Ok(0) | Err(_) if !answered => return Err(Failed::Stale),
            Ok(0) => return Err(Failed::Upstream("closed mid-response".into())),
            Err(e) => return Err(Failed::Upstream(e.to_string())),
            Ok(_) => answered = true,
        }
    }
}
