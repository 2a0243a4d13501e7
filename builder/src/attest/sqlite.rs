//! Just enough of the SQLite file format (sqlite.org/fileformat2.html) to read every row of one
//! table of a database held in memory: the schema table on page 1 gives the table's root page,
//! its table b-tree is walked (interior and leaf pages, overflow chains) and each row's record
//! is decoded. Read-only, no SQL, no write-ahead log. Every page number, offset and length is
//! checked against the file, each page is visited at most once, so a corrupt or hostile file
//! gives an error, never a panic or a loop.
//!
//! rpm's `rpmdb.sqlite` needs nothing more; linking the C SQLite library (rusqlite's bundled
//! build) for it would be the workspace's largest C dependency.

use std::collections::HashSet;

/// A column value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

pub struct Database<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
}

type R<T> = Result<T, String>;

impl<'a> Database<'a> {
    pub fn open(bytes: &'a [u8]) -> R<Database<'a>> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err("not an SQLite 3 database (no file header)".into());
        }
        let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => n as usize,
            n => return Err(format!("page size {n} is not a power of two from 512 to 65536")),
        };
        let reserved = bytes[20] as usize;
        if reserved >= page_size - 480 {
            return Err(format!("{reserved} reserved bytes per page leave too little room"));
        }
        if bytes[56..60] != [0, 0, 0, 1] && bytes[56..60] != [0, 0, 0, 0] {
            return Err("text encoding is not UTF-8".into());
        }
        Ok(Database { bytes, page_size, usable: page_size - reserved })
    }

    /// Every row of table `name`: (rowid, columns), in rowid order.
    pub fn table(&self, name: &str, row_limit: usize) -> R<Vec<(i64, Vec<Value>)>> {
        let schema = self.rows(1, 100_000)?;
        let root = schema
            .iter()
            .find(|(_, cols)| {
                matches!(cols.first(), Some(Value::Text(t)) if t == "table")
                    && matches!(cols.get(1), Some(Value::Text(n)) if n == name)
            })
            .and_then(|(_, cols)| match cols.get(3) {
                Some(Value::Integer(p)) if *p > 0 => Some(*p as usize),
                _ => None,
            })
            .ok_or_else(|| format!("no table {name:?}"))?;
        self.rows(root, row_limit)
    }

    fn page(&self, number: usize) -> R<&'a [u8]> {
        let past_end = || format!("page {number} is past the end of the file");
        let start = number.checked_sub(1).ok_or("page 0 does not exist")?;
        let start = start.checked_mul(self.page_size).ok_or_else(past_end)?;
        self.bytes.get(start..start.saturating_add(self.page_size)).ok_or_else(past_end)
    }

    /// The rows of the table b-tree rooted at `root`.
    fn rows(&self, root: usize, limit: usize) -> R<Vec<(i64, Vec<Value>)>> {
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        let mut stack = vec![root];
        // Children are pushed right to left so rows come out in rowid order.
        while let Some(number) = stack.pop() {
            if !visited.insert(number) {
                return Err(format!("page {number} is reached twice (a cycle in the b-tree)"));
            }
            let page = self.page(number)?;
            let header = if number == 1 { 100 } else { 0 };
            let kind = *page.get(header).ok_or("short page")?;
            let cells = be16(page, header + 3)? as usize;
            match kind {
                0x0d => {
                    for i in 0..cells {
                        let at = be16(page, header + 8 + 2 * i)? as usize;
                        let (payload_len, n) = varint(page, at)?;
                        let (rowid, m) = varint(page, at + n)?;
                        let payload = self.payload(page, at + n + m, payload_len as usize)?;
                        out.push((rowid as i64, record(&payload)?));
                        if out.len() > limit {
                            return Err(format!("more than {limit} rows"));
                        }
                    }
                }
                0x05 => {
                    let right = be32(page, header + 8)? as usize;
                    stack.push(right);
                    for i in (0..cells).rev() {
                        let at = be16(page, header + 12 + 2 * i)? as usize;
                        stack.push(be32(page, at)? as usize);
                    }
                }
                other => return Err(format!("page {number} has b-tree page type {other}, not a table page")),
            }
        }
        Ok(out)
    }

    /// A leaf cell's payload: the part on the page, then the overflow chain.
    fn payload(&self, page: &[u8], at: usize, len: usize) -> R<Vec<u8>> {
        let u = self.usable;
        let max_local = u - 35;
        let local = if len <= max_local {
            len
        } else {
            let min_local = (u - 12) * 32 / 255 - 23;
            let k = min_local + (len - min_local) % (u - 4);
            if k <= max_local {
                k
            } else {
                min_local
            }
        };
        let mut out = Vec::with_capacity(len.min(self.bytes.len()));
        out.extend_from_slice(page.get(at..at + local).ok_or("cell payload runs past its page")?);
        let mut next = if local < len { be32(page, at + local)? as usize } else { 0 };
        let mut seen = HashSet::new();
        while out.len() < len {
            if next == 0 || !seen.insert(next) {
                return Err("overflow chain ends early or loops".into());
            }
            let overflow = self.page(next)?;
            let take = (len - out.len()).min(u - 4);
            out.extend_from_slice(&overflow[4..4 + take]);
            next = be32(overflow, 0)? as usize;
        }
        Ok(out)
    }
}

