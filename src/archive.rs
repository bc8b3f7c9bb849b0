//! Archive folders for a branch the daemon leaves: `archive/<YYYY-MM-DD>-<branch>/`
//! holding copies of that branch's progress.json and prd.json (docs/design.md §3, §6).
//!
//! Branch names are taken as `&str`: git may hand out non-UTF-8 names, which
//! the caller converts lossily first (`GitRepo::branch_label` does), so an
//! invalid byte becomes U+FFFD and is kept like any other non-ASCII character.
//! Knows nothing of git or of the state file formats.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The longest directory name produced, in bytes (suffixes such as `-2` may
/// add a few more).
const MAX_NAME_BYTES: usize = 80;

/// The name for the archive of `branch` made on `date`: `2026-11-22-feature-login`.
///
/// The branch part has path separators, whitespace (tabs and newlines too)
/// and characters that are unsafe on common file systems turned into `-`,
/// other control characters removed,
/// runs of `-` and of `.` collapsed (so never `..`), no leading or trailing
/// `-` or `.`; non-ASCII is kept. An empty result becomes `unnamed`. The whole
/// name is cut to 80 bytes on a char boundary.
pub(crate) fn archive_dir_name(date: jiff::civil::Date, branch: &str) -> String {
    let mut safe = String::with_capacity(branch.len());
    for ch in branch.chars() {
        let mapped = match ch {
            _ if ch.is_whitespace() => '-',
            _ if ch.is_control() => continue,
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '-',
            _ => ch,
        };
        let repeats = matches!(mapped, '-' | '.') && safe.ends_with(mapped);
        if !repeats {
            safe.push(mapped);
        }
    }
    let mut name = format!("{}-", date.strftime("%Y-%m-%d"));
    let trimmed = safe.trim_matches(['-', '.']);
    name.push_str(if trimmed.is_empty() {
        "unnamed"
    } else {
        trimmed
    });
    if name.len() > MAX_NAME_BYTES {
        name.truncate(crate::text::head_bytes(&name, MAX_NAME_BYTES).len());
        let kept = name.trim_end_matches(['-', '.']).len();
        name.truncate(kept);
    }
    name
}

/// Creates `archive_root/<name>/` (or `<name>-2`, `-3`… when taken: an
/// existing archive is never overwritten) and writes `files` into it.
/// A file whose content is `None` did not exist and is skipped. File names
/// must be plain names (no separators, not `.` or `..`). Returns the new
/// directory.
pub(crate) fn archive_branch(
    archive_root: &Path,
    date: jiff::civil::Date,
    branch: &str,
    files: &[(&str, Option<&[u8]>)],
) -> anyhow::Result<PathBuf> {
    for (file_name, _) in files {
        let plain = !file_name.is_empty()
            && *file_name != "."
            && *file_name != ".."
            && !file_name.contains(['/', '\\', '\0']);
        if !plain {
            bail!("archive file name {file_name:?} is not a plain file name");
        }
    }
    fs::create_dir_all(archive_root)
        .with_context(|| format!("create archive directory {}", archive_root.display()))?;
    let base = archive_dir_name(date, branch);
    let dir = create_unique_dir(archive_root, &base)?;
    for (file_name, contents) in files {
        let Some(contents) = contents else {
            continue;
        };
        let path = dir.join(file_name);
        fs::write(&path, contents)
            .with_context(|| format!("write archive file {}", path.display()))?;
    }
    Ok(dir)
}

