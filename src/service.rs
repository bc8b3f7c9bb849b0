//! Render and install the files that run the daemon as a service: a systemd user
//! unit on Linux and a launchd LaunchAgent plist on macOS.
//!
//! Everything is rendered from a small [`ServiceSpec`] (absolute paths, the stop
//! grace and the PATH to hand to the daemon), not from the whole config, so this
//! module knows nothing of the loop, the agent or the state files. The only file it
//! writes is the service file itself (plus the home's `logs/` directory, which
//! launchd needs to exist before it can open the log files).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// How often systemd expects a `WATCHDOG=1`. The daemon sends one every half
/// interval from its main loop, also during a long phase.
const WATCHDOG_SEC: u64 = 60;

/// Pause between a failed run and the next start (systemd `RestartSec`, launchd
/// `ThrottleInterval`).
const RESTART_DELAY_SEC: u64 = 30;

/// Time to save state after the child is gone, added to twice the stop grace.
const STOP_MARGIN_SEC: u64 = 30;

/// Prefix of the launchd label and of the plist file name.
const LAUNCHD_LABEL_PREFIX: &str = "dev.ralphd.";

/// Which service manager to render for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    Systemd,
    Launchd,
}

/// What the service files are rendered from. All paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceSpec {
    /// Short name of the service, see [`service_name`]: `[a-z0-9._-]+`.
    pub(crate) name: String,
    /// The `ralphd` binary (usually `std::env::current_exe()`).
    pub(crate) binary: PathBuf,
    /// The git work tree being improved (`--repo`), also the working directory.
    pub(crate) repo: PathBuf,
    /// ralphd's home for that repo (`--home`); launchd logs go to `<home>/logs/`.
    pub(crate) home: PathBuf,
    /// `agent.stop_grace`: the child gets SIGINT, grace, SIGTERM, grace, SIGKILL.
    pub(crate) stop_grace: Duration,
    /// The PATH the service runs with (service managers start with a minimal one).
    pub(crate) path_env: String,
}

/// Whether [`install`] found a file at the target path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Previous {
    /// There was no file: it was created.
    None,
    /// The file already had exactly this content: nothing was written.
    Identical,
    /// A different file was there and has been overwritten.
    Replaced,
}

/// What [`install`] did, and the commands the user runs next (to be printed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InstallReport {
    pub(crate) path: PathBuf,
    pub(crate) previous: Previous,
    pub(crate) commands: Vec<String>,
}

/// Derives a service name from the repo directory's name: lowercase ASCII letters,
/// digits, `_` and `.`; every other run of characters becomes one `-`. Two repos
/// with the same directory name get the same name: pick the home accordingly.
pub(crate) fn service_name(repo: &Path) -> String {
    let raw = repo
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = String::new();
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches(['-', '.']);
    let name = crate::text::head_chars(name, 64).trim_end_matches(['-', '.']);
    if name.is_empty() {
        "repo".to_owned()
    } else {
        name.to_owned()
    }
}

/// The file name of the service file: `ralphd-<name>.service` or
/// `dev.ralphd.<name>.plist`.
pub(crate) fn file_name(kind: ServiceKind, name: &str) -> String {
    match kind {
        ServiceKind::Systemd => format!("ralphd-{name}.service"),
        ServiceKind::Launchd => format!("{LAUNCHD_LABEL_PREFIX}{name}.plist"),
    }
}

/// Renders the service file for `kind`.
pub(crate) fn render(kind: ServiceKind, spec: &ServiceSpec) -> anyhow::Result<String> {
    match kind {
        ServiceKind::Systemd => render_systemd(spec),
        ServiceKind::Launchd => render_launchd(spec),
    }
}

