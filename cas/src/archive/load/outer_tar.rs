//! A small reader for the outer archive of `load`, written here rather than taken from the `tar`
//! crate so that every limit is ours: GNU long names and PAX headers are capped (the crate reads
//! them whole, however large), truncation is reported with the member and the offset, and data
//! after the end-of-archive marker is refused. Member data is streamed, never buffered.

use std::io::{self, Read};

use crate::{Error, Result};

const BLOCK: usize = 512;
/// GNU long names and PAX records above this are refused (Go's archive/tar uses 1 MiB for PAX).
const EXTENSION_LIMIT: u64 = 1 << 20;

/// What a member is, from its type flag. Only regular files and symlinks mean anything to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberKind {
    Regular,
    Directory,
    Symlink,
    /// Hard links, devices, FIFOs and anything else: never materialised, only named in errors.
    Other(&'static str),
}

/// One member's header, with GNU and PAX long names applied.
#[derive(Debug)]
pub(crate) struct MemberHeader {
    /// The name as written in the archive (not yet checked or normalised).
    pub name: Vec<u8>,
    pub kind: MemberKind,
    pub size: u64,
    pub link_target: Vec<u8>,
}

/// Iterates the members of a tar stream. Call `next_member`, then read the member's data through
/// `data()` (as much as needed); the next `next_member` skips whatever was left unread.
pub(crate) struct OuterTar<R> {
    input: R,
    /// Bytes consumed from `input` so far.
    offset: u64,
    /// Unread data and padding of the current member.
    remaining_data: u64,
    remaining_padding: u64,
    current_name: String,
    /// Set when the input ended inside a member, so the caller can report truncation rather than
    /// whatever the consumer of the data made of the short read.
    truncated_at: Option<u64>,
    read_error: Option<io::Error>,
    finished: bool,
    /// Refuse padding that is not zero and checksum fields not written the one way writers write
    /// them (set for bundles with SHA256SUMS, whose every byte counts).
    strict: bool,
    /// Whether the last header's checksum field was written the canonical way.
    last_checksum_canonical: bool,
}

impl<R: Read> OuterTar<R> {
    pub fn new(input: R) -> Self {
        OuterTar {
            input,
            offset: 0,
            remaining_data: 0,
            remaining_padding: 0,
            current_name: String::new(),
            truncated_at: None,
            read_error: None,
            finished: false,
            strict: false,
            last_checksum_canonical: true,
        }
    }

    /// From the current member on, the padding after each member must be zero bytes and each
    /// header's checksum field written as Go, GNU tar or the tar crate write it. Readers accept
    /// more; a bundle that lists the sha256 of every member asks for this so that no byte of it
    /// can change unnoticed.
    pub fn require_canonical_framing(&mut self) -> Result<()> {
        self.strict = true;
        self.check_canonical_checksum()
    }

    /// ` (after archive member "<name>")`, to place an error between members.
    fn after_member(&self) -> String {
        match self.current_name.as_str() {
            "" => String::new(),
            name => format!(" (after archive member \"{name}\")"),
        }
    }

    fn check_canonical_checksum(&self) -> Result<()> {
        if self.strict && !self.last_checksum_canonical {
            return Err(Error::invalid(
                format!("archive member \"{}\"", self.current_name),
                "has a tar header whose checksum field is not written as tar writers write it",
            ));
        }
        Ok(())
    }