/// Creates `root/base`, else `root/base-2`, `-3`…; `create_dir` fails on an
/// existing directory, so two archivers can never share one.
fn create_unique_dir(root: &Path, base: &str) -> anyhow::Result<PathBuf> {
    const MAX_SUFFIX: u32 = 10_000;
    for suffix in 1..=MAX_SUFFIX {
        let name = if suffix == 1 {
            base.to_owned()
        } else {
            format!("{base}-{suffix}")
        };
        let dir = root.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("create archive directory {}", dir.display()));
            }
        }
    }
    bail!(
        "create archive directory in {}: {base} and {MAX_SUFFIX} suffixes already exist",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::{archive_branch, archive_dir_name};

    fn date() -> jiff::civil::Date {
        jiff::civil::date(2026, 11, 22)
    }

    #[track_caller]
    fn check(branch: &str, expected: &str) {
        assert_eq!(
            archive_dir_name(date(), branch),
            expected,
            "branch {branch:?}"
        );
    }

    #[test]
    fn sanitises_branch_names() {
        check("main", "2026-11-22-main");
        check("feature/login", "2026-11-22-feature-login");
        check("a//b\\c", "2026-11-22-a-b-c");
        check("../../etc/passwd", "2026-11-22-etc-passwd");
        check("a..b", "2026-11-22-a.b");
        check("..", "2026-11-22-unnamed");
        check("my branch\tname", "2026-11-22-my-branch-name");
        check("fix/ünïcödé-分支", "2026-11-22-fix-ünïcödé-分支");
        check("bad\u{0}\u{1b}[31mred\u{7f}", "2026-11-22-bad[31mred");
        check("line\nbreak\r", "2026-11-22-line-break");
        check("", "2026-11-22-unnamed");
        check("///", "2026-11-22-unnamed");
        check("detached-1a2b3c4", "2026-11-22-detached-1a2b3c4");
        check("lossy-\u{fffd}", "2026-11-22-lossy-\u{fffd}");
        check("win:dows*?\"<>|", "2026-11-22-win-dows");
        check(".hidden", "2026-11-22-hidden");
    }

    #[test]
    fn caps_long_names_on_a_char_boundary() {
        let ascii = archive_dir_name(date(), &"x".repeat(500));
        assert_eq!(ascii.len(), 80);
        let wide = archive_dir_name(date(), &"分".repeat(100));
        assert!(wide.len() <= 80 && wide.len() > 70, "{}", wide.len());
        assert!(wide.starts_with("2026-11-22-分"));
        let dashes = archive_dir_name(date(), &format!("{}/{}", "a".repeat(68), "b".repeat(20)));
        assert_eq!(dashes, format!("2026-11-22-{}", "a".repeat(68)));
        for name in [ascii, wide, dashes] {
            assert!(!name.contains('/') && !name.contains(".."));
        }
    }

    #[test]
    fn same_day_archives_get_suffixes_and_never_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let archive_root = root.path().join("archive");
        let files: [(&str, Option<&[u8]>); 2] =
            [("progress.json", Some(b"{\"n\":1}")), ("prd.json", None)];
        let first = archive_branch(&archive_root, date(), "feature/login", &files).unwrap();
        let files_two: [(&str, Option<&[u8]>); 2] = [
            ("progress.json", Some(b"{\"n\":2}")),
            ("prd.json", Some(b"{}")),
        ];
        let second = archive_branch(&archive_root, date(), "feature/login", &files_two).unwrap();
        let third = archive_branch(&archive_root, date(), "feature/login", &files).unwrap();
        assert_eq!(first, archive_root.join("2026-11-22-feature-login"));
        assert_eq!(second, archive_root.join("2026-11-22-feature-login-2"));
        assert_eq!(third, archive_root.join("2026-11-22-feature-login-3"));
        assert_eq!(
            std::fs::read(first.join("progress.json")).unwrap(),
            b"{\"n\":1}"
        );
        assert!(!first.join("prd.json").exists());
        assert_eq!(
            std::fs::read(second.join("progress.json")).unwrap(),
            b"{\"n\":2}"
        );
        assert_eq!(std::fs::read(second.join("prd.json")).unwrap(), b"{}");
        let other_day = archive_branch(
            &archive_root,
            jiff::civil::date(2026, 11, 23),
            "feature/login",
            &files,
        )
        .unwrap();
        assert_eq!(other_day, archive_root.join("2026-11-23-feature-login"));
    }

    #[test]
    fn rejects_file_names_with_separators() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", "..", ""] {
            let files: [(&str, Option<&[u8]>); 1] = [(bad, Some(b"x"))];
            assert!(
                archive_branch(root.path(), date(), "main", &files).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
