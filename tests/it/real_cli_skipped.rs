//! Stands in for the real-CLI tests (`real_cli.rs`, `real_loop.rs`) when they were
//! not compiled because `RALPHD_REAL_CLAUDE` was unset at build time (build.rs):
//! its one test shows in the list and the count that they did not run, says so on
//! stderr, and fails under `CI=true`, where they must run.

use std::io::Write as _;

#[test]
#[allow(non_snake_case)] // The variable's name, as the user types it.
fn real_cli_tests_skipped_set_RALPHD_REAL_CLAUDE_to_run_them() {
    let hint = "the real-CLI tests (tests/it/real_cli.rs, real_loop.rs) were NOT compiled or run: \
                RALPHD_REAL_CLAUDE is unset. Run them with: \
                export RALPHD_REAL_CLAUDE=$(.ci/install-claude) && cargo test";
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("real-CLI tests cannot be skipped under CI=true: {hint}");
    }
    // Straight to the terminal, past the test harness's capture of passing tests.
    let _ = writeln!(std::io::stderr(), "\nNOTE: {hint}\n");
}
