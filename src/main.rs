//! The `cloudoptim` binary: parse arguments, set up logging, dispatch. Nothing else lives here.

use clap::Parser;
use cloudoptim::cli::{Cli, dispatch};

fn main() {
    let cli = Cli::parse();
    if let Err(err) = cloudoptim::telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {err}");
        std::process::exit(cloudoptim::cli::EXIT_BAD_INPUT);
    }
    if let Err(err) = dispatch(cli.command) {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}
