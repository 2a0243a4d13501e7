//! Running another architecture's binaries: QEMU user emulation through binfmt_misc, as BuildKit
//! and buildah use it (tonistiigi/binfmt, Debian's `qemu-user-static`).
//!
//! The kernel runs a foreign ELF binary through the interpreter a binfmt_misc handler names. kiln
//! starts nothing itself: a RUN step for `linux/arm64` execs `/bin/sh` as usual and the kernel hands
//! it to `qemu-aarch64`. For that to work inside a container the handler must carry the `F`
//! (fix-binary) flag, so the kernel opened the interpreter when it was registered and the
//! container's root need not hold it.
//!
//! [`ensure_can_run`] checks this before a RUN step for a platform the host cannot run natively;
//! when the handler is missing and kiln is root, it registers the one Debian's `qemu-user-static`
//! ships in `binfmt.d` (the same line `systemd-binfmt` would write), mounting binfmt_misc first
//! if needed. Anything else gets one line naming the architecture and the fix.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Where packages put their binfmt_misc lines (systemd's binfmt.d search path).
const BINFMT_D: [&str; 3] = ["/etc/binfmt.d", "/run/binfmt.d", "/usr/lib/binfmt.d"];

/// Why a platform's binaries cannot run here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmulationError {
    #[error(
        "{platform} binaries need QEMU user emulation and no QEMU for {qemu} is installed: install Debian's \
         qemu-user-static (apt-get install qemu-user-static)"
    )]
    NoQemu { platform: String, qemu: String },
    #[error(
        "{platform} binaries need QEMU user emulation: no binfmt_misc handler for {qemu} is registered and \
         registering one needs root (run a kiln build as root once, or `update-binfmts --enable qemu-{qemu}`)"
    )]
    NotRegistered { platform: String, qemu: String },
    #[error("{platform} binaries need QEMU user emulation: the binfmt_misc handler {path} is {why}")]
    BadHandler { platform: String, path: PathBuf, why: String },
    #[error("{platform} binaries need QEMU user emulation: registering {qemu} with binfmt_misc failed: {why}")]
    Register { platform: String, qemu: String, why: String },
    #[error("platform {platform}: QEMU user emulation does not support the architecture {arch}")]
    Unsupported { platform: String, arch: String },
}

/// QEMU's name for an OCI/Go architecture (`arm64` → `aarch64`).
pub fn qemu_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "mipsle" => "mipsel",
        "mips" => "mips",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// The host's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Whether the host's CPU runs `arch` binaries itself: its own, and 32-bit x86 on x86-64 (the
/// kernel's compat mode, as BuildKit counts it).
pub fn runs_natively(arch: &str) -> bool {
    let host = host_arch();
    arch == host || (host == "amd64" && arch == "386")
}

/// Makes sure a RUN step for `platform` (`os/arch[/variant]`) can exec its binaries: nothing to do
/// when the host runs them natively; otherwise a working binfmt_misc handler for QEMU, registered
/// here when missing and kiln may. Only `linux` platforms reach this (the planner refuses others).
pub fn ensure_can_run(platform: &str) -> Result<(), EmulationError> {
    let arch = platform.split('/').nth(1).unwrap_or("");
    if runs_natively(arch) {
        return Ok(());
    }
    let qemu = qemu_arch(arch)
        .ok_or_else(|| EmulationError::Unsupported { platform: platform.to_string(), arch: arch.to_string() })?;
    // One registration at a time within this process (parallel platform builds).
    static REGISTERING: Mutex<()> = Mutex::new(());
    let _guard = REGISTERING.lock().unwrap_or_else(|e| e.into_inner());
    ensure_handler(Path::new(BINFMT_DIR), &BINFMT_D.map(Path::new), platform, qemu, is_root())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root() && crate::isolation::has_cap_sys_admin()
}

/// The check and registration, with the directories as arguments so tests can use their own.
fn ensure_handler(
    binfmt: &Path,
    binfmt_d: &[&Path],
    platform: &str,
    qemu: &str,
    may_register: bool,
) -> Result<(), EmulationError> {
    let handler_path = binfmt.join(format!("qemu-{qemu}"));
    match fs::read_to_string(&handler_path) {
        Ok(text) => return check_handler(&handler_path, &text, platform),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(EmulationError::BadHandler {
                platform: platform.to_string(),
                path: handler_path,
                why: format!("unreadable ({e})"),
            })
        }
    }
    let line = registration_line(binfmt_d, qemu)
        .ok_or_else(|| EmulationError::NoQemu { platform: platform.to_string(), qemu: qemu.to_string() })?;
    if !may_register {
        return Err(EmulationError::NotRegistered { platform: platform.to_string(), qemu: qemu.to_string() });
    }
    let register_error =
        |why: String| EmulationError::Register { platform: platform.to_string(), qemu: qemu.to_string(), why };
    if !binfmt.join("register").exists() {
        mount_binfmt_misc(binfmt)
            .map_err(|e| register_error(format!("mounting binfmt_misc on {}: {e}", binfmt.display())))?;
    }
    match fs::OpenOptions::new()
        .write(true)
        .open(binfmt.join("register"))
        .and_then(|mut f| f.write_all(line.as_bytes()))
    {
        Ok(()) => {}
        // Another process registered it in the meantime: its handler is checked below.
        Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
        Err(e) => return Err(register_error(e.to_string())),
    }
    let text = fs::read_to_string(&handler_path)
        .map_err(|e| register_error(format!("reading {}: {e}", handler_path.display())))?;
    check_handler(&handler_path, &text, platform)
}

