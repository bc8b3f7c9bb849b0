//! No orphans: find, signal and reap every process below the daemon, and find
//! the processes a dead daemon left behind by a marker in their environment.
//!
//! The claude CLI starts tool commands in their own sessions (`setsid`), so killing
//! the child's process group misses them. With [`become_subreaper`], such a process
//! is re-parented to the daemon when its parent dies, instead of to init, so it is
//! still one of our descendants: [`kill_descendants`] finds it and [`reap_zombies`]
//! collects its exit status once it is dead.
//!
//! Linux reads `/proc`. Elsewhere the scans find nothing and [`become_subreaper`]
//! reports `Unsupported`: on macOS the child's process group is all we can kill.
//! This module does not spawn, sleep or read the clock: callers loop and wait.
//!
//! **Reaping and Tokio.** Tokio's `Child::wait` (and std's) reaps its own child by
//! pid. If we reaped that pid first, its `wait` would fail with `ECHILD` and the
//! exit status would be lost. So [`reap_zombies`] never calls `waitpid(-1, …)`: it
//! lists our direct children that are zombies and reaps each by pid, skipping the
//! pids passed as `owned`. Pass every pid whose `Child` handle may still be waited
//! on (the phase's child, a running check command); the rest are orphans adopted
//! through the subreaper, which nobody else will reap.

use std::io;
#[cfg(target_os = "linux")]
use std::path::Path;
use std::process::ExitStatus;

/// One line of `/proc/<pid>/stat`, the fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    /// The executable name, at most 15 bytes; it may contain spaces and parentheses.
    pub(crate) comm: String,
    /// `R`, `S`, `D`, `Z` (zombie), `T`, `X`, …
    pub(crate) state: char,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) session: i32,
    /// Field 22, `starttime`: clock ticks since boot. With the pid, it identifies a
    /// process: a reused pid has a later start time.
    pub(crate) start_time_ticks: u64,
}

