//! `USER` resolution from the image's own `/etc/passwd` and `/etc/group`, parsed in-process (no
//! NSS, nothing loaded from the rootfs), with runc's semantics (`GetExecUser`):
//! - `""` is root; `name` or `uid`, optionally `:group` or `:gid`;
//! - a name must exist in passwd, a group name in group; numeric ids need not exist;
//! - the primary gid is the passwd entry's unless a group is given (0 for an unknown uid);
//! - supplementary groups are the primary gid first, then (only when no group is given
//!   explicitly) the groups listing the user as a member. The primary gid is included as
//!   containerd, moby and BuildKit do since CVE-2022-36109 (a group's members must not escape a
//!   "group may not read" mode by having it only as their primary group).
//!
//! Numeric ids must be below 2^32-1 (CVE-2024-40635: no wrap to 0; -1 means "unchanged" to the
//! kernel). The files are read in the root with a size cap (CVE-2026-47262), only if regular.

use std::io::Read;

/// At most this many bytes of `/etc/passwd` or `/etc/group` are read.
pub const MAX_FILE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Parses a numeric id; `None` if not all digits; an error if out of range.
fn parse_id(s: &str, what: &str) -> Result<Option<u32>, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(v) if v < u64::from(u32::MAX) => Ok(Some(v as u32)),
        _ => Err(format!("{what} {s} out of range")),
    }
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        let uid = parse_id(f[2], "uid").ok().flatten()?;
        let gid = parse_id(f[3], "gid").ok().flatten()?;
        Some(PasswdEntry { name: f[0], uid, gid, home: f.get(5).copied().unwrap_or("") })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || line.starts_with('#') {
            return None;
        }
        let gid = parse_id(f[2], "gid").ok().flatten()?;
        let members =
            f.get(3).map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).collect()).unwrap_or_default();
        Some(GroupEntry { name: f[0], gid, members })
    })
}

/// Resolves `spec` against the contents of passwd and group (`None`: the file is missing).
pub fn resolve_user(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = passwd.unwrap_or("");
    let mut user = ExecUser { uid: 0, gid: 0, groups: Vec::new(), home: None };
    let mut name: Option<&str> = None;
    match parse_id(user_part, "uid")? {
        Some(uid) => {
            user.uid = uid;
            if let Some(e) = passwd_entries(passwd).find(|e| e.uid == uid) {
                user.gid = e.gid;
                user.home = Some(e.home.to_string());
                name = Some(e.name);
            }
        }
        None => {
            let e = passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| format!("unable to find user {user_part}: no matching entries in passwd file"))?;
            user.uid = e.uid;
            user.gid = e.gid;
            user.home = Some(e.home.to_string());
            name = Some(e.name);
        }
    }
    let group = group.unwrap_or("");
    let primary_given = group_part.is_some();
    match group_part {
        Some(g) if !g.is_empty() => match parse_id(g, "gid")? {
            Some(gid) => user.gid = gid,
            None => {
                let e = group_entries(group)
                    .find(|e| e.name == g)
                    .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?;
                user.gid = e.gid;
            }
        },
        Some(_) => return Err(format!("invalid user {spec:?}: empty group")),
        None => {}
    }
    user.groups.push(user.gid);
    if let (false, Some(name)) = (primary_given, name) {
        for e in group_entries(group) {
            if e.members.contains(&name) && !user.groups.contains(&e.gid) {
                user.groups.push(e.gid);
            }
        }
    }
    Ok(user)
}

/// Reads a file of at most [`MAX_FILE`] bytes; refuses larger ones.
pub fn read_capped(mut file: impl Read, what: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    (&mut file).take(MAX_FILE + 1).read_to_end(&mut buf).map_err(|e| format!("reading {what}: {e}"))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!("{what} is larger than {} bytes", MAX_FILE));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app user:/home/app:/bin/sh\n\
                          bad:x:99999999999:1:x:/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:50:app\nwheel:x:10:root,app\n";

    fn r(spec: &str) -> Result<ExecUser, String> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_ids_and_groups() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (0, 0, vec![0, 10]));
        let u = r("app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone(), u.home.as_deref()),
            (1000, 1000, vec![1000, 50, 10], Some("/home/app"))
        );
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 1000, vec![1000, 50, 10]));
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 50, vec![50]));
        let u = r("1000:7").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 7));
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.groups, u.home), (4242, 0, vec![0], None));
        let u = r("4242:app").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 1000));
    }

    #[test]
    fn unknown_names_and_bad_ids_are_refused() {
        assert!(r("nobody").unwrap_err().contains("unable to find user nobody"));
        assert!(r("app:nogroup").unwrap_err().contains("unable to find group nogroup"));
        assert!(r("4294967295").unwrap_err().contains("out of range"));
        assert!(r("4294967296").unwrap_err().contains("out of range"));
        assert!(r("99999999999999999999999").unwrap_err().contains("out of range"));
        assert!(r("1:4294967295").unwrap_err().contains("out of range"));
        assert!(r("-1").is_err());
        assert!(r("app:").is_err());
        // The entry whose uid is out of range is skipped, never wrapped.
        assert!(r("bad").is_err());
        assert_eq!(r("4294967294").unwrap().uid, 4294967294);
    }

    #[test]
    fn missing_files_allow_numeric_ids_only() {
        assert_eq!(resolve_user("5:6", None, None).unwrap(), ExecUser { uid: 5, gid: 6, groups: vec![6], home: None });
        assert_eq!(resolve_user("", None, None).unwrap().uid, 0);
        assert!(resolve_user("app", None, None).is_err());
    }

    #[test]
    fn size_cap() {
        let big = vec![b'a'; MAX_FILE as usize + 1];
        assert!(read_capped(&big[..], "/etc/group").unwrap_err().contains("larger than"));
        assert_eq!(read_capped(&big[..10], "/etc/group").unwrap(), "aaaaaaaaaa");
    }
}
