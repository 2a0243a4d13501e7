//! Container networking (issue 12): `kiln run -p` serves the host through pasta, RUN steps get
//! BuildKit's isolated default (outbound only, not the build machine's loopback) with
//! `--network host` as the opt-in, a taken port gives docker's error, and pasta never outlives
//! its container, even when kiln is SIGKILLed. As root with pasta (Debian `passt`); they skip
//! otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn can_run() -> bool {
    if !is_root() {
        return false;
    }
    if !have_tool("pasta") {
        eprintln!("skipping: pasta missing (apt-get install passt)");
        return false;
    }
    true
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

/// The host's address on its default route, if it has one.
fn host_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("203.0.113.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// An HTTP server answering every request with `body`, until the test ends.
fn serve(listener: TcpListener, body: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
}

fn http_get(port: u16, deadline: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            if body.is_empty() {
                return Err(std::io::Error::other("empty answer"));
            }
            Ok(body)
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if start.elapsed() > deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && !cmdline.contains("cargo") {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn wait_until_gone(needle: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = processes_with(needle);
        if left.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn web_image(k: &Kiln) {
    let ctx = k.path("ctx-web");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN mkdir /www && echo 'hello from kiln' > /www/index.html\nEXPOSE 80\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    k.ok(&["build", "-q", "-t", "web:1", ctx.to_str().unwrap()]);
}

fn spawn_run(k: &Kiln, args: &[&str]) -> Child {
    k.cmd(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn kill(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
    assert!(status.unwrap().success(), "kill -{signal} {}", child.id());
}

#[test]
fn published_port_serves_httpd_and_pasta_ends_with_the_container() {
    if !can_run() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    web_image(&k);
    let port = free_port();
    let mut child = spawn_run(&k, &["run", "--rm", "-p", &format!("{port}:80"), "web:1"]);
    let answer = http_get(port, Duration::from_secs(10));
    let needle = format!("--tcp-ports {port}:80");
    let tools = processes_with(&needle);
    // SIGTERM goes to the container; httpd, as pid 1 without a handler, ignores it; kiln kills
    // the container at the third.
    let mut status = None;
    for _ in 0..3 {
        kill(&child, "TERM");
        std::thread::sleep(Duration::from_millis(300));
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().unwrap(),
    };
    let answer = answer.unwrap_or_else(|e| panic!("GET from the host failed: {e}"));
    assert!(answer.starts_with("HTTP/1.") && answer.contains("hello from kiln"), "{answer}");
    assert_eq!(tools.len(), 1, "one pasta while it runs: {tools:?}");
    assert_eq!(status.code(), Some(137), "httpd killed at the third SIGTERM");
    assert_eq!(wait_until_gone(&needle), Vec::<String>::new(), "pasta outlived the container");
    assert!(TcpListener::bind(("0.0.0.0", port)).is_ok(), "the host port is still bound");
    k.assert_fsck_clean();
}

#[test]
fn a_sigkilled_kiln_leaves_no_pasta_nor_listener() {
    if !can_run() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    web_image(&k);
    let port = free_port();
    let mut child = spawn_run(&k, &["run", "--rm", "-P", "-p", &format!("{port}:80"), "web:1"]);
    http_get(port, Duration::from_secs(10)).unwrap_or_else(|e| panic!("GET from the host failed: {e}"));
    kill(&child, "KILL");
    child.wait().unwrap();
    let needle = format!("--tcp-ports {port}:80");
    assert_eq!(wait_until_gone(&needle), Vec::<String>::new(), "pasta outlived a SIGKILLed kiln");
    let start = Instant::now();
    while TcpListener::bind(("0.0.0.0", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "port {port} still bound after kiln died");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_taken_host_port_is_dockers_error_and_nothing_runs() {
    if !can_run() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let marker = k.path("ran");
    let out = k.run(&[
        "run",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "-v",
        &format!("{}:/out", k.path("").display()),
        "busybox",
        "touch",
        "/out/ran",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.trim(), format!("Error: Bind for 0.0.0.0:{port} failed: port is already allocated"));
    assert!(!marker.exists(), "the container's program ran");
    assert_eq!(wait_until_gone(&format!("--tcp-ports {port}:80")), Vec::<String>::new());
    drop(taken);
    // Bad flags are refused before anything is made.
    for (flags, wanted) in [
        (vec!["-p", "80/sctp"], "invalid protocol"),
        (vec!["-p", "99999:80"], "invalid host port"),
        (vec!["-p", "[::1]:8080:80"], "IPv4 host addresses only"),
        (vec!["--network", "mynet"], "network mynet not found"),
        (vec!["--network", "host", "-p", "8080:80"], "--publish needs the bridge network"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags);
        args.extend(["busybox", "true"]);
        let out = k.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted) && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }
}

#[test]
fn run_containers_default_to_the_bridge_network() {
    if !can_run() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let show = "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route | grep default; cat /etc/resolv.conf | grep -c nameserver";
    let out = k.ok(&["run", "--rm", "busybox", "sh", "-c", show]);
    assert_eq!(out, "inet 10.0.2.100/24\ndefault via 10.0.2.2 dev eth0 \n1\n");
    assert_eq!(k.ok(&["run", "--rm", "busybox", "grep", "nameserver", "/etc/resolv.conf"]), "nameserver 10.0.2.3\n");
    // Names resolve through the tool's DNS forwarder, as on the host.
    let host_knows = std::process::Command::new("getent").args(["hosts", "deb.debian.org"]).output();
    if host_knows.is_ok_and(|o| o.status.success()) {
        let out = k.ok(&["run", "--rm", "busybox", "sh", "-c", "nslookup deb.debian.org 2>&1"]);
        assert!(out.contains("Name:") && out.contains("deb.debian.org"), "{out}");
    } else {
        eprintln!("the host cannot resolve deb.debian.org: DNS from the bridge not checked");
    }
    let out = k.ok(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", "ls /sys/class/net"]);
    assert_eq!(out, "lo\n");
}

#[test]
fn run_steps_reach_the_outside_but_not_the_build_machines_loopback() {
    if !can_run() {
        return;
    }
    let Some(host_ip) = host_address() else {
        eprintln!("skipping: the host has no address on a default route");
        return;
    };
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let local_port = local.local_addr().unwrap().port();
    serve(local, "loopback service\n");
    let outside = TcpListener::bind((host_ip, 0)).unwrap();
    let outside_port = outside.local_addr().unwrap().port();
    serve(outside, "outside service\n");

    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // busybox-static's wget crashes in glibc's static NSS: nc speaks the HTTP.
    let get = |host: &str, port: u16, file: &str| {
        format!("(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc -w 3 {host} {port} > {file}; true)")
    };
    let dockerfile = format!(
        "FROM busybox\nRUN {} && {} && {}\nRUN --network=host {}\n",
        get("127.0.0.1", local_port, "/lo"),
        get("10.0.2.2", local_port, "/gw"),
        get(&host_ip.to_string(), outside_port, "/out"),
        get("127.0.0.1", local_port, "/host-lo"),
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    k.ok(&["build", "-q", "-t", "net:1", ctx.to_str().unwrap()]);
    let cat = |image: &str, path: &str| k.ok(&["run", "--rm", "--network", "none", image, "cat", path]);
    assert!(!cat("net:1", "/lo").contains("loopback service"), "a default RUN reached the build machine's loopback");
    assert!(!cat("net:1", "/gw").contains("loopback service"), "the gateway leads to the build machine's loopback");
    assert!(cat("net:1", "/out").contains("outside service"), "a default RUN reaches the outside");
    assert!(cat("net:1", "/host-lo").contains("loopback service"), "RUN --network=host shares the host's network");

    // `kiln build --network host` is the build-wide opt-in.
    std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nRUN {}\n", get("127.0.0.1", local_port, "/lo2")))
        .unwrap();
    k.ok(&["build", "-q", "--network", "host", "-t", "net:2", ctx.to_str().unwrap()]);
    assert!(cat("net:2", "/lo2").contains("loopback service"));
}

#[test]
fn port_names_a_missing_container() {
    let k = Kiln::new();
    let err = k.fails(&["port", "nosuch"]);
    assert!(err.contains("No such container: nosuch"), "{err}");
}

#[test]
fn detached_containers_publish_show_and_release_their_ports() {
    if !can_run() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    web_image(&k);
    let port = free_port();
    let needle = format!("--tcp-ports {port}:80");
    let id = k.ok(&["run", "-d", "--name", "web", "-p", &format!("{port}:80"), "web:1"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let answer = http_get(port, Duration::from_secs(10)).unwrap_or_else(|e| panic!("GET failed: {e}"));
    assert!(answer.contains("hello from kiln"), "{answer}");
    let ps = k.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert_eq!(ps, format!("web 0.0.0.0:{port}->80/tcp\n"));
    assert_eq!(k.ok(&["port", "web"]), format!("80/tcp -> 0.0.0.0:{port}\n"));
    assert_eq!(k.ok(&["port", "web", "80/tcp"]), format!("0.0.0.0:{port}\n"));
    assert_eq!(k.ok(&["container", "port", "web", "80"]), format!("0.0.0.0:{port}\n"));
    let err = k.fails(&["port", "web", "81"]);
    assert!(err.contains("No public port '81/tcp' published for web"), "{err}");
    let inspect: serde_json::Value = serde_json::from_str(&k.ok(&["container", "inspect", "web"])).unwrap();
    let settings = &inspect[0]["NetworkSettings"];
    assert_eq!(settings["Ports"]["80/tcp"][0]["HostPort"], port.to_string(), "{settings}");
    assert_eq!(settings["IPAddress"], "10.0.2.100", "{settings}");
    assert_eq!(inspect[0]["HostConfig"]["NetworkMode"], "bridge");
    assert_eq!(processes_with(&needle).len(), 1, "{:?}", processes_with(&needle));

    // stop: httpd (pid 1) ignores SIGTERM, SIGKILL after 1 s; pasta and the listener go.
    k.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(wait_until_gone(&needle), Vec::<String>::new(), "pasta outlived a stopped container");
    assert!(TcpListener::bind(("0.0.0.0", port)).is_ok(), "port {port} still bound after stop");
    assert_eq!(k.ok(&["ps", "-a", "--format", "{{.Names}} [{{.Ports}}]"]), "web []\n");
    assert_eq!(k.ok(&["port", "web"]), "");

    // start binds the same port again; rm -f kills and releases it.
    k.ok(&["start", "web"]);
    let answer = http_get(port, Duration::from_secs(10)).unwrap_or_else(|e| panic!("GET after start failed: {e}"));
    assert!(answer.contains("hello from kiln"), "{answer}");
    k.ok(&["rm", "-f", "web"]);
    assert_eq!(wait_until_gone(&needle), Vec::<String>::new(), "pasta outlived rm -f");
    assert!(TcpListener::bind(("0.0.0.0", port)).is_ok(), "port {port} still bound after rm -f");

    // -P: the image's EXPOSE 80 on a port the kernel chose.
    k.ok(&["run", "-d", "--name", "any", "-P", "web:1"]);
    let line = k.ok(&["port", "any", "80"]);
    let chosen: u16 =
        line.trim().strip_prefix("0.0.0.0:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    let answer = http_get(chosen, Duration::from_secs(10)).unwrap_or_else(|e| panic!("GET on -P port failed: {e}"));
    assert!(answer.contains("hello from kiln"), "{answer}");
    k.ok(&["rm", "-f", "any"]);
    assert_eq!(wait_until_gone(&format!("--tcp-ports {chosen}:80")), Vec::<String>::new());
    k.assert_fsck_clean();
}

#[test]
fn a_sigkilled_supervisor_takes_pasta_with_it() {
    if !can_run() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    web_image(&k);
    let port = free_port();
    let needle = format!("--tcp-ports {port}:80");
    k.ok(&["run", "-d", "--name", "web", "-p", &format!("{port}:80"), "web:1"]);
    http_get(port, Duration::from_secs(10)).unwrap_or_else(|e| panic!("GET failed: {e}"));
    let inspect: serde_json::Value = serde_json::from_str(&k.ok(&["container", "inspect", "web"])).unwrap();
    let pid = inspect[0]["State"]["Pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let supervisor = status.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap().trim().to_string();
    // The container's pid 1 is a child of the runtime's monitor, whose parent is the supervisor.
    let monitor_status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap();
    let supervisor = monitor_status.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap().trim().to_string();
    let cmdline = std::fs::read_to_string(format!("/proc/{supervisor}/cmdline")).unwrap_or_default();
    assert!(cmdline.contains("__supervise"), "not the supervisor: {cmdline:?}");
    assert!(std::process::Command::new("kill").args(["-KILL", &supervisor]).status().unwrap().success());
    assert_eq!(wait_until_gone(&needle), Vec::<String>::new(), "pasta outlived its supervisor");
    let start = Instant::now();
    while TcpListener::bind(("0.0.0.0", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "port {port} still bound after the supervisor died");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ps = k.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}} [{{.Ports}}]"]);
    assert!(ps.starts_with("web Exited (137)") && ps.ends_with("[]\n"), "{ps}");
    k.ok(&["rm", "web"]);
    k.assert_fsck_clean();
}

#[test]
fn slirp4netns_stands_in_for_pasta_and_no_tool_is_one_clear_line() {
    if !is_root() || !have_tool("slirp4netns") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    // kiln finds the tool on its PATH: one with slirp4netns only, and one with neither.
    let only_slirp = k.path("only-slirp");
    let neither = k.path("neither");
    std::fs::create_dir_all(&only_slirp).unwrap();
    std::fs::create_dir_all(&neither).unwrap();
    let slirp = String::from_utf8(
        std::process::Command::new("sh").args(["-c", "command -v slirp4netns"]).output().unwrap().stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(slirp.trim(), only_slirp.join("slirp4netns")).unwrap();
    let run = |path: &std::path::Path, args: &[&str]| k.cmd(args).env("PATH", path).output().unwrap();

    let out =
        run(&only_slirp, &["run", "--rm", "busybox", "sh", "-c", "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "inet 10.0.2.100/24\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&only_slirp, &["run", "--rm", "-p", "8080:80", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: slirp4netns: publishing ports needs pasta (Debian package passt)\n"
    );
    let out = run(&neither, &["run", "--rm", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs pasta (Debian package passt) or slirp4netns") && err.lines().count() == 1, "{err}");
    assert_eq!(wait_until_gone("slirp4netns --configure"), Vec::<String>::new());
    // A build without either falls back to the host network with one warning, as BuildKit does.
    let ctx = k.path("ctx-fallback");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN ls /sys/class/net > /nets\n").unwrap();
    let out = run(&neither, &["build", "--progress", "plain", "-t", "fb:1", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("RUN steps use the host network").count(), 1, "{err}");
}

#[test]
fn the_builds_network_is_part_of_a_run_steps_cache_key() {
    if !is_root() {
        return;
    }
    let t = crate::cache::CacheTest::new();
    t.write("Dockerfile", "FROM busybox\nRUN ls /sys/class/net > /nets\n");
    let (_, cached) = t.build(&[]);
    assert!(!cached.contains(&"RUN".to_string()), "{cached:?}");
    let (_, cached) = t.build(&[]);
    assert!(cached.contains(&"RUN".to_string()), "the same build hits: {cached:?}");
    // --network none saw other interfaces: not the same step.
    let (_, cached) = t.build(&["--network", "none"]);
    assert!(!cached.contains(&"RUN".to_string()), "a RUN cached under another network was reused: {cached:?}");
    let (_, cached) = t.build(&["--network", "none"]);
    assert!(cached.contains(&"RUN".to_string()), "{cached:?}");
    let out = t.k.ok(&["run", "--rm", "--network", "none", "cached:1", "cat", "/nets"]);
    assert_eq!(out, "lo\n");
}

/// podman (Debian's 4.3, with slirp4netns) beside kiln: the same `-p` flags give the same `port`
/// lines and `ps` PORTS entries (podman lists them in another order: compared as sets).
#[test]
fn published_ports_print_what_podman_prints() {
    if !can_run() || !have_tool("podman") || !have_tool("slirp4netns") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let tag = format!("kiln-net-test-{}:1", std::process::id());
    let name = format!("kilnnetpeer{}", std::process::id());
    let podman = |args: &[&str]| std::process::Command::new("podman").args(args).output().unwrap();
    let _peer = PodmanPeer::new(&k, tag.clone(), name.clone());
    let sorted = |text: &str, sep: &str| {
        let mut items: Vec<String> = text.trim().split(sep).map(str::to_string).collect();
        items.sort();
        items
    };
    let mut results = Vec::new();
    for tool in ["podman", "kiln"] {
        let (tcp, udp) = (free_port(), free_port());
        let p1 = format!("{tcp}:80");
        let p2 = format!("127.0.0.1:{udp}:81/udp");
        let mut run = vec!["run", "-d", "--name", &name, "-p", &p1, "-p", &p2];
        if tool == "podman" {
            // runc cannot raise podman's default rlimits in this sandbox.
            run.extend(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", "--network", "slirp4netns"]);
        }
        run.extend([tag.as_str(), "httpd", "-f", "-p", "80", "-h", "/"]);
        let out = |args: &[&str]| {
            let o = if tool == "podman" { podman(args) } else { k.run(args) };
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).replace(&tcp.to_string(), "TCP").replace(&udp.to_string(), "UDP"),
            )
        };
        let started = out(&run);
        assert_eq!(started.0, Some(0), "{tool} run -d");
        let all = out(&["port", &name]);
        let one = out(&["port", &name, "80"]);
        let udp_one = out(&["port", &name, "81/udp"]);
        let missing = out(&["port", &name, "82"]).0;
        let ps = out(&["ps", "--format", "{{.Ports}}"]);
        let _ = out(&["rm", "-f", &name]);
        results.push((
            tool,
            sorted(&all.1, "\n"),
            one.1,
            udp_one.1,
            missing.is_some_and(|c| c != 0),
            sorted(&ps.1, ", "),
        ));
    }
    let (podman_result, kiln_result) = (&results[0], &results[1]);
    assert_eq!(kiln_result.1, vec!["80/tcp -> 0.0.0.0:TCP", "81/udp -> 127.0.0.1:UDP"]);
    assert_eq!(kiln_result.1, podman_result.1, "port");
    assert_eq!(kiln_result.2, podman_result.2, "port NAME 80");
    assert_eq!(kiln_result.3, podman_result.3, "port NAME 81/udp");
    assert_eq!(kiln_result.4, podman_result.4, "port of an unpublished port fails");
    assert_eq!(kiln_result.5, podman_result.5, "ps PORTS");
}

#[test]
fn host_gateway_reaches_a_service_on_the_hosts_address() {
    if !can_run() {
        return;
    }
    let Some(host_ip) = host_address() else {
        eprintln!("skipping: the host has no address on a default route");
        return;
    };
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let server = TcpListener::bind((host_ip, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    serve(server, "host service\n");
    // wget stops after Content-Length; busybox nc was seen waiting on under load after the
    // server had answered and closed.
    let script = format!("timeout 10 wget -q -O- http://hostsvc:{port}/");
    let out = k.ok(&["run", "--rm", "--add-host", "hostsvc:host-gateway", "busybox", "sh", "-c", &script]);
    assert!(out.contains("host service"), "{out}");
}
