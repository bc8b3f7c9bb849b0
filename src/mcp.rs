//! `ralphd mcp`: a Model Context Protocol server on stdio (docs/design.md §13),
//! so that Claude Code, Claude Desktop or any MCP client can queue tasks for a
//! home, look at its run and ask the running daemon to pause, resume or stop.
//!
//! It is a thin adapter: tasks are read and written through `tasks::Store`
//! (the code behind `ralphd task`), the status is `status::collect` (the
//! object `ralphd status --json` prints), cycles come from progress.json and
//! `state/cycles/<n>/report.md`, and the control tools go through
//! `control::send`, like `ralphd pause|resume|stop`. Nothing here needs a
//! daemon to run on the home.
//!
//! A failure the model can act on (an unknown task id, no such cycle, no
//! daemon to pause) is a tool result with `isError: true` and a one-line
//! message, which MCP clients hand to the model as it is; rmcp answers
//! arguments that do not fit a tool's JSON schema the same way, naming the
//! field. Reading an unknown resource is a JSON-RPC `resource_not_found`
//! error. stdout carries the protocol only: logs go to stderr.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt as _, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::task::TaskTracker;

use crate::cli::McpConfigFormat;
use crate::control::{self, Action};
use crate::state::{self, HomePaths, OnCorrupt, Progress};
use crate::tasks::{Filter, NewTask, Store, TaskPatch};

/// The server's name in client configurations (`mcp__ralphd__add_task`).
pub(crate) const SERVER_NAME: &str = "ralphd";

/// How long a stopped server waits for the file work of the requests it is
/// answering (edits hold prd.json's lock for milliseconds).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many cycles `recent_cycles` returns when the caller does not say.
const DEFAULT_RECENT_CYCLES: usize = 10;

const STATUS_URI: &str = "ralph://status";
const TASKS_URI: &str = "ralph://tasks";
const REPORT_URI_TEMPLATE: &str = "ralph://cycles/{n}/report";

/// What the server tells a client about itself when it connects.
const INSTRUCTIONS: &str = "ralphd runs the Claude Code CLI overnight on a git repository, \
cycle after cycle, and commits only verified changes. Queue work with add_task (one task per \
change, with acceptance criteria), look at the run with status and recent_cycles, read what a \
cycle did with cycle_report, and pause, resume or stop the daemon with pause, resume and \
request_stop. Open tasks are picked up at the start of the next cycle; a task is marked done \
only when a cycle that worked on it was committed.";

/// Serves the MCP protocol on stdin/stdout for `home` until the client hangs
/// up or stops the server with SIGINT or SIGTERM. Claude Code sends SIGINT
/// when it exits and SIGKILL soon after, so the server then finishes only
/// the file work in hand (an edit of prd.json is never cut short) and leaves
/// at once: a read of stdin that blocks (stdin is a socket, not a pipe) is
/// abandoned, not waited for.
pub(crate) fn serve(home: PathBuf) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let file_work = TaskTracker::new();
    let served = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let server = RalphMcp::new(home, file_work.clone());
        let running = server
            .serve(rmcp::transport::stdio_pipes())
            .await
            .context("the MCP client did not complete the handshake")?;
        let stop = running.cancellation_token();
        tokio::select! {
            reason = running.waiting() => {
                let reason = reason.context("the MCP server task failed")?;
                tracing::debug!(?reason, "MCP client disconnected");
            }
            _ = interrupt.recv() => stop.cancel(),
            _ = terminate.recv() => stop.cancel(),
        }
        file_work.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, file_work.wait())
            .await
            .is_err()
        {
            tracing::warn!("file work still running after {SHUTDOWN_WAIT:?}; leaving it");
        }
        Ok(0)
    });
    runtime.shutdown_background();
    served
}

/// The client configuration that starts `binary mcp --home <home>`, in `format`.
pub(crate) fn client_config(binary: &Path, home: &Path, format: McpConfigFormat) -> Value {
    let entry = json!({
        "type": "stdio",
        "command": binary.display().to_string(),
        "args": ["mcp", "--home", home.display().to_string()],
    });
    match format {
        McpConfigFormat::AddJson => entry,
        McpConfigFormat::McpJson => json!({"mcpServers": {SERVER_NAME: entry}}),
    }
}

/// The server: a home, and the tools generated by `#[tool_router]`.
#[derive(Clone)]
struct RalphMcp {
    home: PathBuf,
    /// The blocking file and git work of the requests, which `serve` waits
    /// for before it exits.
    file_work: TaskTracker,
    tool_router: ToolRouter<RalphMcp>,
}

