//! The admin endpoints: `/healthz`, `/readyz`, `/metrics`, `/routes`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::live::Shared;

/// The admin app, served on its own listener (loopback by default).
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    /// Admin endpoints over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Admin { shared }
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
            "/readyz" if self.shared.ready.load(Ordering::Acquire) => {
                reply(200, text, b"ready\n".to_vec())
            }
            "/readyz" => reply(
                503,
                text,
                b"not ready: no complete routing table yet\n".to_vec(),
            ),
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
