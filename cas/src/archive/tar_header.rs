//! Tar headers as kiln writes every layer (COPY/ADD layers, RUN layers from an overlay upper dir):
//! ustar with numeric ids and no user or group names, no atime or ctime, and a PAX record only for
//! what ustar cannot hold (long names or link targets, big ids, sizes or times, xattrs). The same
//! entry always gives the same bytes.

use std::io::{self, Write};

pub const BLOCK: usize = 512;
/// Largest value an 8-byte octal field (uid, gid, mode) holds.
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value a 12-byte octal field (size, mtime) holds.
const MAX_OCTAL_12: u64 = 0o77777777777;

/// The two zero blocks that end a tar archive.
pub fn write_end<W: Write + ?Sized>(out: &mut W) -> io::Result<()> {
    out.write_all(&[0u8; BLOCK * 2])
}

/// One tar entry's header as kiln writes it.
pub struct TarHeader<'a> {
    pub name: &'a [u8],
    pub type_flag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub link: Option<&'a [u8]>,
    pub device: Option<(u32, u32)>,
    /// `(name, value)` pairs; written as sorted `SCHILY.xattr.*` PAX records.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Writes the header (preceded by a PAX header when ustar cannot hold a field).
pub fn write_header<W: Write + ?Sized>(out: &mut W, h: &TarHeader) -> io::Result<()> {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut block = [0u8; BLOCK];
    match split_ustar_name(h.name) {
        Some((prefix, name)) => {
            block[..name.len()].copy_from_slice(name);
            block[345..345 + prefix.len()].copy_from_slice(prefix);
        }
        None => {
            pax.push((b"path".to_vec(), h.name.to_vec()));
            let short = truncated_name(h.name);
            block[..short.len()].copy_from_slice(&short);
        }
    }
    if let Some(link) = h.link {
        if link.len() <= 100 {
            block[157..157 + link.len()].copy_from_slice(link);
        } else {
            pax.push((b"linkpath".to_vec(), link.to_vec()));
            block[157..257].copy_from_slice(&link[..100]);
        }
    }
    octal(&mut block[100..108], u64::from(h.mode));
    for (value, range, key) in [(h.uid, 108..116, "uid"), (h.gid, 116..124, "gid")] {
        if value > MAX_OCTAL_8 {
            pax.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
            octal(&mut block[range], 0);
        } else {
            octal(&mut block[range], value);
        }
    }
    if h.size > MAX_OCTAL_12 {
        pax.push((b"size".to_vec(), h.size.to_string().into_bytes()));
        octal(&mut block[124..136], 0);
    } else {
        octal(&mut block[124..136], h.size);
    }
    let mtime = h.mtime.max(0) as u64;
    if mtime > MAX_OCTAL_12 {
        pax.push((b"mtime".to_vec(), mtime.to_string().into_bytes()));
        octal(&mut block[136..148], MAX_OCTAL_12);
    } else {
        octal(&mut block[136..148], mtime);
    }
    block[156] = h.type_flag;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    let (major, minor) = h.device.unwrap_or((0, 0));
    octal(&mut block[329..337], u64::from(major));
    octal(&mut block[337..345], u64::from(minor));
    let mut xattrs: Vec<&(Vec<u8>, Vec<u8>)> = h.xattrs.iter().collect();
    xattrs.sort();
    for (k, v) in xattrs {
        pax.push(([&b"SCHILY.xattr."[..], k].concat(), v.clone()));
    }
    if !pax.is_empty() {
        write_pax(out, h.name, &pax)?;
    }
    checksum(&mut block);
    out.write_all(&block)
}