/// `add_task`'s arguments: those of `ralphd task add`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddTaskArgs {
    /// The change in a few words, imperative, e.g. "Fix the flaky login test".
    title: String,
    /// Where and why: the files, the symptom, what is already known.
    description: Option<String>,
    /// 0 (most urgent) to 999; the daemon takes the open task with the lowest
    /// number first. Default: after every task already queued.
    priority: Option<i64>,
    /// Acceptance criteria: checks that must hold for the task to count as
    /// done, e.g. "cargo test login passes 20 times in a row".
    #[serde(default)]
    criteria: Vec<String>,
    /// An id of your own, e.g. "FIX-12" (default: the next free T-n).
    id: Option<String>,
}

/// Which tasks `list_tasks` returns.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum TaskStatus {
    /// Open and done tasks.
    #[default]
    All,
    /// Tasks not done yet, in the order the daemon takes them.
    Open,
    /// Tasks done.
    Done,
}

/// `list_tasks`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListTasksArgs {
    /// "open", "done" or "all" (default).
    #[serde(default)]
    status: TaskStatus,
}

/// `update_task`'s arguments: those of `ralphd task edit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTaskArgs {
    /// The task's id, e.g. "T-7" (list_tasks shows them).
    id: String,
    /// A new title.
    title: Option<String>,
    /// A new description.
    description: Option<String>,
    /// A new priority, 0 (most urgent) to 999.
    priority: Option<i64>,
    /// New acceptance criteria; they replace all the old ones.
    criteria: Option<Vec<String>>,
}

/// The argument of the tools that act on one task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskIdArgs {
    /// The task's id, e.g. "T-7" (list_tasks shows them).
    id: String,
}

/// `recent_cycles`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RecentCyclesArgs {
    /// How many cycles to return, newest first (default 10).
    limit: Option<u32>,
}

/// `cycle_report`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CycleReportArgs {
    /// The cycle number, as `status` and `recent_cycles` show it (`cycle`).
    cycle: u64,
}

#[tool_router]
impl RalphMcp {
    fn new(home: PathBuf, file_work: TaskTracker) -> RalphMcp {
        RalphMcp {
            home,
            file_work,
            tool_router: RalphMcp::tool_router(),
        }
    }

