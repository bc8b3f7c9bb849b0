//! Keeps the disk use of `state/cycles/` bounded over weeks (docs/design.md §14):
//! the transcripts and phase texts of the newest `keep_cycles` cycles stay,
//! those past the newest `compress_after` are gzip-compressed (`scan.jsonl`
//! becomes `scan.jsonl.gz`), and older cycle directories are deleted, oldest
//! first.
//!
//! [`plan`] is the rule, pure; [`apply`] carries it out. They touch nothing
//! but the numbered directories of `state/cycles/` (never a symlink, never
//! the cycle in flight); progress.json, which keeps every cycle's record, is
//! not theirs.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

/// `[state] keep_cycles` and `compress_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retention {
    /// The newest this many cycles keep their directory (at least 1).
    pub(crate) keep_cycles: u32,
    /// Past the newest this many, a kept cycle is compressed; 0 = never.
    pub(crate) compress_after: u32,
}

/// What happens to the directory of one cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Compress,
    Delete,
}

/// The actions for the cycles that have a directory (`cycles`, in any
/// order), oldest first; cycles not named stay as they are. `in_flight` is
/// never touched, and counts as the newest.
pub(crate) fn plan(
    cycles: &[u64],
    retention: Retention,
    in_flight: Option<u64>,
) -> Vec<(u64, Action)> {
    let mut newest_first: Vec<u64> = cycles
        .iter()
        .copied()
        .filter(|cycle| Some(*cycle) != in_flight)
        .collect();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    newest_first.dedup();
    let keep = usize::try_from(retention.keep_cycles.max(1)).unwrap_or(usize::MAX);
    let plain = match retention.compress_after {
        0 => usize::MAX,
        after => usize::try_from(after).unwrap_or(usize::MAX),
    };
    // The cycle in flight takes the first place.
    let offset = usize::from(in_flight.is_some());
    let mut actions: Vec<(u64, Action)> = newest_first
        .iter()
        .enumerate()
        .filter_map(|(index, cycle)| {
            let rank = index + offset;
            if rank >= keep {
                Some((*cycle, Action::Delete))
            } else if rank >= plain {
                Some((*cycle, Action::Compress))
            } else {
                None
            }
        })
        .collect();
    actions.reverse();
    actions
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub(crate) deleted: usize,
    pub(crate) compressed_files: usize,
    /// Problems met on the way (each named with its path); the rest went on.
    pub(crate) problems: Vec<String>,
}

/// Applies [`plan`] to `cycles_dir` (`state/cycles/`): deletions first, so a
/// nearly full disk gets room before anything is compressed. `stop` is asked
/// between files (a first pass over a big home may take minutes): when it
/// says so, the rest waits for the next pass.
pub(crate) fn apply(
    cycles_dir: &Path,
    retention: Retention,
    in_flight: Option<u64>,
    stop: impl Fn() -> bool,
) -> Pruned {
    let mut pruned = Pruned::default();
    let cycles = match cycle_dirs(cycles_dir) {
        Ok(cycles) => cycles,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return pruned,
        Err(error) => {
            pruned
                .problems
                .push(format!("cannot list {}: {error}", cycles_dir.display()));
            return pruned;
        }
    };
    let actions = plan(&cycles, retention, in_flight);
    for (cycle, _) in actions
        .iter()
        .filter(|(_, action)| *action == Action::Delete)
    {
        if stop() {
            return pruned;
        }
        let dir = cycles_dir.join(cycle.to_string());
        match fs::remove_dir_all(&dir) {
            Ok(()) => pruned.deleted += 1,
            Err(error) => pruned
                .problems
                .push(format!("cannot delete {}: {error}", dir.display())),
        }
    }
    for (cycle, _) in actions
        .iter()
        .filter(|(_, action)| *action == Action::Compress)
    {
        let dir = cycles_dir.join(cycle.to_string());
        if let Err(problem) = compress_dir(&dir, &mut pruned.compressed_files, &stop) {
            pruned.problems.push(problem);
            // Most likely a full disk: compressing the next one would fail too.
            break;
        }
    }
    pruned
}

/// The cycle numbers that have a real directory (as ralphd names them: no
/// leading zeros, no symlinks).
fn cycle_dirs(cycles_dir: &Path) -> io::Result<Vec<u64>> {
    let mut cycles = Vec::new();
    for entry in fs::read_dir(cycles_dir)? {
        let entry = entry?;
        let Some(cycle) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u64>().ok().filter(|n| n.to_string() == name))
        else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            cycles.push(cycle);
        }
    }
    Ok(cycles)
}

/// Compresses every plain file of one cycle directory to `<name>.gz`: the
/// `.gz` is written under a temp name, synced and renamed before the plain
/// file is removed, so a crash leaves one of the two whole (a temp file left
/// behind is removed by the next pass).
fn compress_dir(
    dir: &Path,
    compressed: &mut usize,
    stop: &impl Fn() -> bool,
) -> Result<(), String> {
    let listed = || -> io::Result<Vec<(String, bool)>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                entries.push((name, entry.file_type()?.is_file()));
            }
        }
        Ok(entries)
    };
    let entries = listed().map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
    for (name, is_file) in entries {
        if stop() {
            return Ok(());
        }
        let path = dir.join(&name);
        if !is_file || name.ends_with(".gz") {
            continue;
        }
        if name.starts_with('.') && name.ends_with(".gz.tmp") {
            let _ = fs::remove_file(&path);
            continue;
        }
        let temp = dir.join(format!(".{name}.gz.tmp"));
        let target = dir.join(format!("{name}.gz"));
        if let Err(error) = gzip(&path, &temp).and_then(|()| fs::rename(&temp, &target)) {
            let _ = fs::remove_file(&temp);
            return Err(format!("cannot compress {}: {error}", path.display()));
        }
        fs::remove_file(&path)
            .map_err(|error| format!("cannot remove {}: {error}", path.display()))?;
        *compressed += 1;
    }
    Ok(())
}

