//! Signals and processes by pid, for the container commands of the CLI (`stop`, `kill`, the
//! supervisor), so that the CLI crate itself needs no `unsafe` nor `nix`.

use std::io;
use std::process::Command;

use nix::sys::signal::Signal;

/// A signal by name (`SIGTERM`, `TERM`, `term`, `SIGRTMIN+3`) or number (1–64).
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(signal) = Signal::iterator().find(|s| s.as_str().strip_prefix("SIG") == Some(name)) {
        return Some(signal as i32);
    }
    let rt = name.strip_prefix("RTMIN")?;
    let base = libc::SIGRTMIN();
    let n = match rt {
        "" => 0,
        _ => rt.strip_prefix('+')?.parse::<i32>().ok()?,
    };
    Some(base + n).filter(|s| *s <= libc::SIGRTMAX())
}

/// Sends `signal` to `pid`. ESRCH (already gone) is not an error.
pub fn send_signal(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::other(format!("no process to signal (pid {pid})")));
    }
    // SAFETY: plain syscall on a positive pid.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(err)
}

/// Makes `command` start in a session of its own (no controlling terminal, out of kiln's process
/// group), so that a terminal's Ctrl-C or a closing terminal never reaches it.
pub fn detach_on_spawn(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe, as required between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Ignores SIGHUP and SIGPIPE in this process (a supervisor outlives its terminal and writes to
/// pipes whose readers may go).
pub fn ignore_hangups() {
    // SAFETY: setting dispositions to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// kiln's stdin terminal in raw mode (no echo, no line editing, no signals from keys) while
/// this lives, as `attach` to a container with a tty needs; restored when dropped.
pub struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    /// `None` when stdin is not a terminal.
    pub fn enter() -> Option<RawTerminal> {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let _ = nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("kill"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("HUP"), Some(libc::SIGHUP));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+1"), Some(libc::SIGRTMIN() + 1));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("SIGBOGUS"), None);
    }

    #[test]
    fn signalling_a_finished_process_is_not_an_error() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        send_signal(pid, libc::SIGTERM).unwrap();
        assert!(send_signal(0, libc::SIGTERM).is_err());
    }
}
