//! `ralphd mcp` through rmcp's own client over the child's stdio: the
//! handshake, the tools and resources a client sees, each tool and resource
//! against a home with cycles, and the errors a model gets for bad input.

use std::path::Path;
use std::process::Stdio;

use rmcp::ServiceExt as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ErrorCode, ReadResourceRequestParams, ResourceContents,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use std::time::Duration;

use crate::support::{World, dashboard_addr, poll_until, read_json};

/// The tools of docs/design.md §13, in the order a client lists them.
const TOOLS: [&str; 10] = [
    "add_task",
    "complete_task",
    "cycle_report",
    "list_tasks",
    "pause",
    "recent_cycles",
    "request_stop",
    "resume",
    "status",
    "update_task",
];

type Client = RunningService<RoleClient, ()>;

/// Starts `ralphd mcp --home <home>` and completes the MCP handshake with it.
async fn connect(home: &Path) -> Client {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ralphd"));
    command
        .arg("mcp")
        .arg("--home")
        .arg(home)
        .env_remove("RUST_LOG")
        .env_remove("RALPH_HOME");
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ralphd mcp starts");
    ().serve(transport).await.expect("MCP handshake")
}

/// Calls `tool` with `arguments` (a JSON object).
async fn call(
    client: &Client,
    tool: &'static str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
}

/// The text of a tool result's content.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a successful tool call, parsed as JSON.
async fn call_json(client: &Client, tool: &'static str, arguments: Value) -> Value {
    let result = call(client, tool, arguments).await.expect(tool);
    assert_ne!(result.is_error, Some(true), "{tool}: {}", text_of(&result));
    serde_json::from_str(&text_of(&result)).unwrap_or_else(|error| {
        panic!("{tool} did not answer JSON ({error}): {}", text_of(&result))
    })
}

/// The message of a tool call that failed as a tool (`isError: true`).
async fn call_error(client: &Client, tool: &'static str, arguments: Value) -> String {
    let result = call(client, tool, arguments).await.expect(tool);
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} should fail: {}",
        text_of(&result)
    );
    text_of(&result)
}

/// The message and code of a call refused as a JSON-RPC error.
fn rpc_error<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> (ErrorCode, String) {
    match result {
        Err(ServiceError::McpError(error)) => (error.code, error.message.into_owned()),
        other => panic!("expected an MCP error, got {other:?}"),
    }
}

/// The text of resource `uri`.
async fn read(client: &Client, uri: &str) -> Result<String, ServiceError> {
    let result = client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await?;
    Ok(result
        .contents
        .into_iter()
        .map(|contents| match contents {
            ResourceContents::TextResourceContents { text, .. } => text,
            other => panic!("expected text, got {other:?}"),
        })
        .collect())
}

/// Three cycles in progress.json; cycle 1's report is compressed, cycle 2's
/// directory was deleted by retention, cycle 3's report is plain.
fn home_with_cycles(world: &World) {
    let record = |cycle: u64, outcome: &str| {
        json!({"cycle": cycle, "cycle_id": format!("cycle_{cycle}"),
            "started_at": "2026-01-20T10:00:00Z", "ended_at": "2026-01-20T10:01:00Z",
            "duration_seconds": 60.0, "outcome": outcome, "success": outcome == "committed",
            "cost_usd": 0.5, "title": format!("idea {cycle}"),
            "reason": format!("reason {cycle}")})
    };
    let progress = json!({"version": 1, "branch": "main", "start_time": "2026-01-20T10:00:00Z",
        "cycles": [record(1, "committed"), record(2, "rolled_back"), record(3, "no_changes")],
        "total_cost_usd": 1.5});
    let state = world.home.join("state");
    std::fs::create_dir_all(state.join("cycles/1")).unwrap();
    std::fs::create_dir_all(state.join("cycles/3")).unwrap();
    std::fs::write(state.join("progress.json"), progress.to_string()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(state.join("cycles/1/report.md.gz")).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, b"# Cycle 1\n\ncompressed page\n").unwrap();
    gz.finish().unwrap();
    std::fs::write(
        state.join("cycles/3/report.md"),
        "# Cycle 3\n\nplain page\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_lists_its_tools_with_schemas_and_its_resources() {
    let world = World::without_repo();
    let client = connect(&world.home).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|server| server.name.as_str()),
        Some("ralphd")
    );
    assert!(
        info.instructions
            .as_deref()
            .unwrap_or("")
            .contains("add_task")
    );

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        let description = tool.description.as_deref().unwrap_or("");
        assert!(description.len() > 40, "{}: {description:?}", tool.name);
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
    }
    let schema = |name: &str| {
        let tool = tools.iter().find(|tool| tool.name == name).unwrap();
        Value::Object((*tool.input_schema).clone())
    };
    assert_eq!(schema("cycle_report")["required"], json!(["cycle"]));
    assert_eq!(schema("add_task")["required"], json!(["title"]));
    for field in ["title", "description", "priority", "criteria", "id"] {
        assert!(
            schema("add_task")["properties"][field]["description"].is_string(),
            "add_task.{field}: {}",
            schema("add_task")
        );
    }
    for tool in ["update_task", "complete_task"] {
        assert_eq!(schema(tool)["required"], json!(["id"]), "{tool}");
    }
    assert!(
        schema("recent_cycles")["properties"]["limit"]["description"]
            .as_str()
            .is_some_and(|text| text.contains("newest first"))
    );

    let resources = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["ralph://status", "ralph://tasks"]);
    let templates = client.list_all_resource_templates().await.unwrap();
    let templates: Vec<&str> = templates.iter().map(|t| t.uri_template.as_str()).collect();
    assert_eq!(templates, ["ralph://cycles/{n}/report"]);
    client.cancel().await.unwrap();
}