fn gzip(source: &Path, target: &Path) -> io::Result<()> {
    let mut input = fs::File::open(source)?;
    let output = fs::File::create(target)?;
    let mut encoder = GzEncoder::new(io::BufWriter::new(output), Compression::default());
    io::copy(&mut input, &mut encoder)?;
    let mut output = encoder.finish()?;
    output.flush()?;
    output.get_ref().sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    const POLICY: Retention = Retention {
        keep_cycles: 5,
        compress_after: 2,
    };

    #[test]
    fn the_newest_stay_then_compressed_then_deleted_oldest_first() {
        /// Cycles with a directory, the policy, the cycle in flight, the plan.
        type Case = (
            &'static [u64],
            Retention,
            Option<u64>,
            &'static [(u64, Action)],
        );
        let cases: [Case; 8] = [
            (&[], POLICY, None, &[]),
            (&[1, 2], POLICY, None, &[]),
            (
                &[3, 1, 2, 4, 5, 6, 7],
                POLICY,
                None,
                &[
                    (1, Action::Delete),
                    (2, Action::Delete),
                    (3, Action::Compress),
                    (4, Action::Compress),
                    (5, Action::Compress),
                ],
            ),
            // Gaps (a directory removed by hand) do not count.
            (
                &[2, 9, 10, 30],
                POLICY,
                None,
                &[(2, Action::Compress), (9, Action::Compress)],
            ),
            // The cycle in flight is never touched and takes the first place.
            (
                &[1, 2, 3, 4, 5, 6],
                POLICY,
                Some(6),
                &[
                    (1, Action::Delete),
                    (2, Action::Compress),
                    (3, Action::Compress),
                    (4, Action::Compress),
                ],
            ),
            // compress_after = 0: never compressed.
            (
                &[1, 2, 3, 4, 5, 6],
                Retention {
                    keep_cycles: 3,
                    compress_after: 0,
                },
                None,
                &[
                    (1, Action::Delete),
                    (2, Action::Delete),
                    (3, Action::Delete),
                ],
            ),
            // compress_after ≥ keep_cycles: deleted before they would be compressed.
            (
                &[1, 2, 3],
                Retention {
                    keep_cycles: 2,
                    compress_after: 2,
                },
                None,
                &[(1, Action::Delete)],
            ),
            // keep_cycles = 1 keeps the newest, even with one in flight.
            (
                &[7, 8],
                Retention {
                    keep_cycles: 1,
                    compress_after: 0,
                },
                Some(8),
                &[(7, Action::Delete)],
            ),
        ];
        for (cycles, retention, in_flight, expected) in cases {
            assert_eq!(
                plan(cycles, retention, in_flight),
                expected,
                "{cycles:?} {retention:?} in flight {in_flight:?}"
            );
        }
    }

    fn gunzip(path: &Path) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn apply_deletes_and_compresses_only_numbered_cycle_directories() {
        let home = tempfile::tempdir().unwrap();
        let cycles = home.path().join("state/cycles");
        for cycle in 1..=7 {
            let dir = cycles.join(cycle.to_string());
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("scan.jsonl"), format!("{{\"cycle\":{cycle}}}\n")).unwrap();
            fs::write(dir.join("report.md"), format!("# Cycle {cycle}\n")).unwrap();
        }
        // Not ralphd's: left alone.
        fs::create_dir_all(cycles.join("notes")).unwrap();
        fs::create_dir_all(cycles.join("007")).unwrap();
        let elsewhere = home.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("keep.jsonl"), "x\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, cycles.join("0")).unwrap();
        // A compression that a crash interrupted, in cycle 3.
        fs::write(cycles.join("3/.scan.jsonl.gz.tmp"), "half").unwrap();

        // Asked to stop at once, it does nothing.
        assert_eq!(apply(&cycles, POLICY, None, || true), Pruned::default());
        assert_eq!(names(&cycles.join("1")), ["report.md", "scan.jsonl"]);

        let pruned = apply(&cycles, POLICY, None, || false);
        assert_eq!(pruned.deleted, 2);
        assert_eq!(pruned.compressed_files, 6);
        assert!(pruned.problems.is_empty(), "{:?}", pruned.problems);
        assert_eq!(
            names(&cycles),
            ["0", "007", "3", "4", "5", "6", "7", "notes"]
        );
        for cycle in [6, 7] {
            assert_eq!(
                names(&cycles.join(cycle.to_string())),
                ["report.md", "scan.jsonl"]
            );
        }
        for cycle in [3, 4, 5] {
            let dir = cycles.join(cycle.to_string());
            assert_eq!(names(&dir), ["report.md.gz", "scan.jsonl.gz"]);
            assert_eq!(
                gunzip(&dir.join("scan.jsonl.gz")),
                format!("{{\"cycle\":{cycle}}}\n")
            );
        }
        assert_eq!(
            names(&elsewhere),
            ["keep.jsonl"],
            "a symlink is not followed"
        );

        // A second pass finds nothing to do.
        assert_eq!(apply(&cycles, POLICY, None, || false), Pruned::default());
        // A home without cycles yet is no problem.
        assert_eq!(
            apply(&home.path().join("nothing"), POLICY, None, || false),
            Pruned::default()
        );
    }
}
