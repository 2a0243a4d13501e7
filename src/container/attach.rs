//! `kiln attach`: a detached container's supervisor listens on `containers/<id>/attach.sock`
//! (mode 0600, in the container's 0700 store directory) and copies the container's output to
//! every client as it arrives; a client's input goes to the container's stdin when it was created
//! with `-i`. Frames both ways are `[stream u8][len u32 BE][bytes]`, stream 0 stdin, 1 stdout,
//! 2 stderr. The supervisor closes the clients when the container ends.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SOCKET: &str = "attach.sock";

/// Longest frame payload a reader accepts.
const MAX_FRAME: usize = 1 << 20;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

pub fn write_frame(out: &mut impl Write, stream: u8, data: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.push(stream);
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
    frame.extend_from_slice(data);
    out.write_all(&frame)
}

/// The next frame, or `None` at the end of the stream.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match input.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(head[1..5].try_into().expect("four bytes")) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of {len} bytes")));
    }
    let mut data = vec![0u8; len];
    input.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

/// A socket path that fits `sockaddr_un` (108 bytes) however deep the store is: through the
/// directory's descriptor, which must stay open while the path is used.
fn short_path(dir: &Path) -> io::Result<(File, PathBuf)> {
    let handle = File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", handle.as_raw_fd()));
    Ok((handle, path))
}

/// The supervisor's side: accepts clients, fans output out to them, feeds their input to the
/// container's stdin pipe.
pub struct AttachServer {
    clients: Arc<Mutex<Vec<UnixStream>>>,
    path: PathBuf,
}

impl AttachServer {
    /// Listens on `dir/attach.sock`; input from clients is written to `stdin` when given.
    pub fn start(dir: &Path, stdin: Option<io::PipeWriter>) -> io::Result<AttachServer> {
        let path = dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let (_handle, short) = short_path(dir)?;
        let listener = UnixListener::bind(&short)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let clients: Arc<Mutex<Vec<UnixStream>>> = Arc::new(Mutex::new(Vec::new()));
        let stdin = stdin.map(|w| Arc::new(Mutex::new(w)));
        let accepted = clients.clone();
        std::thread::Builder::new().name("kiln-attach".into()).spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                // A client that stops reading must not hold up the container's output.
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                if let (Some(stdin), Ok(mut reader)) = (stdin.clone(), stream.try_clone()) {
                    let _ = std::thread::Builder::new().name("kiln-attach-in".into()).spawn(move || {
                        while let Ok(Some((STDIN, data))) = read_frame(&mut reader) {
                            let mut pipe = stdin.lock().unwrap_or_else(|p| p.into_inner());
                            if pipe.write_all(&data).is_err() {
                                break;
                            }
                        }
                    });
                }
                accepted.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
            }
        })?;
        Ok(AttachServer { clients, path })
    }

    /// Copies output to every client; a client that fails is dropped.
    pub fn broadcast(&self, stream: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain_mut(|c| write_frame(c, stream, data).is_ok());
    }

    /// Ends every client's stream (the container stopped).
    pub fn close_clients(&self) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        for c in clients.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        self.close_clients();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The client's side: a connection to the container's supervisor.
pub fn connect(dir: &Path) -> io::Result<UnixStream> {
    let (_handle, short) = short_path(dir)?;
    UnixStream::connect(short)
}

/// Finds docker's detach sequence (default Ctrl-P Ctrl-Q) across reads.
pub struct DetachKeys {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    /// `ctrl-p,ctrl-q`, `ctrl-a,x`: docker's `--detach-keys` syntax.
    pub fn parse(text: &str) -> anyhow::Result<DetachKeys> {
        let mut keys = Vec::new();
        for key in text.split(',') {
            let key = key.trim();
            let byte = match key.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let c = c.as_bytes()[0].to_ascii_lowercase();
                    match c {
                        b'a'..=b'z' => c - b'a' + 1,
                        b'@' => 0,
                        b'[' => 27,
                        b'\\' => 28,
                        b']' => 29,
                        b'^' => 30,
                        b'_' => 31,
                        _ => anyhow::bail!("invalid detach keys {text:?}: unknown key {key:?}"),
                    }
                }
                None if key.len() == 1 => key.as_bytes()[0],
                _ => anyhow::bail!("invalid detach keys {text:?}: unknown key {key:?}"),
            };
            keys.push(byte);
        }
        if keys.is_empty() {
            anyhow::bail!("invalid detach keys {text:?}");
        }
        Ok(DetachKeys { keys, matched: 0 })
    }

    /// Splits input: what to send on, and whether the sequence was completed (the bytes of a
    /// completed sequence are not sent; those of a broken one are).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_giant_lengths() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDERR, b"oops\n").unwrap();
        write_frame(&mut buf, STDOUT, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDERR, b"oops\n".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDOUT, Vec::new())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let giant = [1u8, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &giant[..]).is_err());
    }

    #[test]
    fn detach_keys_as_docker_reads_them() {
        let mut keys = DetachKeys::parse("ctrl-p,ctrl-q").unwrap();
        assert_eq!(keys.feed(b"ls\n"), (b"ls\n".to_vec(), false));
        assert_eq!(keys.feed(&[0x10]), (Vec::new(), false));
        assert_eq!(keys.feed(b"x"), (vec![0x10, b'x'], false), "a broken sequence is sent on");
        assert_eq!(keys.feed(&[b'a', 0x10, 0x11, b'z']), (b"a".to_vec(), true));
        let mut keys = DetachKeys::parse("ctrl-a,x").unwrap();
        assert_eq!(keys.feed(&[1, 1, b'x']), (vec![1], true));
        assert!(DetachKeys::parse("ctrl-").is_err() && DetachKeys::parse("meta-x").is_err());
    }
}
