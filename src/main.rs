//! The `kiln` command line: clap definitions and dispatch. Each command lives in `cmd/<name>.rs`.

mod cli;
mod cmd;
mod output;
mod progress;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line: the chain of causes joined, as docker prints "Error: …".
            let mut message = err.to_string();
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message.push_str(": ");
                    message.push_str(&cause);
                }
            }
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}
