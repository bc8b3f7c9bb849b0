//! Git's own rules apply to ralphd's commits (docs/design.md §14): the repository's
//! `pre-commit` and `commit-msg` hooks run, and `commit.gpgsign` is honoured or
//! refused at start-up.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn write_hook(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn hooks_dir(world: &World) -> PathBuf {
    world.repo.join(".git/hooks")
}

#[test]
fn a_failing_pre_commit_hook_rolls_the_cycle_back_with_its_output_as_the_reason() {
    let world = World::new();
    write_hook(
        &hooks_dir(&world),
        "pre-commit",
        "echo 'lint: work.txt is not formatted' >&2\nexit 1\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["rolled_back"]);
    let cycle = &world.progress()["cycles"][0];
    let error = cycle["error"].as_str().unwrap();
    assert!(
        error.contains("pre-commit") && error.contains("lint: work.txt is not formatted"),
        "{error}"
    );
    assert_eq!(cycle["verdict"]["decided_by"], "hook");
    assert_eq!(cycle["verdict"]["pass"], false);
    assert_eq!(cycle["verdict"]["agent_verdict"], "pass");
    assert_eq!(cycle["reason"].as_str(), Some(error));
    assert_eq!(cycle["attempt_ref"], "refs/ralph/attempts/1");
    assert_eq!(world.git_log(), ["initial"]);
    assert_eq!(world.git_status(), "");
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:work.txt"]);
    assert_eq!(saved, "cycle 1\n");
    assert!(
        !world.repo.join(".git/ralphd-hook-index").exists(),
        "ralphd's index for the hooks is removed"
    );
}

#[test]
fn the_pre_commit_hook_sees_exactly_the_staged_change_from_the_work_tree() {
    let world = World::new();
    let seen = world.root.join("seen");
    write_hook(
        &hooks_dir(&world),
        "pre-commit",
        &format!(
            "pwd > '{0}'\ngit diff --cached --name-only >> '{0}'\necho \"index=$GIT_INDEX_FILE\" >> '{0}'\n",
            seen.display()
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    let seen = std::fs::read_to_string(&seen).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], world.repo.display().to_string(), "cwd: {seen}");
    assert_eq!(lines[1], "work.txt", "{seen}");
    assert!(
        lines[2].len() > "index=".len(),
        "GIT_INDEX_FILE is set: {seen}"
    );
    assert_eq!(world.git_status(), "");
    assert!(!world.repo.join(".git/ralphd-hook-index").exists());
}

#[test]
fn what_a_pre_commit_hook_fixes_and_stages_is_committed() {
    let world = World::new();
    write_hook(
        &hooks_dir(&world),
        "pre-commit",
        "sed -i 's/cycle/Cycle/' work.txt\ngit add work.txt\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    assert_eq!(git(&world.repo, &["show", "HEAD:work.txt"]), "Cycle 1\n");
    assert_eq!(world.git_status(), "", "work tree, index and HEAD agree");
}

#[test]
fn the_commit_msg_hook_may_rewrite_the_message_or_refuse_it() {
    let world = World::new();
    write_hook(
        &hooks_dir(&world),
        "commit-msg",
        "printf '\\nReviewed-by: hook\\n' >> \"$1\"\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    let message = git(&world.repo, &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("ralphd: cycle 1: Add a line to work.txt"),
        "{message}"
    );
    assert!(message.contains("\nReviewed-by: hook"), "{message}");

    let world = World::new();
    write_hook(
        &hooks_dir(&world),
        "commit-msg",
        "echo 'commit message must reference a ticket' >&2\nexit 3\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["rolled_back"]);
    let error = world.progress()["cycles"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("commit-msg") && error.contains("reference a ticket"),
        "{error}"
    );
    assert_eq!(world.git_log(), ["initial"]);
}

#[test]
fn core_hooks_path_is_honoured_and_non_executable_hooks_are_skipped() {
    let world = World::new();
    // A non-executable hook is not run, as with git.
    std::fs::create_dir_all(hooks_dir(&world)).unwrap();
    std::fs::write(hooks_dir(&world).join("pre-commit"), "#!/bin/sh\nexit 1\n").unwrap();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);

    let world = World::new();
    write_hook(
        &world.repo.join("tools/hooks"),
        "pre-commit",
        "echo 'refused by tools/hooks' >&2\nexit 1\n",
    );
    world.commit_all("hooks");
    git(&world.repo, &["config", "core.hooksPath", "tools/hooks"]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["rolled_back"]);
    let error = world.progress()["cycles"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("refused by tools/hooks"), "{error}");
}

#[test]
fn run_hooks_false_opts_out() {
    let world = World::new();
    world.config("\n[git]\nrun_hooks = false\n");
    write_hook(&hooks_dir(&world), "pre-commit", "exit 1\n");
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

/// A throwaway GnuPG home with one key for `ralphd <ralphd@localhost>`, ralphd's
/// default committer; its agent is stopped on drop.
struct GnupgHome {
    dir: tempfile::TempDir,
}

impl GnupgHome {
    fn new() -> GnupgHome {
        // Short path: gpg-agent's socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = GnupgHome { dir };
        let status = home
            .command("gpg")
            .args([
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "ralphd <ralphd@localhost>",
                "default",
                "sign",
                "never",
            ])
            .output()
            .expect("gpg runs (apt-get install gnupg)");
        assert!(
            status.status.success(),
            "gpg --quick-gen-key: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        home
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("GNUPGHOME", self.path());
        command
    }
}

impl Drop for GnupgHome {
    fn drop(&mut self) {
        let _ = self
            .command("gpgconf")
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

#[test]
fn commits_are_signed_when_the_repository_asks_for_it() {
    let world = World::new();
    let gnupg = GnupgHome::new();
    git(&world.repo, &["config", "commit.gpgsign", "true"]);
    world
        .run_command(&["--max-iterations", "1"])
        .env("GNUPGHOME", gnupg.path())
        .output()
        .assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    let verified = gnupg
        .command("git")
        .args(["verify-commit", "HEAD"])
        .current_dir(&world.repo)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "git verify-commit HEAD: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(
        world.git_log(),
        ["ralphd: cycle 1: Add a line to work.txt", "initial"]
    );
}

#[test]
fn ssh_signing_signs_with_the_configured_key() {
    let world = World::new();
    let key = world.root.join("signing-key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ralphd", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs (apt-get install openssh-client)");
    assert!(made.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = world.root.join("allowed_signers");
    std::fs::write(&allowed, format!("ralphd@localhost {public}")).unwrap();
    for (name, value) in [
        ("commit.gpgsign", "true"),
        ("gpg.format", "ssh"),
        ("user.signingkey", key.to_str().unwrap()),
        ("gpg.ssh.allowedSignersFile", allowed.to_str().unwrap()),
    ] {
        git(&world.repo, &["config", name, value]);
    }
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    git(&world.repo, &["verify-commit", "HEAD"]);
    let show = git(&world.repo, &["log", "-1", "--format=%G?"]);
    assert_eq!(show.trim(), "G", "a good signature");
}

#[test]
fn signing_that_cannot_work_is_refused_at_start_up() {
    let world = World::new();
    git(&world.repo, &["config", "commit.gpgsign", "true"]);
    git(&world.repo, &["config", "gpg.program", "/nonexistent/gpg"]);
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    let message = outcome
        .stderr
        .lines()
        .find(|line| line.contains("commit.gpgsign"))
        .unwrap_or_else(|| panic!("names commit.gpgsign: {}", outcome.stderr));
    assert!(message.contains("/nonexistent/gpg"), "{message}");
    assert_eq!(world.calls("scan"), 0, "no cycle ran");

    // A program that runs but has no key to sign with.
    let world = World::new();
    let empty = tempfile::Builder::new()
        .prefix("gpg")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(empty.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    git(&world.repo, &["config", "commit.gpgsign", "true"]);
    let mut command = world.ralphd();
    command
        .env("GNUPGHOME", empty.path())
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&world.home);
    let outcome = command.output();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", empty.path())
        .args(["--kill", "gpg-agent"])
        .output();
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("commit.gpgsign"),
        "{}",
        outcome.stderr
    );
    assert_eq!(world.calls("scan"), 0, "no cycle ran");
}
