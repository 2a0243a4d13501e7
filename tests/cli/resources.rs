//! `--memory`, `--cpus`, `--pids-limit` (issue 12): flags parsed as docker does, limits applied
//! through the container's cgroup, an OOM kill reported by docker's 137. As root; skipped without.

use crate::harness::*;

#[test]
fn resource_flags_reject_bad_values_with_one_line_before_anything_is_made() {
    let k = Kiln::new();
    let before = k.store_state();
    for (args, needle) in [
        (vec!["run", "--rm", "--memory", "lots", "busybox", "true"], "invalid size \"lots\""),
        (vec!["run", "--rm", "-m", "64x", "busybox", "true"], "invalid size \"64x\""),
        (vec!["run", "--rm", "--cpus", "half", "busybox", "true"], "invalid number of CPUs \"half\""),
        (vec!["run", "--rm", "--pids-limit", "ten", "busybox", "true"], "invalid number of processes \"ten\""),
        (vec!["run", "--rm", "--memory", "1k", "busybox", "true"], "the minimum memory limit allowed is 6MB"),
        (vec!["run", "--rm", "--cpus", "100000", "busybox", "true"], "range of CPUs is from 0.01 to"),
    ] {
        let out = k.run(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(k.store_state(), before, "nothing was made");
}

#[test]
fn run_applies_the_limits_to_the_containers_cgroup() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    // The container reads its own cgroup files (v1 hierarchies or the v2 one; the host's
    // /sys/fs/cgroup is bound in for the check).
    let script = r#"
        cg() { awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' /proc/self/cgroup; }
        for pair in memory:memory.limit_in_bytes cpu:cpu.cfs_quota_us pids:pids.max; do
            c=${pair%%:*}; f=${pair#*:}; p=/host/$c$(cg $c)/$f
            [ -f "$p" ] && echo "$f=$(cat "$p")"
        done
        v2=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
        for f in memory.max cpu.max pids.max; do [ -f "/host$v2/$f" ] && echo "$f=$(cat "/host$v2/$f")"; done
        true"#;
    let out = k.ok(&[
        "run",
        "--rm",
        "-v",
        "/sys/fs/cgroup:/host:ro",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let v1 = out.contains("memory.limit_in_bytes=67108864")
        && out.contains("cpu.cfs_quota_us=50000")
        && out.contains("pids.max=50");
    let v2 = out.contains("memory.max=67108864") && out.contains("cpu.max=50000 100000") && out.contains("pids.max=50");
    assert!(v1 || v2, "limits seen from inside the container: {out}");
    k.assert_fsck_clean();
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed_with_137() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let out =
        k.run(&["run", "--rm", "--memory", "32m", "busybox", "sh", "-c", "x=0123456789; while :; do x=$x$x; done"]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    // Within the limit, the same kind of program ends normally.
    let out = k.run(&["run", "--rm", "--memory", "32m", "busybox", "sh", "-c", "x=0123456789; x=$x$x; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn a_pids_limit_stops_a_fork_loop() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let script = "for i in $(seq 20); do sleep 1 & done 2>&1; wait; echo end";
    let out = k.run(&["run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("can't fork"), "{text}");
    let out = k.ok(&["run", "--rm", "busybox", "sh", "-c", script]);
    assert!(!out.contains("can't fork") && out.ends_with("end\n"), "{out}");
}

/// The cgroup directories named after container `id` (there are none once it is gone).
fn cgroup_dirs_of(id: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, id: &str, depth: usize, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == id {
                out.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), id, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/cgroup"), id, 5, &mut out);
    out
}

/// Removes the named containers (`rm -f`) when dropped, also when the test fails half-way, so
/// that no supervisor or frozen process outlives the test.
struct RemoveAtEnd<'a>(&'a Kiln, &'a [&'a str]);

impl Drop for RemoveAtEnd<'_> {
    fn drop(&mut self) {
        let mut args = vec!["rm", "-f"];
        args.extend_from_slice(self.1);
        let _ = self.0.run(&args);
    }
}

fn log_lines(k: &Kiln, name: &str) -> usize {
    k.ok(&["logs", name]).lines().count()
}

#[test]
fn stats_no_stream_shows_dockers_columns() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let _cleanup = RemoveAtEnd(&k, &["web", "other", "idle"]);
    let web = k.ok(&["run", "-d", "--name", "web", "--memory", "64m", "busybox", "sleep", "1000"]).trim().to_string();
    k.ok(&["run", "-d", "--name", "other", "busybox", "sleep", "1000"]);
    k.ok(&["create", "--name", "idle", "busybox", "true"]);

    let out = k.ok(&["stats", "--no-stream"]);
    let lines: Vec<&str> = out.lines().collect();
    // The columns (their widths follow the widest cell, e.g. a bridge container's NET I/O).
    let titles: Vec<&str> = lines[0].split("  ").map(str::trim).filter(|t| !t.is_empty()).collect();
    assert_eq!(
        titles,
        ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"],
        "{out}"
    );
    assert_eq!(lines.len(), 3, "running containers only: {out}");
    let web_row = lines.iter().find(|l| l.starts_with(&web[..12])).expect("web's row");
    let cells: Vec<&str> = web_row.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[1], "web");
    assert!(cells[2].ends_with('%') && cells[4].ends_with('%'), "{web_row}");
    assert!(cells[3].ends_with(" / 64MiB") && !cells[3].starts_with("0B"), "{web_row}");
    assert_eq!(cells.last(), Some(&"1"), "one process: {web_row}");

    // A container that is not running shows zeros; -a lists it.
    let out = k.ok(&["stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}", "idle"]);
    assert_eq!(out, "idle|0B / 0B|0|0.00%\n");
    let all = k.ok(&["stats", "--no-stream", "-a", "--format", "{{.Name}}"]);
    let mut names: Vec<&str> = all.lines().collect();
    names.sort();
    assert_eq!(names, ["idle", "other", "web"]);
    // json, and the CONTAINER column as named.
    let json: serde_json::Value =
        serde_json::from_str(k.ok(&["stats", "--no-stream", "--format", "json", "web"]).trim()).unwrap();
    assert_eq!((json["Container"].as_str(), json["Name"].as_str()), (Some("web"), Some("web")));
    assert_eq!(json["ID"].as_str(), Some(&web[..12]));
    let table = k.ok(&["stats", "--no-stream", "--format", "table {{.Container}}\\t{{.PIDs}}", &web[..8]]);
    assert_eq!(table.lines().next(), Some("CONTAINER   PIDS"), "{table}");

    let out = k.run(&["stats", "--no-stream", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container: nosuch"));
    k.ok(&["rm", "-f", "web", "other", "idle"]);
    assert!(cgroup_dirs_of(&web).is_empty(), "web's cgroup is left: {:?}", cgroup_dirs_of(&web));
}

#[test]
fn pause_freezes_a_container_and_unpause_resumes_it() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let _cleanup = RemoveAtEnd(&k, &["ticker", "idle"]);
    let id = k.ok(&["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "while :; do echo tick; sleep 0.02; done"]);
    let id = id.trim();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(k.ok(&["pause", "ticker"]), "ticker\n");
    let ps = k.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("ticker Up ") && ps.contains("(Paused)"), "{ps}");
    assert_eq!(k.ok(&["inspect", "--format", "{{.State.Status}} {{.State.Paused}}", "ticker"]).trim(), "paused true");
    let frozen = log_lines(&k, "ticker");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(log_lines(&k, "ticker"), frozen, "a paused container printed");

    let err = k.run(&["pause", "ticker"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains(&format!("Container {id} is already paused")));

    assert_eq!(k.ok(&["unpause", "ticker"]), "ticker\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(log_lines(&k, "ticker") > frozen, "unpaused, it runs again");
    let err = k.run(&["unpause", "ticker"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains(&format!("Container {id} is not paused")));

    // Neither works on a container that is not running.
    k.ok(&["create", "--name", "idle", "busybox", "true"]);
    let err = k.run(&["pause", "idle", "ticker"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("is not running"), "one error line per container");
    assert_eq!(String::from_utf8_lossy(&err.stdout), "ticker\n", "the others are paused");
    let ticker_cgroups = cgroup_dirs_of(id);
    assert!(!ticker_cgroups.is_empty());
    k.ok(&["rm", "-f", "idle", "ticker"]);
    assert!(cgroup_dirs_of(id).is_empty(), "a paused container removed leaves no cgroup");
}

#[test]
fn a_paused_container_can_be_killed_stopped_and_removed() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let _cleanup = RemoveAtEnd(&k, &["ka", "kb", "kc"]);
    // kill: the signal is delivered (docker thaws the container after sending it).
    let id = k.ok(&["run", "-d", "--name", "ka", "busybox", "sleep", "1000"]).trim().to_string();
    k.ok(&["pause", "ka"]);
    k.ok(&["kill", "ka"]);
    assert_eq!(k.ok(&["wait", "ka"]).trim(), "137");
    assert!(cgroup_dirs_of(&id).is_empty(), "{:?}", cgroup_dirs_of(&id));
    // stop: SIGTERM to a pid 1 that traps it.
    k.ok(&["run", "-d", "--name", "kb", "busybox", "sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.05; done"]);
    k.ok(&["pause", "kb"]);
    let started = std::time::Instant::now();
    k.ok(&["stop", "-t", "5", "kb"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "stopped by its signal, not by the timeout");
    assert_eq!(k.ok(&["inspect", "--format", "{{.State.ExitCode}}", "kb"]).trim(), "3");
    // rm -f
    let c = k.ok(&["run", "-d", "--name", "kc", "busybox", "sleep", "1000"]).trim().to_string();
    k.ok(&["pause", "kc"]);
    k.ok(&["rm", "-f", "kc"]);
    assert!(cgroup_dirs_of(&c).is_empty(), "{:?}", cgroup_dirs_of(&c));
    k.ok(&["rm", "ka", "kb"]);
    k.assert_fsck_clean();
}

#[test]
fn a_detached_container_killed_by_the_oom_killer_says_so_in_inspect() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    k.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=0123456789; while :; do x=$x$x; done",
    ]);
    assert_eq!(k.ok(&["wait", "hog"]).trim(), "137");
    let state =
        k.ok(&["inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}} {{.HostConfig.Memory}}", "hog"]);
    assert_eq!(state.trim(), "true 137 33554432");
    let ps = k.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Exited (137)"), "{ps}");
    k.ok(&["rm", "hog"]);
}

#[test]
fn oom_killed_is_reported_when_the_killer_takes_any_process_of_the_container() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let _cleanup = RemoveAtEnd(&k, &["parent"]);
    let script = "sh -c 'x=0123456789; while :; do x=$x$x; done'; echo child $?; exit 0";
    k.ok(&["run", "-d", "--name", "parent", "--memory", "32m", "busybox", "sh", "-c", script]);
    assert_eq!(k.ok(&["wait", "parent"]).trim(), "0");
    assert_eq!(k.ok(&["logs", "parent"]), "child 137\n");
    assert_eq!(k.ok(&["inspect", "--format", "{{.State.OOMKilled}}", "parent"]).trim(), "true");
}

/// The supervisor's pid as the record holds it.
fn supervisor_pid(k: &Kiln, id: &str) -> i32 {
    let record = std::fs::read(k.root().join("containers").join(id).join("container.json")).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    record["state"]["supervisor_pid"].as_i64().unwrap() as i32
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for this purpose; its parent (init) reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn a_killed_supervisor_leaves_no_cgroup_and_no_frozen_process() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let _cleanup = RemoveAtEnd(&k, &["running", "frozen"]);
    for (name, pause) in [("running", false), ("frozen", true)] {
        let id = k.ok(&["run", "-d", "--name", name, "busybox", "sleep", "1000"]).trim().to_string();
        if pause {
            k.ok(&["pause", name]);
        }
        let pid: i32 = k.ok(&["inspect", "--format", "{{.State.Pid}}", name]).trim().parse().unwrap();
        assert!(pid > 0 && alive(pid));
        let supervisor = supervisor_pid(&k, &id);
        assert!(supervisor > 0);
        std::process::Command::new("kill").args(["-9", &supervisor.to_string()]).status().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(supervisor) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The next kiln that looks settles it: exited, its cgroup gone, its processes too.
        let ps = k.ok(&["ps", "-a", "--filter", &format!("name={name}"), "--format", "{{.Status}}"]);
        assert!(ps.starts_with("Exited (137)"), "{name}: {ps}");
        assert!(cgroup_dirs_of(&id).is_empty(), "{name}: {:?}", cgroup_dirs_of(&id));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!alive(pid), "{name}: the container's process {pid} outlived its supervisor");
        k.ok(&["rm", name]);
    }
    k.assert_fsck_clean();
}

#[test]
fn cpus_caps_a_busy_loop_as_stats_shows() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let _cleanup = RemoveAtEnd(&k, &["busy"]);
    k.ok(&["run", "-d", "--name", "busy", "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cpu = k.ok(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", "busy"]);
    let cpu: f64 = cpu.trim().trim_end_matches('%').parse().unwrap();
    // Half a CPU, measured over half a second: well below the 100 % an uncapped loop takes.
    assert!(cpu > 0.0 && cpu < 65.0, "CPU % of a loop capped at 0.5 CPUs: {cpu}");
}
