//! The disk use of a home (docs/design.md §14): transcripts capped per phase run,
//! nothing ralphd writes under the home carries a secret, old cycles
//! compressed then deleted, and a full disk reported as a full disk.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Outcome, World, answer, init_line, result_line};

const MIB: usize = 1024 * 1024;

/// The lines of a transcript, each parsed (a transcript stays ndjson).
fn transcript_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| {
                panic!(
                    "{}: a line is not JSON ({error}): {line:.200}",
                    path.display()
                )
            })
        })
        .collect()
}

#[test]
fn a_transcript_past_max_transcript_mb_keeps_whole_lines_and_says_what_was_dropped() {
    let world = World::new();
    world.config("[state]\nmax_transcript_mb = 1\n");
    // 3000 assistant lines of about 1 KiB, then the result: about 3 MiB.
    let padding = "x".repeat(1000);
    let mut lines = vec![init_line()];
    for index in 0..3000 {
        lines.push(
            json!({"type": "assistant", "index": index, "message": {"content": [{"type": "text", "text": padding}]}})
                .to_string(),
        );
    }
    lines.push(result_line("scan after a long stream"));
    world.reply("scan", None, &lines);
    let streamed: usize = lines.iter().map(|line| line.len() + 1).sum();

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(
        world.outcomes(),
        ["committed"],
        "the result past the cap still counts"
    );
    let path = world.home.join("state/cycles/1/scan.jsonl");
    let stored = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(
        stored <= MIB + 200,
        "the transcript stays under the cap: {stored} bytes"
    );
    let parsed = transcript_lines(&path);
    let last = parsed.last().unwrap();
    assert_eq!(last["type"], "ralphd_truncated", "{last}");
    let kept: Vec<&Value> = parsed[..parsed.len() - 1].iter().collect();
    assert_eq!(kept[0]["type"], "system", "lines are kept from the start");
    assert!(
        kept.len() > 900,
        "about 1 MiB of whole lines: {}",
        kept.len()
    );
    let dropped_lines = last["dropped_lines"].as_u64().unwrap() as usize;
    assert_eq!(kept.len() + dropped_lines, lines.len());
    let kept_bytes = stored - (last.to_string().len() + 1);
    assert_eq!(
        kept_bytes + last["dropped_bytes"].as_u64().unwrap() as usize,
        streamed,
        "every byte is either kept or counted"
    );
}

#[test]
fn no_secret_the_agent_prints_reaches_any_file_ralphd_writes_under_the_home() {
    const API_KEY: &str = "sk-ant-api03-TOPSECRET0123456789abcdef";
    const GITHUB: &str = "ghp_0123456789abcdefABCDEF0123456789abcd";
    const PLAIN: &str = "plain-proxy-secret-0123456789";
    let world = World::new();
    // The agent sees the key in a tool result and repeats it everywhere it can:
    // the stream, the result texts, the idea's title, the report's summary,
    // learnings and patterns, and a failure text.
    let tool_result = json!({"type": "user", "message": {"content": [{"type": "tool_result",
        "content": format!("ANTHROPIC_API_KEY={API_KEY}\nexport GH={GITHUB}\nproxy {PLAIN}")}]}})
    .to_string();
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            tool_result,
            result_line(&format!("found {API_KEY} and {GITHUB} and {PLAIN}")),
        ],
    );
    world.reply(
        "idea",
        None,
        &answer(&format!(
            "TITLE: Rotate {API_KEY} now\n\nUse {GITHUB} or {PLAIN}."
        )),
    );
    // What a restart would read if the daemon died now (in-flight.json) is
    // kept under the home for the check below.
    world.script(
        "report",
        None,
        "cp \"$RALPH_HOME/state/in-flight.json\" \"$RALPH_HOME/in-flight-during-report.json\"\n",
    );
    let report = json!({"summary": format!("leaked {API_KEY}"),
        "learnings": [format!("the token is {GITHUB}")], "patterns": [format!("proxy {PLAIN}")]});
    world.reply(
        "report",
        None,
        &answer(&format!("Done {API_KEY}.\n\n```json\n{report}\n```")),
    );
    let outcome = world
        .run_command(&["--max-iterations", "1"])
        .env("MY_PROXY_TOKEN", PLAIN)
        .output();
    outcome.assert_code(1);
    let outcome = outcome.stderr;
    assert_eq!(world.outcomes(), ["committed"]);

    let mut files = Vec::new();
    collect_files(&world.home, &mut files);
    assert!(files.len() > 8, "{files:?}");
    assert!(
        files
            .iter()
            .any(|file| file.ends_with("in-flight-during-report.json")),
        "{files:?}"
    );
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for secret in [API_KEY, GITHUB, PLAIN] {
            assert!(
                !text.contains(secret),
                "{} carries a secret:\n{text:.2000}",
                file.display()
            );
        }
    }
    for secret in [API_KEY, GITHUB, PLAIN] {
        assert!(!outcome.contains(secret), "the log carries it: {outcome}");
    }
    let transcript = transcript_lines(&world.home.join("state/cycles/1/scan.jsonl"));
    assert_eq!(transcript.len(), 3, "still one JSON line per stream line");
    assert!(
        transcript[1].to_string().contains("[REDACTED]"),
        "{}",
        transcript[1]
    );
    let phase_text = std::fs::read_to_string(world.home.join("state/cycles/1/idea.md")).unwrap();
    assert!(phase_text.contains("Rotate [REDACTED] now"), "{phase_text}");
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            collect_files(&entry.path(), files);
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
}