    /// The next member, or None at the end of the archive (after checking that only zero padding
    /// follows the end-of-archive marker).
    pub fn next_member(&mut self) -> Result<Option<MemberHeader>> {
        self.finish_member()?;
        if self.finished {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<PaxOverrides> = None;
        loop {
            let header_offset = self.offset;
            let mut block = [0u8; BLOCK];
            let got = self.read_fully(&mut block)?;
            if got == 0 && long_name.is_none() && long_link.is_none() && pax.is_none() {
                // A stream that ends on a member boundary without the zero blocks: tar and Go
                // accept it, and any member it should have held is missing by name later. A
                // bundle that lists its members' sha256 is held to the marker too.
                if self.strict {
                    return Err(archive_error(format!(
                        "ends at offset {header_offset}{} without the end-of-archive marker: it is truncated",
                        self.after_member()
                    )));
                }
                self.finished = true;
                return Ok(None);
            }
            if got < BLOCK {
                return Err(archive_error(format!(
                    "unexpected end of archive in a tar header at offset {header_offset}{}",
                    self.after_member()
                )));
            }
            if block.iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(archive_error(format!(
                        "extension header at offset {header_offset} is not followed by a member"
                    )));
                }
                if self.strict {
                    // The marker is two zero blocks; a strict bundle must have both.
                    let mut second = [0u8; BLOCK];
                    if self.read_fully(&mut second)? < BLOCK {
                        return Err(archive_error(format!(
                            "ends at offset {} inside the end-of-archive marker: it is truncated",
                            self.offset
                        )));
                    }
                    if second.iter().any(|&b| b != 0) {
                        return Err(archive_error(format!(
                            "data after the end-of-archive marker at offset {}",
                            header_offset + BLOCK as u64
                        )));
                    }
                }
                self.finished = true;
                self.require_zero_tail()?;
                return Ok(None);
            }
            let header = parse_header(&block).map_err(|why| {
                archive_error(format!("invalid tar header at offset {header_offset}{}: {why}", self.after_member()))
            })?;
            let octal = |field: &[u8]| field.iter().all(|b| (b'0'..=b'7').contains(b));
            // Six digits, NUL, space (Go, GNU tar) or seven digits and a NUL (the tar crate).
            self.last_checksum_canonical = (octal(&block[148..154]) && block[154..156] == [0, b' '])
                || (octal(&block[148..155]) && block[155] == 0);
            let size = pax.as_ref().and_then(|p| p.size).unwrap_or(header.size);
            match header.type_flag {
                b'L' | b'K' | b'x' | b'g' => {
                    if header.size > EXTENSION_LIMIT {
                        return Err(archive_error(format!(
                            "extension header at offset {header_offset} is {} bytes, over the {EXTENSION_LIMIT}-byte limit",
                            header.size
                        )));
                    }
                    self.start_member(header.size, "(tar extension header)");
                    let mut data = vec![0u8; header.size as usize];
                    let got = self.read_fully_member(&mut data)?;
                    if got < data.len() {
                        return Err(self.truncation_error());
                    }
                    self.finish_member()?;
                    let twice = |what: &str| {
                        archive_error(format!("two {what} headers describe the member at offset {}", self.offset))
                    };
                    match header.type_flag {
                        b'L' => {
                            if long_name.is_some() {
                                return Err(twice("GNU long name"));
                            }
                            long_name = Some(strip_trailing_nuls(data));
                        }
                        b'K' => {
                            if long_link.is_some() {
                                return Err(twice("GNU long link"));
                            }
                            long_link = Some(strip_trailing_nuls(data));
                        }
                        b'x' => {
                            if pax.is_some() {
                                return Err(twice("PAX"));
                            }
                            pax = Some(parse_pax(&data).map_err(|why| {
                                archive_error(format!("invalid PAX header at offset {header_offset}: {why}"))
                            })?);
                        }
                        // Global PAX headers carry no member name or size that docker or OCI
                        // writers rely on (git archive puts a comment there); they are skipped.
                        _ => {}
                    }
                    continue;
                }
                _ => {}
            }
            let name =
                pax.as_mut().and_then(|p| p.path.take()).or(long_name.take()).unwrap_or_else(|| header.name.clone());
            let link_target = pax
                .as_mut()
                .and_then(|p| p.link_path.take())
                .or(long_link.take())
                .unwrap_or_else(|| header.link_name.clone());
            let kind = match header.type_flag {
                b'0' | 0 | b'7' => MemberKind::Regular,
                b'5' => MemberKind::Directory,
                b'2' => MemberKind::Symlink,
                b'1' => MemberKind::Other("hard link"),
                b'3' => MemberKind::Other("character device"),
                b'4' => MemberKind::Other("block device"),
                b'6' => MemberKind::Other("FIFO"),
                _ => MemberKind::Other("special tar entry"),
            };
            // Links, devices, FIFOs and directories carry no data whatever their size field says;
            // every other type (regular, contiguous, unknown) is followed by `size` bytes. This is
            // how Go's archive/tar reads them, so docker, containerd and kiln agree on where the
            // next header is.
            let data_size = match header.type_flag {
                b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => 0,
                _ => size,
            };
            self.start_member(data_size, &String::from_utf8_lossy(&name));
            self.check_canonical_checksum()?;
            return Ok(Some(MemberHeader { name, kind, size: data_size, link_target }));
        }
    }

    /// A reader over the current member's data. It yields at most the member's size and fails
    /// (recording where) if the archive ends first.
    pub fn data(&mut self) -> MemberData<'_, R> {
        MemberData { tar: self }
    }

    /// If the input ended inside the current member, or could not be read, the error that says
    /// so: it takes precedence over whatever the consumer of the data made of the short read.
    pub fn input_failure(&mut self) -> Option<Error> {
        if self.truncated_at.is_some() {
            return Some(self.truncation_error());
        }
        let e = self.read_error.take()?;
        Some(Error::io("reading archive member", self.current_name.clone(), e))
    }

    fn start_member(&mut self, size: u64, name: &str) {
        self.remaining_data = size;
        self.remaining_padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.current_name = name.to_string();
    }

    /// Skips the unread data and the padding of the current member.
    fn finish_member(&mut self) -> Result<()> {
        if let Some(failure) = self.input_failure() {
            return Err(failure);
        }
        let mut buffer = vec![0u8; 64 * 1024];
        while self.remaining_data + self.remaining_padding > 0 {
            let want = (self.remaining_data + self.remaining_padding).min(buffer.len() as u64) as usize;
            let n = self.read_some(&mut buffer[..want])?;
            if n == 0 {
                self.truncated_at = Some(self.offset);
                return Err(self.truncation_error());
            }
            let from_data = (n as u64).min(self.remaining_data);
            if self.strict && buffer[from_data as usize..n].iter().any(|&b| b != 0) {
                return Err(Error::invalid(
                    format!("archive member \"{}\"", self.current_name),
                    "is followed by padding that is not zero bytes",
                ));
            }
            self.remaining_data -= from_data;
            self.remaining_padding -= n as u64 - from_data;
        }
        Ok(())
    }

    fn truncation_error(&self) -> Error {
        Error::invalid(
            format!("archive member \"{}\"", self.current_name),
            format!("unexpected end of archive at offset {}", self.truncated_at.unwrap_or(self.offset)),
        )
    }

    /// After the end-of-archive marker only zero blocks may follow (writers pad to a record size).
    fn require_zero_tail(&mut self) -> Result<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let start = self.offset;
            let n = self.read_some(&mut buffer)?;
            if n == 0 {
                return Ok(());
            }
            if let Some(i) = buffer[..n].iter().position(|&b| b != 0) {
                return Err(archive_error(format!(
                    "data after the end-of-archive marker at offset {}",
                    start + i as u64
                )));
            }
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.input.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading archive at offset", self.offset.to_string(), e)),
            }
        }
    }

    /// Reads until `buf` is full or the input ends; returns how much was read.
    fn read_fully(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_some(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }

    fn read_fully_member(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let read = self.data().read(&mut buf[filled..]);
            let Ok(n) = read else { return Err(self.input_failure().unwrap_or_else(|| self.truncation_error())) };
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }
}

