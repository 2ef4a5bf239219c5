//! The HTTP plumbing: pingora-proxy's `ProxyHttp` hooks around [`crate::decide`].
//!
//! Everything about *where* a request goes lives in `decide` and `switchyard-core`; this file
//! only reads the request, answers 404/400/502 itself, builds the upstream peer, rewrites the
//! path, adds `x-switchyard-served-by` and records metrics. It is the one module to replace with
//! a purpose-built loop on pingora-core when speed calls for it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::decide::{decide, Decision, RequestView, Target, PIN_HEADER, SERVED_BY_HEADER};
use crate::live::Shared;

/// How long a resolved upstream host name is reused.
const DNS_TTL: Duration = Duration::from_secs(10);

/// The router's `ProxyHttp`.
pub struct Proxy {
    shared: Arc<Shared>,
    dns: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

/// Per-request state.
pub struct Ctx {
    target: Option<Target>,
    retried: bool,
    start: Instant,
}

impl Proxy {
    /// A proxy routing on `shared`'s live table.
    pub fn new(shared: Arc<Shared>) -> Self {
        Proxy {
            shared,
            dns: Mutex::new(HashMap::new()),
        }
    }

    /// An upstream's socket address: IPs as they are, names through the resolver (cached
    /// briefly: pingora's `HttpPeer::new` would resolve, blocking, on every request).
    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Ok(cache) = self.dns.lock() {
            if let Some((addr, at)) = cache.get(&key) {
                if at.elapsed() < DNS_TTL {
                    return Ok(*addr);
                }
            }
        }
        let addr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cannot resolve upstream {host}"),
                )
            })?;
        if let Ok(mut cache) = self.dns.lock() {
            cache.insert(key, (addr, Instant::now()));
        }
        Ok(addr)
    }
}

async fn answer(session: &mut Session, status: u16, body: String) -> Result<bool> {
    session.set_keepalive(Some(60));
    session
        .respond_error_with_body(status, Bytes::from(body))
        .await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            target: None,
            retried: false,
            start: Instant::now(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let decision = {
            let req = session.req_header();
            let host = req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.host())
                .unwrap_or_default();
            let view = RequestView {
                host,
                path: req.uri.path(),
                header: |name: &str| req.headers.get(name).map(|v| v.as_bytes()),
            };
            let live = self.shared.live.load();
            match decide(&live, &view) {
                Decision::NoRoute => Err((
                    404,
                    format!(
                        "no function matches host {host} and path {}\n",
                        req.uri.path()
                    ),
                )),
                Decision::UnknownPin { function, pin } => Err((
                    400,
                    format!("{PIN_HEADER}: {pin} is not a version or tag of function {function}\n"),
                )),
                Decision::Forward(target) => Ok(target),
            }
        };
        let target = match decision {
            Ok(t) => t,
            Err((status, body)) => {
                if status == 404 {
                    self.shared.metrics.unmatched.inc();
                } else {
                    self.shared.metrics.refused.inc();
                }
                return answer(session, status, body).await;
            }
        };
        if !target.route.pinning {
            // Never forward a pin the function does not honour as if it were trusted.
            session.req_header_mut().remove_header(PIN_HEADER);
        }
        let backend = &target.route.backends[target.backend];
        if backend.upstream.tls {
            let body = format!(
                "{} is served over https, which this router build does not speak to upstreams\n",
                backend.served_by
            );
            ctx.target = Some(target);
            return answer(session, 502, body).await;
        }
        ctx.target = Some(target);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(target) = &ctx.target else {
            return Err(Error::explain(ErrorType::InternalError, "no target chosen"));
        };
        let upstream = &target.route.backends[target.backend].upstream;
        if upstream.tls {
            return Err(Error::explain(ErrorType::HTTPStatus(502), "https upstream"));
        }
        let addr = self.resolve(&upstream.host, upstream.port).await?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(3));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.retried {
            return e;
        }
        if let Some(target) = ctx.target.as_mut() {
            if let Some(m) = target.extras.backends.get(target.backend) {
                m.errors.inc();
            }
            if let Some(next) = target.failover() {
                tracing::debug!(
                    from = %target.route.backends[target.backend].served_by,
                    to = %target.route.backends[next].served_by,
                    "upstream unreachable, failing over: {e}"
                );
                target.backend = next;
                ctx.retried = true;
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(target) = &ctx.target else {
            return Ok(());
        };
        let base = &target.route.backends[target.backend].upstream.base_path;
        if !target.route.strip_prefix && base.is_empty() {
            return Ok(());
        }
        let uri = &session.req_header().uri;
        let path = target.route.upstream_path(uri.path());
        let mut new = String::with_capacity(base.len() + path.len() + 16);
        new.push_str(base);
        new.push_str(path);
        if let Some(q) = uri.query() {
            new.push('?');
            new.push_str(q);
        }
        let uri = new
            .parse()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewriting path", e))?;
        upstream_request.set_uri(uri);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(target) = &ctx.target {
            let served_by = &target.route.backends[target.backend].served_by;
            response.insert_header(SERVED_BY_HEADER, served_by.as_str())?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let Some(target) = &ctx.target else {
            return;
        };
        let Some(m) = target.extras.backends.get(target.backend) else {
            return;
        };
        m.requests.inc();
        m.latency.observe(ctx.start.elapsed().as_secs_f64());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if e.is_some() || status >= 500 {
            m.errors.inc();
        }
    }
}