/// Renders a systemd user unit. Fails if a path is relative or contains a control
/// character, or if the name is not a valid service name.
pub(crate) fn render_systemd(spec: &ServiceSpec) -> anyhow::Result<String> {
    let paths = validate(spec)?;
    if paths.repo.ends_with('\\') {
        // A trailing backslash would continue the WorkingDirectory= line.
        bail!("repo path {} ends with a backslash", paths.repo);
    }
    let exec_start = [
        paths.binary,
        "run",
        "--repo",
        paths.repo,
        "--home",
        paths.home,
    ]
    .iter()
    .map(|arg| systemd_quote(arg, true))
    .collect::<Vec<_>>()
    .join(" ");
    let repo = systemd_escape_specifiers(paths.repo);
    let environment = systemd_quote(&format!("PATH={}", spec.path_env), false);
    let grace = spec.stop_grace.as_secs_f64();
    let stop_timeout = stop_timeout_secs(spec.stop_grace);
    Ok(format!(
        r#"# Written by `ralphd service systemd`. Render it again after moving the binary,
# the repo or the home.
[Unit]
Description=ralphd: improve {repo} with Claude Code
# At most 5 starts an hour: a daemon that keeps crashing must not keep spending.
StartLimitIntervalSec=1h
StartLimitBurst=5

[Service]
# The daemon sends READY=1 after its start-up checks, then WATCHDOG=1 and STATUS= lines.
Type=notify
# Only the daemon may notify; the claude CLI and its tools never see NOTIFY_SOCKET.
NotifyAccess=main
ExecStart={exec_start}
# `systemctl --user reload` re-reads ralph.toml and prompts at the next phase boundary.
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={repo}
# The user manager's PATH is minimal: this is the PATH `ralphd service` ran with,
# so that claude, git and the backtest commands are found.
Environment={environment}
# Keep secrets out of this file. For an API key, write ANTHROPIC_API_KEY=... into a
# file only you can read, and uncomment:
#EnvironmentFile=%h/.config/ralphd/env
# No WATCHDOG=1 for this long means the daemon hangs: systemd kills it (SIGABRT)
# and Restart= starts it again.
WatchdogSec={WATCHDOG_SEC}s
# SIGTERM goes to the daemon only (the default, control-group, would hit claude too),
# so it stops its child in order (SIGINT, grace, SIGTERM, grace, SIGKILL) and saves
# its state. Whatever is left in the unit's cgroup afterwards gets SIGKILL.
KillMode=mixed
# Twice the stop grace ({grace}s) for the child, plus {STOP_MARGIN_SEC}s to save state.
TimeoutStopSec={stop_timeout}s
# Exit 1 (--max-iterations reached) and 130 (stopped by a signal, state saved) are
# not failures, like 0 (the agent declared completion).
SuccessExitStatus=1 130
# Restart after a crash, a watchdog timeout or an unexpected exit code...
Restart=on-failure
# ...but not after 2 (configuration or environment error) or 3 (halted by a guard:
# budget or breaker): it would fail the same way. Fix the cause, then restart the unit.
RestartPreventExitStatus=2 3
RestartSec={RESTART_DELAY_SEC}s

[Install]
WantedBy=default.target
"#
    ))
}

/// Renders a launchd LaunchAgent plist. Fails like [`render_systemd`].
pub(crate) fn render_launchd(spec: &ServiceSpec) -> anyhow::Result<String> {
    let paths = validate(spec)?;
    let string = |value: &str| format!("<string>{}</string>", xml_escape(value));
    let label = string(&format!("{LAUNCHD_LABEL_PREFIX}{}", spec.name));
    let arguments = [
        paths.binary,
        "run",
        "--repo",
        paths.repo,
        "--home",
        paths.home,
    ]
    .iter()
    .map(|arg| format!("    {}\n", string(arg)))
    .collect::<String>();
    let repo = string(paths.repo);
    let path_env = string(&spec.path_env);
    let logs = Path::new(paths.home).join("logs");
    let stdout_path = string(&logs.join("launchd.stdout.log").to_string_lossy());
    let stderr_path = string(&logs.join("launchd.stderr.log").to_string_lossy());
    let grace = spec.stop_grace.as_secs_f64();
    let stop_timeout = stop_timeout_secs(spec.stop_grace);
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `ralphd service launchd`. Render it again after moving the binary,
     the repo or the home. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  {label}
  <key>ProgramArguments</key>
  <array>
{arguments}  </array>
  <key>WorkingDirectory</key>
  {repo}
  <!-- launchd's PATH is minimal: this is the PATH `ralphd service` ran with, so that
       claude, git and the backtest commands are found. Keep secrets out of this file. -->
  <key>EnvironmentVariables</key>
  <dict>
    <key>PATH</key>
    {path_env}
  </dict>
  <key>RunAtLoad</key>
  <true/>
  <!-- Start again after a crash or a non-zero exit, not after exit 0 (completion).
       launchd cannot exempt other codes: after 1 (max iterations), 2 (configuration
       error), 3 (halted by a guard) or 130 (stopped by a signal) it starts the daemon
       again after ThrottleInterval. `launchctl bootout` stops it for good. -->
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>{RESTART_DELAY_SEC}</integer>
  <!-- On stop, SIGTERM, then SIGKILL after this many seconds: twice the stop grace
       ({grace}s) for the child, plus {STOP_MARGIN_SEC}s to save state. -->
  <key>ExitTimeOut</key>
  <integer>{stop_timeout}</integer>
  <key>ProcessType</key>
  <string>Background</string>
  <!-- What the daemon prints on stdout and stderr. These files never rotate; the
       daemon's own daily log files (ralphd.log.<date>) are in the same directory. -->
  <key>StandardOutPath</key>
  {stdout_path}
  <key>StandardErrorPath</key>
  {stderr_path}
</dict>
</plist>
"#
    ))
}

