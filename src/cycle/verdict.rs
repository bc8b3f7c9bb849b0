//! How a cycle's end is decided: the verdict rule (checks and the backtest
//! agent, and who decided) and, from what happened, the one outcome and the
//! one-line reason the record and the human page carry.

use super::*;

impl<E: PhaseExecutor> CycleRun<'_, E> {
    /// How the cycle ended, from what happened: the one place its outcome
    /// is decided.
    pub(super) fn end(&self, cut_short: Option<CutShort>) -> CycleEnd {
        let committed = self.kept == Some(Outcome::Committed);
        match cut_short {
            Some(CutShort::Stopped(Stop::Cancelled)) => CycleEnd::Interrupted { committed },
            Some(CutShort::Stopped(Stop::Halt(reason))) => CycleEnd::Halted { reason, committed },
            Some(CutShort::Trespassed) if committed => CycleEnd::Ran(Outcome::Committed),
            Some(CutShort::Trespassed) => CycleEnd::Ran(Outcome::Failed),
            Some(CutShort::Failed) => CycleEnd::Ran(self.kept.unwrap_or(Outcome::Failed)),
            None => {
                let outcome = match self.edit {
                    Edit::Unchanged => Some(Outcome::NoChanges),
                    _ => self.kept,
                };
                if self.completion {
                    CycleEnd::Complete(outcome.unwrap_or(Outcome::Complete))
                } else {
                    CycleEnd::Ran(outcome.unwrap_or(Outcome::Failed))
                }
            }
        }
    }

    /// The cycle's reason (docs/design.md §3.4): one line saying why it ended as it
    /// did — the verdict's reason, `code-edit changed nothing`, the failure,
    /// the interruption or the halt.
    pub(super) fn reason(&self, end: &CycleEnd) -> String {
        let running = self.running.unwrap_or("the start of the cycle");
        let verdict = self
            .report
            .verdict
            .as_ref()
            .map(|verdict| verdict.reason.clone());
        let error = self.report.error.clone();
        let mut reason = match end {
            CycleEnd::Interrupted { committed: false } => {
                let signal = self.executor.stop_signal().unwrap_or("a stop signal");
                format!("interrupted by {signal} during {running}")
            }
            CycleEnd::Halted {
                reason,
                committed: false,
            } => format!("halted during {running}: {reason}"),
            _ => match end.outcome() {
                Outcome::NoChanges if matches!(self.edit, Edit::Unchanged) => {
                    "code-edit changed nothing".to_owned()
                }
                Outcome::NoChanges => "the verified change touches only files with the user's own uncommitted changes; nothing was committed".to_owned(),
                Outcome::Committed | Outcome::RolledBack => verdict
                    .or(error)
                    .unwrap_or_else(|| "verified".to_owned()),
                Outcome::Complete => String::new(),
                Outcome::Failed | Outcome::Interrupted => {
                    error.unwrap_or_else(|| format!("{running} failed"))
                }
            },
        };
        if let Some(phase) = self.completed_in {
            let completion = format!("the agent declared completion in {phase}");
            reason = if reason.is_empty() {
                completion
            } else {
                format!("{reason}; {completion}")
            };
        }
        reason
    }
}

/// The verdict rule of docs/design.md §6: all checks pass (when configured) and the
/// agent's verdict is not `fail`; with no checks, the agent's `pass` is
/// required. Says who decided: the checks when one failed (whatever the agent
/// said) or when all passed and the agent did not say fail; the agent when its
/// fail or (without checks) its word decided.
pub(crate) fn decide(
    backtest_text: &str,
    checks: &[CheckResult],
    checks_configured: bool,
) -> Verdict {
    let agent = blocks::parse_backtest_verdict(backtest_text);
    let agent_verdict = agent.as_ref().ok().map(|verdict| match verdict.verdict {
        blocks::Verdict::Pass => AgentVerdict::Pass,
        blocks::Verdict::Fail => AgentVerdict::Fail,
    });
    let verdict = |pass: bool, decided_by: DecidedBy, reason: String| Verdict {
        pass,
        decided_by,
        agent_verdict,
        reason,
    };
    let failed_checks: Vec<String> = checks
        .iter()
        .filter(|check| !check.passed())
        .map(|check| {
            let ending = crate::record::CheckRecord::from_result(check).ending();
            format!("{} {ending}", check.command)
        })
        .collect();
    if !failed_checks.is_empty() {
        let overruled = if agent_verdict == Some(AgentVerdict::Pass) {
            " (the backtest agent said pass)"
        } else {
            ""
        };
        return verdict(
            false,
            DecidedBy::Checks,
            format!("checks failed: {}{overruled}", failed_checks.join(", ")),
        );
    }
    match agent {
        Ok(said) if said.verdict == blocks::Verdict::Fail => verdict(
            false,
            DecidedBy::Agent,
            format!("the backtest agent's verdict: fail — {}", said.reason),
        ),
        Ok(said) if checks_configured => verdict(
            true,
            DecidedBy::Checks,
            format!(
                "{}; the backtest agent's verdict: pass — {}",
                all_passed(checks.len()),
                said.reason
            ),
        ),
        Ok(said) if said.verdict == blocks::Verdict::Pass => verdict(
            true,
            DecidedBy::Agent,
            format!("the backtest agent's verdict: pass — {}", said.reason),
        ),
        Ok(said) => verdict(
            false,
            DecidedBy::Agent,
            format!("no pass from the backtest agent: {}", said.reason),
        ),
        Err(error) if checks_configured => {
            tracing::warn!(%error, "backtest verdict block missing or invalid; the checks decide");
            verdict(
                true,
                DecidedBy::Checks,
                format!(
                    "{} (no valid verdict block from the backtest agent)",
                    all_passed(checks.len())
                ),
            )
        }
        Err(error) => {
            tracing::warn!(%error, "backtest verdict block missing or invalid");
            verdict(
                false,
                DecidedBy::Agent,
                format!(
                    "no checks are configured and the backtest agent gave no valid pass ({error})"
                ),
            )
        }
    }
}

/// `the check passed` / `all 3 checks passed`.
fn all_passed(checks: usize) -> String {
    if checks == 1 {
        "the check passed".to_owned()
    } else {
        format!("all {checks} checks passed")
    }
}
