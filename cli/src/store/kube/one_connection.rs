//! One TLS connection per command, not one per concurrent request.
//!
//! hyper's pool learns that a connection speaks HTTP/2 (and can carry every request at once)
//! only from ALPN, once the handshake is over. Requests sent together before that each open a
//! connection of their own: a command that reads a Function, its versions and the router
//! Leases at once paid four TLS handshakes, client and API server both, and kept one. So the
//! first request goes alone and the others wait for its response head; from then on every
//! request shares the pooled connection (HTTP/2), or opens its own as HTTP/1.1 always did.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

/// A service that holds every request until one has been answered (see the module).
#[derive(Clone)]
pub struct FirstAlone<S> {
    inner: S,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    answered: AtomicBool,
    first: tokio::sync::Mutex<()>,
}

impl<S> FirstAlone<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        FirstAlone {
            inner,
            gate: Arc::default(),
        }
    }
}

impl<S, R> Service<R> for FirstAlone<S>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The clone is ready too: readiness is the pool's, shared by every clone.
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let gate = Arc::clone(&self.gate);
        Box::pin(async move {
            if !gate.answered.load(Ordering::Acquire) {
                let _alone = gate.first.lock().await;
                // Checked again: the one before may have been answered while this one waited.
                if !gate.answered.load(Ordering::Acquire) {
                    let answer = inner.call(request).await;
                    // A failed first request opened nothing to share: the next goes alone too.
                    gate.answered.store(answer.is_ok(), Ordering::Release);
                    return answer;
                }
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts the requests in flight at once and the most seen.
    #[derive(Clone, Default)]
    struct Counting {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        fail_first: Arc<AtomicBool>,
    }

    impl Service<u32> for Counting {
        type Response = u32;
        type Error = String;
        type Future = Pin<Box<dyn Future<Output = Result<u32, String>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, n: u32) -> Self::Future {
            let me = self.clone();
            Box::pin(async move {
                let at = me.now.fetch_add(1, Ordering::SeqCst) + 1;
                me.most.fetch_max(at, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                me.now.fetch_sub(1, Ordering::SeqCst);
                if me.fail_first.swap(false, Ordering::SeqCst) {
                    return Err("refused".into());
                }
                Ok(n)
            })
        }
    }

    async fn four_at_once(svc: &FirstAlone<Counting>) -> Vec<Result<u32, String>> {
        let calls = (0..4).map(|n| {
            let mut s = svc.clone();
            async move { s.call(n).await }
        });
        futures::future::join_all(calls).await
    }

    #[tokio::test]
    async fn the_first_request_goes_alone_then_all_go_together() {
        let inner = Counting::default();
        let svc = FirstAlone::new(inner.clone());
        let answers = four_at_once(&svc).await;
        assert_eq!(answers, vec![Ok(0), Ok(1), Ok(2), Ok(3)]);
        // The first alone, then the three others at once.
        assert_eq!(inner.most.load(Ordering::SeqCst), 3);
        inner.most.store(0, Ordering::SeqCst);
        four_at_once(&svc).await;
        assert_eq!(
            inner.most.load(Ordering::SeqCst),
            4,
            "answered once: no more waiting"
        );
    }

    #[tokio::test]
    async fn after_a_failed_first_request_the_next_goes_alone() {
        let inner = Counting::default();
        inner.fail_first.store(true, Ordering::SeqCst);
        let svc = FirstAlone::new(inner.clone());
        let answers = four_at_once(&svc).await;
        assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1);
        // The first failed, the second went alone, the last two together.
        assert_eq!(inner.most.load(Ordering::SeqCst), 2);
    }
}