/// Writes the service file for `kind` under the user's home directory `home_dir`
/// (`~/.config/systemd/user/` or `~/Library/LaunchAgents/`), creating the parent
/// directories. A different existing file is overwritten, and the report says so.
/// For launchd it also creates `<spec.home>/logs/`, since launchd does not create
/// the directory of its log files.
pub(crate) fn install(
    kind: ServiceKind,
    spec: &ServiceSpec,
    home_dir: &Path,
) -> anyhow::Result<InstallReport> {
    let content = render(kind, spec)?;
    let dir = match kind {
        ServiceKind::Systemd => home_dir.join(".config/systemd/user"),
        ServiceKind::Launchd => home_dir.join("Library/LaunchAgents"),
    };
    let path = dir.join(file_name(kind, &spec.name));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let previous = match fs::read(&path) {
        Ok(old) if old == content.as_bytes() => Previous::Identical,
        Ok(_) => Previous::Replaced,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Previous::None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if previous != Previous::Identical {
        write_atomically(&dir, &path, content.as_bytes())?;
    }
    if kind == ServiceKind::Launchd {
        let logs = spec.home.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    }

    let commands = match kind {
        ServiceKind::Systemd => systemd_commands(&spec.name, previous),
        ServiceKind::Launchd => launchd_commands(&spec.name, &path, &spec.home, previous),
    };
    Ok(InstallReport {
        path,
        previous,
        commands,
    })
}

fn systemd_commands(name: &str, previous: Previous) -> Vec<String> {
    let unit = file_name(ServiceKind::Systemd, name);
    let mut commands = vec!["systemctl --user daemon-reload".to_owned()];
    if previous == Previous::None {
        commands.push(format!("systemctl --user enable --now {unit}"));
    } else {
        // `enable --now` does not restart a running unit, so it would keep the old one.
        commands.push(format!("systemctl --user enable {unit}"));
        commands.push(format!("systemctl --user restart {unit}"));
    }
    // Without lingering, the user manager (and the daemon) stops at logout.
    commands.push("loginctl enable-linger \"$USER\"".to_owned());
    commands.push(format!("systemctl --user status {unit}"));
    commands.push(format!("journalctl --user -u {unit} -f"));
    commands
}

fn launchd_commands(name: &str, plist: &Path, home: &Path, previous: Previous) -> Vec<String> {
    let target = format!("gui/$(id -u)/{LAUNCHD_LABEL_PREFIX}{name}");
    let mut commands = Vec::new();
    if previous != Previous::None {
        // A loaded job keeps its old definition until it is booted out.
        commands.push(format!("launchctl bootout {target}"));
    }
    commands.push(format!("launchctl enable {target}"));
    commands.push(format!(
        "launchctl bootstrap gui/$(id -u) {}",
        shell_quote(&plist.to_string_lossy())
    ));
    commands.push(format!("launchctl print {target}"));
    commands.push(format!(
        "tail -F {}",
        shell_quote(&home.join("logs/ralphd.log").to_string_lossy())
    ));
    commands
}

/// The paths of a spec as UTF-8 strings, checked.
struct SpecPaths<'a> {
    binary: &'a str,
    repo: &'a str,
    home: &'a str,
}

fn validate(spec: &ServiceSpec) -> anyhow::Result<SpecPaths<'_>> {
    let name_ok = !spec.name.is_empty()
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !name_ok {
        bail!(
            "service name {:?} may only contain a-z, 0-9, '.', '_' and '-'",
            spec.name
        );
    }
    let binary = checked_path("binary", &spec.binary)?;
    let repo = checked_path("repo", &spec.repo)?;
    let home = checked_path("home", &spec.home)?;
    if spec.path_env.chars().any(char::is_control) {
        bail!("PATH contains a control character");
    }
    Ok(SpecPaths { binary, repo, home })
}

