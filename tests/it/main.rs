//! End-to-end tests: the built `ralphd` binary against real git repos in temp
//! dirs and a fake `claude` (tests/fixtures/fake-claude).

mod support;

// The five phases, completion, exit codes, the stream protocol.
mod run;
// Commit, rollback, saved attempts, dirty trees, branches and archives.
mod git_safety;
// The diff gates: file and line limits, protected paths, secrets.
mod gates;
// Git's hooks and commit signing apply to ralphd's commits.
mod commit_rules;
// `init`, `demo`, `status`, bad input.
mod commands;
// Signals, no orphans, one daemon per home, kill -9 recovery.
mod daemon_ops;
// The event stream of a run: state/events.jsonl.
mod events;
// The HTTP server: routes, live events, control, security.
mod http_api;
// The guards through the binary: usage limits, retries, breaker, budget, limiter.
mod guards;
// The scripted fake Messages API the real `claude` CLI talks to.
mod fake_api;
// The real CLI layer: smoke tests of the CLI itself against the fake API.
// Compiled only when RALPHD_REAL_CLAUDE is set at build time (build.rs).
#[cfg(real_claude)]
mod real_cli;
// ralphd end to end with the real CLI against the fake API (issue 6 scenarios).
#[cfg(real_claude)]
mod real_loop;
// The real CLI as an MCP client of `ralphd mcp`.
#[cfg(real_claude)]
mod real_mcp;
// Without RALPHD_REAL_CLAUDE: one test that says the two above did not run.
#[cfg(not(real_claude))]
mod real_cli_skipped;
// The record of a cycle: reason, verdict, checks, report.md, recent outcomes.
mod record;
// `ralphd mcp` through rmcp's client: tools, resources, errors.
mod mcp;
// Disk use of the home: transcript cap, redaction, retention, a full disk.
mod home_disk;
// Getting told: hooks, webhooks, the heartbeat and `stalled`.
mod notify;
// The morning digest: `ralphd report` and state/digests/.
mod report;
// `ralphd task`: the queue in prd.json, imports, edits racing a running daemon.
mod tasks;
// Prometheus metrics: promtool on a scrape, the alert rules, a real Prometheus.
mod metrics;
// The web page in a real browser (chromium + playwright-core).
mod browser;
