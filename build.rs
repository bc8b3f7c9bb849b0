//! Build script: compiles the real-CLI tests (`tests/it/real_cli.rs`,
//! `real_loop.rs` and `real_mcp.rs`) only when `RALPHD_REAL_CLAUDE` names the
//! Claude Code CLI, by setting `cfg(real_claude)`. Without it a single test,
//! `real_cli_skipped::real_cli_tests_skipped_set_RALPHD_REAL_CLAUDE_to_run_them`,
//! stands in for them, so the test list and count show that they did not run
//! (and under `CI=true` it fails). The daemon itself does not use the cfg.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(real_claude)");
    println!("cargo::rerun-if-env-changed=RALPHD_REAL_CLAUDE");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("RALPHD_REAL_CLAUDE").is_some_and(|path| !path.is_empty()) {
        println!("cargo::rustc-cfg=real_claude");
    }
}
