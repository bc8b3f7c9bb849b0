//! Requests to the running loop from outside it (the HTTP control routes,
//! `ralphd pause|resume|stop`, MCP): pause before the next phase run, go on,
//! stop after the running cycle, close the circuit breaker. The loop reads
//! them at its own boundaries; a request never interrupts a phase run.

use std::sync::Arc;

use tokio::sync::watch;

/// What has been asked of the loop so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requests {
    /// No new phase run starts while set.
    pub(crate) paused: bool,
    /// The run ends after the running cycle (exit 1, as at max-iterations).
    pub(crate) stop_after_cycle: bool,
    /// Bumped by each breaker reset request; the loop resets its breaker
    /// when this differs from the count it has handled.
    pub(crate) breaker_resets: u64,
}

/// The handle the outside holds; cloning gives another on the same loop.
#[derive(Clone)]
pub(crate) struct Control {
    requests: Arc<watch::Sender<Requests>>,
}

/// What a request did, in words for the one who asked.
pub(crate) type Answer = &'static str;

impl Control {
    /// A control handle and the receiver the loop watches.
    pub(crate) fn new() -> (Control, watch::Receiver<Requests>) {
        let (sender, receiver) = watch::channel(Requests::default());
        (
            Control {
                requests: Arc::new(sender),
            },
            receiver,
        )
    }

    pub(crate) fn pause(&self) -> Answer {
        if self.change(|requests| !std::mem::replace(&mut requests.paused, true)) {
            "pausing: no new phase run starts until resumed"
        } else {
            "already paused"
        }
    }

    pub(crate) fn resume(&self) -> Answer {
        if self.change(|requests| std::mem::replace(&mut requests.paused, false)) {
            "resumed"
        } else {
            "not paused"
        }
    }

    pub(crate) fn stop_after_cycle(&self) -> Answer {
        if self.change(|requests| !std::mem::replace(&mut requests.stop_after_cycle, true)) {
            "stopping after the current cycle"
        } else {
            "a stop is already requested"
        }
    }

    pub(crate) fn reset_breaker(&self) -> Answer {
        self.change(|requests| {
            requests.breaker_resets += 1;
            true
        });
        "circuit breaker reset requested; it closes at the loop's next step"
    }

    /// What has been asked so far.
    pub(crate) fn requests(&self) -> Requests {
        *self.requests.borrow()
    }

    /// Applies `change`; wakes the loop when it says it changed something.
    fn change(&self, change: impl FnOnce(&mut Requests) -> bool) -> bool {
        self.requests.send_if_modified(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_wakes_the_loop_once_and_says_what_it_did() {
        let (control, mut loop_side) = Control::new();
        assert_eq!(
            control.pause(),
            "pausing: no new phase run starts until resumed"
        );
        assert!(loop_side.has_changed().unwrap());
        assert!(loop_side.borrow_and_update().paused);
        assert_eq!(control.pause(), "already paused");
        assert!(!loop_side.has_changed().unwrap());
        assert_eq!(control.resume(), "resumed");
        assert_eq!(control.resume(), "not paused");
        control.stop_after_cycle();
        control.reset_breaker();
        control.reset_breaker();
        let requests = *loop_side.borrow_and_update();
        assert!(!requests.paused);
        assert!(requests.stop_after_cycle);
        assert_eq!(requests.breaker_resets, 2);
    }
}
