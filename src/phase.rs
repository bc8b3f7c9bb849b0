//! The five phases of a cycle, in order, with their names and built-in prompt
//! templates. Data only: no I/O, no knowledge of the agent or of git.

use std::fmt;

/// One step of a cycle. `ALL` lists them in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Scan,
    Idea,
    CodeEdit,
    Backtest,
    Report,
}

impl Phase {
    /// Every phase, in the order a cycle runs them.
    pub const ALL: [Phase; 5] = [
        Phase::Scan,
        Phase::Idea,
        Phase::CodeEdit,
        Phase::Backtest,
        Phase::Report,
    ];

    /// The name used in file names, `RALPH_PHASE`, config sections and logs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Scan => "scan",
            Phase::Idea => "idea",
            Phase::CodeEdit => "code-edit",
            Phase::Backtest => "backtest",
            Phase::Report => "report",
        }
    }

    /// The file in `cycles/<n>/` that holds the phase's final text:
    /// `<phase>.md`, but `report-agent.md` for the report, whose `report.md`
    /// is the cycle's human page.
    pub fn output_file_name(self) -> String {
        match self {
            Phase::Report => "report-agent.md".to_owned(),
            phase => format!("{}.md", phase.name()),
        }
    }

    /// Parses a phase name as written by [`Phase::name`].
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|phase| phase.name() == name)
    }

    /// The built-in prompt template, embedded from `prompts/<phase>.md`.
    pub fn builtin_template(self) -> &'static str {
        match self {
            Phase::Scan => include_str!("../prompts/scan.md"),
            Phase::Idea => include_str!("../prompts/idea.md"),
            Phase::CodeEdit => include_str!("../prompts/code-edit.md"),
            Phase::Backtest => include_str!("../prompts/backtest.md"),
            Phase::Report => include_str!("../prompts/report.md"),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn names_round_trip_in_order() {
        let names: Vec<&str> = Phase::ALL.iter().map(|phase| phase.name()).collect();
        assert_eq!(names, ["scan", "idea", "code-edit", "backtest", "report"]);
        for phase in Phase::ALL {
            assert_eq!(Phase::from_name(phase.name()), Some(phase));
        }
        assert_eq!(Phase::from_name("plan"), None);
    }
}