    #[tool(
        description = "Queue a task for the ralphd daemon (a story of state/prd.json). It is picked up at the start of the daemon's next cycle, open tasks by priority, and marked done only when a cycle that worked on it was committed. Queue one task per change a single cycle can make and verify, with acceptance criteria that a check can confirm. Returns the task with its id (e.g. T-7)."
    )]
    async fn add_task(&self, Parameters(args): Parameters<AddTaskArgs>) -> CallToolResult {
        let new = NewTask {
            title: args.title,
            description: args.description,
            priority: args.priority,
            criteria: args.criteria,
            id: args.id,
        };
        self.with_store(move |store| Ok(json!(store.add(new)?)))
            .await
    }

    #[tool(
        description = "The tasks of state/prd.json: open ones in the order the daemon takes them (lowest priority number first), then done ones. Each has id, title, description, acceptanceCriteria, priority, passes (true once done) and notes."
    )]
    async fn list_tasks(&self, Parameters(args): Parameters<ListTasksArgs>) -> CallToolResult {
        let filter = match args.status {
            TaskStatus::All => Filter::All,
            TaskStatus::Open => Filter::Open,
            TaskStatus::Done => Filter::Done,
        };
        self.with_store(move |store| Ok(json!(store.list(filter)?)))
            .await
    }

    #[tool(
        description = "Change the title, description, priority or acceptance criteria of a task by id; fields left out stay as they are (criteria given replace all old ones). Returns the task as saved."
    )]
    async fn update_task(&self, Parameters(args): Parameters<UpdateTaskArgs>) -> CallToolResult {
        let patch = TaskPatch {
            title: args.title,
            description: args.description,
            priority: args.priority,
            criteria: args.criteria,
        };
        self.with_store(move |store| Ok(json!(store.update(&args.id, patch)?)))
            .await
    }

    #[tool(
        description = "Mark a task done by hand, so the daemon no longer works on it (the daemon itself marks a task done when a cycle for it was committed). Returns the task as saved."
    )]
    async fn complete_task(&self, Parameters(args): Parameters<TaskIdArgs>) -> CallToolResult {
        self.with_store(move |store| Ok(json!(store.set_done(&args.id, true)?)))
            .await
    }

    #[tool(
        description = "What the ralphd daemon of this home is doing: whether it runs, its current cycle and phase, any wait (usage limit, rate limit), the circuit breaker, money spent against the budget, the last cycles with their outcome and reason, and saved attempts. The same JSON object as `ralphd status --json`. Works whether or not a daemon runs."
    )]
    async fn status(&self) -> CallToolResult {
        let home = self.home.clone();
        answer(self.blocking(move || status_json(&home)).await)
    }

    #[tool(
        description = "The records of the most recent cycles from progress.json, newest first: cycle number, outcome (committed, rolled_back, no_changes, failed, complete, interrupted), the one-line reason, the verdict, checks, cost, commit or saved attempt, title. Use cycle_report for a cycle's full page."
    )]
    async fn recent_cycles(
        &self,
        Parameters(args): Parameters<RecentCyclesArgs>,
    ) -> CallToolResult {
        let home = self.home.clone();
        let limit = args
            .limit
            .map_or(DEFAULT_RECENT_CYCLES, |limit| limit as usize);
        answer(self.blocking(move || recent_cycles(&home, limit)).await)
    }

    #[tool(
        description = "The Markdown report of one cycle (state/cycles/<n>/report.md): what it tried, the verdict and who decided it, the checks, the diff size, the commit or the saved attempt, and the report agent's notes."
    )]
    async fn cycle_report(&self, Parameters(args): Parameters<CycleReportArgs>) -> CallToolResult {
        let home = self.home.clone();
        match self.blocking(move || cycle_report(&home, args.cycle)).await {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(error) => tool_error(&error),
        }
    }

    #[tool(
        description = "Ask the running ralphd daemon to pause: the phase it is running finishes, then no new phase starts until resume (waiting costs nothing). Fails when no daemon runs on this home."
    )]
    async fn pause(&self) -> CallToolResult {
        self.control(Action::Pause).await
    }

    #[tool(
        description = "Ask a paused ralphd daemon to go on with its cycles. Fails when no daemon runs on this home."
    )]
    async fn resume(&self) -> CallToolResult {
        self.control(Action::Resume).await
    }

    #[tool(
        description = "Ask the running ralphd daemon to stop after the cycle it is running: that cycle ends as usual (committed, or its work saved as an attempt) and the daemon exits. Fails when no daemon runs on this home."
    )]
    async fn request_stop(&self) -> CallToolResult {
        self.control(Action::Stop).await
    }
}

impl RalphMcp {
    /// Runs blocking file and git work off the protocol's task, tracked so
    /// that a stopping server finishes it.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.file_work
            .spawn_blocking(work)
            .await
            .map_err(|error| anyhow!("the request's worker failed: {error}"))?
    }

    /// Runs `work` on the home's task store and answers with its JSON.
    async fn with_store(
        &self,
        work: impl FnOnce(&Store) -> anyhow::Result<Value> + Send + 'static,
    ) -> CallToolResult {
        let home = self.home.clone();
        answer(self.blocking(move || work(&Store::open(&home)?)).await)
    }

    /// Asks the daemon running on the home, through its HTTP control routes.
    async fn control(&self, action: Action) -> CallToolResult {
        match control::send(&self.home, action).await {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(error) => tool_error(&error),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for RalphMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(STATUS_URI, "status")
                .with_description("The daemon's status, as `ralphd status --json` prints it")
                .with_mime_type("application/json"),
            Resource::new(TASKS_URI, "tasks")
                .with_description("Every task of state/prd.json, open and done")
                .with_mime_type("application/json"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(REPORT_URI_TEMPLATE, "cycle-report")
                .with_description("The Markdown report of cycle n (state/cycles/<n>/report.md)")
                .with_mime_type("text/markdown"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let home = self.home.clone();
        let (text, mime) = match uri.as_str() {
            STATUS_URI => (
                self.blocking(move || status_json(&home))
                    .await
                    .map(|value| pretty(&value)),
                "application/json",
            ),
            TASKS_URI => (
                self.blocking(move || tasks_json(&home))
                    .await
                    .map(|value| pretty(&value)),
                "application/json",
            ),
            other => {
                let Some(cycle) = report_uri_cycle(other) else {
                    return Err(ErrorData::resource_not_found(
                        format!(
                            "no resource {other}: ralphd serves {STATUS_URI}, {TASKS_URI} and {REPORT_URI_TEMPLATE}"
                        ),
                        None,
                    ));
                };
                (
                    self.blocking(move || cycle_report(&home, cycle)).await,
                    "text/markdown",
                )
            }
        };
        match text {
            Ok(text) => Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, uri).with_mime_type(mime),
            ])
            .into()),
            Err(error) => Err(ErrorData::resource_not_found(format!("{error:#}"), None)),
        }
    }
}

