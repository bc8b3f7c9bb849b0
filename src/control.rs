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

/// A request `ralphd pause|resume|stop`, or an MCP tool, sends to the
/// running daemon of a home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Pause,
    Resume,
    /// Stop after the running cycle.
    Stop,
    ResetBreaker,
}

impl Action {
    /// The control route of the action.
    fn route(self) -> &'static str {
        match self {
            Action::Pause => "api/pause",
            Action::Resume => "api/resume",
            Action::Stop => "api/stop",
            Action::ResetBreaker => "api/breaker/reset",
        }
    }
}

/// Sends `action` to the daemon running on `home` through its HTTP server
/// (the URL and CSRF token of `state/http.json`) and returns its answer. No
/// daemon on the home, or one running without its server, is an error
/// saying so (exit 2).
pub(crate) async fn send(home: &std::path::Path, action: Action) -> anyhow::Result<String> {
    use anyhow::Context;

    let running = running_daemon(home)?;
    let file = match crate::state::load_json::<crate::http::HttpFile>(
        &home.join("state/http.json"),
        crate::state::OnCorrupt::Refuse,
        "",
    )? {
        Some(file) if file.pid == running => file,
        _ => anyhow::bail!(
            "the daemon on {} (pid {running}) runs without its HTTP server ([http] listen = \"\"), \
             so it cannot be asked; stop it with `ralphd stop --now` or restart it with the server on",
            home.display()
        ),
    };
    let mut request = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(format!("{}{}", file.url, action.route()))
        .header("X-CSRF-Token", &file.csrf_token);
    if let Some(token_file) = &file.token_file {
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read [http] token_file {}", token_file.display()))?;
        request = request.bearer_auth(token.trim());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {}", file.url))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("the daemon at {} gave no answer", file.url))?;
    if !status.is_success() {
        anyhow::bail!(
            "the daemon refused ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(body["answer"].as_str().unwrap_or("done").to_owned())
}

/// The pid of the daemon that holds `home`'s lock; an error saying so when
/// none does.
pub(crate) fn running_daemon(home: &std::path::Path) -> anyhow::Result<u32> {
    let paths = crate::state::HomePaths::new(home);
    let none = || {
        anyhow::anyhow!(
            "no ralphd runs on the home {} (start one with `ralphd run --home {}`)",
            home.display(),
            home.display()
        )
    };
    if !crate::state::InstanceLock::is_held(&paths) {
        anyhow::bail!(none());
    }
    let pid = std::fs::read_to_string(paths.lock())
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .ok_or_else(none)?;
    Ok(pid)
}

/// `ralphd stop --now`: SIGTERM to the running daemon of `home` (it stops
/// the current phase and records the cycle as interrupted, exit 130).
pub(crate) fn terminate(home: &std::path::Path) -> anyhow::Result<String> {
    let pid = running_daemon(home)?;
    let target = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(target, libc::SIGTERM) } != 0 {
        let error = std::io::Error::last_os_error();
        anyhow::bail!("cannot send SIGTERM to ralphd (pid {pid}): {error}");
    }
    Ok(format!(
        "sent SIGTERM to ralphd (pid {pid}): it stops the running phase, records the cycle as \
         interrupted and exits"
    ))
}
