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
