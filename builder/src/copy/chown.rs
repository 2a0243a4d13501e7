//! `--chown=user[:group]`: numeric ids as given, names looked up in the destination stage's own
//! `/etc/passwd` and `/etc/group` (resolved inside its root, never the host's), parsed in-process
//! with a size cap (THREATS RT-05, CVE-2026-47262). As in BuildKit, a numeric user without a
//! group gets the same number as gid, and a named user without a group gets its primary gid.

use kiln_cas::image_fs::ImageFs;
use kiln_cas::Store;

use super::CopyError;

/// Largest passwd or group file we parse.
pub(crate) const ACCOUNT_FILE_LIMIT: u64 = 4 << 20;
/// Most lines we look at in one of them.
const ACCOUNT_LINE_LIMIT: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u64,
    pub gid: u64,
}

/// Resolves a `--chown` value against `fs`.
pub(crate) fn resolve(spec: &str, fs: &ImageFs, store: &Store) -> Result<Owner, CopyError> {
    let invalid = |why: String| CopyError::InvalidChown { value: spec.to_string(), why };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    // BuildKit's WithUser + readUser: an empty part is not given (`:50` is uid 0, `app:` is
    // app's primary group), and a name the image's passwd or group lacks leaves the id at what it
    // was (0 for a user, the user's primary group for a group) instead of failing.
    let (uid, primary_gid) = if user.is_empty() {
        (0, 0)
    } else if let Some(uid) = numeric(user).map_err(&invalid)? {
        (uid, uid)
    } else {
        let passwd = read_account_file(fs, store, "etc/passwd")?;
        passwd.as_deref().and_then(|text| find_user(text, user)).unwrap_or((0, 0))
    };
    let gid = if group.is_empty() {
        primary_gid
    } else if let Some(gid) = numeric(group).map_err(&invalid)? {
        gid
    } else {
        let groups = read_account_file(fs, store, "etc/group")?;
        groups.as_deref().and_then(|text| find_group(text, group)).unwrap_or(primary_gid)
    };
    Ok(Owner { uid, gid })
}

/// `Some(id)` for a decimal id that fits 32 bits, `None` for a name, an error for a number that
/// does not fit (it would otherwise wrap or be taken for a name).
fn numeric(text: &str) -> Result<Option<u64>, String> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(id) => Ok(Some(u64::from(id))),
        Err(_) => Err(format!("id {text} is out of range")),
    }
}

fn read_account_file(fs: &ImageFs, store: &Store, path: &str) -> Result<Option<String>, CopyError> {
    let bytes = fs
        .read_file(store, path, ACCOUNT_FILE_LIMIT)
        .map_err(|e| CopyError::Image { path: format!("/{path}"), source: e })?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .take(ACCOUNT_LINE_LIMIT)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

/// `name:password:uid:gid:gecos:home:shell` → (uid, gid) of the first line naming `name`.
pub(crate) fn find_user(passwd: &str, name: &str) -> Option<(u64, u64)> {
    records(passwd).find_map(|f| {
        if f.len() < 4 || f[0] != name {
            return None;
        }
        Some((u64::from(f[2].parse::<u32>().ok()?), u64::from(f[3].parse::<u32>().ok()?)))
    })
}

/// `name:password:gid:members` → gid of the first line naming `name`.
pub(crate) fn find_group(group: &str, name: &str) -> Option<u64> {
    records(group).find_map(|f| {
        if f.len() < 3 || f[0] != name {
            return None;
        }
        f[2].parse::<u32>().ok().map(u64::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nbad:x:notanumber:1::/:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\napp:x:5:5::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app,root\nweird:x:\n";

    #[test]
    fn parses_passwd_and_group() {
        assert_eq!(find_user(PASSWD, "app"), Some((1000, 1001)));
        assert_eq!(find_user(PASSWD, "root"), Some((0, 0)));
        assert_eq!(find_user(PASSWD, "bad"), None);
        assert_eq!(find_user(PASSWD, "nobody"), None);
        assert_eq!(find_group(GROUP, "staff"), Some(50));
        assert_eq!(find_group(GROUP, "weird"), None);
    }

    #[test]
    fn numeric_ids_must_fit_32_bits() {
        assert_eq!(numeric("42"), Ok(Some(42)));
        assert_eq!(numeric("4294967295"), Ok(Some(4294967295)));
        assert!(numeric("4294967296").is_err());
        assert!(numeric("99999999999").is_err());
        assert_eq!(numeric("app"), Ok(None));
    }

    #[test]
    fn numeric_spec_needs_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), kiln_cas::LockMode::Shared).unwrap();
        let fs = ImageFs::empty();
        assert_eq!(resolve("1000", &fs, &store).unwrap(), Owner { uid: 1000, gid: 1000 });
        assert_eq!(resolve("1000:20", &fs, &store).unwrap(), Owner { uid: 1000, gid: 20 });
        // No passwd or group file: names stay at BuildKit's defaults, empty parts are not given.
        assert_eq!(resolve("app", &fs, &store).unwrap(), Owner { uid: 0, gid: 0 });
        assert_eq!(resolve("1:staff", &fs, &store).unwrap(), Owner { uid: 1, gid: 1 });
        assert_eq!(resolve(":50", &fs, &store).unwrap(), Owner { uid: 0, gid: 50 });
        assert_eq!(resolve("7:", &fs, &store).unwrap(), Owner { uid: 7, gid: 7 });
        assert!(matches!(resolve("99999999999", &fs, &store), Err(CopyError::InvalidChown { .. })));
        assert!(matches!(resolve(":99999999999", &fs, &store), Err(CopyError::InvalidChown { .. })));
    }
}