/// Debian's line for `qemu` (`:qemu-aarch64:M::magic:mask:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF`)
/// from the first binfmt.d directory holding it, when its interpreter exists and it asks for `F`.
fn registration_line(binfmt_d: &[&Path], qemu: &str) -> Option<String> {
    for dir in binfmt_d {
        let Ok(text) = fs::read_to_string(dir.join(format!("qemu-{qemu}.conf"))) else { continue };
        for line in text.lines().map(str::trim).filter(|l| l.starts_with(':')) {
            let fields: Vec<&str> = line.split(':').collect();
            // "", name, type, offset, magic, mask, interpreter, flags
            if fields.len() != 8 || fields[1] != format!("qemu-{qemu}") || !Path::new(fields[6]).exists() {
                continue;
            }
            let mut flags = fields[7].to_string();
            if !flags.contains('F') {
                flags.push('F');
            }
            return Some(format!("{}:{flags}", fields[..7].join(":")));
        }
    }
    None
}

/// A registered handler is usable when enabled, its interpreter exists, and it has `F` (else the
/// interpreter would be looked up inside the container's root, where it is not).
fn check_handler(path: &Path, text: &str, platform: &str) -> Result<(), EmulationError> {
    let bad =
        |why: String| EmulationError::BadHandler { platform: platform.to_string(), path: path.to_path_buf(), why };
    let mut lines = text.lines();
    if lines.next() != Some("enabled") {
        return Err(bad(format!("disabled (enable it: echo 1 > {})", path.display())));
    }
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let interpreter = field("interpreter ").unwrap_or("");
    let flags = field("flags:").unwrap_or("");
    if !flags.contains('F') {
        return Err(bad(format!(
            "registered without the F (fix-binary) flag, so containers cannot reach its interpreter {interpreter}; \
             remove it (echo -1 > {}) and kiln registers it with F",
            path.display()
        )));
    }
    if !Path::new(interpreter).exists() {
        return Err(bad(format!(
            "pointing at {interpreter}, which does not exist; reinstall qemu-user-static or remove it (echo -1 > {})",
            path.display()
        )));
    }
    Ok(())
}

fn mount_binfmt_misc(target: &Path) -> nix::Result<()> {
    nix::mount::mount(
        Some("binfmt_misc"),
        target,
        Some("binfmt_misc"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_LINE: &str = ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/bin/sh:OP";

    #[test]
    fn native_architectures_need_nothing() {
        assert!(runs_natively(host_arch()));
        assert!(ensure_can_run(&format!("linux/{}", host_arch())).is_ok());
        if host_arch() == "amd64" {
            assert!(runs_natively("386"));
            assert!(!runs_natively("arm64"));
        }
        assert_eq!(qemu_arch("arm64"), Some("aarch64"));
        assert_eq!(qemu_arch("sparc"), None);
        let err = ensure_can_run("linux/sparc").unwrap_err().to_string();
        assert!(err.contains("does not support the architecture sparc"), "{err}");
    }

    #[test]
    fn registration_line_comes_from_binfmt_d_with_fix_binary_added() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("qemu-aarch64.conf"), format!("# comment\n{DEBIAN_LINE}\n")).unwrap();
        let line = registration_line(&[Path::new("/nonexistent"), dir.path()], "aarch64").unwrap();
        assert!(line.starts_with(":qemu-aarch64:M::\\x7f"), "{line}");
        assert!(line.ends_with(":/bin/sh:OPF"), "{line}");
        // An interpreter that is not installed is no QEMU.
        fs::write(dir.path().join("qemu-aarch64.conf"), DEBIAN_LINE.replace("/bin/sh", "/nonexistent/qemu")).unwrap();
        assert_eq!(registration_line(&[dir.path()], "aarch64"), None);
    }

    #[test]
    fn missing_qemu_and_missing_rights_are_told_apart() {
        let binfmt = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let err = ensure_handler(binfmt.path(), &[empty.path()], "linux/arm64", "aarch64", true).unwrap_err();
        assert!(matches!(err, EmulationError::NoQemu { .. }), "{err}");
        assert!(err.to_string().contains("apt-get install qemu-user-static"), "{err}");
        fs::write(empty.path().join("qemu-aarch64.conf"), DEBIAN_LINE).unwrap();
        let err = ensure_handler(binfmt.path(), &[empty.path()], "linux/arm64", "aarch64", false).unwrap_err();
        assert!(matches!(err, EmulationError::NotRegistered { .. }), "{err}");
    }

    #[test]
    fn registered_handlers_are_checked() {
        let binfmt = tempfile::tempdir().unwrap();
        let path = binfmt.path().join("qemu-aarch64");
        let check = |text: &str| {
            fs::write(&path, text).unwrap();
            ensure_handler(binfmt.path(), &[], "linux/arm64", "aarch64", false)
        };
        let good = "enabled\ninterpreter /bin/sh\nflags: OCF\noffset 0\nmagic 7f454c46\nmask ffffffff\n";
        assert_eq!(check(good), Ok(()));
        let err = check(&good.replace("enabled", "disabled")).unwrap_err().to_string();
        assert!(err.contains("is disabled"), "{err}");
        let err = check(&good.replace("OCF", "OC")).unwrap_err().to_string();
        assert!(err.contains("without the F (fix-binary) flag") && err.contains("/bin/sh"), "{err}");
        let err = check(&good.replace("/bin/sh", "/nonexistent/qemu")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/qemu, which does not exist"), "{err}");
    }
}
