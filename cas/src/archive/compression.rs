//! Detecting and undoing layer compression, in-process only (never an external xz or unpigz).

use std::io::{self, BufRead, BufReader, Read};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    /// Formats docker can write but OCI layers may not use; named so the error can say which.
    Unsupported(&'static str),
}

impl Compression {
    /// Recognises a stream by its first bytes.
    pub fn detect(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Unsupported("xz"),
            [b'B', b'Z', b'h', ..] => Compression::Unsupported("bzip2"),
            _ => Compression::None,
        }
    }
}

/// Peeks at the start of `reader`, and returns what it found with a reader that yields the
/// decompressed bytes. `Unsupported` formats come back as an error naming the format.
pub fn decompress<'r, R: Read + 'r>(reader: R) -> io::Result<(Compression, Box<dyn Read + 'r>)> {
    let mut buffered = BufReader::with_capacity(1 << 20, reader);
    let kind = Compression::detect(buffered.fill_buf()?);
    let out: Box<dyn Read + 'r> = match kind {
        Compression::None => Box::new(buffered),
        // MultiGzDecoder: concatenated gzip members are valid gzip, and pigz writes them.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(buffered)?;
            // 2^27 = 128 MiB: zstd's default maximum for streams; larger windows are refused.
            decoder.window_log_max(27)?;
            Box::new(decoder)
        }
        Compression::Unsupported(name) => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{name} compression is not supported")))
        }
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trips_gzip_and_zstd() {
        let data = b"hello layer".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        for (bytes, kind) in [(gz, Compression::Gzip), (zs, Compression::Zstd), (data.clone(), Compression::None)] {
            let (found, mut r) = decompress(&bytes[..]).unwrap();
            assert_eq!(found, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn xz_is_refused_by_name() {
        let err = decompress(&b"\xfd7zXZ\x00rest"[..]).err().unwrap();
        assert!(err.to_string().contains("xz"));
    }
}
