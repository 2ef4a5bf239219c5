//! Deadlines for every step of a connection, on one timer for the connection's whole life.
//!
//! Arming a timer costs a lock in tokio's timer wheel, more than the rest of a small request's
//! bookkeeping; so a step only writes what it may wait into a [`Due`] (no timer, no clock), and
//! the connection's one [`Alarm`] is moved only when it would ring too late. It may ring early
//! (set for an earlier step): it then looks at the deadline now due and sleeps again. A busy
//! connection whose steps have equal timeouts moves its timer about once per timeout, not once
//! per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::task::Poll;

use tokio::time::{Instant, Sleep};

/// A step of an exchange that may wait on the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
    /// Between requests, or inside a request head.
    ClientIdle = 0,
    /// Inside a request body, waiting for the client.
    RequestBody,
    /// Writing the request to the upstream, or waiting for its response head.
    ResponseHead,
    /// Inside a response body, waiting for the upstream.
    ResponseBody,
    /// Writing to a client that does not read.
    ClientWrite,
    /// Both sides of an upgraded connection silent.
    Tunnel,
}

/// The step under way and how long it may wait, stamped with a generation that every
/// [`Due::set`] bumps: setting it is two plain moves, no clock read. The [`Alarm`] turns it into
/// a deadline only when it is polled, that is when the guarded work has to wait: a step that
/// never waits never reads the clock. (An atomic only so the connection's future stays
/// `Send`; one task owns it, so relaxed loads and stores are enough.)
pub(super) struct Due(AtomicU64);

const STEPS: [Step; 6] = [
    Step::ClientIdle,
    Step::RequestBody,
    Step::ResponseHead,
    Step::ResponseBody,
    Step::ClientWrite,
    Step::Tunnel,
];

impl Due {
    pub(super) fn new(step: Step, within: Duration) -> Due {
        let due = Due(AtomicU64::new(0));
        due.set(step, within);
        due
    }

    /// `step` must make progress within `within` from now (whole milliseconds, at least one;
    /// timeouts are validated to at most 24 h, well inside the 29 bits kept).
    pub(super) fn set(&self, step: Step, within: Duration) {
        let ms = (within.as_millis() as u64).clamp(1, (1 << 29) - 1);
        let generation = (self.0.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        self.0
            .store(generation << 32 | ms << 3 | step as u64, Ordering::Relaxed);
    }

    /// The generation, the step, and how long it may wait.
    fn get(&self) -> (u32, Step, Duration) {
        let packed = self.0.load(Ordering::Relaxed);
        let step = STEPS[(packed & 7) as usize % STEPS.len()];
        let ms = (packed >> 3) & ((1 << 29) - 1);
        ((packed >> 32) as u32, step, Duration::from_millis(ms))
    }
}

/// The connection's timer.
pub(super) struct Alarm(Pin<Box<Sleep>>);

impl Alarm {
    pub(super) fn new(first: Duration) -> Alarm {
        Alarm(Box::pin(tokio::time::sleep(first)))
    }

    /// Resolves with the step in `due` once it has waited longer than it may. Each poll looks
    /// at `due`: a new generation (progress, or a new step) is a new deadline, counted from
    /// that poll; the timer is moved only when it would ring after the deadline.
    pub(super) fn rung<'a>(&'a mut self, due: &'a Due) -> impl Future<Output = Step> + 'a {
        let mut seen: Option<(u32, Instant)> = None;
        std::future::poll_fn(move |cx| {
            let (generation, step, within) = due.get();
            let at = match seen {
                Some((g, at)) if g == generation => at,
                _ => {
                    let at = Instant::now() + within;
                    seen = Some((generation, at));
                    if self.0.deadline() > at {
                        self.0.as_mut().reset(at);
                    }
                    at
                }
            };
            loop {
                match self.0.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Rang early (armed for an earlier step's deadline): sleep again.
                    Poll::Ready(()) if Instant::now() < at => self.0.as_mut().reset(at),
                    Poll::Ready(()) => return Poll::Ready(step),
                }
            }
        })
    }
}

/// Runs `work` until it finishes, or until the step in `due` has waited too long (that step).
pub(super) async fn guard<F: Future>(
    alarm: &mut Alarm,
    due: &Due,
    work: F,
) -> Result<F::Output, Step> {
    tokio::select! {
        biased;
        out = work => Ok(out),
        step = alarm.rung(due) => Err(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_keeps_moving_its_deadline_is_never_cut_and_a_stall_is() {
        let due = Due::new(Step::ClientIdle, Duration::from_secs(60));
        let mut alarm = Alarm::new(Duration::from_secs(60));
        let step = Duration::from_millis(400);
        // Twelve pieces of 50 ms, the deadline 400 ms after each piece starts: more work than
        // the timeout, but never idle for it.
        let moving = async {
            for _ in 0..12 {
                due.set(Step::ResponseBody, step);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        assert_eq!(guard(&mut alarm, &due, moving).await, Ok(()));
        // The timer was armed for the first minute-long deadline: a shorter one still rings.
        due.set(Step::ClientWrite, step);
        let stalled = std::future::pending::<()>();
        assert_eq!(
            guard(&mut alarm, &due, stalled).await,
            Err(Step::ClientWrite)
        );
        // And it can be armed again after ringing.
        due.set(Step::ResponseHead, Duration::from_secs(1));
        let quick = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(guard(&mut alarm, &due, quick).await, Ok(()));
        let stalled = std::future::pending::<()>();
        assert_eq!(
            guard(&mut alarm, &due, stalled).await,
            Err(Step::ResponseHead)
        );
    }

    #[tokio::test]
    async fn a_deadline_brought_forward_while_waiting_rings_at_the_new_one() {
        let due = Due::new(Step::ResponseBody, Duration::from_secs(3600));
        let mut alarm = Alarm::new(Duration::from_secs(3600));
        // The work waits under an hour's deadline, then moves to a step of 50 ms and stalls.
        let work = async {
            tokio::task::yield_now().await;
            due.set(Step::ClientWrite, Duration::from_millis(50));
            std::future::pending::<()>().await
        };
        let rang =
            tokio::time::timeout(Duration::from_secs(30), guard(&mut alarm, &due, work)).await;
        assert_eq!(rang, Ok(Err(Step::ClientWrite)));
    }

    #[test]
    fn due_keeps_the_step_and_whole_milliseconds_and_bumps_its_generation() {
        let due = Due::new(Step::RequestBody, Duration::from_millis(1500));
        let (g1, step, within) = due.get();
        assert_eq!(
            (step, within),
            (Step::RequestBody, Duration::from_millis(1500))
        );
        due.set(Step::ClientWrite, Duration::from_secs(24 * 3600));
        let (g2, step, within) = due.get();
        assert_eq!(
            (step, within),
            (Step::ClientWrite, Duration::from_secs(24 * 3600))
        );
        assert_ne!(g1, g2);
        due.set(Step::ClientIdle, Duration::from_micros(10));
        assert_eq!(
            due.get().2,
            Duration::from_millis(1),
            "at least a millisecond"
        );
    }
}
