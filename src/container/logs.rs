//! docker's json-file log: one JSON object per line, `{"log":"…\n","stream":"stdout","time":"…"}`,
//! written by the supervisor, read by `kiln logs`. A line without its newline yet is held back
//! until it ends or reaches 16 KiB (docker's buffer), then written as is. With a `max-size` the
//! file is rotated to `<log>.1`, `<log>.2`, … keeping `max-file` files in all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::LogConfig;

/// Longest piece of one line held back waiting for its newline.
const MAX_PENDING: usize = 16 * 1024;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Appends entries to a container's log.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    config: LogConfig,
    pending: [Vec<u8>; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl LogWriter {
    pub fn open(path: &Path, config: LogConfig) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { path: path.to_path_buf(), file, size, config, pending: [Vec::new(), Vec::new()] })
    }

    /// Takes output as it arrives; complete lines are written at once.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[stream as usize]);
            line.extend_from_slice(&data[..=end]);
            self.entry(stream, &line)?;
            data = &data[end + 1..];
        }
        self.pending[stream as usize].extend_from_slice(data);
        while self.pending[stream as usize].len() >= MAX_PENDING {
            let rest = self.pending[stream as usize].split_off(MAX_PENDING);
            let piece = std::mem::replace(&mut self.pending[stream as usize], rest);
            self.entry(stream, &piece)?;
        }
        Ok(())
    }

    /// Writes what is held back (the program ended without a last newline).
    pub fn flush(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let piece = std::mem::take(&mut self.pending[stream as usize]);
            if !piece.is_empty() {
                self.entry(stream, &piece)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.name().into(),
            time: super::now(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some(max) = self.config.max_size.filter(|m| *m > 0) {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `log` → `log.1` → `log.2` …, dropping the oldest beyond `max-file`; a fresh, empty `log`.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.config.max_file.unwrap_or(1).max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..keep).rev() {
            let from = if n == 1 { self.path.clone() } else { numbered(&self.path, n - 1) };
            match fs::rename(&from, numbered(&self.path, n)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Every entry of the log, the rotated files first (oldest first). A line that is not an entry
/// (a write cut by a crash) is skipped.
pub fn read_all(path: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = (1..100).map(|n| numbered(path, n)).take_while(|p| p.exists()).collect();
    files.reverse();
    files.push(path.to_path_buf());
    for file in files {
        match File::open(&file) {
            Ok(f) => read_entries(BufReader::new(f), &mut out)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub fn read_entries(reader: impl BufRead, out: &mut Vec<Entry>) -> io::Result<()> {
    for line in reader.split(b'\n') {
        if let Ok(entry) = serde_json::from_slice::<Entry>(&line?) {
            out.push(entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
        w.write(Stream::Stdout, b"one\ntw").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        w.write(Stream::Stdout, b"o\nthree").unwrap();
        w.flush().unwrap();
        let got: Vec<(String, String)> = read_all(&path).unwrap().into_iter().map(|e| (e.stream, e.log)).collect();
        let want = [("stdout", "one\n"), ("stderr", "err\n"), ("stdout", "two\n"), ("stdout", "three")];
        assert_eq!(got, want.map(|(s, l)| (s.to_string(), l.to_string())));
        let text = fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "one\n");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_line_without_end_is_cut_at_16k() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
        w.write(Stream::Stdout, &vec![b'x'; 40 * 1024]).unwrap();
        let entries = read_all(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.log.len() == MAX_PENDING));
    }

    #[test]
    fn max_size_bounds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let config = LogConfig { max_size: Some(1000), max_file: Some(3) };
        let mut w = LogWriter::open(&path, config).unwrap();
        for i in 0..500 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            assert!(fs::metadata(&p).unwrap().len() <= 1000, "{}", p.display());
        }
        assert!(!numbered(&path, 3).exists());
        let entries = read_all(&path).unwrap();
        assert_eq!(entries.last().unwrap().log, "line 499\n");
        let numbers: Vec<u32> =
            entries.iter().map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gaps within what is kept");
    }
}