fn checked_path<'a>(what: &str, path: &'a Path) -> anyhow::Result<&'a str> {
    let Some(text) = path.to_str() else {
        bail!("{what} path {} is not valid UTF-8", path.display());
    };
    if !path.is_absolute() {
        bail!("{what} path {text} is not absolute");
    }
    if text.chars().any(char::is_control) {
        bail!("{what} path {text:?} contains a control character");
    }
    Ok(text)
}

/// `TimeoutStopSec` / `ExitTimeOut` in whole seconds: 2 × grace + margin, rounded up.
fn stop_timeout_secs(stop_grace: Duration) -> u64 {
    let grace_ms = u64::try_from(stop_grace.as_millis()).unwrap_or(u64::MAX / 4);
    (2 * grace_ms).div_ceil(1000) + STOP_MARGIN_SEC
}

/// Quotes one word for a systemd command line or `Environment=`: `%` becomes `%%`
/// (specifiers), `$` becomes `$$` on command lines (variable expansion), and a word
/// with whitespace, quotes, backslashes or `;` goes in double quotes with C escapes.
fn systemd_quote(word: &str, command_line: bool) -> String {
    let mut escaped = systemd_escape_specifiers(word);
    if command_line {
        escaped = escaped.replace('$', "$$");
    }
    let needs_quotes = escaped.is_empty()
        || escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs_quotes {
        return escaped;
    }
    let mut quoted = String::with_capacity(escaped.len() + 2);
    quoted.push('"');
    for c in escaped.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn systemd_escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// Escapes text for an XML element.
fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Quotes a word for a POSIX shell, only when needed.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn write_atomically(dir: &Path, path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    temp.write_all(content)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", temp.path().display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set permissions on {}", temp.path().display()))?;
    }
    temp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "webshop".to_owned(),
            binary: PathBuf::from("/home/alice/.cargo/bin/ralphd"),
            repo: PathBuf::from("/home/alice/src/webshop"),
            home: PathBuf::from("/home/alice/src/webshop/.ralph"),
            stop_grace: Duration::from_secs(10),
            path_env: "/home/alice/.local/bin:/usr/local/bin:/usr/bin:/bin".to_owned(),
        }
    }

    #[test]
    fn systemd_unit() {
        insta::assert_snapshot!(render_systemd(&spec()).unwrap(), @r#"
        # Written by `ralphd service systemd`. Render it again after moving the binary,
        # the repo or the home.
        [Unit]
        Description=ralphd: improve /home/alice/src/webshop with Claude Code
        # At most 5 starts an hour: a daemon that keeps crashing must not keep spending.
        StartLimitIntervalSec=1h
        StartLimitBurst=5

        [Service]
        # The daemon sends READY=1 after its start-up checks, then WATCHDOG=1 and STATUS= lines.
        Type=notify
        # Only the daemon may notify; the claude CLI and its tools never see NOTIFY_SOCKET.
        NotifyAccess=main
        ExecStart=/home/alice/.cargo/bin/ralphd run --repo /home/alice/src/webshop --home /home/alice/src/webshop/.ralph
        # `systemctl --user reload` re-reads ralph.toml and prompts at the next phase boundary.
        ExecReload=/bin/kill -HUP $MAINPID
        WorkingDirectory=/home/alice/src/webshop
        # The user manager's PATH is minimal: this is the PATH `ralphd service` ran with,
        # so that claude, git and the backtest commands are found.
        Environment=PATH=/home/alice/.local/bin:/usr/local/bin:/usr/bin:/bin
        # Keep secrets out of this file. For an API key, write ANTHROPIC_API_KEY=... into a
        # file only you can read, and uncomment:
        #EnvironmentFile=%h/.config/ralphd/env
        # No WATCHDOG=1 for this long means the daemon hangs: systemd kills it (SIGABRT)
        # and Restart= starts it again.
        WatchdogSec=60s
        # SIGTERM goes to the daemon only (the default, control-group, would hit claude too),
        # so it stops its child in order (SIGINT, grace, SIGTERM, grace, SIGKILL) and saves
        # its state. Whatever is left in the unit's cgroup afterwards gets SIGKILL.
        KillMode=mixed
        # Twice the stop grace (10s) for the child, plus 30s to save state.
        TimeoutStopSec=50s
        # Exit 1 (--max-iterations reached) and 130 (stopped by a signal, state saved) are
        # not failures, like 0 (the agent declared completion).
        SuccessExitStatus=1 130
        # Restart after a crash, a watchdog timeout or an unexpected exit code...
        Restart=on-failure
        # ...but not after 2 (configuration or environment error) or 3 (halted by a guard:
        # budget or breaker): it would fail the same way. Fix the cause, then restart the unit.
        RestartPreventExitStatus=2 3
        RestartSec=30s

        [Install]
        WantedBy=default.target
        "#);
    }

    #[test]
    fn launchd_plist() {
        insta::assert_snapshot!(render_launchd(&spec()).unwrap(), @r#"
        <?xml version="1.0" encoding="UTF-8"?>
        <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
        <!-- Written by `ralphd service launchd`. Render it again after moving the binary,
             the repo or the home. -->
        <plist version="1.0">
        <dict>
          <key>Label</key>
          <string>dev.ralphd.webshop</string>
          <key>ProgramArguments</key>
          <array>
            <string>/home/alice/.cargo/bin/ralphd</string>
            <string>run</string>
            <string>--repo</string>
            <string>/home/alice/src/webshop</string>
            <string>--home</string>
            <string>/home/alice/src/webshop/.ralph</string>
          </array>
          <key>WorkingDirectory</key>
          <string>/home/alice/src/webshop</string>
          <!-- launchd's PATH is minimal: this is the PATH `ralphd service` ran with, so that
               claude, git and the backtest commands are found. Keep secrets out of this file. -->
          <key>EnvironmentVariables</key>
          <dict>
            <key>PATH</key>
            <string>/home/alice/.local/bin:/usr/local/bin:/usr/bin:/bin</string>
          </dict>
          <key>RunAtLoad</key>
          <true/>
          <!-- Start again after a crash or a non-zero exit, not after exit 0 (completion).
               launchd cannot exempt other codes: after 1 (max iterations), 2 (configuration
               error), 3 (halted by a guard) or 130 (stopped by a signal) it starts the daemon
               again after ThrottleInterval. `launchctl bootout` stops it for good. -->
          <key>KeepAlive</key>
          <dict>
            <key>SuccessfulExit</key>
            <false/>
          </dict>
          <key>ThrottleInterval</key>
          <integer>30</integer>
          <!-- On stop, SIGTERM, then SIGKILL after this many seconds: twice the stop grace
               (10s) for the child, plus 30s to save state. -->
          <key>ExitTimeOut</key>
          <integer>50</integer>
          <key>ProcessType</key>
          <string>Background</string>
          <!-- What the daemon prints on stdout and stderr. These files never rotate; the
               daemon's own daily log files (ralphd.log.<date>) are in the same directory. -->
          <key>StandardOutPath</key>
          <string>/home/alice/src/webshop/.ralph/logs/launchd.stdout.log</string>
          <key>StandardErrorPath</key>
          <string>/home/alice/src/webshop/.ralph/logs/launchd.stderr.log</string>
        </dict>
        </plist>
        "#);
    }

    fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{text}"))
    }

    #[test]
    fn systemd_quotes_paths_with_spaces_and_escapes_specials() {
        let spec = ServiceSpec {
            binary: PathBuf::from("/opt/my tools/ralphd"),
            repo: PathBuf::from("/home/alice/100% \"done\" $HOME"),
            home: PathBuf::from(r"/home/alice/back\slash"),
            path_env: "/opt/my tools/bin:/usr/bin".to_owned(),
            ..spec()
        };
        let unit = render_systemd(&spec).unwrap();
        assert_eq!(
            line_starting(&unit, "ExecStart="),
            r#"ExecStart="/opt/my tools/ralphd" run --repo "/home/alice/100%% \"done\" $$HOME" --home "/home/alice/back\\slash""#
        );
        // WorkingDirectory= takes the rest of the line verbatim, only specifiers expand.
        assert_eq!(
            line_starting(&unit, "WorkingDirectory="),
            r#"WorkingDirectory=/home/alice/100%% "done" $HOME"#
        );
        // No variable expansion in Environment=, so `$` stays as it is.
        assert_eq!(
            line_starting(&unit, "Environment="),
            r#"Environment="PATH=/opt/my tools/bin:/usr/bin""#
        );
    }

    #[test]
    fn systemd_quote_cases() {
        let cases = [
            ("plain/path", "plain/path"),
            ("", r#""""#),
            ("a b", r#""a b""#),
            ("tab\there", "\"tab\there\""),
            ("semi;colon", r#""semi;colon""#),
            ("it's", r#""it's""#),
            ("50%", "50%%"),
            ("$x", "$$x"),
        ];
        for (word, expected) in cases {
            assert_eq!(systemd_quote(word, true), expected, "word {word:?}");
        }
        assert_eq!(systemd_quote("$x y", false), r#""$x y""#);
    }

    #[test]
    fn launchd_escapes_xml() {
        let spec = ServiceSpec {
            repo: PathBuf::from("/Users/bob/R&D <new> \"q\" 'a'"),
            path_env: "/a&b:/usr/bin".to_owned(),
            ..spec()
        };
        let plist = render_launchd(&spec).unwrap();
        let escaped = "/Users/bob/R&amp;D &lt;new&gt; &quot;q&quot; &apos;a&apos;";
        assert!(plist.contains(&format!(
            "    <string>{escaped}</string>\n    <string>--home"
        )));
        assert!(plist.contains(&format!(
            "<key>WorkingDirectory</key>\n  <string>{escaped}</string>"
        )));
        assert!(plist.contains("<string>/a&amp;b:/usr/bin</string>"));
        assert!(!plist.contains("R&D"));
    }

    #[test]
    fn rendering_rejects_bad_specs() {
        let cases = [
            ServiceSpec {
                name: "Has Space".to_owned(),
                ..spec()
            },
            ServiceSpec {
                name: String::new(),
                ..spec()
            },
            ServiceSpec {
                repo: PathBuf::from("relative/repo"),
                ..spec()
            },
            ServiceSpec {
                home: PathBuf::from("/home/new\nline"),
                ..spec()
            },
            ServiceSpec {
                path_env: "/bin\r".to_owned(),
                ..spec()
            },
        ];
        for bad in cases {
            assert!(render_systemd(&bad).is_err(), "{bad:?}");
            assert!(render_launchd(&bad).is_err(), "{bad:?}");
        }
        let trailing_backslash = ServiceSpec {
            repo: PathBuf::from(r"/srv/repo\"),
            ..spec()
        };
        assert!(render_systemd(&trailing_backslash).is_err());
    }

    #[test]
    fn stop_timeout_is_twice_the_grace_plus_margin() {
        assert_eq!(stop_timeout_secs(Duration::from_secs(10)), 50);
        assert_eq!(stop_timeout_secs(Duration::from_millis(2_500)), 35);
        assert_eq!(stop_timeout_secs(Duration::from_millis(1)), 31);
        assert_eq!(stop_timeout_secs(Duration::ZERO), 30);
    }

    #[test]
    fn service_names_are_sanitized() {
        let cases = [
            ("/home/a/webshop", "webshop"),
            ("/home/a/My Project (v2)", "my-project-v2"),
            ("/home/a/my.repo_x", "my.repo_x"),
            ("/home/a/--weird--", "weird"),
            ("/home/a/.hidden", "hidden"),
            ("/home/a/Ünïcode", "n-code"),
            ("/home/a/日本", "repo"),
            ("/", "repo"),
        ];
        for (repo, expected) in cases {
            assert_eq!(service_name(Path::new(repo)), expected, "repo {repo}");
        }
        assert_eq!(
            service_name(Path::new(&format!("/{}", "x".repeat(100)))).len(),
            64
        );
    }

    #[test]
    fn install_writes_the_unit_and_says_when_it_replaces_one() {
        let home_dir = tempfile::tempdir().unwrap();
        let report = install(ServiceKind::Systemd, &spec(), home_dir.path()).unwrap();
        let expected_path = home_dir
            .path()
            .join(".config/systemd/user/ralphd-webshop.service");
        assert_eq!(report.path, expected_path);
        assert_eq!(report.previous, Previous::None);
        assert_eq!(
            fs::read_to_string(&expected_path).unwrap(),
            render_systemd(&spec()).unwrap()
        );
        assert_eq!(
            report.commands,
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable --now ralphd-webshop.service",
                "loginctl enable-linger \"$USER\"",
                "systemctl --user status ralphd-webshop.service",
                "journalctl --user -u ralphd-webshop.service -f",
            ]
        );

        let again = install(ServiceKind::Systemd, &spec(), home_dir.path()).unwrap();
        assert_eq!(again.previous, Previous::Identical);

        let changed = ServiceSpec {
            stop_grace: Duration::from_secs(20),
            ..spec()
        };
        let replaced = install(ServiceKind::Systemd, &changed, home_dir.path()).unwrap();
        assert_eq!(replaced.previous, Previous::Replaced);
        assert!(
            fs::read_to_string(&expected_path)
                .unwrap()
                .contains("TimeoutStopSec=70s")
        );
        assert!(
            replaced
                .commands
                .contains(&"systemctl --user restart ralphd-webshop.service".to_owned())
        );
        let leftovers: Vec<_> = fs::read_dir(expected_path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            ["ralphd-webshop.service"],
            "no temporary files left"
        );
    }

    #[test]
    fn install_launchd_writes_the_plist_and_creates_the_log_dir() {
        let home_dir = tempfile::tempdir().unwrap();
        let ralph_home = home_dir.path().join("ralph home");
        let spec = ServiceSpec {
            home: ralph_home.clone(),
            ..spec()
        };
        let report = install(ServiceKind::Launchd, &spec, home_dir.path()).unwrap();
        let expected_path = home_dir
            .path()
            .join("Library/LaunchAgents/dev.ralphd.webshop.plist");
        assert_eq!(report.path, expected_path);
        assert_eq!(report.previous, Previous::None);
        assert_eq!(
            fs::read_to_string(&expected_path).unwrap(),
            render_launchd(&spec).unwrap()
        );
        assert!(ralph_home.join("logs").is_dir());
        assert_eq!(
            report.commands,
            [
                "launchctl enable gui/$(id -u)/dev.ralphd.webshop".to_owned(),
                format!(
                    "launchctl bootstrap gui/$(id -u) {}",
                    expected_path.display()
                ),
                "launchctl print gui/$(id -u)/dev.ralphd.webshop".to_owned(),
                format!("tail -F '{}/logs/ralphd.log'", ralph_home.display()),
            ]
        );
    }

    #[test]
    fn shell_quote_cases() {
        assert_eq!(shell_quote("/a/b.plist"), "/a/b.plist");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    /// The rendered unit passes `systemd-analyze verify`, with a binary path that
    /// needs quoting and escaping (verify fails if ExecStart's binary does not exist).
    #[test]
    fn systemd_analyze_verifies_the_unit() {
        let analyze = Path::new("/usr/bin/systemd-analyze");
        let analyze = if analyze.exists() {
            analyze.to_path_buf()
        } else {
            match find_in_path("systemd-analyze") {
                Some(path) => path,
                None => {
                    println!("notice: systemd-analyze not found, unit not verified");
                    return;
                }
            }
        };
        let temp = tempfile::tempdir().unwrap();
        let bin_dir = temp.path().join("bin dir 100%u");
        fs::create_dir_all(&bin_dir).unwrap();
        let binary = bin_dir.join("ralphd");
        fs::write(&binary, "#!/bin/sh\nexit 0\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let repo = temp.path().join("my repo");
        fs::create_dir_all(&repo).unwrap();
        let spec = ServiceSpec {
            binary,
            home: repo.join(".ralph"),
            repo,
            ..spec()
        };
        let unit_path = temp
            .path()
            .join(file_name(ServiceKind::Systemd, &spec.name));
        fs::write(&unit_path, render_systemd(&spec).unwrap()).unwrap();

        // `--user` needs a runtime directory for the (offline) user manager it builds;
        // without XDG_RUNTIME_DIR it fails with "Failed to initialize manager".
        let runtime_dir = temp.path().join("runtime");
        fs::create_dir_all(&runtime_dir).unwrap();
        let output = std::process::Command::new(&analyze)
            .args(["verify", "--user", "--man=no"])
            .arg(&unit_path)
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Unknown keys and unparsable values are only warnings: fail on any message
        // about our unit as well as on a non-zero exit.
        let unit_messages: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains("ralphd-webshop"))
            .collect();
        assert!(
            output.status.success() && unit_messages.is_empty(),
            "systemd-analyze verify failed ({}):\n{stderr}",
            output.status
        );
    }

    fn find_in_path(program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    }
}
