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
    /// A profile in docker's JSON format (`seccomp=FILE`), as its text.
    Profile(String),
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
    libc::SYS_fanotify_init,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_madvise,
    libc::SYS_quotactl_fd,
    libc::SYS_set_mempolicy_home_node,
    libc::SYS_setdomainname,
    libc::SYS_sethostname,
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
    match seccomp {
        Seccomp::Unconfined => return Ok(Vec::new()),
        Seccomp::Profile(json) => return profile::programs(json, arch()?),
        Seccomp::Default => {}
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

/// docker's profile format (moby `api/types/seccomp`), translated into seccompiler's: one filter
/// for what is allowed (mismatch: the default action), then one per other action (mismatch:
/// allow), installed later so that it wins over the default action of the first.
mod profile {
    use std::collections::BTreeMap;

    use seccompiler::{BpfProgram, TargetArch};
    use serde::Deserialize;
    use serde_json::{json, Value};

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Profile {
        default_action: String,
        #[serde(default)]
        default_errno_ret: Option<u32>,
        #[serde(default)]
        syscalls: Vec<Rule>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rule {
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        name: Option<String>,
        action: String,
        #[serde(default)]
        errno_ret: Option<u32>,
        #[serde(default)]
        args: Option<Vec<Arg>>,
        #[serde(default)]
        includes: Filter,
        #[serde(default)]
        excludes: Filter,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Arg {
        index: u8,
        value: u64,
        #[serde(default)]
        value_two: u64,
        op: String,
    }

    #[derive(Deserialize, Default)]
    struct Filter {
        #[serde(default)]
        caps: Vec<String>,
        #[serde(default)]
        arches: Vec<String>,
    }

    /// docker's default capabilities, by the names profiles use.
    const CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
        "CAP_MKNOD",
        "CAP_AUDIT_WRITE",
        "CAP_SETFCAP",
    ];

    fn arch_names(arch: TargetArch) -> &'static [&'static str] {
        match arch {
            TargetArch::x86_64 => &["amd64", "x86_64", "SCMP_ARCH_X86_64"],
            TargetArch::aarch64 => &["arm64", "aarch64", "SCMP_ARCH_AARCH64"],
            _ => &["riscv64", "SCMP_ARCH_RISCV64"],
        }
    }

    fn action(name: &str, errno: Option<u32>) -> Result<Value, String> {
        Ok(match name {
            "SCMP_ACT_ALLOW" => json!("allow"),
            "SCMP_ACT_ERRNO" => json!({ "errno": errno.unwrap_or(libc::EPERM as u32) }),
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => json!("kill_thread"),
            "SCMP_ACT_KILL_PROCESS" => json!("kill_process"),
            "SCMP_ACT_TRAP" => json!("trap"),
            "SCMP_ACT_LOG" => json!("log"),
            "SCMP_ACT_TRACE" => json!({ "trace": errno.unwrap_or(0) }),
            other => return Err(format!("unknown action {other:?}")),
        })
    }

    fn condition(arg: &Arg) -> Result<Value, String> {
        let (op, val) = match arg.op.as_str() {
            "SCMP_CMP_EQ" => (json!("eq"), arg.value),
            "SCMP_CMP_NE" => (json!("ne"), arg.value),
            "SCMP_CMP_LT" => (json!("lt"), arg.value),
            "SCMP_CMP_LE" => (json!("le"), arg.value),
            "SCMP_CMP_GT" => (json!("gt"), arg.value),
            "SCMP_CMP_GE" => (json!("ge"), arg.value),
            "SCMP_CMP_MASKED_EQ" => (json!({ "masked_eq": arg.value }), arg.value_two),
            other => return Err(format!("unknown comparison {other:?}")),
        };
        Ok(json!({ "index": arg.index, "type": "qword", "op": op, "val": val }))
    }

    /// Whether seccompiler knows `name` on `arch` (profiles list every architecture's calls).
    pub(super) fn known(name: &str, arch: TargetArch) -> bool {
        // (seccompiler refuses a filter whose two actions are the same.)
        let probe = json!({ "p": { "mismatch_action": "allow", "filter_action": { "errno": 1 }, "filter": [{ "syscall": name }] } });
        seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok()
    }

    /// Syscall name → None (allowed unconditionally) or alternative condition lists.
    type Calls = BTreeMap<String, Option<Vec<Value>>>;

    pub(super) fn programs(text: &str, arch: TargetArch) -> Result<Vec<BpfProgram>, String> {
        let profile: Profile = serde_json::from_str(text).map_err(|e| format!("seccomp profile: {e}"))?;
        let default = action(&profile.default_action, profile.default_errno_ret)?;
        let arches = arch_names(arch);
        // action → syscall → None (unconditional) or the alternatives' conditions.
        let mut groups: BTreeMap<String, (Value, Calls)> = BTreeMap::new();
        let mut checked: BTreeMap<String, bool> = BTreeMap::new();
        for rule in &profile.syscalls {
            let applies = rule.includes.caps.iter().all(|c| CAPS.contains(&c.as_str()))
                && (rule.includes.arches.is_empty()
                    || rule.includes.arches.iter().any(|a| arches.contains(&a.as_str())))
                && !rule.excludes.caps.iter().any(|c| CAPS.contains(&c.as_str()))
                && !rule.excludes.arches.iter().any(|a| arches.contains(&a.as_str()));
            if !applies {
                continue;
            }
            let act = action(&rule.action, rule.errno_ret)?;
            let conditions = match &rule.args {
                Some(args) if !args.is_empty() => {
                    Some(json!(args.iter().map(condition).collect::<Result<Vec<_>, _>>()?))
                }
                _ => None,
            };
            let (_, calls) = groups.entry(act.to_string()).or_insert_with(|| (act.clone(), BTreeMap::new()));
            for name in rule.names.iter().chain(&rule.name) {
                if !*checked.entry(name.clone()).or_insert_with(|| known(name, arch)) {
                    continue;
                }
                match (calls.get_mut(name), &conditions) {
                    (Some(None), _) => {}
                    (Some(Some(alternatives)), Some(c)) => alternatives.push(c.clone()),
                    (_, None) => {
                        calls.insert(name.clone(), None);
                    }
                    (None, Some(c)) => {
                        calls.insert(name.clone(), Some(vec![c.clone()]));
                    }
                }
            }
        }
        let allow = json!("allow");
        if default != allow {
            groups.entry(allow.to_string()).or_insert_with(|| (allow.clone(), BTreeMap::new()));
        }
        let mut filters = Vec::new();
        // The allowed calls first (unless the default allows everything), then the others.
        let order = groups
            .values()
            .filter(|(act, _)| *act == allow && default != allow)
            .chain(groups.values().filter(|(act, _)| *act != allow && *act != default));
        for (act, calls) in order {
            let mismatch = if *act == allow { default.clone() } else { allow.clone() };
            let mut rules = Vec::new();
            for (name, alternatives) in calls {
                match alternatives {
                    None => rules.push(json!({ "syscall": name })),
                    Some(list) => {
                        for conditions in list {
                            rules.push(json!({ "syscall": name, "args": conditions }));
                        }
                    }
                }
            }
            let filter = json!({ "f": { "mismatch_action": mismatch, "filter_action": act, "filter": rules } });
            let mut map = seccompiler::compile_from_json(filter.to_string().as_bytes(), arch)
                .map_err(|e| format!("seccomp profile: {e}"))?;
            filters.push(map.remove("f").expect("compiled"));
        }
        Ok(filters)
    }
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

    #[test]
    fn docker_profiles_translate() {
        let profile = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "exit_group", "arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }"#;
        assert!(profile::known("read", TargetArch::x86_64) && profile::known("mkdirat", TargetArch::x86_64));
        assert!(!profile::known("arm_fadvise64_64", TargetArch::x86_64));
        let programs = super::programs(&Seccomp::Profile(profile.into())).unwrap();
        assert_eq!(programs.len(), 2, "the allow list and the clone3 errno filter");
        for bad in [
            "{",
            r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_WHAT"}]}]}"#,
        ] {
            assert!(super::programs(&Seccomp::Profile(bad.into())).is_err(), "{bad}");
        }
    }
}
