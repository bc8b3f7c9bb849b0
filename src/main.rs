//! The `ralphd` binary: everything lives in the library; see `ralphd::run`.

fn main() -> std::process::ExitCode {
    ralphd::run(std::env::args_os())
}