/// `ralphd task list --json` on the world's home.
fn cli_tasks(world: &World) -> Value {
    let listed = world
        .ralphd()
        .args(["task", "list", "--json", "--home"])
        .arg(&world.home)
        .output();
    listed.assert_code(0);
    serde_json::from_str(&listed.stdout).unwrap()
}

/// MCP and the command line edit the same store: what one writes, the other
/// shows, field for field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_tools_and_the_command_line_edit_the_same_tasks() {
    let world = World::without_repo();
    let client = connect(&world.home).await;
    let first = call_json(
        &client,
        "add_task",
        json!({"title": "Fix the flaky login test", "description": "fails one run in ten",
            "priority": 2, "criteria": ["cargo test login passes 20 times"]}),
    )
    .await;
    assert_eq!(first["id"], "T-1");
    assert_eq!(
        first["acceptanceCriteria"],
        json!(["cargo test login passes 20 times"])
    );
    assert_eq!(first["passes"], false);
    let second = call_json(&client, "add_task", json!({"title": "Speed up the build"})).await;
    assert_eq!(second["id"], "T-2");
    world
        .ralphd()
        .args(["task", "add", "Added on the command line", "--home"])
        .arg(&world.home)
        .output()
        .assert_code(0);

    let all = call_json(&client, "list_tasks", json!({})).await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["T-1", "T-2", "T-3"]);
    assert_eq!(all[0], first);
    assert_eq!(all, cli_tasks(&world));

    let updated = call_json(
        &client,
        "update_task",
        json!({"id": "T-2", "priority": 0, "criteria": ["cargo build under 60 s"]}),
    )
    .await;
    assert_eq!(updated["priority"], 0);
    assert_eq!(updated["title"], "Speed up the build");
    let done = call_json(&client, "complete_task", json!({"id": "T-1"})).await;
    assert_eq!(done["passes"], true);
    let open = call_json(&client, "list_tasks", json!({"status": "open"})).await;
    let ids: Vec<&str> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["T-2", "T-3"]);
    let finished = call_json(&client, "list_tasks", json!({"status": "done"})).await;
    assert_eq!(finished, json!([done]));
    let everything = cli_tasks(&world);
    assert_eq!(
        call_json(&client, "list_tasks", json!({})).await,
        everything
    );
    let resource: Value =
        serde_json::from_str(&read(&client, "ralph://tasks").await.unwrap()).unwrap();
    assert_eq!(resource, everything);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_tool_errors_say_what_is_wrong_and_change_nothing() {
    let world = World::without_repo();
    let client = connect(&world.home).await;
    call_json(&client, "add_task", json!({"title": "Only task"})).await;
    let before = cli_tasks(&world);
    for (tool, arguments, needle) in [
        (
            "complete_task",
            json!({"id": "T-99"}),
            "no task with id \"T-99\"",
        ),
        (
            "update_task",
            json!({"id": "T-99", "title": "x"}),
            "no task with id \"T-99\"",
        ),
        ("update_task", json!({"id": "T-1"}), "nothing to change"),
        ("add_task", json!({"title": "   "}), "title is empty"),
        (
            "add_task",
            json!({"title": "x", "priority": 5000}),
            "out of range",
        ),
        (
            "add_task",
            json!({"title": "x", "id": "T-1"}),
            "already exists",
        ),
        (
            "add_task",
            json!({"description": "no title"}),
            "missing field `title`",
        ),
        (
            "add_task",
            json!({"title": "x", "criteria": "one string"}),
            "expected a sequence",
        ),
        ("list_tasks", json!({"status": "later"}), "later"),
    ] {
        let message = call_error(&client, tool, arguments.clone()).await;
        assert!(message.contains(needle), "{tool} {arguments}: {message}");
    }
    assert_eq!(cli_tasks(&world), before);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_the_object_status_json_prints_as_tool_and_resource() {
    let world = World::without_repo();
    home_with_cycles(&world);
    let printed = world
        .ralphd()
        .args(["status", "--json", "--home"])
        .arg(&world.home)
        .output();
    printed.assert_code(0);
    let expected: Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(expected["cycles"][2]["title"], "idea 3", "{expected}");

    let client = connect(&world.home).await;
    assert_eq!(call_json(&client, "status", json!({})).await, expected);
    let resource: Value =
        serde_json::from_str(&read(&client, "ralph://status").await.unwrap()).unwrap();
    assert_eq!(resource, expected);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_cycles_are_the_records_newest_first_up_to_the_limit() {
    let world = World::without_repo();
    home_with_cycles(&world);
    let client = connect(&world.home).await;
    let records = call_json(&client, "recent_cycles", json!({})).await;
    let cycles: Vec<u64> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["cycle"].as_u64().unwrap())
        .collect();
    assert_eq!(cycles, [3, 2, 1]);
    let progress = read_json(&world.home.join("state/progress.json"));
    assert_eq!(records[1]["reason"], progress["cycles"][1]["reason"]);
    assert_eq!(records[1]["outcome"], "rolled_back");
    let two = call_json(&client, "recent_cycles", json!({"limit": 2})).await;
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert_eq!(two[0]["cycle"], 3);
    client.cancel().await.unwrap();

    // A home where no cycle ran yet: no records, not an error.
    let empty = World::without_repo();
    let client = connect(&empty.home).await;
    assert_eq!(
        call_json(&client, "recent_cycles", json!({})).await,
        json!([])
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_reports_are_read_even_compressed_and_a_missing_one_says_why() {
    let world = World::without_repo();
    home_with_cycles(&world);
    let client = connect(&world.home).await;
    let report = |cycle: u64| {
        let client = &client;
        async move {
            let result = call(client, "cycle_report", json!({"cycle": cycle}))
                .await
                .unwrap();
            (result.is_error == Some(true), text_of(&result))
        }
    };
    assert_eq!(
        report(3).await,
        (false, "# Cycle 3\n\nplain page\n".to_owned())
    );
    assert_eq!(
        report(1).await,
        (false, "# Cycle 1\n\ncompressed page\n".to_owned())
    );
    let (failed, message) = report(2).await;
    assert!(
        failed && message.contains("deleted") && message.contains("recent_cycles"),
        "{message}"
    );
    let (failed, message) = report(9).await;
    assert!(
        failed && message.contains("no cycle 9") && message.contains("is 3"),
        "{message}"
    );

    assert_eq!(
        read(&client, "ralph://cycles/3/report").await.unwrap(),
        "# Cycle 3\n\nplain page\n"
    );
    assert_eq!(
        read(&client, "ralph://cycles/1/report").await.unwrap(),
        "# Cycle 1\n\ncompressed page\n"
    );
    let (code, message) = rpc_error(read(&client, "ralph://cycles/9/report").await);
    assert_eq!(code, ErrorCode::RESOURCE_NOT_FOUND);
    assert!(message.contains("no cycle 9"), "{message}");
    let (code, message) = rpc_error(read(&client, "ralph://nothing").await);
    assert_eq!(code, ErrorCode::RESOURCE_NOT_FOUND);
    assert!(message.contains("ralph://status"), "{message}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_tools_say_that_no_daemon_runs_on_the_home() {
    let world = World::without_repo();
    let client = connect(&world.home).await;
    for tool in ["pause", "resume", "request_stop"] {
        let message = call_error(&client, tool, json!({})).await;
        assert!(
            message.contains("no ralphd runs on the home")
                && message.contains(&world.home.display().to_string()),
            "{tool}: {message}"
        );
    }
    client.cancel().await.unwrap();
}

/// Makes the fake agent wait in `phase`'s first run until `go-<phase>`
/// exists in its directory.
fn gate(world: &World, phase: &str) {
    let gate = world.fake.join(format!("go-{phase}"));
    world.script(
        phase,
        Some(1),
        &format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display()),
    );
}

fn release(world: &World, phase: &str) {
    std::fs::write(world.fake.join(format!("go-{phase}")), "").unwrap();
}

/// The control tools reach the running daemon through its HTTP control
/// routes, as `ralphd pause|resume|stop` do, and answer in its words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_tools_pause_resume_and_stop_the_running_daemon() {
    const LIMIT: Duration = Duration::from_secs(30);
    let world = World::new();
    gate(&world, "scan");
    gate(&world, "report");
    let mut daemon = world.start(&[]);
    dashboard_addr(&world.home, LIMIT);
    assert!(poll_until(LIMIT, || world.calls("scan") == 1));
    let client = connect(&world.home).await;

    let paused = text_of(&call(&client, "pause", json!({})).await.unwrap());
    assert!(paused.contains("pausing"), "{paused}");
    release(&world, "scan");
    let status = || read_json(&world.home.join("state/status.json"));
    assert!(
        poll_until(LIMIT, || status()["waiting"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("paused"))),
        "the daemon shows it is paused: {}",
        status()
    );
    assert_eq!(world.calls("idea"), 0, "no phase run starts while paused");

    let resumed = text_of(&call(&client, "resume", json!({})).await.unwrap());
    assert!(resumed.contains("resumed"), "{resumed}");
    assert!(
        poll_until(LIMIT, || world.calls("report") == 1),
        "it goes on"
    );

    let stopping = text_of(&call(&client, "request_stop", json!({})).await.unwrap());
    assert!(
        stopping.contains("stopping after the current cycle"),
        "{stopping}"
    );
    release(&world, "report");
    let outcome = daemon.wait_for_exit(LIMIT).expect("stops after the cycle");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(world.outcomes(), ["committed"], "the cycle ran to its end");
    client.cancel().await.unwrap();
}

/// rmcp answers arguments that do not fit a tool's schema with a tool error
/// (`isError: true`) rather than a JSON-RPC error, so that the model reads
/// which field was wrong and can call again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_do_not_fit_the_schema_are_tool_errors_naming_the_field() {
    let world = World::without_repo();
    home_with_cycles(&world);
    let client = connect(&world.home).await;
    for (tool, arguments, needle) in [
        ("cycle_report", json!({}), "missing field `cycle`"),
        ("cycle_report", json!({"cycle": "three"}), "three"),
        ("recent_cycles", json!({"limit": -1}), "-1"),
        ("recent_cycles", json!({"limt": 2}), "unknown field `limt`"),
    ] {
        let message = call_error(&client, tool, arguments.clone()).await;
        assert!(message.contains(needle), "{tool} {arguments}: {message}");
    }
    let (code, message) = rpc_error(call(&client, "no_such_tool", json!({})).await);
    assert!(
        matches!(
            code,
            ErrorCode::INVALID_PARAMS | ErrorCode::METHOD_NOT_FOUND
        ),
        "{code:?} {message}"
    );
    client.cancel().await.unwrap();
}

#[test]
fn print_config_starts_this_binary_on_the_absolute_home() {
    let world = World::without_repo();
    let printed = world
        .ralphd()
        .args(["mcp", "--print-config", "--home", "home"])
        .output();
    printed.assert_code(0);
    let entry: Value = serde_json::from_str(&printed.stdout).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_ralphd"))
        .canonicalize()
        .unwrap();
    assert_eq!(
        entry,
        json!({"type": "stdio", "command": binary.display().to_string(),
            "args": ["mcp", "--home", world.home.display().to_string()]})
    );
    let printed = world
        .ralphd()
        .args(["mcp", "--print-config", "mcp-json", "--home"])
        .arg(&world.home)
        .output();
    printed.assert_code(0);
    let file: Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(file, json!({"mcpServers": {"ralphd": entry}}));

    let missing = world
        .ralphd()
        .args(["mcp", "--print-config", "--home", "nowhere"])
        .output();
    missing.assert_code(2);
    assert!(missing.stderr.contains("nowhere"), "{}", missing.stderr);
}

/// Claude Code stops its MCP servers with SIGINT when it exits, and sends
/// SIGTERM 100 ms later, then SIGKILL, if the server is still there. Its
/// stdio are sockets, not pipes: a blocking read of stdin must not hold the
/// exit back. The server ends at once with exit 0, and stdout never carried
/// anything but JSON-RPC.
#[test]
fn sigint_as_claude_code_sends_it_at_exit_ends_the_server_at_once() {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::os::unix::net::UnixStream;

    let world = World::without_repo();
    let (mut client_end, server_end) = UnixStream::pair().unwrap();
    let server_stdin = std::os::fd::OwnedFd::from(server_end);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ralphd"))
        .args(["mcp", "--home"])
        .arg(&world.home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::from(server_stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ralphd mcp starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}});
    writeln!(client_end, "{initialize}").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
    assert_eq!(answer["result"]["serverInfo"]["name"], "ralphd", "{answer}");
    writeln!(
        client_end,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();

    let pid = i32::try_from(child.id()).expect("pid fits i32");
    let sent = std::time::Instant::now();
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0);
    let mut status = None;
    let exited = crate::support::poll_until(std::time::Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(exited, "ralphd mcp still runs 10 s after SIGINT");
    // Generous for a loaded machine; the bug this catches waited 5 s.
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(status.unwrap().code(), Some(0), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    for line in rest.lines() {
        let message: Value = serde_json::from_str(line).expect("only JSON-RPC on stdout");
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
    }
    drop(client_end);
}
