//! The seccomp filter of a container's process, as docker's default profile has it: the
//! syscalls that profile leaves out (or allows only with `CAP_SYS_ADMIN` and other capabilities a
//! container does not have) fail with `EPERM`; `clone` may not make namespaces; `clone3` fails
//! with `ENOSYS`, so that libc falls back to `clone`, whose flags the filter can see.
//!
//! Built with `seccompiler` (BPF from rules), installed with plain `seccomp(2)` while the process
//! still has `CAP_SYS_ADMIN`, so `no_new_privs` stays off as in docker.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Which filter a container gets (`--security-opt seccomp=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// docker's default profile.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
}

/// Syscalls docker's default profile does not allow a container without extra capabilities
/// (kernel, module, clock, namespace, mount, keyring, tracing-of-others and NUMA calls).
const DENIED: &[libc::c_long] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
];

/// The same for calls only some architectures have.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[libc::c_long] =
    &[libc::SYS_ioperm, libc::SYS_iopl, libc::SYS__sysctl, libc::SYS_uselib, libc::SYS_ustat, libc::SYS_nfsservctl];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[libc::c_long] = &[];

/// `clone` flags that make a namespace (docker's profile allows `clone` only without them).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e}"))
}

/// The BPF programs to install, in order (empty for `Unconfined`).
pub fn programs(seccomp: &Seccomp) -> Result<Vec<BpfProgram>, String> {
    if *seccomp == Seccomp::Unconfined {
        return Ok(Vec::new());
    }
    let fail = |e: seccompiler::BackendError| format!("seccomp: {e}");
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().chain(DENIED_ARCH).map(|nr| (*nr, Vec::new())).collect();
    let clone_flags = if cfg!(target_arch = "s390x") { 1 } else { 0 };
    let rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let cond =
                SeccompCondition::new(clone_flags, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*flag), *flag)?;
            SeccompRule::new(vec![cond])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    denied.insert(libc::SYS_clone, rules);
    let eperm = SeccompFilter::new(denied, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch()?)
        .map_err(fail)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(fail)?;
    Ok(vec![
        BpfProgram::try_from(eperm).map_err(|e| format!("seccomp: {e}"))?,
        BpfProgram::try_from(clone3).map_err(|e| format!("seccomp: {e}"))?,
    ])
}

/// Installs `program` on the calling thread; needs `CAP_SYS_ADMIN` (no `no_new_privs`).
pub(crate) fn install(program: &BpfProgram) -> std::io::Result<()> {
    let prog =
        libc::sock_fprog { len: program.len() as libc::c_ushort, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prog points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0 as libc::c_ulong, &prog as *const _)
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_compiles_and_unconfined_is_empty() {
        let programs = programs(&Seccomp::Default).unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
        assert!(super::programs(&Seccomp::Unconfined).unwrap().is_empty());
    }
}
