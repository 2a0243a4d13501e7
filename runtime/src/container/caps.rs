//! Capability names and docker's rules for `--cap-add`, `--cap-drop` and `--privileged`
//! (moby `oci/caps`): names with or without `CAP_`, any case, `ALL`; the result is a set of
//! capability numbers, as a bit mask.

/// The capabilities the kernel headers name, by number.
pub const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// A set of capabilities, bit `n` for capability `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn default_set() -> CapSet {
        CapSet(DEFAULT.iter().fold(0, |m, c| m | 1 << c))
    }

    /// Every capability kiln knows (what `--privileged` and `--cap-add ALL` give).
    pub fn all() -> CapSet {
        CapSet((1u64 << NAMES.len()) - 1)
    }

    pub fn contains(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1 << cap) != 0
    }

    /// The names (`CAP_CHOWN`, …), in number order.
    pub fn names(self) -> Vec<String> {
        (0..NAMES.len() as u32).filter(|c| self.contains(*c)).map(|c| format!("CAP_{}", NAMES[c as usize])).collect()
    }

    /// Docker's rules: with `ALL` added, every capability but the dropped ones; with `ALL`
    /// dropped, only the added ones; otherwise the default set minus drops plus adds.
    pub fn tweak(adds: &[String], drops: &[String]) -> Result<CapSet, String> {
        let adds = parse_list(adds).map_err(|e| format!("invalid CapAdd: {e}"))?;
        let drops = parse_list(drops).map_err(|e| format!("invalid CapDrop: {e}"))?;
        let mask = |list: &[Option<u32>]| list.iter().flatten().fold(0u64, |m, c| m | 1 << c);
        let (add_all, drop_all) = (adds.contains(&None), drops.contains(&None));
        Ok(CapSet(if add_all {
            CapSet::all().0 & !mask(&drops)
        } else if drop_all {
            mask(&adds)
        } else {
            (CapSet::default_set().0 & !mask(&drops)) | mask(&adds)
        }))
    }
}

/// A capability name as docker takes it (`net_admin`, `CAP_NET_ADMIN`): its number, `None` for
/// `ALL`.
pub fn parse(name: &str) -> Result<Option<u32>, String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| Some(i as u32))
        .ok_or_else(|| format!("unknown capability: \"CAP_{bare}\""))
}

fn parse_list(names: &[String]) -> Result<Vec<Option<u32>>, String> {
    names.iter().map(|n| parse(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_parse_in_any_spelling() {
        assert_eq!(parse("NET_ADMIN"), Ok(Some(12)));
        assert_eq!(parse("cap_net_admin"), Ok(Some(12)));
        assert_eq!(parse("all"), Ok(None));
        assert!(parse("NET_ADMINX").unwrap_err().contains("unknown capability: \"CAP_NET_ADMINX\""));
    }

    #[test]
    fn adds_and_drops_follow_dockers_rules() {
        let d = CapSet::default_set();
        assert!(d.contains(0) && !d.contains(12));
        assert_eq!(CapSet::tweak(&[], &[]).unwrap(), d);
        let t = CapSet::tweak(&s(&["NET_ADMIN"]), &s(&["chown"])).unwrap();
        assert!(t.contains(12) && !t.contains(0) && t.contains(1));
        let none = CapSet::tweak(&[], &s(&["ALL"])).unwrap();
        assert_eq!(none, CapSet(0));
        let only = CapSet::tweak(&s(&["SYS_ADMIN"]), &s(&["ALL"])).unwrap();
        assert_eq!(only.names(), vec!["CAP_SYS_ADMIN"]);
        let all = CapSet::tweak(&s(&["ALL"]), &s(&["MKNOD"])).unwrap();
        assert!(all.contains(21) && !all.contains(27) && all.contains(40));
        assert_eq!(
            CapSet::tweak(&s(&["BOGUS"]), &[]).unwrap_err(),
            "invalid CapAdd: unknown capability: \"CAP_BOGUS\""
        );
    }
}