/// A PAX extended header (type `x`) for the entry that follows, named as Go's archive/tar names it.
fn write_pax<W: Write + ?Sized>(out: &mut W, name: &[u8], records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let mut data = Vec::new();
    for (key, value) in records {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i + 1], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut pax_name = dir.to_vec();
    pax_name.extend_from_slice(b"PaxHeaders.0/");
    pax_name.extend_from_slice(base);
    let pax_name = truncated_name(&pax_name);
    let mut block = [0u8; BLOCK];
    block[..pax_name.len()].copy_from_slice(&pax_name);
    octal(&mut block[100..108], 0o644);
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], data.len() as u64);
    octal(&mut block[136..148], 0);
    block[156] = b'x';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    octal(&mut block[329..337], 0);
    octal(&mut block[337..345], 0);
    checksum(&mut block);
    out.write_all(&block)?;
    out.write_all(&data)?;
    pad(out, data.len() as u64)
}

/// Splits a name into ustar's 155-byte prefix and 100-byte name at a `/`, or None if it cannot.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    if name.len() > 256 {
        return None;
    }
    // The split `/` is dropped; the prefix may be at most 155 bytes and the rest at most 100.
    let search_end = name.len().saturating_sub(1);
    (0..search_end).rev().filter(|&i| name[i] == b'/').find_map(|i| {
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        (prefix.len() <= 155 && rest.len() <= 100 && !rest.is_empty()).then_some((prefix, rest))
    })
}

/// The first 100 bytes of a name, for the ustar field of an entry whose real name is in PAX.
fn truncated_name(name: &[u8]) -> Vec<u8> {
    name[..name.len().min(100)].to_vec()
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let text = text.as_bytes();
    let start = text.len().saturating_sub(width);
    field[..width].copy_from_slice(&text[start..]);
    field[width] = 0;
}

fn checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

/// Zero bytes after `len` bytes of content, up to the next 512-byte block.
pub fn pad<W: Write + ?Sized>(out: &mut W, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_name_split_uses_the_prefix_field() {
        let name = format!("{}/{}", "p".repeat(120), "n".repeat(90));
        let (prefix, rest) = split_ustar_name(name.as_bytes()).unwrap();
        assert_eq!((prefix.len(), rest.len()), (120, 90));
        assert!(split_ustar_name("x".repeat(120).as_bytes()).is_none());
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        write_pax(&mut out, b"f", &[(b"path".to_vec(), vec![b'a'; 95])]).unwrap();
        // "105 path=aaa…\n": the length counts its own three digits.
        let data = &out[BLOCK..];
        let text = std::str::from_utf8(&data[..4]).unwrap();
        let len: usize = text.trim().parse().unwrap();
        assert_eq!(data[len - 1], b'\n');
        assert_eq!(len, 3 + 1 + 4 + 1 + 95 + 1);
    }

    #[test]
    fn headers_are_read_back_by_the_tar_crate_and_deterministic() {
        let long = format!("{}/file", "d".repeat(200));
        let xattrs = vec![(b"user.b".to_vec(), b"2".to_vec()), (b"user.a".to_vec(), b"1".to_vec())];
        let header = TarHeader {
            name: long.as_bytes(),
            type_flag: b'0',
            mode: 0o4755,
            uid: 1 << 30,
            gid: 7,
            size: 3,
            mtime: 1_700_000_000,
            link: None,
            device: None,
            xattrs: &xattrs,
        };
        let mut out = Vec::new();
        write_header(&mut out, &header).unwrap();
        out.extend_from_slice(b"abc");
        pad(&mut out, 3).unwrap();
        write_end(&mut out).unwrap();
        let mut again = Vec::new();
        write_header(&mut again, &header).unwrap();
        assert_eq!(&out[..again.len()], &again[..]);
        let mut archive = tar::Archive::new(&out[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str().unwrap(), long);
        assert_eq!(entry.header().mode().unwrap(), 0o4755);
        assert_eq!(entry.header().uid().unwrap(), 1 << 30);
        let pax: Vec<String> =
            entry.pax_extensions().unwrap().unwrap().map(|e| e.unwrap().key().unwrap().to_string()).collect();
        assert_eq!(pax, ["path", "uid", "SCHILY.xattr.user.a", "SCHILY.xattr.user.b"], "xattrs sorted");
        let mut body = String::new();
        std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
        assert_eq!(body, "abc");
    }
}
