use crate::support::*;

#[test]
fn a_failed_verdict_rolls_back_exactly_and_saves_the_attempt() {
    let world = World::new();
    world.write_repo("keep.txt", "original\n");
    world.commit_all("add keep");
    world.script(
        "code-edit",
        None,
        "echo changed > keep.txt; echo new > created.txt\n",
    );
    world.reply("code-edit", None, &answer("edited"));
    world.reply(
        "backtest",
        None,
        &answer(&verdict(false, "it breaks things")),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);

    assert_eq!(world.outcomes(), ["rolled_back"]);
    assert_eq!(world.read_repo("keep.txt").unwrap(), "original\n");
    assert!(
        world.read_repo("created.txt").is_none(),
        "files the cycle created are removed"
    );
    assert_eq!(world.git_status(), "", "the work tree is back to the start");
    assert_eq!(world.git_log()[0], "add keep");
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:created.txt"]);
    assert_eq!(saved, "new\n");
    let message = git(
        &world.repo,
        &["log", "-1", "--format=%B", "refs/ralph/attempts/1"],
    );
    assert!(message.contains("it breaks things"), "{message}");
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
}

#[test]
fn a_failing_check_vetoes_the_agents_pass() {
    let world = World::new();
    world.config("\n[backtest]\nchecks = [\"test ! -f work.txt\"]\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert_eq!(world.outcomes(), ["rolled_back"]);
    assert!(
        world.stdin_of("backtest", 1).contains("test ! -f work.txt"),
        "the backtest prompt shows the check"
    );
}

#[test]
fn only_code_edits_work_is_committed_not_what_checks_or_backtest_wrote() {
    let world = World::new();
    world.config("\n[backtest]\nchecks = [\"echo report > check-report.txt\"]\n");
    world.script(
        "backtest",
        None,
        "echo artifact > backtest-artifact.txt; echo tampered >> README.md; echo more >> work.txt\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    let files = git(&world.repo, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files.trim(), "work.txt");
    assert_eq!(
        world.read_repo("work.txt").unwrap(),
        "cycle 1\n",
        "the verified edit, as verified"
    );
    assert_eq!(world.read_repo("README.md").unwrap(), "# test project\n");
    assert_eq!(world.git_status(), "", "no artifact is left behind");
}

#[test]
fn passing_checks_decide_when_the_verdict_block_is_missing() {
    let world = World::new();
    world.config("\n[backtest]\nchecks = [\"test -f work.txt\"]\n");
    world.reply("backtest", None, &answer("I could not decide."));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn commits_the_agent_made_itself_are_kept_without_an_empty_commit() {
    let world = World::new();
    world.script("code-edit", None, "echo agent > agent.txt; git add agent.txt; git -c user.name=a -c user.email=a@a commit -q -m 'agent commit'\n");
    world.reply("code-edit", None, &answer("committed agent.txt myself"));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    let log = world.git_log();
    assert_eq!(
        log[0], "agent commit",
        "no empty ralphd commit on top: {log:?}"
    );
    assert_eq!(
        world.progress()["cycles"][0]["commit"]
            .as_str()
            .unwrap()
            .len(),
        40
    );
}

#[test]
fn no_change_from_code_edit_is_no_changes_and_skips_backtest() {
    let world = World::new();
    world.script("code-edit", None, ":\n");
    world.reply("code-edit", None, &answer("I changed nothing"));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["no_changes"]);
    assert_eq!(world.calls("backtest"), 0);
    assert_eq!(world.calls("report"), 1);
}

#[test]
fn a_dirty_tree_is_refused_unless_allowed_and_user_changes_survive_rollback() {
    let world = World::new();
    world.write_repo("mine.txt", "committed\n");
    world.commit_all("mine");
    world.write_repo("mine.txt", "user edit, not committed\n");
    world.write_repo("notes.txt", "untracked user notes\n");
    let refused = world.run(&["--max-iterations", "1"]);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--allow-dirty") && refused.stderr.contains("mine.txt"),
        "{}",
        refused.stderr
    );
    assert_eq!(world.calls("scan"), 0);

    world.script(
        "code-edit",
        None,
        "echo agent >> mine.txt; echo agent > agent.txt\n",
    );
    world.reply("backtest", None, &answer(&verdict(false, "no")));
    world
        .run(&["--max-iterations", "1", "--allow-dirty"])
        .assert_code(1);
    assert_eq!(world.outcomes(), ["rolled_back"]);
    assert_eq!(
        world.read_repo("mine.txt").unwrap(),
        "user edit, not committed\n"
    );
    assert_eq!(
        world.read_repo("notes.txt").unwrap(),
        "untracked user notes\n"
    );
    assert!(world.read_repo("agent.txt").is_none());
}

/// Runs git in the world's repo with `env` set (an editor, say); returns whether it succeeded.
fn git_with_env(world: &World, env: &[(&str, &str)], args: &[&str]) -> bool {
    let mut command = std::process::Command::new("git");
    command.args(args).current_dir(&world.repo);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("git runs").status.success()
}

/// ralphd refuses to start (exit 2, one line naming `operation` and each of
/// `advice`), runs no phase, and leaves HEAD, index and tree as they were.
#[track_caller]
fn assert_refused_during(world: &World, operation: &str, advice: &[&str]) {
    let head = git(&world.repo, &["rev-parse", "HEAD"]);
    let status = world.git_status();
    let refused = world.run(&["--max-iterations", "1"]);
    refused.assert_code(2);
    let message = refused.stderr.trim();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains(operation), "{message}");
    for hint in advice {
        assert!(message.contains(hint), "{hint} missing: {message}");
    }
    assert_eq!(world.calls("scan"), 0);
    assert_eq!(git(&world.repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(world.git_status(), status);
}

/// A repo whose `main` and `side` both changed README.md since `initial`.
fn diverged(world: &World) {
    git(&world.repo, &["config", "user.name", "t"]);
    git(&world.repo, &["config", "user.email", "t@t"]);
    git(&world.repo, &["checkout", "-q", "-b", "side"]);
    world.write_repo("README.md", "theirs\n");
    world.commit_all("theirs");
    world.write_repo("side.txt", "side\n");
    world.commit_all("side file");
    git(&world.repo, &["checkout", "-q", "main"]);
    world.write_repo("README.md", "ours\n");
    world.commit_all("ours");
}

#[test]
fn a_rebase_stopped_at_edit_is_refused_naming_how_to_finish_it() {
    let world = World::new();
    git(&world.repo, &["config", "user.name", "t"]);
    git(&world.repo, &["config", "user.email", "t@t"]);
    world.write_repo("a.txt", "a\n");
    world.commit_all("a");
    let edit_all = [("GIT_SEQUENCE_EDITOR", "sed -i -e s/^pick/edit/")];
    assert!(git_with_env(&world, &edit_all, &["rebase", "-i", "HEAD~1"]));
    assert_refused_during(
        &world,
        "rebase",
        &["git rebase --continue", "git rebase --abort"],
    );

    assert!(git_with_env(
        &world,
        &[("GIT_EDITOR", "true")],
        &["rebase", "--continue"]
    ));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn a_merge_with_a_conflict_is_refused_naming_how_to_finish_it() {
    let world = World::new();
    diverged(&world);
    assert!(
        !git_with_env(&world, &[], &["merge", "side"]),
        "the merge conflicts"
    );
    assert_refused_during(
        &world,
        "merge",
        &["git merge --continue", "git merge --abort"],
    );
}

#[test]
fn a_bisect_is_refused_naming_how_to_end_it() {
    let world = World::new();
    git(&world.repo, &["bisect", "start"]);
    assert_refused_during(&world, "bisect", &["git bisect reset"]);
    git(&world.repo, &["bisect", "reset"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
}

/// Cherry-picking two commits, the first conflicting and then committed by
/// hand: git's sequencer still has the second to do.
#[test]
fn a_cherry_pick_sequence_is_refused_even_after_a_conflict_was_committed() {
    let world = World::new();
    diverged(&world);
    assert!(!git_with_env(
        &world,
        &[],
        &["cherry-pick", "side~1", "side"]
    ));
    world.write_repo("README.md", "resolved\n");
    world.commit_all("resolved");
    assert_refused_during(
        &world,
        "cherry-pick",
        &["git cherry-pick --continue", "git cherry-pick --abort"],
    );
}

#[test]
fn changes_that_appear_between_cycles_are_never_adopted_nor_touched() {
    let world = World::new();
    // Something outside the cycle's edit (here: during cycle 1's report)
    // leaves a file in the tree.
    world.script("report", Some(1), "echo wip > stray.txt\n");
    world.run(&["--max-iterations", "2"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "failed"]);
    assert_eq!(world.calls("scan"), 1, "cycle 2 did not start its agent");
    let error = world.progress()["cycles"][1]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("stray.txt"), "{error}");
    assert_eq!(world.read_repo("stray.txt").unwrap(), "wip\n");
}

#[test]
fn user_changes_are_never_committed_by_the_daemon() {
    let world = World::new();
    world.write_repo("notes.txt", "untracked user notes\n");
    world
        .run(&["--max-iterations", "1", "--allow-dirty"])
        .assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    let files = git(&world.repo, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files.trim(), "work.txt");
    assert_eq!(
        world.read_repo("notes.txt").unwrap(),
        "untracked user notes\n"
    );
}

#[test]
fn a_home_inside_the_repo_is_never_progress_nor_committed() {
    let world = World::new();
    let home = world.repo.join(".ralph");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(world.home.join("ralph.toml"), home.join("ralph.toml")).unwrap();
    std::fs::write(world.repo.join(".gitignore"), "").unwrap();
    git(&world.repo, &["add", ".gitignore", ".ralph/ralph.toml"]);
    world.commit_all("config in repo");
    world.script("code-edit", None, ":\n");
    world.reply("code-edit", None, &answer("I changed nothing"));
    let mut command = world.ralphd();
    command
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&home);
    command.output().assert_code(1);
    let progress = read_json(&home.join("state/progress.json"));
    assert_eq!(progress["cycles"][0]["outcome"], "no_changes");
    assert_eq!(world.git_status(), "");
}

#[test]
fn an_unborn_branch_gets_its_first_commit() {
    let world = World::without_repo();
    std::fs::create_dir_all(&world.repo).unwrap();
    git(&world.repo, &["init", "-q", "-b", "trunk"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.git_log(), ["ralphd: cycle 1: Add a line to work.txt"]);
    assert_eq!(world.progress()["branch"], "trunk");
}

#[test]
fn detached_head_is_recorded_by_short_sha() {
    let world = World::new();
    let sha = git(&world.repo, &["rev-parse", "--short=7", "HEAD"]);
    git(&world.repo, &["checkout", "-q", "--detach"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(
        world.progress()["branch"],
        format!("detached-{}", sha.trim())
    );
}

#[test]
fn a_branch_switch_between_runs_archives_progress_with_same_day_suffixes() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    git(&world.repo, &["checkout", "-q", "-b", "feature/login"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    git(&world.repo, &["checkout", "-q", "main"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    git(&world.repo, &["checkout", "-q", "feature/login"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);

    let mut archives: Vec<String> = std::fs::read_dir(world.home.join("archive"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    archives.sort();
    let today = archives[0][..10].to_owned();
    assert_eq!(
        archives,
        [
            format!("{today}-feature-login"),
            format!("{today}-main"),
            format!("{today}-main-2")
        ]
    );
    let archived = read_json(
        &world
            .home
            .join("archive")
            .join(format!("{today}-main/progress.json")),
    );
    assert_eq!(archived["cycles"][0]["cycle"], 1);
    let progress = world.progress();
    assert_eq!(progress["branch"], "feature-login".replace('-', "/"));
    assert_eq!(
        progress["cycles"][0]["cycle"], 4,
        "cycle numbers never collide with archived folders"
    );
}

#[test]
fn a_branch_switch_by_the_agent_fails_the_cycle_and_the_run_stays_on_the_users_branch() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let cycle_1 = git(&world.repo, &["rev-parse", "HEAD"]);
    world.script(
        "code-edit",
        Some(2),
        &format!(
            "git checkout -q -b agent-branch; echo x > work.txt; git add -A; {AGENT_GIT} commit -qm 'agent on its own branch'\n"
        ),
    );
    world.run(&["--max-iterations", "2"]).assert_code(1);

    assert_eq!(
        current_branch(&world),
        "main",
        "HEAD is back on the user's branch"
    );
    assert_eq!(world.outcomes(), ["committed", "failed", "committed"]);
    assert_error_contains(
        &world,
        1,
        "code-edit: the agent switched from branch main to branch agent-branch",
    );
    assert_eq!(world.progress()["branch"], "main");
    assert_eq!(
        archive_count(&world),
        0,
        "the agent's switch is not archived as a branch change"
    );
    let log = world.git_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("ralphd: cycle 3: "), "{log:?}");
    assert_eq!(
        git(&world.repo, &["rev-parse", "HEAD~1"]),
        cycle_1,
        "cycle 3 builds on cycle 1, not on the agent's branch"
    );
    assert_attempt_holds(&world, "refs/ralph/attempts/2", "agent on its own branch");
    // The agent's branch is the agent's: left as it made it.
    let agent_tip = git(&world.repo, &["log", "-1", "--format=%s", "agent-branch"]);
    assert_eq!(agent_tip.trim(), "agent on its own branch");
}

#[test]
fn a_branch_switch_before_a_retried_phase_is_never_archived() {
    let world = World::new();
    world.script(
        "code-edit",
        Some(1),
        "git checkout -q -b agent-branch; echo x > work.txt\n",
    );
    world.reply(
        "code-edit",
        Some(1),
        &[
            init_line(),
            error_result_line(Some(529), "API Error: 529 overloaded"),
        ],
    );
    // The retry waits long enough for the HEAD watcher to see the switch.
    let outcome = world
        .run_command(&["--max-iterations", "1"])
        .env("RALPH_AGENT_RETRY_BASE_DELAY", "400ms")
        .env("RALPH_AGENT_RETRY_MAX_DELAY", "400ms")
        .output();
    outcome.assert_code(1);

    assert_eq!(world.outcomes(), ["failed"]);
    assert_error_contains(
        &world,
        0,
        "switched from branch main to branch agent-branch",
    );
    assert_eq!(current_branch(&world), "main");
    assert!(
        !outcome.stderr.contains("progress archived"),
        "{}",
        outcome.stderr
    );
    assert_eq!(archive_count(&world), 0);
}

#[test]
fn a_branch_deleted_by_the_agent_is_recreated_at_the_cycles_start() {
    let world = World::new();
    world.write_repo("user.txt", "mine\n");
    world.commit_all("user work");
    let user_commit = git(&world.repo, &["rev-parse", "HEAD"]);
    world.script(
        "code-edit",
        None,
        &format!(
            "git checkout -q -b scratch; git branch -q -D main; echo x > work.txt; git add -A; {AGENT_GIT} commit -qm 'agent after deleting main'\n"
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);

    assert_eq!(current_branch(&world), "main");
    assert_eq!(git(&world.repo, &["rev-parse", "main"]), user_commit);
    assert_eq!(world.git_log(), ["user work", "initial"]);
    assert_eq!(world.outcomes(), ["failed"]);
    assert_error_contains(&world, 0, "deleted branch main");
    assert_attempt_holds(&world, "refs/ralph/attempts/1", "agent after deleting main");
    assert_eq!(world.git_status(), "");
    assert_eq!(archive_count(&world), 0);
}

#[test]
fn an_agent_that_rewrites_history_in_any_phase_leaves_the_users_commits_on_the_branch() {
    for phase in ["scan", "idea", "code-edit", "backtest", "report"] {
        let world = World::new();
        world.write_repo("user.txt", "mine\n");
        world.commit_all("user work");
        world.script(
            phase,
            None,
            &format!(
                "git reset -q --hard HEAD~1; echo agent > agent.txt; git add agent.txt; {AGENT_GIT} commit -qm 'agent rewrote history'\n"
            ),
        );
        world.run(&["--max-iterations", "1"]).assert_code(1);

        let log = world.git_log();
        assert!(
            log.ends_with(&["user work".to_owned(), "initial".to_owned()]),
            "{phase}: {log:?}"
        );
        assert!(
            !log.contains(&"agent rewrote history".to_owned()),
            "{phase}: {log:?}"
        );
        assert_eq!(current_branch(&world), "main", "{phase}");
        assert_eq!(world.read_repo("user.txt").unwrap(), "mine\n", "{phase}");
        assert!(world.read_repo("agent.txt").is_none(), "{phase}");
        assert_eq!(world.git_status(), "", "{phase}");
        // A verified commit made before the report stays; otherwise the cycle fails.
        let expected = if phase == "report" {
            "committed"
        } else {
            "failed"
        };
        assert_eq!(world.outcomes(), [expected], "{phase}");
        assert_error_contains(
            &world,
            0,
            &format!("{phase}: the agent moved branch main off "),
        );
        let attempt = world.progress()["cycles"][0]["attempt_ref"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            attempt.starts_with("refs/ralph/attempts/1"),
            "{phase}: {attempt}"
        );
        assert_attempt_holds(&world, &attempt, "agent rewrote history");
    }
}

#[test]
fn an_amend_of_the_users_commit_is_undone_and_kept_in_the_attempt() {
    let world = World::new();
    world.write_repo("user.txt", "mine\n");
    world.commit_all("user work");
    let user_commit = git(&world.repo, &["rev-parse", "HEAD"]);
    world.script(
        "code-edit",
        None,
        &format!(
            "echo agent >> user.txt; {AGENT_GIT} commit -q -a --amend -m 'amended by the agent'\n"
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);

    assert_eq!(git(&world.repo, &["rev-parse", "main"]), user_commit);
    assert_eq!(world.read_repo("user.txt").unwrap(), "mine\n");
    assert_eq!(world.outcomes(), ["failed"]);
    assert_error_contains(&world, 0, "the agent moved branch main off ");
    assert_attempt_holds(&world, "refs/ralph/attempts/1", "amended by the agent");
}

#[test]
fn a_reset_in_cycle_two_keeps_cycle_ones_commit() {
    let world = World::new();
    world.write_repo("user.txt", "mine\n");
    world.commit_all("user work");
    world.script(
        "code-edit",
        Some(2),
        &format!(
            "git reset -q --hard HEAD~1; echo agent > agent.txt; git add agent.txt; {AGENT_GIT} commit -qm 'agent dropped cycle 1'\n"
        ),
    );
    world.run(&["--max-iterations", "2"]).assert_code(1);

    assert_eq!(
        world.git_log(),
        [
            "ralphd: cycle 1: Add a line to work.txt",
            "user work",
            "initial"
        ]
    );
    assert_eq!(world.read_repo("work.txt").unwrap(), "cycle 1\n");
    assert_eq!(world.outcomes(), ["committed", "failed"]);
    assert_error_contains(&world, 1, "the agent moved branch main off ");
    assert_attempt_holds(&world, "refs/ralph/attempts/2", "agent dropped cycle 1");
    assert_eq!(current_branch(&world), "main");
}

/// The fake agent's git, with an identity.
const AGENT_GIT: &str = "git -c user.name=a -c user.email=a@a";

fn current_branch(world: &World) -> String {
    git(&world.repo, &["symbolic-ref", "--short", "HEAD"])
        .trim()
        .to_owned()
}

fn archive_count(world: &World) -> usize {
    std::fs::read_dir(world.home.join("archive")).map_or(0, |dir| dir.count())
}

#[track_caller]
fn assert_error_contains(world: &World, cycle_index: usize, needle: &str) {
    let progress = world.progress();
    let error = progress["cycles"][cycle_index]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains(needle), "{needle:?} not in {error:?}");
}

/// The attempt ref exists and the agent's commit `subject` is in its history.
#[track_caller]
fn assert_attempt_holds(world: &World, reference: &str, subject: &str) {
    let log = git(&world.repo, &["log", "--format=%s", reference]);
    assert!(
        log.lines().any(|line| line == subject),
        "{subject:?} not reachable from {reference}:\n{log}"
    );
}

#[test]
fn a_branch_switch_undone_by_a_rollback_at_the_cycles_end_keeps_the_history_too() {
    let world = World::new();
    world.config("max_attempts = 1\n");
    world.run(&["--max-iterations", "1"]).assert_code(1);
    world.script(
        "code-edit",
        None,
        "git checkout -q -b agent-branch; echo x > work.txt\n",
    );
    // backtest itself fails: the cycle ends with the rollback, no report runs.
    world.reply(
        "backtest",
        None,
        &[
            init_line(),
            error_result_line(Some(400), "API Error: 400 bad"),
        ],
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "failed"]);
    assert_eq!(world.progress()["branch"], "main");
    let archives = std::fs::read_dir(world.home.join("archive")).map_or(0, |dir| dir.count());
    assert_eq!(archives, 0);
}

#[test]
fn with_auto_commit_off_the_verified_change_stays_and_the_next_cycles_run() {
    let world = World::new();
    world.config("\n[git]\nauto_commit = false\n");
    world.run(&["--max-iterations", "2"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
    assert_eq!(world.read_repo("work.txt").unwrap(), "cycle 1\ncycle 2\n");
    assert_eq!(world.git_log(), ["initial"]);
}

#[test]
fn a_steering_file_edited_during_the_run_is_no_stray_change() {
    let world = World::new();
    let home = world.repo.join(".ralph");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(world.home.join("ralph.toml"), home.join("ralph.toml")).unwrap();
    std::fs::write(home.join("PROMPT.md"), "Focus on the README.\n").unwrap();
    world.commit_all("home in the repo");
    // The user edits the steering text while cycle 1 runs.
    world.script(
        "report",
        Some(1),
        &format!(
            "echo 'Now focus on tests.' > '{}'\n",
            home.join("PROMPT.md").display()
        ),
    );
    let mut command = world.ralphd();
    command
        .args(["run", "--max-iterations", "2", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&home);
    command.output().assert_code(1);
    let progress = read_json(&home.join("state/progress.json"));
    let outcomes: Vec<&str> = progress["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["committed", "committed"]);
    assert!(
        world.stdin_of("scan", 2).contains("Now focus on tests."),
        "cycle 2 reads the new steering"
    );
    let files = git(&world.repo, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(
        files.trim(),
        "work.txt",
        "the user's edit is never committed by ralphd"
    );
}

#[test]
fn a_corrupt_prd_is_refused_by_name_and_left_alone() {
    let world = World::new();
    std::fs::create_dir_all(world.home.join("state")).unwrap();
    std::fs::write(world.home.join("state/prd.json"), "{not json").unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("prd.json"), "{}", outcome.stderr);
    assert_eq!(
        std::fs::read_to_string(world.home.join("state/prd.json")).unwrap(),
        "{not json"
    );
}

/// Adds a submodule `lib` (one commit, `lib.txt`) to the world's repo and
/// commits it; returns the submodule's work tree.
fn add_submodule(world: &World) -> std::path::PathBuf {
    let origin = world.root.join("lib-origin");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "-q", "-b", "main"]);
    std::fs::write(origin.join("lib.txt"), "library\n").unwrap();
    git(&origin, &["add", "-A"]);
    git(
        &origin,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "lib initial",
        ],
    );
    git(
        &world.repo,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            origin.to_str().unwrap(),
            "lib",
        ],
    );
    world.commit_all("add the lib submodule");
    world.repo.join("lib")
}

#[test]
fn an_edit_inside_a_submodule_fails_the_cycle_is_saved_there_and_undone() {
    let world = World::new();
    let lib = add_submodule(&world);
    let lib_head = git(&lib, &["rev-parse", "HEAD"]);
    world.script(
        "code-edit",
        None,
        &format!(
            "echo hacked >> lib/lib.txt; echo new > lib/new.txt; (cd lib && git add -A && {AGENT_GIT} commit -qm 'agent inside the submodule'); echo more >> lib/lib.txt\n"
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);

    assert_eq!(world.outcomes(), ["failed"]);
    assert_error_contains(&world, 0, "code-edit: the agent changed submodule lib");
    assert_eq!(world.read_repo("lib/lib.txt").unwrap(), "library\n");
    assert!(world.read_repo("lib/new.txt").is_none());
    assert_eq!(git(&lib, &["rev-parse", "HEAD"]), lib_head);
    assert_eq!(git(&lib, &["status", "--porcelain"]), "");
    assert_eq!(world.git_status(), "");
    assert_eq!(world.git_log()[0], "add the lib submodule");
    // The submodule's work is kept in the submodule's own repository…
    let saved = git(&lib, &["show", "refs/ralph/attempts/1:lib.txt"]);
    assert_eq!(saved, "library\nhacked\nmore\n");
    let log = git(&lib, &["log", "--format=%s", "refs/ralph/attempts/1"]);
    assert!(log.contains("agent inside the submodule"), "{log}");
    // …and the cycle's attempt says where.
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
    let message = git(
        &world.repo,
        &["log", "-1", "--format=%B", "refs/ralph/attempts/1"],
    );
    assert!(
        message.contains("Submodule-Attempt: lib refs/ralph/attempts/1"),
        "{message}"
    );
}

#[test]
fn a_repo_with_an_untouched_submodule_commits_as_usual() {
    let world = World::new();
    add_submodule(&world);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    assert_eq!(world.git_status(), "");
}

#[test]
fn an_edit_only_inside_a_submodule_is_no_longer_invisible() {
    let world = World::new();
    let lib = add_submodule(&world);
    world.script("code-edit", None, "echo hacked >> lib/lib.txt\n");
    world.reply("code-edit", None, &answer("edited the library"));
    world.run(&["--max-iterations", "1"]).assert_code(1);

    assert_eq!(world.outcomes(), ["failed"], "not no_changes");
    assert_error_contains(
        &world,
        0,
        "code-edit: the agent changed submodule lib (files edited)",
    );
    assert_eq!(world.read_repo("lib/lib.txt").unwrap(), "library\n");
    assert_eq!(git(&lib, &["status", "--porcelain"]), "");
    let saved = git(&lib, &["show", "refs/ralph/attempts/1:lib.txt"]);
    assert_eq!(saved, "library\nhacked\n");
}

#[test]
fn a_reset_in_the_report_after_a_rollback_keeps_the_cycles_own_attempt() {
    let world = World::new();
    world.write_repo("user.txt", "mine\n");
    world.commit_all("user work");
    world.reply("backtest", None, &answer(&verdict(false, "not good")));
    world.script("report", None, "git reset -q --hard HEAD~1\n");
    world.run(&["--max-iterations", "1"]).assert_code(1);

    assert_eq!(world.git_log(), ["user work", "initial"]);
    assert_eq!(world.outcomes(), ["failed"]);
    assert_error_contains(&world, 0, "report: the agent moved branch main off ");
    assert_error_contains(&world, 0, "(saved as refs/ralph/attempts/1-2)");
    let cycle = &world.progress()["cycles"][0];
    assert_eq!(
        cycle["attempt_ref"], "refs/ralph/attempts/1",
        "the edit's attempt"
    );
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:work.txt"]);
    assert_eq!(saved, "cycle 1\n");
}

/// With --allow-dirty, an agent that reverts the user's uncommitted change
/// (`git checkout -- README.md`) does not get to throw it away: the cycle is
/// refused like a gate and the user's change is put back.
#[test]
fn an_agent_that_reverts_the_users_uncommitted_change_is_rolled_back_and_the_change_kept() {
    let world = World::new();
    world.write_repo("README.md", "# test project\nuser work in progress\n");
    world.script(
        "code-edit",
        Some(1),
        "git checkout -- README.md; echo agent > agent.txt\n",
    );
    world
        .run(&["--max-iterations", "1", "--allow-dirty"])
        .assert_code(1);
    assert_eq!(
        world.read_repo("README.md").unwrap(),
        "# test project\nuser work in progress\n",
        "the user's uncommitted change is back"
    );
    assert_eq!(world.outcomes(), ["rolled_back"]);
    let error = world.progress()["cycles"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("README.md") && error.contains("uncommitted"),
        "{error}"
    );
    assert!(world.read_repo("agent.txt").is_none());
    assert_eq!(world.git_log()[0], "initial", "nothing was committed");
}