/// The data of the member `OuterTar::next_member` returned last.
pub(crate) struct MemberData<'t, R> {
    tar: &'t mut OuterTar<R>,
}

impl<R: Read> Read for MemberData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let tar = &mut *self.tar;
        if tar.remaining_data == 0 || buf.is_empty() {
            return Ok(0);
        }
        if tar.truncated_at.is_some() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "archive is truncated"));
        }
        let want = (tar.remaining_data.min(buf.len() as u64)) as usize;
        let n = loop {
            match tar.input.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = e.kind();
                    tar.read_error = Some(e);
                    return Err(io::Error::new(kind, "reading the archive failed"));
                }
            }
        };
        if n == 0 {
            tar.truncated_at = Some(tar.offset);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "archive is truncated"));
        }
        tar.offset += n as u64;
        tar.remaining_data -= n as u64;
        Ok(n)
    }
}

/// Whether `head` starts like a tar stream: an all-zero block (an empty archive) or a header whose
/// checksum holds. Used to decide, from a member's first bytes, whether it can be a layer.
pub(crate) fn looks_like_tar(head: &[u8]) -> bool {
    let Some(block) = head.get(..BLOCK).and_then(|b| <&[u8; BLOCK]>::try_from(b).ok()) else { return false };
    block.iter().all(|&b| b == 0) || parse_header(block).is_ok()
}

struct RawHeader {
    name: Vec<u8>,
    link_name: Vec<u8>,
    size: u64,
    type_flag: u8,
}

fn parse_header(block: &[u8; BLOCK]) -> Result<RawHeader, String> {
    let recorded = parse_octal(&block[148..156]).ok_or("checksum field is not a number")?;
    // The checksum is the byte sum of the header with the checksum field read as spaces.
    let computed: u64 = block[..148].iter().chain(&block[156..]).map(|&b| u64::from(b)).sum::<u64>() + 8 * 32;
    if recorded != computed {
        return Err(format!("checksum mismatch (recorded {recorded}, computed {computed})"));
    }
    let size = parse_size(&block[124..136]).ok_or("size field is not a number")?;
    let mut name = field(&block[0..100]).to_vec();
    // POSIX ustar splits long names into prefix + "/" + name; GNU tar uses that space for other
    // fields, so the prefix is only read for the POSIX magic.
    if &block[257..263] == b"ustar\0" {
        let prefix = field(&block[345..500]);
        if !prefix.is_empty() {
            let mut joined = prefix.to_vec();
            joined.push(b'/');
            joined.extend_from_slice(&name);
            name = joined;
        }
    }
    Ok(RawHeader { name, link_name: field(&block[157..257]).to_vec(), size, type_flag: block[156] })
}