impl ProcStat {
    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself
/// contain spaces and `)`, so the fields after it are found after the **last** `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    // Fields 3 onwards: state is field 3, so field N is at index N - 3.
    let fields: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let mut state_chars = field(3)?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        start_time_ticks: field(22)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat`.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn read_stat(pid: i32) -> io::Result<ProcStat> {
    read_stat_at(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

#[cfg(target_os = "linux")]
fn read_stat_at(path: &Path) -> io::Result<ProcStat> {
    let bytes = std::fs::read(path)?;
    parse_stat(&String::from_utf8_lossy(&bytes)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse {}", path.display()),
        )
    })
}

/// Every process visible in `/proc`; processes that exit during the scan are
/// skipped. Empty where there is no `/proc`.
pub(crate) fn processes() -> Vec<ProcStat> {
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                entry.file_name().to_str()?.parse::<i32>().ok()?;
                read_stat_at(&entry.path().join("stat")).ok()
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

/// Pids of the live processes (other than this one) whose environment holds
/// `name=value`. Processes of other users, whose environment cannot be read,
/// are skipped. Empty where there is no `/proc`.
pub(crate) fn processes_with_env(name: &str, value: &[u8]) -> Vec<i32> {
    #[cfg(target_os = "linux")]
    {
        let mut wanted = name.as_bytes().to_vec();
        wanted.push(b'=');
        wanted.extend_from_slice(value);
        let me = std::process::id() as i32;
        processes()
            .into_iter()
            .filter(|process| process.pid != me && !process.is_dead())
            .filter(|process| {
                std::fs::read(format!("/proc/{}/environ", process.pid)).is_ok_and(|environ| {
                    environ
                        .split(|byte| *byte == 0)
                        .any(|entry| entry == wanted)
                })
            })
            .map(|process| process.pid)
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, value);
        Vec::new()
    }
}

/// Makes the daemon the reaper of orphans below it: a process whose parent dies
/// is re-parented to the daemon instead of to init. Process-wide; Linux only.
pub(crate) fn become_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "child subreapers exist only on Linux",
        ))
    }
}

/// Whether [`become_subreaper`] is in effect.
pub(crate) fn is_subreaper() -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let mut flag: libc::c_int = 0;
        // SAFETY: PR_GET_CHILD_SUBREAPER writes one c_int through the pointer, which
        // points to a live local.
        let rc = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &raw mut flag, 0, 0, 0) };
        if rc == 0 {
            Ok(flag != 0)
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(false)
    }
}

#[cfg(test)]
/// Pids of every process whose parent chain leads to `root` (not `root` itself),
/// parents before their children; zombies included.
pub(crate) fn descendants_of(root: i32) -> Vec<i32> {
    descendants_in(&processes(), root)
        .into_iter()
        .map(|process| process.pid)
        .collect()
}

#[cfg(test)]
/// Pids of the daemon's own children, zombies included.
pub(crate) fn direct_children_of_self() -> Vec<i32> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|process| process.ppid == me)
        .map(|process| process.pid)
        .collect()
}

fn descendants_in(table: &[ProcStat], root: i32) -> Vec<&ProcStat> {
    let mut found: Vec<&ProcStat> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for process in table {
            // The pid check guards against a cycle in a torn snapshot.
            let seen = found.iter().any(|known| known.pid == process.pid);
            if process.ppid == parent && process.pid != root && !seen {
                found.push(process);
                parents.push(process.pid);
            }
        }
    }
    found
}

/// Sends `signal` to every live descendant of the daemon, including orphans it
/// adopted as a subreaper, and returns how many were signalled. One pass: a process
/// forked during the scan is missed, so to clear the tree call it with SIGKILL
/// (and [`reap_zombies`]) until it returns 0.
pub(crate) fn kill_descendants(signal: i32) -> usize {
    if !has_children() {
        return 0;
    }
    kill_descendants_of(std::process::id() as i32, signal)
}

/// Whether this process has any child, live or zombie (orphans adopted as a
/// subreaper included): without one it has no descendant at all, and the
/// `/proc` scan can be skipped. Never blocks and never reaps.
fn has_children() -> bool {
    // SAFETY: siginfo_t is plain old data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes one siginfo_t through a pointer to a live local;
    // WNOWAIT leaves any child's state to be collected later by its owner.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// The process groups of children that run beside the loop's own (the
/// notification hooks): the sweeps after a phase leave them alone while
/// they run, and [`reap_zombies`] leaves their leaders to their `Child`
/// handle. Their supervisor kills and reaps them itself.
static SPARED_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Spares the process group `pgid` (whose leader is the child `pgid`)
/// from the sweeps until the guard is dropped.
pub(crate) fn spare_group(pgid: i32) -> SparedGroup {
    spared_groups().push(pgid);
    SparedGroup { pgid }
}

/// Keeps a group spared while it lives; see [`spare_group`].
pub(crate) struct SparedGroup {
    pgid: i32,
}

impl Drop for SparedGroup {
    fn drop(&mut self) {
        spared_groups().retain(|pgid| *pgid != self.pgid);
    }
}

fn spared_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    SPARED_GROUPS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

/// Like [`kill_descendants`], for the processes below `root`. The groups of
/// [`spare_group`] are left alone.
pub(crate) fn kill_descendants_of(root: i32, signal: i32) -> usize {
    let table = processes();
    let spared = spared_groups().clone();
    descendants_in(&table, root)
        .into_iter()
        .filter(|process| !process.is_dead() && !spared.contains(&process.pgrp))
        // SAFETY: kill takes plain integers. The pid is a live process seen below us
        // a moment ago; a pid reused since could only be hit for a grandchild, which
        // its own parent (also ours) reaps, within this tiny window.
        .filter(|process| unsafe { libc::kill(process.pid, signal) } == 0)
        .count()
}

/// A child reaped by [`reap_zombies`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub(crate) pid: i32,
    pub(crate) status: ExitStatus,
}

/// Reaps every direct child that is a zombie, except the pids in `owned` (those
/// with a `Child` handle that will be waited on; see the module docs). Never
/// blocks.
pub(crate) fn reap_zombies(owned: &[i32]) -> Vec<Reaped> {
    use std::os::unix::process::ExitStatusExt as _;

    if !has_children() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let spared = spared_groups().clone();
    processes()
        .into_iter()
        .filter(|process| {
            process.ppid == me
                && process.is_dead()
                && !owned.contains(&process.pid)
                && !spared.contains(&process.pid)
        })
        .filter_map(|process| {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes one c_int through a pointer to a live local. It
            // reaps only this pid, a zombie child nobody else waits for.
            let rc = unsafe { libc::waitpid(process.pid, &raw mut status, libc::WNOHANG) };
            (rc == process.pid).then(|| Reaped {
                pid: process.pid,
                status: ExitStatus::from_raw(status),
            })
        })
        .collect()
}

/// Runs one test of this binary in a child process, for tests that change
/// process-wide state (the subreaper flag, the global tracing subscriber) or that
/// signal every descendant, which would hit the children of tests running in
/// parallel threads.
#[cfg(test)]
pub(crate) mod child_test {
    use std::process::{Command, Output};
    use std::time::{Duration, Instant};

    /// Set in the child; a child-only test returns at once without it.
    pub(crate) const ENV: &str = "RALPHD_CHILD_TEST";

    /// Whether this process is the child started by [`command`].
    pub(crate) fn in_child() -> bool {
        std::env::var_os(ENV).is_some()
    }

    /// A command running exactly the test `name` (its path, such as
    /// `reaper::tests::child_orphans`) in a new process of this test binary.
    pub(crate) fn command(name: &str) -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(ENV, "1")
            .env_remove("RUST_LOG");
        command
    }

    /// Asserts that the child ran its one test and passed; returns its output.
    pub(crate) fn assert_passed(output: Output) -> Output {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child test failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Polls `condition` every 10 ms until it holds; panics after `timeout`.
    pub(crate) fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "4242 (sleep) S 4200 4242 4100 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 5554176 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                comm: "sleep".to_owned(),
                state: 'S',
                ppid: 4200,
                pgrp: 4242,
                session: 4100,
                start_time_ticks: 987654,
            })
        );
    }

    #[test]
    fn parses_comm_with_spaces_and_parentheses() {
        let line = "77 (a) b (c)) Z 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, "a) b (c)");
        assert_eq!(
            (stat.pid, stat.state, stat.ppid, stat.pgrp),
            (77, 'Z', 1, 77)
        );
        assert_eq!(stat.start_time_ticks, 5);
        assert!(stat.is_dead());
        let empty_comm = "5 () R 1 5 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9";
        assert_eq!(parse_stat(empty_comm).unwrap().start_time_ticks, 9);
    }

    #[test]
    fn rejects_malformed_stat_lines() {
        let cases = [
            "",
            "12 sleep S 1 12 12",
            "12 (sleep) S 1 12 12 0 -1",
            "x (sleep) S 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            "12 (sleep) SS 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            "12 (sleep) S one 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            ") 12 (sleep S 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
        ];
        for line in cases {
            assert_eq!(parse_stat(line), None, "{line:?}");
        }
    }

    #[test]
    fn descendants_in_a_table() {
        let process = |pid, ppid| ProcStat {
            pid,
            comm: String::new(),
            state: 'S',
            ppid,
            pgrp: pid,
            session: pid,
            start_time_ticks: 0,
        };
        let table = [
            process(1, 0),
            process(10, 1),
            process(11, 10),
            process(12, 11),
            process(13, 10),
            process(20, 1),
            process(21, 20),
        ];
        let mut pids: Vec<i32> = descendants_in(&table, 10).iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, [11, 12, 13]);
        assert!(descendants_in(&table, 12).is_empty());
        // A torn snapshot with a cycle ends.
        let cycle = [process(2, 3), process(3, 2)];
        assert_eq!(descendants_in(&cycle, 2).len(), 1);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod linux_tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::child_test::{self, wait_until};
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(20);

    #[test]
    fn finds_descendants_transitively_and_kills_them() {
        let mut child = Command::new("sh")
            .args(["-c", "sh -c 'sleep 1000 & wait' & sleep 1000 & wait"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let root = child.id() as i32;
        // Until both forks have exec'd, a `sleep` still shows as `sh`.
        let mut tree: Vec<ProcStat> = Vec::new();
        wait_until(
            "the tree has 3 descendants, 2 of them sleeps",
            TIMEOUT,
            || {
                tree = descendants_of(root)
                    .into_iter()
                    .filter_map(|pid| read_stat(pid).ok())
                    .collect();
                let sleeps = tree
                    .iter()
                    .filter(|process| process.comm == "sleep")
                    .count();
                tree.len() == 3 && sleeps == 2
            },
        );
        assert!(
            tree.iter().any(|process| process.ppid != root),
            "a grandchild: {tree:?}"
        );
        assert!(direct_children_of_self().contains(&root));

        assert_eq!(kill_descendants_of(root, libc::SIGKILL), 3);
        // The shell notices its children died and exits.
        let status = child.wait().unwrap();
        assert!(status.success() || status.code().is_some(), "{status:?}");
        wait_until("the tree is gone", TIMEOUT, || {
            descendants_of(root).is_empty()
        });
    }

    /// The fake claude starts a `setsid sleep 1000` grandchild and hangs. Killing the
    /// child's process group misses the grandchild; as a subreaper the daemon adopts
    /// it when its parent dies, kills it and reaps it, and never steals the exit
    /// status of a child it owns.
    #[test]
    fn subreaper_adopts_kills_and_reaps_setsid_orphans() {
        child_test::assert_passed(
            child_test::command("reaper::linux_tests::child_orphans")
                .output()
                .unwrap(),
        );
    }

    #[test]
    fn child_orphans() {
        if !child_test::in_child() {
            return;
        }
        let me = std::process::id() as i32;
        assert!(!has_children(), "a fresh test process has no child");
        become_subreaper().unwrap();
        assert!(is_subreaper().unwrap());

        let mut fake_claude = {
            use std::os::unix::process::CommandExt as _;
            // Null stdio: a leftover sleep must not hold the parent test's pipes open.
            Command::new("sh")
                .args(["-c", "setsid sleep 1000 & sleep 1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let pgid = fake_claude.id() as i32;
        let mut grandchild = 0;
        wait_until("the setsid sleep runs in its own session", TIMEOUT, || {
            let found = processes().into_iter().find(|process| {
                process.ppid == pgid && process.comm == "sleep" && process.session == process.pid
            });
            grandchild = found.map_or(0, |process| process.pid);
            grandchild != 0
        });

        assert!(has_children());
        // Stopping the child's group, as the agent runner does, misses the grandchild.
        // SAFETY: killpg takes plain integers; pgid is our child's own group (> 1).
        assert_eq!(unsafe { libc::killpg(pgid, libc::SIGKILL) }, 0);
        fake_claude.wait().unwrap();
        wait_until("the orphan is re-parented to us", TIMEOUT, || {
            read_stat(grandchild).is_ok_and(|stat| stat.ppid == me)
        });
        // A shell that forks its last command instead of exec'ing it leaves that
        // fork, killed with the group, behind as a child too (a zombie once the
        // SIGKILL has landed); the orphan is the only one alive.
        wait_until("only the orphan is a live child", TIMEOUT, || {
            let live_children: Vec<i32> = direct_children_of_self()
                .into_iter()
                .filter(|&pid| read_stat(pid).is_ok_and(|stat| !stat.is_dead()))
                .collect();
            live_children == [grandchild]
        });

        // A child we own has exited too: reap_zombies must leave it to its handle.
        let mut owned = Command::new("true").spawn().unwrap();
        let owned_pid = owned.id() as i32;
        wait_until("the owned child is a zombie", TIMEOUT, || {
            read_stat(owned_pid).is_ok_and(|stat| stat.is_dead())
        });

        assert_eq!(
            kill_descendants(libc::SIGKILL),
            1,
            "only the orphan is alive"
        );
        let mut reaped = Vec::new();
        wait_until("the orphan is reaped", TIMEOUT, || {
            reaped.extend(reap_zombies(&[owned_pid]));
            reaped.iter().any(|child| child.pid == grandchild)
        });
        assert!(
            reaped.iter().all(|child| child.pid != owned_pid),
            "{reaped:?}"
        );
        {
            use std::os::unix::process::ExitStatusExt as _;
            let orphan = reaped.iter().find(|child| child.pid == grandchild).unwrap();
            assert_eq!(orphan.status.signal(), Some(libc::SIGKILL));
        }
        assert!(
            owned.wait().unwrap().success(),
            "the owned child's status is intact"
        );
        assert!(descendants_of(me).is_empty());
        assert!(!has_children(), "every child has been reaped");
        assert_eq!(kill_descendants(libc::SIGKILL), 0);
    }
}