fn be16(b: &[u8], at: usize) -> R<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| "offset past the page".into())
}

fn be32(b: &[u8], at: usize) -> R<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| "offset past the page".into())
}

/// SQLite's varint: 1-9 bytes, 7 bits each, the ninth byte whole. Returns (value, bytes used).
fn varint(b: &[u8], at: usize) -> R<(u64, usize)> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(at + i).ok_or("varint past the end")?;
        if i == 8 {
            return Ok(((value << 8) | byte as u64, 9));
        }
        value = (value << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    unreachable!("the ninth byte returns")
}

/// A record: a header of serial types, then the values.
fn record(payload: &[u8]) -> R<Vec<Value>> {
    let (header_len, mut at) = varint(payload, 0)?;
    let header_len = header_len as usize;
    if header_len > payload.len() {
        return Err("record header longer than its record".into());
    }
    let mut types = Vec::new();
    while at < header_len {
        let (t, n) = varint(payload, at)?;
        types.push(t);
        at += n;
    }
    let mut body = header_len;
    let mut values = Vec::with_capacity(types.len());
    for t in types {
        let take = |len: usize, body: &mut usize| -> R<&[u8]> {
            let s = payload.get(*body..*body + len).ok_or("record value past its end")?;
            *body += len;
            Ok(s)
        };
        let int = |s: &[u8]| -> i64 {
            let mut v: i64 = if s.first().is_some_and(|b| b & 0x80 != 0) { -1 } else { 0 };
            for &b in s {
                v = (v << 8) | b as i64;
            }
            v
        };
        values.push(match t {
            0 => Value::Null,
            1..=4 => Value::Integer(int(take(t as usize, &mut body)?)),
            5 => Value::Integer(int(take(6, &mut body)?)),
            6 => Value::Integer(int(take(8, &mut body)?)),
            7 => Value::Real(f64::from_bits(int(take(8, &mut body)?) as u64)),
            8 => Value::Integer(0),
            9 => Value::Integer(1),
            n if n >= 12 && n % 2 == 0 => Value::Blob(take(((n - 12) / 2) as usize, &mut body)?.to_vec()),
            n if n >= 13 => {
                Value::Text(String::from_utf8_lossy(take(((n - 13) / 2) as usize, &mut body)?).into_owned())
            }
            n => return Err(format!("serial type {n} is reserved")),
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_records() {
        assert_eq!(varint(&[0x7f], 0).unwrap(), (127, 1));
        assert_eq!(varint(&[0x81, 0x00], 0).unwrap(), (128, 2));
        assert_eq!(varint(&[0xff; 9], 0).unwrap(), (u64::MAX, 9));
        // header 5 bytes: NULL, 1-byte int, text "hi", blob [7]
        let rec = [5, 0, 1, 17, 14, 0xfe, b'h', b'i', 7];
        assert_eq!(
            record(&rec).unwrap(),
            [Value::Null, Value::Integer(-2), Value::Text("hi".into()), Value::Blob(vec![7])]
        );
        assert!(record(&[5, 0, 1, 17, 14]).is_err());
    }

    #[test]
    fn corrupt_files_are_errors() {
        assert!(Database::open(b"not a database").is_err());
        let mut header = b"SQLite format 3\0".to_vec();
        header.resize(4096, 0);
        header[16..18].copy_from_slice(&4096u16.to_be_bytes());
        header[56..60].copy_from_slice(&[0, 0, 0, 1]);
        header[100] = 0x0d; // an empty leaf: no tables
        let db = Database::open(&header).unwrap();
        assert!(db.table("Packages", 10).unwrap_err().contains("no table"));
        header[100] = 0x05; // an interior page whose right child is itself
        header[108..112].copy_from_slice(&1u32.to_be_bytes());
        let db = Database::open(&header).unwrap();
        assert!(db.table("Packages", 10).unwrap_err().contains("twice"));
        // A page number no file could hold.
        assert!(db.page(usize::MAX).unwrap_err().contains("past the end"));
        assert!(db.page(0).is_err());
        header[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert!(Database::open(&header).is_err());
    }
}
