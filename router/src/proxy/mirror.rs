//! The request path's side of shadow traffic (issue 16): choose the exact share of matching
//! requests, claim a free copy slot (or count the copy dropped), write the copy into the
//! slot's reused buffers, tee the serving answer into it as it is forwarded, and hand the slot
//! to the workers of [`crate::shadow`]. Nothing here waits, locks a contended lock, logs
//! or allocates beyond the slot buffers' growth up to `maxBody`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_core::table::roll;
use tokio::sync::MutexGuard;

use crate::decide::Target;
use crate::http1::{write_request_head, Body, Forwarding, Head, Meta};
use crate::shadow::{Copy, Lane, Skip, HEAD_ROOM};

/// The header every copy carries, so a function can avoid side effects.
pub const SHADOW_HEADER: &[u8] = b"x-switchyard-shadow: 1\r\n";

const KEEP_ALIVE: &[u8] = b"connection: keep-alive\r\n";

/// A filled copy slot, held while the serving answer is forwarded.
pub(super) struct Claim<'t> {
    lane: &'t Lane,
    slot: usize,
    copy: Option<MutexGuard<'t, Copy>>,
}

/// The copy of the request whose head is `req` (its body's first `early` bytes follow the
/// head in `buf`, all of it when `whole`), when this request is chosen and a slot is free.
#[allow(clippy::too_many_arguments)]
pub(super) fn offer<'t>(
    target: &'t Target,
    req: &Head,
    meta: &Meta,
    buf: &[u8],
    early: usize,
    whole: bool,
    fwd: &Forwarding<'_>,
) -> Option<Claim<'t>> {
    let lane = target.extras.mirror.as_ref()?;
    let (config, stats) = (&lane.inner.config, &lane.inner.stats);
    let method = req.method.of(buf);
    if !config.methods.iter().any(|m| m == method) {
        stats.skip(Skip::Method);
        return None;
    }
    let n = stats.counter.fetch_add(1, Ordering::Relaxed);
    if roll(n) >= config.share {
        return None;
    }
    let over = match meta.body {
        Body::Length(len) => len > config.max_body as u64,
        _ => early > config.max_body,
    };
    let skip = if config.tls {
        Some(Skip::Https)
    } else if meta.upgrade {
        Some(Skip::Upgrade)
    } else if target.backend == config.backend {
        Some(Skip::Serving)
    } else if over {
        Some(Skip::Body)
    } else if !whole {
        Some(Skip::Streamed)
    } else {
        None
    };
    if let Some(why) = skip {
        stats.skip(why);
        return None;
    }
    let slot = lane.claim()?;
    let Ok(mut copy) = lane.inner.slots[slot].copy.try_lock() else {
        // Only a worker that has not yet let go holds it: treat the slot as busy.
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        lane.release(slot);
        return None;
    };
    copy.req.clear();
    copy.primary.clear();
    copy.oversized = false;
    write_request_head(
        &mut copy.req,
        buf,
        req,
        meta,
        &target.route,
        config.backend,
        fwd,
    );
    // The head ends with its blank line: the copy's own headers go before it.
    let mut end = copy.req.len() - 2;
    // An HTTP/1.0 request's head asks the upstream to keep the connection; a copy's closes.
    if copy.req[..end].ends_with(KEEP_ALIVE) {
        end -= KEEP_ALIVE.len();
    }
    copy.req.truncate(end);
    copy.req.extend_from_slice(SHADOW_HEADER);
    copy.req.extend_from_slice(b"connection: close\r\n\r\n");
    copy.req.extend_from_slice(&buf[req.len..req.len + early]);
    copy.head_request = method == b"HEAD";
    Some(Claim {
        lane,
        slot,
        copy: Some(copy),
    })
}

impl Claim<'_> {
    /// Keeps bytes of the serving answer (head and body, as forwarded).
    pub(super) fn primary(&mut self, bytes: &[u8]) {
        let limit = self.lane.inner.config.max_body + HEAD_ROOM;
        if let Some(copy) = self.copy.as_mut() {
            if copy.primary.len() + bytes.len() > limit {
                copy.oversized = true;
            } else if !copy.oversized {
                copy.primary.extend_from_slice(bytes);
            }
        }
    }

    /// After the serving answer: hands the copy to the workers when that answer ended cleanly
    /// and fits the limit, else counts why not.
    pub(super) fn finish(mut self, clean: bool, serving: Duration) {
        let Some(mut copy) = self.copy.take() else {
            return;
        };
        let stats = &self.lane.inner.stats;
        let why = if !clean {
            Some(Skip::Primary)
        } else if copy.oversized {
            Some(Skip::Answer)
        } else {
            None
        };
        copy.serving = serving;
        drop(copy);
        match why {
            Some(why) => {
                stats.skip(why);
                self.lane.release(self.slot);
            }
            None => self.lane.dispatch(self.slot),
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Not finished: the serving exchange failed before an answer, or switched protocols.
        if let Some(copy) = self.copy.take() {
            drop(copy);
            self.lane.inner.stats.skip(Skip::Primary);
            self.lane.release(self.slot);
        }
    }
}