/// The names in `state/cycles/<cycle>/`, sorted.
fn cycle_files(world: &World, cycle: u64) -> Vec<String> {
    let dir = world.home.join(format!("state/cycles/{cycle}"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn cycle_dirs(world: &World) -> Vec<u64> {
    let mut numbers: Vec<u64> = std::fs::read_dir(world.home.join("state/cycles"))
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    numbers.sort();
    numbers
}

fn gunzip(path: &Path) -> String {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|error| panic!("{} is not gzip: {error}", path.display()));
    text
}

#[test]
fn old_cycles_are_compressed_then_deleted_oldest_first_and_progress_keeps_every_record() {
    let world = World::new();
    world.config("[state]\nkeep_cycles = 3\ncompress_after = 1\n");
    world.run(&["--max-iterations", "5"]).assert_code(1);

    assert_eq!(world.outcomes().len(), 5, "progress.json keeps every cycle");
    assert_eq!(
        cycle_dirs(&world),
        [3, 4, 5],
        "the 3 newest cycles are kept"
    );
    let plain = [
        "backtest.jsonl",
        "backtest.md",
        "code-edit.jsonl",
        "code-edit.md",
        "idea.jsonl",
        "idea.md",
        "report-agent.md",
        "report.jsonl",
        "report.md",
        "scan.jsonl",
        "scan.md",
    ];
    assert_eq!(cycle_files(&world, 5), plain, "the newest stays plain");
    let compressed: Vec<String> = plain.iter().map(|name| format!("{name}.gz")).collect();
    for cycle in [3, 4] {
        assert_eq!(cycle_files(&world, cycle), compressed, "cycle {cycle}");
        let scan = gunzip(
            &world
                .home
                .join(format!("state/cycles/{cycle}/scan.jsonl.gz")),
        );
        assert!(
            scan.contains(&format!("fake-scan-{cycle}")),
            "the compressed transcript is the cycle's own: {scan}"
        );
        let report = gunzip(
            &world
                .home
                .join(format!("state/cycles/{cycle}/report.md.gz")),
        );
        assert!(report.starts_with(&format!("# Cycle {cycle}")), "{report}");
    }

    // At start-up too, before the first cycle: the agent of the next run
    // sees only the newest cycle of the last run next to its own.
    world.config("[state]\nkeep_cycles = 1\ncompress_after = 0\n");
    world.script(
        "scan",
        None,
        "ls \"$RALPH_HOME/state/cycles\" | sort -n | tr '\\n' ' ' > \"$FAKE_CLAUDE_DIR/seen\"\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let seen = std::fs::read_to_string(world.fake.join("seen")).unwrap();
    assert_eq!(
        seen.trim(),
        "5 6",
        "start-up kept cycle 5 and the cycle in flight"
    );
    assert_eq!(cycle_dirs(&world), [6]);
    assert_eq!(world.outcomes().len(), 6);
}

#[test]
fn a_full_disk_under_a_transcript_stops_the_run_with_exit_2_saying_so() {
    let world = World::new();
    // /dev/full fails every write with ENOSPC: the idea phase's transcript
    // sits on a full disk.
    world.script(
        "scan",
        None,
        "ln -s /dev/full \"$RALPH_HOME/state/cycles/$RALPH_CYCLE/idea.jsonl\"\n",
    );
    let outcome = world.run(&["--max-iterations", "3"]);
    outcome.assert_code(2);
    let transcript = world.home.join("state/cycles/1/idea.jsonl");
    let message = format!(
        "the disk holding {} is full (No space left on device); free space, then restart",
        transcript.display()
    );
    assert!(
        outcome.stderr.contains(&format!("error: {message}")),
        "{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains("cannot run the agent command"),
        "{}",
        outcome.stderr
    );
    assert_eq!(world.calls("idea"), 1, "no retry, no second cycle");
    assert_eq!(world.outcomes(), ["failed"]);
    assert_eq!(
        world.progress()["cycles"][0]["error"],
        json!(format!("idea failed: {message}"))
    );
    let breaker = crate::support::read_json(&world.home.join("state/breaker.json"));
    assert!(
        !breaker.to_string().contains("cycle 1"),
        "a full disk is not the agent's failure: {breaker}"
    );
}

/// The command prefix that runs a command in a private mount namespace where
/// it may mount a tmpfs (root, or user namespaces), if this machine has one.
fn private_mount_namespace() -> Option<Vec<&'static str>> {
    let probe = tempfile::tempdir().unwrap();
    let candidates: [&[&'static str]; 2] = [&["unshare", "--mount"], &["unshare", "-r", "--mount"]];
    candidates.into_iter().find_map(|prefix| {
        let status = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$0\""])
            .arg(probe.path())
            .output()
            .ok()?
            .status;
        status.success().then(|| prefix.to_vec())
    })
}

#[test]
fn a_home_whose_disk_fills_during_a_cycle_exits_2_saying_so_and_runs_on_once_space_is_freed() {
    let Some(prefix) = private_mount_namespace() else {
        let hint = "cannot mount a tmpfs here (needs root or user namespaces): the real full-disk \
                    test did not run; the /dev/full test covers the transcript";
        if std::env::var("CI").is_ok_and(|value| value == "true") {
            panic!("{hint}");
        }
        eprintln!("NOTICE: {hint}");
        return;
    };
    let world = World::new();
    let state = world.home.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // code-edit's tools fill the disk holding the home's state.
    world.script(
        "code-edit",
        Some(1),
        "echo edited >> work.txt; cat /dev/zero > \"$RALPH_HOME/state/filler\" 2>/dev/null; true\n",
    );
    // Both runs inside one mount namespace, so the tmpfs lives across them:
    // the first on the full disk, the second after the filler is removed.
    let script = r#"
set -u
mount -t tmpfs -o size=2m tmpfs "$STATE" || exit 99
"$RALPHD" run --repo "$REPO" --home "$HOME_DIR" --max-iterations 3 > "$OUT/1.out" 2> "$OUT/1.err"
echo $? > "$OUT/1.code"
rm -f "$STATE/filler"
"$RALPHD" run --repo "$REPO" --home "$HOME_DIR" --max-iterations 1 > "$OUT/2.out" 2> "$OUT/2.err"
echo $? > "$OUT/2.code"
cp "$STATE/progress.json" "$OUT/progress.json"
"#;
    let command = world.ralphd().command;
    let mut shell = Command::new(prefix[0]);
    shell.args(&prefix[1..]).args(["sh", "-c", script]);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    let out = world.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let status = shell
        .env("STATE", &state)
        .env("RALPHD", command.get_program())
        .env("REPO", &world.repo)
        .env("HOME_DIR", &world.home)
        .env("OUT", &out)
        .current_dir(&world.root)
        .status()
        .expect("unshare runs");
    assert!(status.success(), "{status}");
    let run = |name: &str| Outcome {
        code: std::fs::read_to_string(out.join(format!("{name}.code")))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        stdout: std::fs::read_to_string(out.join(format!("{name}.out"))).unwrap(),
        stderr: std::fs::read_to_string(out.join(format!("{name}.err"))).unwrap(),
    };

    let first = run("1");
    first.assert_code(2);
    let last_line = first.stderr.lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with(&format!("error: the disk holding {}/", state.display()))
            && last_line.ends_with(" is full (No space left on device); free space, then restart"),
        "{}",
        first.stderr
    );

    let second = run("2");
    second.assert_code(1);
    assert_eq!(world.calls("code-edit"), 2, "one cycle per run");
    let progress = crate::support::read_json(&out.join("progress.json"));
    let outcomes: Vec<&str> = progress["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cycle| cycle["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.last(),
        Some(&"committed"),
        "with space freed the run goes on: {progress}"
    );
    assert_eq!(
        world.git_log()[0],
        "ralphd: cycle 2: Add a line to work.txt",
        "{:?}",
        world.git_log()
    );
}
