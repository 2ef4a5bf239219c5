//! Deadlines for every step of a connection, on one timer for the connection's whole life.
//!
//! Arming a timer costs a lock in tokio's timer wheel, more than the rest of a small request's
//! bookkeeping; so a step only writes its deadline into a [`Due`] (a clock read and a store, no timer), and
//! the connection's one [`Alarm`] is moved only when it would ring too late. It may ring early
//! (set for an earlier step): it then looks at the deadline now due and sleeps again. A busy
//! connection whose steps have equal timeouts moves its timer about once per timeout, not once
//! per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
}

/// When the step under way must have made progress by: microseconds after `epoch` and the
/// step, in one word (an atomic only so the connection's future stays `Send`; one task owns it,
/// so relaxed loads and stores, plain moves, are enough).
pub(super) struct Due {
    epoch: Instant,
    packed: AtomicU64,
}

const STEPS: [Step; 5] = [
    Step::ClientIdle,
    Step::RequestBody,
    Step::ResponseHead,
    Step::ResponseBody,
    Step::ClientWrite,
];

impl Due {
    pub(super) fn new(step: Step, within: Duration) -> Due {
        let due = Due {
            epoch: Instant::now(),
            packed: AtomicU64::new(0),
        };
        due.set(step, within);
        due
    }

    /// `step` must make progress within `within` from now.
    pub(super) fn set(&self, step: Step, within: Duration) {
        let at = (Instant::now() + within).saturating_duration_since(self.epoch);
        let micros = at.as_micros() as u64;
        self.packed
            .store(micros << 3 | step as u64, Ordering::Relaxed);
    }

    fn get(&self) -> (Instant, Step) {
        let packed = self.packed.load(Ordering::Relaxed);
        let step = STEPS[(packed & 7) as usize % STEPS.len()];
        (self.epoch + Duration::from_micros(packed >> 3), step)
    }
}

/// The connection's timer.
pub(super) struct Alarm(Pin<Box<Sleep>>);

impl Alarm {
    pub(super) fn new(due: &Due) -> Alarm {
        Alarm(Box::pin(tokio::time::sleep_until(due.get().0)))
    }

    /// Resolves with the step whose deadline in `due` has passed. `floor`, the shortest timeout
    /// the guarded work sets, bounds how late a deadline brought forward mid-way is noticed.
    pub(super) async fn rung(&mut self, due: &Due, floor: Duration) -> Step {
        loop {
            let (at, step) = due.get();
            let now = Instant::now();
            if now >= at {
                return step;
            }
            let wake = at.min(now + floor);
            let set = self.0.deadline();
            if set <= now || set > wake {
                self.0.as_mut().reset(wake);
            }
            self.0.as_mut().await;
        }
    }
}

/// Runs `work` until it finishes, or until the deadline in `due` passes (the step that ran out).
pub(super) async fn guard<F: Future>(
    alarm: &mut Alarm,
    due: &Due,
    floor: Duration,
    work: F,
) -> Result<F::Output, Step> {
    tokio::select! {
        biased;
        out = work => Ok(out),
        step = alarm.rung(due, floor) => Err(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_keeps_moving_its_deadline_is_never_cut_and_a_stall_is() {
        let due = Due::new(Step::ClientIdle, Duration::from_secs(60));
        let mut alarm = Alarm::new(&due);
        let step = Duration::from_millis(400);
        // Twelve pieces of 50 ms, the deadline 400 ms after each piece starts: more work than
        // the timeout, but never idle for it.
        let moving = async {
            for _ in 0..12 {
                due.set(Step::ResponseBody, step);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        assert_eq!(guard(&mut alarm, &due, step, moving).await, Ok(()));
        // The timer was armed for the first minute-long deadline: a shorter one still rings.
        due.set(Step::ClientWrite, step);
        let stalled = std::future::pending::<()>();
        assert_eq!(
            guard(&mut alarm, &due, step, stalled).await,
            Err(Step::ClientWrite)
        );
        // And it can be armed again after ringing.
        due.set(Step::ResponseHead, Duration::from_secs(1));
        let quick = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(guard(&mut alarm, &due, step, quick).await, Ok(()));
        let stalled = std::future::pending::<()>();
        assert_eq!(
            guard(&mut alarm, &due, step, stalled).await,
            Err(Step::ResponseHead)
        );
    }
}
