//! The `gatewayworker` binary: the command line with the bundled applications.

fn main() {
    std::process::exit(gatewayworker::cli::main(gatewayworker::app::bundled));
}