/// The cycle number of `ralph://cycles/<n>/report`, or `None` for another URI.
fn report_uri_cycle(uri: &str) -> Option<u64> {
    let number = uri
        .strip_prefix("ralph://cycles/")?
        .strip_suffix("/report")?;
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// A JSON answer as the tool's text, or the error as a tool error.
fn answer(result: anyhow::Result<Value>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::success(vec![ContentBlock::text(pretty(&value))]),
        Err(error) => tool_error(&error),
    }
}

/// A tool result with `isError: true` and the error on one line, which the
/// client shows to the model as it is.
fn tool_error(error: &anyhow::Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("{error:#}"))])
}

fn pretty(value: &Value) -> String {
    // A Value always serialises.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// The object `ralphd status --json` prints.
fn status_json(home: &Path) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(crate::status::collect(home)?)?)
}

/// Every task of the home, as `ralphd task list --json` prints them.
fn tasks_json(home: &Path) -> anyhow::Result<Value> {
    Ok(json!(Store::open(home)?.list(Filter::All)?))
}

/// The last `limit` records of progress.json, newest first.
fn recent_cycles(home: &Path, limit: usize) -> anyhow::Result<Value> {
    let paths = HomePaths::new(home);
    let progress: Option<Progress> = state::load_json(&paths.progress(), OnCorrupt::Refuse, "")?;
    let records: Vec<&state::CycleRecord> = progress
        .as_ref()
        .map(|progress| progress.cycles.iter().rev().take(limit).collect())
        .unwrap_or_default();
    Ok(serde_json::to_value(records)?)
}

/// The text of `state/cycles/<cycle>/report.md` (or of its `.gz`, once
/// retention compressed it); an error saying why there is none.
fn cycle_report(home: &Path, cycle: u64) -> anyhow::Result<String> {
    let paths = HomePaths::new(home);
    let dir = paths.cycle_dir(cycle);
    let plain = dir.join("report.md");
    match std::fs::read(&plain) {
        Ok(bytes) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow!("cannot read {}: {error}", plain.display()));
        }
        Err(_) => {}
    }
    let compressed = dir.join("report.md.gz");
    match std::fs::File::open(&compressed) {
        Ok(file) => {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", compressed.display()))?;
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow!("cannot read {}: {error}", compressed.display()));
        }
        Err(_) => {}
    }
    let progress: Option<Progress> = state::load_json(&paths.progress(), OnCorrupt::Refuse, "")?;
    let recorded = progress
        .as_ref()
        .is_some_and(|progress| progress.cycles.iter().any(|record| record.cycle == cycle));
    let last = progress
        .as_ref()
        .and_then(|progress| progress.cycles.last())
        .map(|record| record.cycle);
    Err(match (recorded, last) {
        (true, _) => anyhow!(
            "the report of cycle {cycle} was deleted with its directory ([state] keep_cycles); \
             its record is still in recent_cycles"
        ),
        (false, None) => anyhow!(
            "no cycle {cycle}: no cycle has ended yet in {}",
            home.display()
        ),
        (false, Some(last)) => anyhow!(
            "no cycle {cycle}: the last cycle that ended in {} is {last}",
            home.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_uris_name_a_cycle_number_and_nothing_else() {
        assert_eq!(report_uri_cycle("ralph://cycles/7/report"), Some(7));
        assert_eq!(report_uri_cycle("ralph://cycles/007/report"), Some(7));
        for other in [
            "ralph://cycles//report",
            "ralph://cycles/-1/report",
            "ralph://cycles/1/report.md",
            "ralph://cycles/x/report",
            "ralph://status",
            "ralph://cycles/99999999999999999999999/report",
        ] {
            assert_eq!(report_uri_cycle(other), None, "{other}");
        }
    }

    #[test]
    fn the_client_config_starts_this_binary_on_the_home() {
        let binary = Path::new("/opt/bin/ralphd");
        let home = Path::new("/h/app");
        let entry = json!({"type": "stdio", "command": "/opt/bin/ralphd",
            "args": ["mcp", "--home", "/h/app"]});
        assert_eq!(client_config(binary, home, McpConfigFormat::AddJson), entry);
        assert_eq!(
            client_config(binary, home, McpConfigFormat::McpJson),
            json!({"mcpServers": {"ralphd": entry}})
        );
    }
}
