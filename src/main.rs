//! The `kiln` command line: clap definitions and dispatch. Each command lives in `cmd/<name>.rs`.

mod cli;
mod cmd;
mod config;
mod container;
mod output;
mod progress;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    // A normal user becomes uid 0 of a user namespace before anything else (it must be done while
    // the process has one thread); where that cannot be done, commands that need it say why.
    let _ = kiln_runtime::isolation::enter_rootless();
    // Output that does not go through `output::write_stdout` (progress lines of pull and push)
    // still ends quietly when the reader goes away, instead of a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(output::BROKEN_PIPE_STATUS.into());
        }
        default_hook(info)
    }));
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) if err.chain().any(|cause| cause.is::<output::StdoutClosed>()) => {
            ExitCode::from(output::BROKEN_PIPE_STATUS)
        }
        Err(err) => {
            let message = output::error_line(&err);
            eprintln!("Error: {message}");
            cmd::kiln_error()
        }
    }
}

/// Help and version asked for go to stdout with success; a usage error is one line on stderr
/// (what was wrong, and where to read more) with docker's status for its own errors, 125.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let text = err.render().to_string();
            match output::write_stdout(format_args!("{text}")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(output::BROKEN_PIPE_STATUS),
            }
        }
        _ => {
            let text = err.render().to_string();
            let mut reason = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if line.starts_with("Usage:") || line.starts_with("For more information") {
                    break;
                }
                if line.starts_with("tip:") {
                    continue;
                }
                reason.push(line.strip_prefix("error: ").unwrap_or(line));
            }
            eprintln!("Error: {} (see 'kiln --help')", reason.join(" "));
            cmd::kiln_error()
        }
    }
}
