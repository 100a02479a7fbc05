//! The binary: everything lives in the library; this only hands over the process exit code.

fn main() -> std::process::ExitCode {
    connect_payg::cli::main()
}
