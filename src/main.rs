//! The binary: everything lives in the library; this only hands over the process exit code.

#[global_allocator]
static ALLOCATOR: connect_payg::allocator::Allocator = connect_payg::allocator::Allocator;

fn main() -> std::process::ExitCode {
    connect_payg::cli::main()
}
