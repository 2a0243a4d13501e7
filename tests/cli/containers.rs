//! Containers as docker users run them (issue 12): `run -d`, `ps`, `logs`, `stop`/`start`/
//! `restart`, `kill`, `wait`, `rm -f`, `rename`, `container prune`, restart policies, and the
//! supervisor being killed. As root; each test skips without it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Removes every container of the store when dropped, so that a failing test leaves no process
/// or mount behind in its temp dir.
struct Cleanup<'a>(&'a Kiln);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ids = String::from_utf8_lossy(&self.0.run(&["ps", "-aq", "--no-trunc"]).stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.0.run(&args);
        }
    }
}

fn setup() -> Option<Kiln> {
    if !is_root() {
        eprintln!("skipped: container tests need root");
        return None;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    Some(k)
}

fn record(k: &Kiln, id: &str) -> serde_json::Value {
    let path = k.root().join("containers").join(id).join("container.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn inspect(k: &Kiln, name: &str, template: &str) -> String {
    k.ok(&["inspect", "--format", template, name]).trim().to_string()
}

fn pid_alive(pid: i64) -> bool {
    // A zombie is as good as gone: nobody runs in it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Mount points under `dir` (overlays and binds a container left behind).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && pid_alive(entry.file_name().to_string_lossy().parse().unwrap()) {
                out.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn detached_container_lifecycle_as_in_the_tutorials() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo v1 > /version\nCMD [\"sh\", \"-c\", \"echo started $(cat /version); trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done\"]\n",
    )
    .unwrap();
    k.ok(&["build", "-q", "-t", "app:1", ctx.to_str().unwrap()]);

    let id = k.ok(&["run", "-d", "--name", "web", "app:1"]).trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    // ps: running containers only, docker's columns, `Up …`.
    let ps = k.ok(&["ps"]);
    let header: Vec<&str> = ps.lines().next().unwrap().split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(header, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]);
    let row = ps.lines().nth(1).expect("the running container is listed");
    assert!(
        row.starts_with(&id[..12]) && row.contains("app:1") && row.contains(" Up ") && row.ends_with("web"),
        "{row}"
    );
    assert_eq!(inspect(&k, "web", "{{.State.Status}} {{.State.Running}} {{.Name}}"), "running true /web");
    let pid: i64 = inspect(&k, "web", "{{.State.Pid}}").parse().unwrap();
    assert!(pid_alive(pid), "State.Pid is the running program");

    wait_until("the first log line", Duration::from_secs(10), || k.ok(&["logs", "web"]).contains("started v1"));
    // stop: the program's TERM handler runs; exit status recorded; ps hides it, ps -a shows it.
    assert_eq!(k.ok(&["stop", "web"]).trim(), "web");
    assert!(!pid_alive(pid), "stop ended the program");
    assert_eq!(k.ok(&["ps", "-q"]).trim(), "", "a stopped container is not in plain ps");
    let all = k.ok(&["ps", "-a"]);
    assert!(all.contains("Exited (0) "), "{all}");
    assert!(k.ok(&["logs", "web"]).ends_with("started v1\nbye\n"));
    assert_eq!(k.ok(&["wait", "web"]).trim(), "0");

    // start again: same container, same upper dir, a new process.
    assert_eq!(k.ok(&["start", "web"]).trim(), "web");
    let pid2: i64 = inspect(&k, "web", "{{.State.Pid}}").parse().unwrap();
    assert!(pid2 != pid && pid_alive(pid2));
    assert_eq!(inspect(&k, "web", "{{.Id}}"), id);
    // restart: a new process again.
    assert_eq!(k.ok(&["restart", "-t", "5", "web"]).trim(), "web");
    let pid3: i64 = inspect(&k, "web", "{{.State.Pid}}").parse().unwrap();
    assert!(pid3 != pid2 && pid_alive(pid3) && !pid_alive(pid2));
    wait_until("three starts in the log", Duration::from_secs(10), || {
        k.ok(&["logs", "web"]).matches("started v1").count() == 3
    });

    // rm of a running container is refused; rm -f kills it first.
    let err = k.fails(&["rm", "web"]);
    assert!(err.contains("You cannot remove a running container"), "{err}");
    assert_eq!(k.ok(&["rm", "-f", "web"]).trim(), "web");
    assert!(!pid_alive(pid3), "rm -f killed the program");
    assert_eq!(k.ok(&["ps", "-aq"]).trim(), "");
    assert!(mounts_under(&k.root()).is_empty(), "{:?}", mounts_under(&k.root()));
    k.assert_fsck_clean();
}

#[test]
fn stop_sends_sigkill_after_the_timeout_and_ignored_term() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    // pid 1 without a handler ignores SIGTERM (the kernel's rule for a namespace's init).
    k.ok(&["run", "-d", "--name", "stubborn", "busybox", "sleep", "1000"]);
    let started = Instant::now();
    assert_eq!(k.ok(&["stop", "-t", "1", "stubborn"]).trim(), "stubborn");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(8), "{took:?}");
    assert_eq!(inspect(&k, "stubborn", "{{.State.Status}} {{.State.ExitCode}}"), "exited 137");
    // --stop-signal: the container's own stop signal is used.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "hup",
        "--stop-signal",
        "HUP",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 7' HUP; while :; do sleep 0.1; done",
    ]);
    let started = Instant::now();
    k.ok(&["stop", "-t", "20", "hup"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(inspect(&k, "hup", "{{.State.ExitCode}}"), "7");
    // Stopping a stopped container is not an error (docker prints its name).
    assert_eq!(k.ok(&["stop", "hup"]).trim(), "hup");
}

#[test]
fn kill_wait_and_exit_codes() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    k.ok(&["run", "-d", "--name", "k1", "busybox", "sh", "-c", "trap 'exit 9' USR1; while :; do sleep 0.1; done"]);
    assert_eq!(k.ok(&["kill", "-s", "USR1", "k1"]).trim(), "k1");
    assert_eq!(k.ok(&["wait", "k1"]).trim(), "9");
    let err = k.fails(&["kill", "k1"]);
    assert!(err.contains("is not running"), "{err}");
    k.ok(&["run", "-d", "--name", "k2", "busybox", "sleep", "1000"]);
    k.ok(&["kill", "k2"]);
    assert_eq!(k.ok(&["wait", "k2"]).trim(), "137");
    let out = k.run(&["kill", "-s", "NOSUCHSIG", "k2"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid signal"));
}

#[test]
fn a_command_that_does_not_exist_fails_as_docker_and_leaves_a_created_container() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let out = k.run(&["run", "-d", "--name", "broken", "busybox", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/program") && err.lines().count() == 1, "{err}");
    assert_eq!(inspect(&k, "broken", "{{.State.Status}} {{.State.ExitCode}}"), "created 127");
    assert!(inspect(&k, "broken", "{{.State.Error}}").contains("no such file"));
    let out = k.run(&["run", "-d", "busybox", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126));
    // A container that exits at once is simply exited.
    let id = k.ok(&["run", "-d", "busybox", "true"]).trim().to_string();
    assert_eq!(k.ok(&["wait", &id]).trim(), "0");
    // --rm with -d: gone once it exits.
    let id = k.ok(&["run", "-d", "--rm", "busybox", "sh", "-c", "exit 3"]).trim().to_string();
    wait_until("the --rm container to go", Duration::from_secs(10), || {
        !k.ok(&["ps", "-aq", "--no-trunc"]).contains(&id)
    });
}

#[test]
fn names_are_unique_and_lookups_follow_docker() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let id = k.ok(&["run", "-d", "--name", "one", "busybox", "sleep", "1000"]).trim().to_string();
    let out = k.run(&["run", "-d", "--name", "one", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already in use by container"));
    assert_eq!(k.ok(&["ps", "-aq"]).lines().count(), 1, "the refused run made no container");
    // By ID prefix, by name with a leading slash.
    assert_eq!(inspect(&k, &id[..6], "{{.Name}}"), "/one");
    assert_eq!(inspect(&k, "/one", "{{.Id}}"), id);
    for cmd in ["stop", "start", "rm", "kill", "wait", "logs"] {
        let out = k.run(&[cmd, "nosuch"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "Error: No such container: nosuch", "{cmd}");
    }
    let bad = k.run(&["run", "-d", "--name", "bad/name", "busybox", "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Invalid container name"));
    // rename
    k.ok(&["rename", "one", "two"]);
    assert_eq!(inspect(&k, "two", "{{.Id}}"), id);
    assert!(k.fails(&["rename", "two", "two-bad/"]).contains("Invalid container name"));
    k.ok(&["run", "-d", "--name", "three", "busybox", "true"]);
    assert!(k.fails(&["rename", "two", "three"]).contains("already in use"));
}

#[test]
fn two_runs_racing_for_one_name_make_one_container() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let mut cmd = k.cmd(&["run", "-d", "--name", "race", "busybox", "sleep", "1000"]);
            std::thread::spawn(move || cmd.output().unwrap().status.success())
        })
        .collect();
    let won = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(won, 1);
    assert_eq!(k.ok(&["ps", "-aq"]).lines().count(), 1);
}

#[test]
fn restart_policies() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    k.ok(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3"]);
    wait_until("two restarts and a final exit", Duration::from_secs(20), || {
        inspect(&k, "flaky", "{{.State.Status}} {{.RestartCount}}") == "exited 2"
    });
    assert_eq!(k.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    assert_eq!(
        inspect(
            &k,
            "flaky",
            "{{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        ),
        "3 on-failure 2"
    );
    // on-failure does not restart a success.
    k.ok(&["run", "-d", "--name", "fine", "--restart", "on-failure", "busybox", "true"]);
    wait_until("exit", Duration::from_secs(10), || inspect(&k, "fine", "{{.State.Status}}") == "exited");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(inspect(&k, "fine", "{{.RestartCount}}"), "0");
    // always: comes back after its program exits, but not after a stop.
    k.ok(&["run", "-d", "--name", "always", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2; exit 1"]);
    wait_until("a restart", Duration::from_secs(20), || inspect(&k, "always", "{{.RestartCount}}") != "0");
    k.ok(&["stop", "-t", "1", "always"]);
    let count = inspect(&k, "always", "{{.RestartCount}}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(inspect(&k, "always", "{{.State.Status}} {{.RestartCount}}"), format!("exited {count}"));
    // Bad policies: docker's messages.
    for (policy, says) in [("sometimes", "invalid restart policy"), ("always:3", "only be used with 'on-failure'")] {
        let err = k.fails(&["run", "-d", "--restart", policy, "busybox", "true"]);
        assert!(err.contains(says), "{policy}: {err}");
    }
    let err = k.fails(&["run", "-d", "--rm", "--restart", "always", "busybox", "true"]);
    assert!(err.contains("--restart and --rm"), "{err}");
}

#[test]
fn logs_are_docker_json_file_with_tail_timestamps_since_and_follow() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let id = k
        .ok(&[
            "run",
            "-d",
            "--name",
            "talk",
            "busybox",
            "sh",
            "-c",
            "echo one; echo two >&2; echo three; printf partial",
        ])
        .trim()
        .to_string();
    k.ok(&["wait", "talk"]);
    // The file: one JSON object per line with log, stream, time (RFC 3339 with nanoseconds, UTC).
    let path = k.root().join("containers").join(&id).join(format!("{id}-json.log"));
    let text = std::fs::read_to_string(&path).unwrap();
    let entries: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let logs: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["stream"].as_str().unwrap(), e["log"].as_str().unwrap())).collect();
    // Each stream in its order (across the two pipes the order is not kept, as in docker).
    let stream = |name: &str| logs.iter().filter(|(s, _)| *s == name).map(|(_, l)| *l).collect::<Vec<_>>();
    assert_eq!(stream("stdout"), ["one\n", "three\n", "partial"]);
    assert_eq!(stream("stderr"), ["two\n"]);
    for e in &entries {
        let t = e["time"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'), "{t}");
    }
    // stdout and stderr go where they came from.
    let out = k.run(&["logs", "talk"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\npartial");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    let tail = k.run(&["logs", "--tail", "1", "talk"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "partial");
    assert!(tail.stderr.is_empty());
    assert_eq!(k.ok(&["logs", "--tail", "0", "talk"]), "");
    let stamped = k.ok(&["logs", "-t", "--tail", "1", "talk"]);
    let (stamp, rest) = stamped.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && rest == "partial", "{stamped}");
    assert_eq!(k.ok(&["logs", "--since", "1h", "talk"]), "one\nthree\npartial");
    assert_eq!(k.ok(&["logs", "--since", "2099-01-01T00:00:00Z", "talk"]), "");
    assert!(k.fails(&["logs", "--since", "yesterday", "talk"]).contains("invalid time"));
    assert!(k.fails(&["logs", "--tail", "many", "talk"]).contains("--tail many"));

    // -f: follows new lines and ends when the container stops.
    k.ok(&["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]);
    let started = Instant::now();
    let followed = k.ok(&["logs", "-f", "ticker"]);
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn log_max_size_bounds_a_log_that_grows_without_end() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let id = k
        .ok(&[
            "run",
            "-d",
            "--log-opt",
            "max-size=20k",
            "--log-opt",
            "max-file=2",
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done",
        ])
        .trim()
        .to_string();
    k.ok(&["wait", &id]);
    let dir = k.root().join("containers").join(&id);
    let log = dir.join(format!("{id}-json.log"));
    let rotated = dir.join(format!("{id}-json.log.1"));
    assert!(std::fs::metadata(&log).unwrap().len() <= 20 * 1024);
    assert!(std::fs::metadata(&rotated).unwrap().len() <= 20 * 1024);
    assert!(!dir.join(format!("{id}-json.log.2")).exists());
    let logs = k.ok(&["logs", &id]);
    assert!(logs.ends_with("line 2999\n"), "the newest lines are kept");
    assert!(!logs.starts_with("line 0\n"), "the oldest are dropped");
    let err = k.fails(&["run", "-d", "--log-opt", "max-size=lots", "busybox", "true"]);
    assert!(err.contains("max-size=lots"), "{err}");
}

#[test]
fn ps_filters_last_and_formats() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    k.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "1000"]);
    let exited = k.ok(&["run", "-d", "--name", "done", "busybox", "sh", "-c", "exit 4"]).trim().to_string();
    k.ok(&["wait", "done"]);
    k.ok(&["create", "--name", "fresh", "busybox", "true"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["ps", "--format", "{{.Names}}"];
        full.extend_from_slice(args);
        k.ok(&full).lines().map(str::to_string).collect()
    };
    assert_eq!(names(&[]), ["up"]);
    assert_eq!(names(&["-a"]), ["fresh", "done", "up"]);
    assert_eq!(names(&["-l"]), ["fresh"]);
    assert_eq!(names(&["-n", "2"]), ["fresh", "done"]);
    assert_eq!(names(&["-a", "--filter", "status=exited"]), ["done"]);
    assert_eq!(names(&["-a", "--filter", "status=created"]), ["fresh"]);
    assert_eq!(names(&["-a", "--filter", "exited=4"]), ["done"]);
    assert_eq!(names(&["-a", "--filter", "name=on"]), ["done"]);
    assert_eq!(names(&["-a", "--filter", &format!("id={}", &exited[..8])]), ["done"]);
    assert_eq!(names(&["-a", "--filter", "ancestor=busybox"]).len(), 3);
    assert_eq!(k.ok(&["ps", "-a", "--format", "{{.State}}"]), "created\nexited\nrunning\n");
    assert!(k.fails(&["ps", "--filter", "status=sleepy"]).contains("invalid filter"));
    assert!(k.fails(&["ps", "--filter", "colour=red"]).contains("invalid filter"));
    let sized = k.ok(&["ps", "-s"]);
    assert!(sized.lines().next().unwrap().ends_with("SIZE") && sized.contains("(virtual "), "{sized}");
    // container prune: stopped ones go, the running one stays.
    let pruned = k.ok(&["container", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:\n") && pruned.contains(&exited), "{pruned}");
    assert_eq!(names(&["-a"]), ["up"]);
    assert!(k.ok(&["container", "ls", "-q"]).trim().len() == 12);
}

#[test]
fn a_killed_supervisor_leaves_a_truthful_container_and_nothing_behind() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    for round in 0..20u64 {
        let name = format!("victim{round}");
        let id = k.ok(&["run", "-d", "--name", &name, "busybox", "sleep", "1000"]).trim().to_string();
        let rec = record(&k, &id);
        let supervisor = rec["state"]["supervisor_pid"].as_i64().unwrap();
        let pid = rec["state"]["pid"].as_i64().unwrap();
        assert!(pid_alive(supervisor) && pid_alive(pid));
        // At a different moment each round: at once, or after the container settled.
        std::thread::sleep(Duration::from_millis(round * 7 % 60));
        std::process::Command::new("kill").args(["-9", &supervisor.to_string()]).status().unwrap();
        wait_until("the container's process to die with its supervisor", Duration::from_secs(10), || !pid_alive(pid));
        assert_eq!(inspect(&k, &name, "{{.State.Status}} {{.State.ExitCode}}"), "exited 137", "round {round}");
        assert!(!k.ok(&["ps", "-q"]).contains(&id[..12]), "ps does not show it running");
        assert!(mounts_under(&k.root().join("containers").join(&id)).is_empty());
        // It can be started again, and removed.
        if round % 5 == 0 {
            k.ok(&["start", &name]);
            assert_eq!(inspect(&k, &name, "{{.State.Status}}"), "running");
        }
        k.ok(&["rm", "-f", &name]);
    }
    assert!(
        processes_with(&k.root().to_string_lossy()).is_empty(),
        "{:?}",
        processes_with(&k.root().to_string_lossy())
    );
    assert!(mounts_under(&k.root()).is_empty());
    k.assert_fsck_clean();
}

#[test]
fn fifty_detached_containers_at_once() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let mut cmd =
                k.cmd(&["run", "-d", "--name", &format!("many{i}"), "busybox", "sh", "-c", "echo hi; sleep 1000"]);
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(k.ok(&["ps", "-q"]).lines().count(), 50);
    wait_until("every log", Duration::from_secs(30), || {
        (0..50).all(|i| k.ok(&["logs", &format!("many{i}")]) == "hi\n")
    });
    let mut args = vec!["rm".to_string(), "-f".to_string()];
    args.extend((0..50).map(|i| format!("many{i}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(k.ok(&args).lines().count(), 50);
    assert_eq!(k.ok(&["ps", "-aq"]), "");
    assert!(processes_with(&k.root().to_string_lossy()).is_empty());
    assert!(mounts_under(&k.root()).is_empty());
    k.assert_fsck_clean();
}

/// The daemonless peer: the same sequence through podman (Debian's 4.3) and kiln gives the same
/// columns, statuses, exit codes and printed names.
#[test]
fn the_lifecycle_prints_what_podman_prints() {
    let Some(k) = setup() else { return };
    if !have_tool("podman") {
        eprintln!("skipped: podman missing (apt-get install podman)");
        return;
    }
    let _cleanup = Cleanup(&k);
    let tag = format!("kiln-test-{}:1", std::process::id());
    let name = format!("kilnpeer{}", std::process::id());
    let podman = |args: &[&str]| {
        // runc cannot raise podman's default rlimits in this sandbox: keep them low.
        let mut full: Vec<&str> = args.to_vec();
        if matches!(args[0], "run") {
            full.splice(1..1, ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", "--network", "none"]);
        }
        std::process::Command::new("podman").args(&full).output().unwrap()
    };
    let _peer = PodmanPeer::new(&k, tag.clone(), name.clone());
    let script = "echo hi; echo err >&2; trap 'exit 3' TERM; while :; do sleep 0.1; done";
    // Each step: (kiln's output, podman's output) as (status, stdout, stderr).
    let both = |args: &[&str]| {
        let p = podman(args);
        let kn = k.run(args);
        let text = |o: &std::process::Output| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        (text(&kn), text(&p))
    };
    let (kn, p) = both(&["run", "-d", "--name", &name, &tag, "sh", "-c", script]);
    assert_eq!((kn.0, kn.1.trim().len()), (p.0, p.1.trim().len()), "run -d: status and a 64-hex ID");
    let (kn, p) = both(&["ps"]);
    let columns = |table: &str| -> Vec<String> {
        table
            .lines()
            .next()
            .unwrap_or("")
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(columns(&kn.1), columns(&p.1), "ps columns");
    assert!(kn.1.lines().nth(1).unwrap().contains(" Up "), "{}", kn.1);
    assert!(p.1.lines().nth(1).unwrap().contains(" Up "), "{}", p.1);
    wait_until("both logs", Duration::from_secs(10), || {
        let (kn, p) = both(&["logs", &name]);
        kn.1 == "hi\n" && p.1 == "hi\n" && kn.2 == "err\n" && p.2 == "err\n"
    });
    for step in [&["stop", &name][..], &["wait", &name], &["start", &name], &["restart", "-t", "1", &name]] {
        let (kn, p) = both(step);
        assert_eq!(kn.0, p.0, "{step:?} status");
        assert_eq!(kn.1, p.1, "{step:?} output");
    }
    let (kn, p) = both(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}", &name]);
    assert_eq!(kn.1, p.1, "inspect after restart");
    let (kn, p) = both(&["kill", &name]);
    assert_eq!((kn.0, &kn.1), (p.0, &p.1), "kill");
    let (kn, p) = both(&["wait", &name]);
    assert_eq!((kn.0, kn.1.as_str()), (p.0, "137\n"), "wait after kill");
    let (kn, p) = both(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(kn.1.contains(&name) && p.1.contains(&name));
    let (kn, p) = both(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", &name]);
    assert_eq!(kn.1, p.1, "inspect after kill");
    let (kn, p) = both(&["rm", &name]);
    assert_eq!((kn.0, &kn.1), (p.0, &p.1), "rm");
    let (kn, p) = both(&["rm", &name]);
    assert_eq!((kn.0, p.0), (Some(1), Some(1)), "rm of a removed container");
}

#[test]
fn attach_feeds_stdin_shows_output_and_detaches_with_ctrl_p_ctrl_q() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    // Without a tty: stdin from the pipe, output on both streams, the container's exit status.
    k.ok(&["run", "-d", "-i", "--name", "shell", "busybox", "sh"]);
    let mut attach = assert_cmd::Command::from_std(k.cmd(&["attach", "shell"]));
    attach.write_stdin("echo hello from attach\necho to-err >&2\nexit 5\n");
    let out = attach.timeout(Duration::from_secs(30)).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "attach ends with the container's status");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from attach\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    assert_eq!(inspect(&k, "shell", "{{.State.Status}} {{.State.ExitCode}}"), "exited 5");
    let err = k.fails(&["attach", "shell"]);
    assert!(err.contains("You cannot attach to a stopped container"), "{err}");
    // With a tty, through a pty: the keys reach the shell, and Ctrl-P Ctrl-Q detaches, leaving
    // the container running.
    if !have_tool("script") {
        eprintln!("skipped the tty part: script (util-linux) missing");
        return;
    }
    k.ok(&["run", "-dit", "--name", "tty", "busybox", "sh"]);
    let kiln = assert_cmd::cargo::cargo_bin("kiln");
    let command = format!("{} --root {} attach tty", kiln.display(), k.root().display());
    let mut script = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = script.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    use std::io::Write;
    stdin.write_all(b"echo tty-$((40+2))\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(&[0x10, 0x11]).unwrap();
    let out = script.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("tty-42"), "{text}");
    assert_eq!(out.status.code(), Some(0), "detaching is a success");
    assert_eq!(inspect(&k, "tty", "{{.State.Status}}"), "running", "detaching leaves it running");
}

#[test]
fn a_foreground_container_keeps_its_log_and_gets_dockers_hostname_env() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    let out = k.run(&["run", "--name", "fg", "busybox", "sh", "-c", "echo out; echo err >&2; env"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("out\n"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // docker logs works on a container that ran in the foreground.
    let logs = k.run(&["logs", "fg"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), stdout);
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "err\n");
    // dockerd's HOSTNAME (the short ID); -h sets the name (docker's short flag).
    let id = inspect(&k, "fg", "{{.Id}}");
    assert!(stdout.lines().any(|l| l == format!("HOSTNAME={}", &id[..12])), "{stdout}");
    assert_eq!(k.ok(&["run", "--rm", "-h", "box1", "busybox", "hostname"]), "box1\n");
    assert!(k.ok(&["run", "--rm", "-h", "box1", "busybox", "env"]).contains("HOSTNAME=box1\n"));
    assert!(k.ok(&["run", "--help"]).contains("--hostname"), "--help still prints help");
}

#[test]
fn health_checks_are_probed_by_the_supervisor() {
    let Some(k) = setup() else { return };
    let _cleanup = Cleanup(&k);
    // Fails until the program creates /tmp/ok, then passes.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "probed",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sh",
        "-c",
        "sleep 1.5; touch /tmp/ok; sleep 1000",
    ]);
    let status = || k.ok(&["ps", "--format", "{{.Status}}", "--filter", "name=probed"]);
    assert!(status().contains("(health: starting)"), "{}", status());
    wait_until("unhealthy", Duration::from_secs(10), || status().contains("(unhealthy)"));
    assert!(inspect(&k, "probed", "{{.State.Health.FailingStreak}}").parse::<u32>().unwrap() >= 2);
    wait_until("healthy", Duration::from_secs(15), || status().contains("(healthy)"));
    assert_eq!(inspect(&k, "probed", "{{.State.Health.Status}} {{.State.Health.FailingStreak}}"), "healthy 0");
    let log = inspect(&k, "probed", "{{range .State.Health.Log}}{{.ExitCode}} {{end}}");
    assert!(log.ends_with('0') && log.split(' ').count() <= 5, "at most five results kept: {log}");
    // A probe that outlives its timeout is killed and counts as a failure, exit code -1.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 5",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    wait_until("unhealthy by timeout", Duration::from_secs(10), || {
        inspect(&k, "slow", "{{.State.Health.Status}}") == "unhealthy"
    });
    let first = inspect(&k, "slow", "{{(index .State.Health.Log 0).ExitCode}} {{(index .State.Health.Log 0).Output}}");
    assert_eq!(first, "-1 Health check exceeded timeout (300ms)");
    // No check, no Health.
    k.ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"]);
    assert!(!k.ok(&["inspect", "plain"]).contains("\"Health\""));
}
