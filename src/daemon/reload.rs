//! SIGHUP: ralph.toml is re-read at the next phase boundary; the guards keep
//! what they counted and take the new settings.

use std::time::SystemTime;

use crate::breaker::Breaker;
use crate::limiter::Limiter;

use super::Daemon;

impl Daemon {
    pub(super) fn reload_if_asked(&mut self) {
        if !self.signals.reload.has_changed().unwrap_or(false) {
            return;
        }
        self.signals.reload.borrow_and_update();
        match self.config.reload() {
            Ok(config) => {
                // The guards keep what they counted and take the new settings.
                let now = SystemTime::now();
                let limiter = Limiter::from_snapshot(
                    config.rate_limit.requests_per_minute,
                    config.rate_limit.requests_per_hour,
                    &self.guards.limiter.snapshot(),
                    now,
                );
                let breaker = Breaker::from_snapshot(
                    config.breaker.settings,
                    &self.guards.breaker.snapshot(),
                    now,
                );
                match (limiter, breaker) {
                    (Ok(limiter), Ok(breaker)) => {
                        self.guards.limiter = limiter;
                        self.guards.breaker = breaker;
                    }
                    (limiter, breaker) => {
                        let error = limiter
                            .err()
                            .map(|e| e.to_string())
                            .or(breaker.err().map(|e| e.to_string()));
                        tracing::error!(
                            error = error.as_deref().unwrap_or(""),
                            "ralph.toml not reloaded: keeping the previous configuration"
                        );
                        return;
                    }
                }
                let max_cost_usd = config.budget.max_cost_usd;
                self.config = config;
                self.set_status(|status| status.max_cost_usd = max_cost_usd);
                tracing::info!(
                    "ralph.toml reloaded (SIGHUP): prompts, agent, phases, checks and guards take the new settings from the next phase"
                );
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "ralph.toml not reloaded: keeping the previous configuration")
            }
        }
    }
}
