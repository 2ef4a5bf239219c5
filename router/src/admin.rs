//! The admin endpoints: `/healthz`, `/readyz`, `/metrics`, `/routes`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::live::Shared;
use crate::source::ReadyGate;

/// The readiness gates of the routers of this process, by their shared state: the admin app
/// is built from a [`Shared`] alone, and a router with a reporting source is ready only once
/// its gate opens (docs/protocol.md). Touched only when a router starts.
type Gates = Mutex<Vec<(Weak<Shared>, Arc<ReadyGate>)>>;
static GATES: Gates = Mutex::new(Vec::new());

/// Makes `/readyz` of the router over `shared` wait for `gate` too.
pub(crate) fn register_gate(shared: &Arc<Shared>, gate: Arc<ReadyGate>) {
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    gates.retain(|(s, _)| s.strong_count() > 0);
    gates.push((Arc::downgrade(shared), gate));
}

fn gate_of(shared: &Arc<Shared>) -> Option<Arc<ReadyGate>> {
    let gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    gates
        .iter()
        .find(|(s, _)| s.as_ptr() == Arc::as_ptr(shared))
        .map(|(_, g)| Arc::clone(g))
}

/// The admin app, served on its own listener (loopback by default).
pub struct Admin {
    shared: Arc<Shared>,
    gate: Option<Arc<ReadyGate>>,
    /// The proxy's listen address, checked once: Pingora binds the proxy and admin listeners
    /// separately, so the admin port can answer before the proxy port accepts connections.
    listen: Option<std::net::SocketAddr>,
    /// Set once a connection to `listen` succeeded.
    listening: std::sync::atomic::AtomicBool,
}

impl Admin {
    /// Admin endpoints over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        let gate = gate_of(&shared);
        Admin {
            shared,
            gate,
            listen: None,
            listening: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `/readyz` also waits until the proxy port at `listen` accepts connections (an
    /// unspecified address is tried on loopback).
    pub fn with_listen(mut self, listen: std::net::SocketAddr) -> Self {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        self.listen = Some(addr);
        self
    }

    /// Whether the proxy port accepts connections; once it has, it is not asked again.
    async fn proxy_listening(&self) -> bool {
        let Some(addr) = self.listen else {
            return true;
        };
        if self.listening.load(Ordering::Acquire) {
            return true;
        }
        let up = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|c| c.is_ok());
        if up {
            self.listening.store(true, Ordering::Release);
        }
        up
    }

    /// `/readyz`: a complete table is live and, for a reporting source, a CLI wait would count
    /// this replica (its Lease fresh, its first report written).
    fn readiness(&self) -> Result<(), String> {
        if !self.shared.ready.load(Ordering::Acquire) {
            return Err("no complete routing table yet".into());
        }
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let now = jiff::Timestamp::now().as_millisecond();
        if gate.open(now) {
            Ok(())
        } else {
            Err(gate.why_closed(now).into())
        }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let text = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/healthz" => reply(200, text, b"ok\n".to_vec()),
            "/readyz" => match self.readiness() {
                Ok(()) if !self.proxy_listening().await => reply(
                    503,
                    text,
                    b"not ready: the proxy port does not accept connections yet\n".to_vec(),
                ),
                Ok(()) => reply(200, text, b"ready\n".to_vec()),
                Err(why) => reply(503, text, format!("not ready: {why}\n").into_bytes()),
            },
            "/metrics" => {
                let age = self.shared.table_age_seconds();
                self.shared.metrics.table_age.set(age as i64);
                reply(
                    200,
                    "text/plain; version=0.0.4",
                    self.shared.metrics.render(),
                )
            }
            "/routes" => {
                let live = self.shared.live.load();
                let connected = self.shared.connected.load(Ordering::Relaxed);
                let json = live.to_json(
                    &self.shared.replica,
                    connected,
                    self.shared.table_age_seconds(),
                );
                let mut body = serde_json::to_vec_pretty(&json).unwrap_or_default();
                body.push(b'\n');
                reply(200, "application/json", body)
            }
            "/shadow" => {
                let mut body = serde_json::to_vec_pretty(&self.shared.metrics.shadow.to_json())
                    .unwrap_or_default();
                body.push(b'\n');
                reply(200, "application/json", body)
            }
            other => reply(
                404,
                text,
                format!("no admin endpoint {other}\n").into_bytes(),
            ),
        }
    }
}