/// A NUL-terminated header field.
fn field(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

fn parse_octal(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field(bytes)).ok()?.trim_matches(' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Sizes are octal, or base-256 (high bit of the first byte set) for members of 8 GiB and more.
fn parse_size(bytes: &[u8]) -> Option<u64> {
    if bytes[0] & 0x80 != 0 {
        if bytes[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut value: u64 = u64::from(bytes[0] & 0x3f);
        for &b in &bytes[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        Some(value)
    } else {
        parse_octal(bytes)
    }
}

fn strip_trailing_nuls(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

#[derive(Default)]
struct PaxOverrides {
    path: Option<Vec<u8>>,
    link_path: Option<Vec<u8>>,
    size: Option<u64>,
}

/// PAX records are `<length> <key>=<value>\n`, the length counting the whole record.
fn parse_pax(mut data: &[u8]) -> Result<PaxOverrides, String> {
    let mut overrides = PaxOverrides::default();
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').ok_or("record without a length")?;
        let length: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or("record length is not a number")?;
        if length <= space + 1 || length > data.len() || data[length - 1] != b'\n' {
            return Err("record length does not match the record".into());
        }
        let record = &data[space + 1..length - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or("record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => overrides.path = Some(value.to_vec()),
            b"linkpath" => overrides.link_path = Some(value.to_vec()),
            b"size" => {
                let size =
                    std::str::from_utf8(value).ok().and_then(|t| t.parse().ok()).ok_or("size is not a number")?;
                overrides.size = Some(size);
            }
            _ => {}
        }
        data = &data[length..];
    }
    Ok(overrides)
}

fn archive_error(why: String) -> Error {
    Error::invalid("archive", why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn names_and_data(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut tar = OuterTar::new(bytes);
        let mut out = Vec::new();
        while let Some(member) = tar.next_member()? {
            let mut data = Vec::new();
            if tar.data().read_to_end(&mut data).is_err() {
                return Err(tar.input_failure().unwrap());
            }
            out.push((String::from_utf8(member.name).unwrap(), data));
        }
        Ok(out)
    }

    #[test]
    fn reads_members_and_long_names() {
        let long = format!("{}/file", "d".repeat(200));
        let bytes = tar_with(&[("a.json", b"{}"), (&long, b"xyz")]);
        let members = names_and_data(&bytes).unwrap();
        assert_eq!(members, vec![("a.json".to_string(), b"{}".to_vec()), (long, b"xyz".to_vec())]);
    }

    #[test]
    fn truncation_names_member_and_offset() {
        let bytes = tar_with(&[("big", &[7u8; 2000])]);
        let err = names_and_data(&bytes[..1000]).unwrap_err().to_string();
        assert!(err.contains("\"big\"") && err.contains("unexpected end of archive at offset 1000"), "{err}");
    }

    #[test]
    fn garbage_after_end_and_bad_checksum_are_refused() {
        let mut bytes = tar_with(&[("a", b"1")]);
        bytes.extend_from_slice(b"garbage");
        let err = names_and_data(&bytes).unwrap_err().to_string();
        assert!(err.contains("data after the end-of-archive marker"), "{err}");
        let mut bytes = tar_with(&[("a", b"1")]);
        bytes[0] = b'b';
        let err = names_and_data(&bytes).unwrap_err().to_string();
        assert!(err.contains("invalid tar header at offset 0: checksum mismatch"), "{err}");
    }

    #[test]
    fn header_only_types_carry_no_data_whatever_their_size_says() {
        // As Go's archive/tar reads it: a hard link claiming 512 bytes is followed directly by
        // the next header, not by data.
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Link);
        link.set_path("link").unwrap();
        link.set_link_name("target").unwrap();
        link.set_size(512);
        link.set_cksum();
        let mut bytes = link.as_bytes().to_vec();
        bytes.extend(tar_with(&[("after", b"data")]));
        let mut tar = OuterTar::new(&bytes[..]);
        let first = tar.next_member().unwrap().unwrap();
        assert_eq!((first.kind, first.size), (MemberKind::Other("hard link"), 0));
        assert_eq!(tar.next_member().unwrap().unwrap().name, b"after");
    }

    #[test]
    fn pax_records_are_parsed_strictly() {
        let overrides = parse_pax(b"16 path=x/y/zzz\n").unwrap();
        assert_eq!(overrides.path.as_deref(), Some(&b"x/y/zzz"[..]));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"nonsense").is_err());
    }
}
