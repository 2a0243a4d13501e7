//! The bridge network for real, as root with pasta (Debian's `passt`): a published port reaches
//! a server in the container, the container reaches the host's own address but not its loopback
//! (BuildKit's isolated default), a taken port gives docker's message, and the tool never outlives
//! the container. Skipped with a message without root, busybox-static or pasta.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_runtime::container::net::{free_port, Tool, BRIDGE_GATEWAY};
use kiln_runtime::container::{
    run_container, ContainerError, ContainerSpec, ExitOutcome, Network, PortMapping, Proto, RunResult,
};

const BUSYBOX: &str = "/bin/busybox";

fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the bridge tests need root");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} missing (apt-get install busybox-static)");
        return false;
    }
    if !matches!(Tool::find(), Some(Tool::Pasta(_))) {
        eprintln!("skipped: pasta missing (apt-get install passt)");
        return false;
    }
    true
}

macro_rules! require {
    () => {
        if !can_run() {
            return;
        }
    };
}

struct Fx {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::Builder::new().prefix("kiln-bridge-").tempdir().unwrap();
        let base = dir.path();
        let (lower, upper, work) = (base.join("lower"), base.join("upper"), base.join("work"));
        for d in [&lower, &upper, &work] {
            fs::create_dir(d).unwrap();
        }
        fs::create_dir_all(lower.join("bin")).unwrap();
        fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        for applet in ["sh", "httpd", "nc", "sleep", "echo", "cat", "ip", "mkdir", "touch", "timeout", "grep"] {
            std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
        }
        fs::create_dir_all(lower.join("www")).unwrap();
        fs::write(lower.join("www/index.html"), "hello from the container\n").unwrap();
        Fx { _dir: dir, lower, upper, work }
    }

    fn spec(&self, script: &str, ports: Vec<PortMapping>) -> ContainerSpec {
        ContainerSpec {
            lower_dirs: vec![self.lower.clone()],
            upper_dir: self.upper.clone(),
            work_dir: self.work.clone(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "bridge-test".into(),
            network: Network::Bridge,
            ports,
            hosts: b"127.0.0.1\tlocalhost\n".to_vec(),
            resolv_conf: b"nameserver 10.0.2.3\n".to_vec(),
            ..Default::default()
        }
    }
}

fn run(mut spec: ContainerSpec) -> (Result<RunResult, ContainerError>, String) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    spec.output = Some(Box::new(move |data: &[u8]| sink.lock().unwrap().extend_from_slice(data)));
    let res = run_container(spec);
    let out = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    (res, out)
}

/// Processes whose command line contains `needle` (other tests run pasta at the same time).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && !cmdline.contains("cargo") {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn http_get(port: u16, deadline: Duration) -> std::io::Result<String> {
    let start = Instant::now();
    loop {
        let attempt = (|| {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            if body.is_empty() {
                return Err(std::io::Error::other("empty answer"));
            }
            Ok(body)
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if start.elapsed() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The host's address on its default route, if it has one.
fn host_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("203.0.113.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_published_port_reaches_httpd_in_the_container_and_pasta_goes_with_it() {
    require!();
    let fx = Fx::new();
    let port = free_port(None, Proto::Tcp).unwrap();
    let ports = vec![PortMapping { host_ip: None, host_port: port, container_port: 80, proto: Proto::Tcp }];
    let mut spec = fx.spec("exec httpd -f -p 80 -h /www", ports);
    let (tx, rx) = mpsc::channel();
    spec.on_started = Some(Box::new(move |pid| tx.send(pid).unwrap()));
    let runner = std::thread::spawn(move || run(spec));
    let pid = rx.recv_timeout(Duration::from_secs(10)).expect("the container started");
    let needle = format!("{port}:80");
    assert_eq!(processes_with(&needle).len(), 1, "one pasta for the container: {:?}", processes_with(&needle));
    let answer = http_get(port, Duration::from_secs(5));
    // SAFETY: plain kill of the container's process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (res, out) = runner.join().unwrap();
    let answer = answer.unwrap_or_else(|e| panic!("GET from the host failed: {e}; container output: {out}"));
    assert!(answer.starts_with("HTTP/1.") && answer.contains("hello from the container"), "{answer}");
    assert_eq!(res.unwrap().outcome, ExitOutcome::Signaled(libc::SIGKILL));
    assert_eq!(processes_with(&needle), Vec::<String>::new(), "pasta outlived the container");
    assert!(TcpListener::bind(("0.0.0.0", port)).is_ok(), "the host port is still bound");
}

#[test]
fn the_container_reaches_the_hosts_address_but_not_its_loopback() {
    require!();
    let Some(host_ip) = host_address() else {
        eprintln!("skipped: the host has no address on a default route");
        return;
    };
    let fx = Fx::new();
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let lo_port = loopback.local_addr().unwrap().port();
    let outside = TcpListener::bind((host_ip, 0)).unwrap();
    let out_port = outside.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        outside.set_nonblocking(false).unwrap();
        if let Ok((mut s, _)) = outside.accept() {
            let _ = s.write_all(b"reached the host\n");
        }
    });
    loopback.set_nonblocking(true).unwrap();
    let script = format!(
        "ip -4 addr show eth0 | grep -q 'inet 10.0.2.100/24' && echo addr-ok; \
         echo | timeout 3 nc -w 2 {BRIDGE_GATEWAY} {lo_port} && echo LOOPBACK-REACHED; \
         echo | timeout 5 nc -w 3 {host_ip} {out_port}"
    );
    let (res, out) = run(fx.spec(&script, vec![]));
    res.unwrap_or_else(|e| panic!("{e}; output: {out}"));
    server.join().unwrap();
    assert!(out.contains("addr-ok"), "{out}");
    assert!(out.contains("reached the host"), "{out}");
    assert!(!out.contains("LOOPBACK-REACHED"), "{out}");
    assert!(loopback.accept().is_err(), "a connection reached the host's loopback");
}

#[test]
fn a_taken_host_port_stops_the_container_with_dockers_message() {
    require!();
    let fx = Fx::new();
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ports = vec![PortMapping { host_ip: None, host_port: port, container_port: 80, proto: Proto::Tcp }];
    let (res, out) = run(fx.spec("touch /ran", ports));
    let err = res.expect_err("the port is taken");
    assert_eq!(err.to_string(), format!("Bind for 0.0.0.0:{port} failed: port is already allocated"), "{out}");
    assert_eq!(err.exit_status(), 125);
    assert!(!fx.upper.join("ran").exists(), "the program ran");
    assert_eq!(processes_with(&format!("{port}:80")), Vec::<String>::new());
}
