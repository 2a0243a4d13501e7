//! Planner tests: expansion per instruction, stages and pruning, `--from`, ARG scoping,
//! created_by texts (checked against docker 20.10's BuildKit), and errors with line:column.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use kiln_builder::dockerfile::parse;
use kiln_builder::frontend::{
    history, plan, BaseImageConfig, ImageConfigSource, PlanError, PlanErrorKind, PlanOptions,
};
use kiln_builder::plan::{Base, BuildPlan, ConfigChange, CopyFrom, CopySource, Op, RunOp, Step};

/// Images by reference; counts lookups so tests can check each is asked once.
#[derive(Default)]
struct FakeImages {
    images: HashMap<String, BaseImageConfig>,
    calls: RefCell<Vec<String>>,
}

impl FakeImages {
    fn with(mut self, name: &str, config: BaseImageConfig) -> Self {
        self.images.insert(name.to_string(), config);
        self
    }
}

impl ImageConfigSource for FakeImages {
    fn base_config(&self, reference: &str, _platform: &str) -> Result<BaseImageConfig, String> {
        self.calls.borrow_mut().push(reference.to_string());
        self.images.get(reference).cloned().ok_or_else(|| "no such image".to_string())
    }
}

fn busybox() -> FakeImages {
    FakeImages::default().with(
        "busybox",
        BaseImageConfig {
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        },
    )
}

fn plan_with(source: &str, options: &PlanOptions, images: &FakeImages) -> Result<BuildPlan, PlanError> {
    plan(&parse(source).expect("parses"), options, images)
}

fn plan_ok(source: &str) -> BuildPlan {
    plan_with(source, &PlanOptions::default(), &busybox()).unwrap_or_else(|e| panic!("{e}"))
}

fn plan_err(source: &str) -> String {
    plan_with(source, &PlanOptions::default(), &busybox()).expect_err("must fail").to_string()
}

fn args(pairs: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        build_args: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..PlanOptions::default()
    }
}

fn created_by(plan: &BuildPlan) -> Vec<String> {
    plan.stages[plan.target].steps.iter().map(|s| s.created_by.clone()).collect()
}

fn last_step(plan: &BuildPlan) -> &Step {
    plan.stages[plan.target].steps.last().expect("a step")
}

fn last_run(plan: &BuildPlan) -> &RunOp {
    match &last_step(plan).op {
        Op::Run(run) => run,
        other => panic!("not a RUN: {other:?}"),
    }
}

fn last_config(plan: &BuildPlan) -> &ConfigChange {
    match &last_step(plan).op {
        Op::Config(change) => change,
        other => panic!("not a config change: {other:?}"),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The Dockerfile of the docker 20.10 reference run, with the history it wrote (oldest first).
#[test]
fn created_by_matches_docker_20_10() {
    let source = r#"ARG GLOBAL=g1
FROM busybox AS base
ARG GLOBAL
ARG A=1 B
ENV E1=v1 E2="v 2"
ENV LEGACY value with spaces
LABEL k=v "k 2"="v 2"
WORKDIR /x
WORKDIR y
COPY file.txt /dst/
COPY --chown=1:1 file.txt rel
ADD file.txt /added
RUN echo hi
RUN ["echo","exec"]
CMD ["a","b"]
CMD echo shell $E1
ENTRYPOINT echo ep
EXPOSE 80 443/udp 8080-8081
VOLUME /v1 /v2
VOLUME ["/v3"]
USER 1000:1000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://x/ || exit 1
SHELL ["/bin/sh","-xc"]
RUN echo with shell
ONBUILD RUN echo onbuild
MAINTAINER me <me@x>
FROM base
RUN echo $A
HEALTHCHECK NONE
"#;
    let plan = plan_with(source, &args(&[("B", "bee")]), &busybox()).unwrap();
    assert_eq!(plan.stages.len(), 2);
    let first: Vec<&str> = plan.stages[0].steps.iter().map(|s| s.created_by.as_str()).collect();
    assert_eq!(
        first,
        [
            "ARG GLOBAL",
            "ARG A=1 B",
            "ENV E1=v1 E2=v 2",
            "ENV LEGACY=value with spaces",
            "LABEL k=v k 2=v 2",
            "WORKDIR /x",
            "WORKDIR /x/y",
            "COPY file.txt /dst/ # buildkit",
            "COPY file.txt rel # buildkit",
            "ADD file.txt /added # buildkit",
            "RUN |3 GLOBAL=g1 A=1 B=bee /bin/sh -c echo hi # buildkit",
            "RUN |3 GLOBAL=g1 A=1 B=bee echo exec # buildkit",
            "CMD [\"a\" \"b\"]",
            "CMD [\"/bin/sh\" \"-c\" \"echo shell $E1\"]",
            "ENTRYPOINT [\"/bin/sh\" \"-c\" \"echo ep\"]",
            "EXPOSE map[443/udp:{} 80/tcp:{} 8080/tcp:{} 8081/tcp:{}]",
            "VOLUME [/v1 /v2]",
            "VOLUME [/v3]",
            "USER 1000:1000",
            "STOPSIGNAL SIGTERM",
            "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://x/ || exit 1\"] \"30s\" \"0s\" \"0s\" '\\x03'}",
            "SHELL [/bin/sh -xc]",
            "RUN |3 GLOBAL=g1 A=1 B=bee /bin/sh -xc echo with shell # buildkit",
            "",
            "MAINTAINER me <me@x>",
        ]
    );
    assert_eq!(
        created_by(&plan),
        [
            "RUN /bin/sh -xc echo onbuild # buildkit",
            "RUN /bin/sh -xc echo $A # buildkit",
            "HEALTHCHECK &{[\"NONE\"] \"0s\" \"0s\" \"0s\" '\\x00'}",
        ]
    );
    // The child stage inherits the parent's ARG values in its RUN environment, not its history.
    assert_eq!(last_run_of(&plan, 1).build_args.get("A").map(String::as_str), Some("1"));
    assert_eq!(plan.stages[1].base, Base::Stage(0));
    // Layers: RUN/COPY/ADD and WORKDIR (not `/`); no history for ONBUILD.
    let layers: Vec<bool> = plan.stages[0].steps.iter().map(|s| history::creates_layer(&s.op)).collect();
    assert_eq!(layers.iter().filter(|l| **l).count(), 8);
    assert!(!history::writes_history(&plan.stages[0].steps[23]));
}

fn last_run_of(plan: &BuildPlan, stage: usize) -> &RunOp {
    plan.stages[stage]
        .steps
        .iter()
        .rev()
        .find_map(|s| match &s.op {
            Op::Run(r) => Some(r),
            _ => None,
        })
        .expect("a RUN")
}

/// Second docker 20.10 reference run: ARG/ENV interplay, WORKDIR forms, EXPOSE expansion.
#[test]
fn scopes_match_docker_20_10() {
    let source = r#"ARG TAG=latest
ARG NOVAL
FROM busybox AS first
ARG A=1
ARG A
ARG TARGETPLATFORM
ARG NOVAL
ENV P=$PATH:/x
WORKDIR /a/../b/
WORKDIR c/.
WORKDIR /
ENV PORT=90
EXPOSE $PORT 80/tcp
ENV A=2
RUN echo $A
LABEL "x"=$A
USER $A
COPY f $A/
"#;
    let plan = plan_with(source, &args(&[("A", "9")]), &busybox()).unwrap();
    assert_eq!(
        created_by(&plan),
        [
            "ARG A=1",
            "ARG A",
            "ARG TARGETPLATFORM",
            "ARG NOVAL",
            "ENV P=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/x",
            "WORKDIR /a/../b/",
            "WORKDIR /b/c",
            "WORKDIR /",
            "ENV PORT=90",
            "EXPOSE map[80/tcp:{} 90/tcp:{}]",
            "ENV A=2",
            "RUN |4 A=2 A=2 TARGETPLATFORM=linux/amd64 NOVAL= /bin/sh -c echo $A # buildkit",
            "LABEL x=2",
            "USER 2",
            "COPY f 2/ # buildkit",
        ]
    );
    match &last_step(&plan).op {
        Op::Copy(copy) => assert_eq!(copy.dest, "/2/"),
        other => panic!("{other:?}"),
    }
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn expansion_per_instruction() {
    let base = "FROM busybox\nARG V=val\nARG EMPTY=\n";
    let cases: &[(&str, ConfigChange)] = &[
        (
            "ENV X=$V Y=${V}2 Z='$V'",
            ConfigChange::Env(vec![("X".into(), "val".into()), ("Y".into(), "val2".into()), ("Z".into(), "$V".into())]),
        ),
        ("ENV K_$V=1", ConfigChange::Env(vec![("K_val".into(), "1".into())])),
        (
            "LABEL a=${V:-x} b=${EMPTY:-x} c=${UNSET-d}",
            ConfigChange::Label(vec![("a".into(), "val".into()), ("b".into(), "x".into()), ("c".into(), "d".into())]),
        ),
        ("WORKDIR /srv/$V", ConfigChange::Workdir("/srv/val".into())),
        ("USER $V:$V", ConfigChange::User("val:val".into())),
        ("VOLUME /data/$V /b", ConfigChange::Volume(s(&["/data/val", "/b"]))),
        ("VOLUME [\"/data/$V\", \"/b c\"]", ConfigChange::Volume(s(&["/data/val", "/b c"]))),
        ("STOPSIGNAL SIG${V:+KILL}", ConfigChange::StopSignal("SIGKILL".into())),
        ("CMD echo $V", ConfigChange::Cmd(s(&["/bin/sh", "-c", "echo $V"]))),
        ("CMD [\"echo\", \"$V\"]", ConfigChange::Cmd(s(&["echo", "$V"]))),
        ("ENTRYPOINT [\"/bin/x\"]", ConfigChange::Entrypoint(s(&["/bin/x"]))),
        ("MAINTAINER $V", ConfigChange::Maintainer("$V".into())),
        ("EXPOSE 80/udp 90", ConfigChange::Expose(s(&["80/udp", "90/tcp"]))),
        ("SHELL [\"/bin/bash\", \"-c\"]", ConfigChange::Shell(s(&["/bin/bash", "-c"]))),
        ("ONBUILD RUN echo $V", ConfigChange::OnBuild("RUN echo $V".into())),
    ];
    for (line, want) in cases {
        let plan = plan_ok(&format!("{base}{line}\n"));
        assert_eq!(last_config(&plan), want, "{line}");
    }
}

#[test]
fn env_pairs_see_the_environment_before_the_instruction() {
    let plan = plan_ok("FROM busybox\nENV A=1\nENV A=2 B=$A\n");
    assert_eq!(last_config(&plan), &ConfigChange::Env(vec![("A".into(), "2".into()), ("B".into(), "1".into())]));
}

#[test]
fn copy_paths_dest_and_flags() {
    let plan =
        plan_ok("FROM busybox\nARG D=dst\nWORKDIR /app\nCOPY --chown=$D:$D --chmod=0755 --link a \"b\"c ${D}/\n");
    let Op::Copy(copy) = &last_step(&plan).op else { panic!() };
    assert_eq!(copy.sources, vec![CopySource::Path("a".into()), CopySource::Path("bc".into())]);
    assert_eq!(copy.dest, "/app/dst/");
    assert_eq!(copy.chown.as_deref(), Some("dst:dst"));
    assert_eq!(copy.chmod.as_deref(), Some("0755"));
    assert!(copy.link && !copy.add);
    assert_eq!(copy.from, CopyFrom::Context);
    assert_eq!(last_step(&plan).created_by, "COPY a bc dst/ # buildkit");
    // Shell-form words split on whitespace before expansion, quotes or not (as BuildKit).
    assert_eq!(
        plan_err("FROM busybox\nCOPY \"a b\" /x\n"),
        "Dockerfile:2:1: failed to process \"\\\"a\": unexpected end of statement while looking for matching double-quote"
    );

    for (dest, want) in [(".", "/app/"), ("x", "/app/x"), ("/abs/./y/", "/abs/y/"), ("../up", "/up")] {
        let plan = plan_ok(&format!("FROM busybox\nWORKDIR /app\nCOPY a {dest}\n"));
        let Op::Copy(copy) = &last_step(&plan).op else { panic!() };
        assert_eq!(copy.dest, want, "{dest}");
    }
}

#[test]
fn unknown_instruction_shows_a_short_escaped_snippet() {
    let first = format!("PATH=/usr/bin\0HOME=/root\0TOKEN=s3cret{}", "x".repeat(5000));
    let err = plan_err(&format!("{first}\nFROM busybox\n"));
    assert!(err.contains("unknown instruction: PATH=/usr/bin\\0HOME="), "{err}");
    assert!(!err.contains("s3cret") && !err.contains('\0') && err.chars().count() < 120, "{err}");
}

#[test]
fn copy_dest_ending_in_slash_dot_is_a_directory() {
    // BuildKit keeps a trailing `/` or `/.` of the destination as "into this directory":
    // `COPY f /app/.` makes /app/f, not a file /app.
    for (dest, want) in [
        ("/app/.", "/app/"),
        ("/app/./", "/app/"),
        ("/app/./.", "/app/"),
        ("sub/.", "/w/sub/"),
        ("./", "/w/"),
        (".", "/w/"),
        ("/.", "/"),
        ("/app/..", "/"),
        ("/app/x.", "/app/x."),
    ] {
        let plan = plan_ok(&format!("FROM busybox\nWORKDIR /w\nCOPY a {dest}\n"));
        let Op::Copy(copy) = &last_step(&plan).op else { panic!() };
        assert_eq!(copy.dest, want, "{dest}");
    }
}

#[test]
fn add_sources_urls_and_git() {
    let plan =
        plan_ok("FROM busybox\nADD --checksum=sha256:abc https://x.org/a.tgz git@github.com:a/b.git local /d/\n");
    let Op::Copy(copy) = &last_step(&plan).op else { panic!() };
    assert!(copy.add);
    assert_eq!(
        copy.sources,
        vec![
            CopySource::Url("https://x.org/a.tgz".into()),
            CopySource::Git("git@github.com:a/b.git".into()),
            CopySource::Path("local".into())
        ]
    );
    assert_eq!(copy.checksum.as_deref(), Some("sha256:abc"));
    assert!(plan_err("FROM busybox\nCOPY https://x.org/a /d\n").ends_with("source can't be a URL for COPY"));
}

#[test]
fn copy_heredocs() {
    let plan = plan_ok("FROM busybox\nARG N=kiln\nCOPY <<EOF <<'RAW' /etc/\nhello $N\nEOF\nraw $N\nRAW\n");
    let Op::Copy(copy) = &last_step(&plan).op else { panic!() };
    assert_eq!(
        copy.sources,
        vec![
            CopySource::Heredoc { name: "EOF".into(), content: "hello kiln\n".into() },
            CopySource::Heredoc { name: "RAW".into(), content: "raw $N\n".into() },
        ]
    );
    assert_eq!(last_step(&plan).created_by, "COPY <<EOF <<RAW /etc/ # buildkit");
}

#[test]
fn run_heredocs() {
    let plan = plan_ok("FROM busybox\nRUN <<EOF\necho a\necho b\nEOF\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "echo a\necho b\n"]));
    assert!(last_run(&plan).heredocs.is_empty());

    let plan = plan_ok("FROM busybox\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "/dev/pipes/EOF"]));
    assert_eq!(last_run(&plan).heredocs, vec![("/dev/pipes/EOF".into(), "#!/usr/bin/env python3\nprint(1)\n".into())]);

    let plan = plan_ok("FROM busybox\nRUN cat <<A > /x\nbody\nA\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "cat <<A > /x\nbody\nA"]));
}

/// BuildKit's `dispatchRun`: only a command that is exactly one heredoc marker runs the body
/// itself; any other command keeps its words and gets the heredoc from the shell.
#[test]
fn run_heredoc_with_a_command_after_the_marker_keeps_the_command() {
    for (line, command) in [
        ("<<EOF sh > /out", "<<EOF sh > /out"),
        ("<<EOF python3", "<<EOF python3"),
        ("<<EOF bash -e", "<<EOF bash -e"),
        ("<<'EOF' sh", "<<'EOF' sh"),
        ("<<-EOF sh", "<<-EOF sh"),
    ] {
        let plan = plan_ok(&format!("FROM busybox\nRUN {line}\n\techo hi\nEOF\n"));
        let run = last_run(&plan);
        // The body goes back unchanged (tabs kept: the shell strips them for `<<-`).
        assert_eq!(run.argv, s(&["/bin/sh", "-c", &format!("{command}\n\techo hi\nEOF")]), "{line}");
        assert!(run.heredocs.is_empty(), "{line}");
        assert_eq!(last_step(&plan).created_by, format!("RUN /bin/sh -c {command}\n\techo hi\nEOF # buildkit"));
    }
    // A shebang body with a command after the marker is still just stdin of that command.
    let plan = plan_ok("FROM busybox\nRUN <<EOF python3\n#!/bin/sh\nprint(1)\nEOF\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "<<EOF python3\n#!/bin/sh\nprint(1)\nEOF"]));
    assert!(last_run(&plan).heredocs.is_empty());
}

#[test]
fn run_heredoc_bodies_chomp_shebang_expansion_several_and_exec_form() {
    // `<<-` strips leading tabs from the body that runs directly, and a shebang found after
    // stripping makes the body a file.
    let plan = plan_ok("FROM busybox\nRUN <<-EOF\n\techo a\n\t\techo b\nEOF\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "echo a\necho b\n"]));
    let plan = plan_ok("FROM busybox\nRUN <<-EOF\n\t#!/bin/awk -f\n\tBEGIN { print 1 }\nEOF\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "/dev/pipes/EOF"]));
    assert_eq!(last_run(&plan).heredocs, vec![("/dev/pipes/EOF".into(), "#!/bin/awk -f\nBEGIN { print 1 }\n".into())]);
    // `<<EOF` keeps tabs.
    let plan = plan_ok("FROM busybox\nRUN <<EOF\n\techo a\nEOF\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "\techo a\n"]));
    // The planner never expands a RUN body, quoted marker or not: the shell does, with the
    // build args in its environment.
    for marker in ["<<EOF", "<<'EOF'", "<<\"EOF\""] {
        let plan = plan_ok(&format!("FROM busybox\nARG name=world\nRUN {marker}\necho ${{name}} $HOME\nEOF\n"));
        assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "echo ${name} $HOME\n"]), "{marker}");
        assert_eq!(last_run(&plan).build_args.get("name").map(String::as_str), Some("world"));
    }
    // Several heredocs: the whole line, each body followed by its terminator.
    let plan = plan_ok("FROM busybox\nRUN <<EOF 3<<IN awk -f -\nBEGIN { print 1 }\nEOF\nhello\nIN\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "<<EOF 3<<IN awk -f -\nBEGIN { print 1 }\nEOF\nhello\nIN"]));
    let plan = plan_ok("FROM busybox\nRUN <<A <<B\necho a\nA\necho b\nB\n");
    assert_eq!(last_run(&plan).argv, s(&["/bin/sh", "-c", "<<A <<B\necho a\nA\necho b\nB"]));
    // Exec form has no heredocs: the marker is an ordinary argument.
    let plan = plan_ok("FROM busybox\nRUN [\"echo\", \"<<EOF\"]\n");
    assert_eq!(last_run(&plan).argv, s(&["echo", "<<EOF"]));
    assert!(last_run(&plan).heredocs.is_empty());
}

#[test]
fn run_flags() {
    let plan = plan_ok(
        "FROM busybox AS deps\nFROM busybox\nWORKDIR /w\nARG C=go\n\
         RUN --mount=type=cache,target=.cache/$C,id=$C --mount=type=bind,from=deps,source=/x,target=/y \
         --mount=type=secret,id=tok --network=none --security=sandbox make\n",
    );
    let run = last_run(&plan);
    assert_eq!(run.network.as_deref(), Some("none"));
    assert_eq!(run.security.as_deref(), Some("sandbox"));
    let mounts: Vec<BTreeMap<String, String>> = run.mounts.iter().map(|m| m.options.clone()).collect();
    assert_eq!(mounts[0]["type"], "cache");
    assert_eq!(mounts[0]["target"], "/w/.cache/go");
    assert_eq!(mounts[0]["id"], "go");
    assert_eq!(mounts[0]["readonly"], "false");
    assert_eq!(mounts[1]["from"], "deps");
    assert_eq!(mounts[1]["from-stage"], "0");
    assert_eq!(mounts[1]["readonly"], "true");
    assert_eq!(mounts[2]["type"], "secret");
    assert_eq!(plan.stages.len(), 2, "the mount's stage is needed");

    for (flags, want) in [
        ("--network=bogus", "unsupported network mode \"bogus\""),
        ("--security=x", "unsupported security mode \"x\""),
        ("--mount=type=nope", "unsupported mount type \"nope\""),
        ("--mount=type=bind,mode=0700", "mode not allowed for \"bind\" type mounts"),
        ("--mount=type=bind,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
        ("--nope", "Unknown flag: nope"),
    ] {
        let err = plan_err(&format!("FROM busybox\nRUN {flags} true\n"));
        assert!(err.starts_with("Dockerfile:2:1: "), "{err}");
        assert!(err.ends_with(want), "{flags}: {err}");
    }
}

#[test]
fn run_environment_overlays_config_env() {
    let plan = plan_with(
        "FROM busybox\nARG A=1\nENV B=2\nARG B=3\nRUN true\n",
        &args(&[("http_proxy", "http://p:3128")]),
        &busybox(),
    )
    .unwrap();
    let run = last_run(&plan);
    assert_eq!(run.build_args.get("A").map(String::as_str), Some("1"));
    assert_eq!(run.build_args.get("B").map(String::as_str), Some("3"), "ARG after ENV wins in RUN");
    assert_eq!(run.build_args.get("HTTP_PROXY").map(String::as_str), Some("http://p:3128"));
    assert_eq!(run.build_args.get("http_proxy").map(String::as_str), Some("http://p:3128"));
    assert!(!run.build_args.contains_key("PATH"));
    assert_eq!(last_step(&plan).created_by, "RUN |2 A=1 B=3 /bin/sh -c true # buildkit");
    assert!(plan.warnings.is_empty(), "proxy args are consumed: {:?}", plan.warnings);
}

#[test]
fn global_args_scope() {
    // Usable in FROM; invisible in the stage until redeclared; --build-arg overrides both.
    let source = "ARG IMG=busybox\nARG V=global\nFROM $IMG\nENV A=x${V}x\nARG V\nENV B=$V\n";
    let plan = plan_ok(source);
    let envs: Vec<&ConfigChange> = plan.stages[0]
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::Config(c @ ConfigChange::Env(_)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(envs[0], &ConfigChange::Env(vec![("A".into(), "xx".into())]));
    assert_eq!(envs[1], &ConfigChange::Env(vec![("B".into(), "global".into())]));
    assert_eq!(plan.stages[0].base, Base::Image("busybox".into()));

    let plan = plan_with(source, &args(&[("V", "cli")]), &busybox()).unwrap();
    assert_eq!(last_config(&plan), &ConfigChange::Env(vec![("B".into(), "cli".into())]));

    // Global default referring to another global, and --build-arg in FROM.
    let images = busybox().with("busybox:1.36", BaseImageConfig::default());
    let plan = plan_with("ARG V=1.36\nARG T=busybox:$V\nFROM $T\n", &PlanOptions::default(), &images).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("busybox:1.36".into()));
    let plan = plan_with("ARG T=nope\nFROM $T\n", &args(&[("T", "busybox")]), &images).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("busybox".into()));
}

#[test]
fn arg_without_value_and_arg_cycles() {
    let plan = plan_ok("FROM busybox\nARG X\nENV A=${X-unset} B=${X:-empty}\n");
    assert_eq!(
        last_config(&plan),
        &ConfigChange::Env(vec![("A".into(), "unset".into()), ("B".into(), "empty".into())])
    );
    // BuildKit evaluates ARGs in order, so `A=$B`/`B=$A` is no cycle: both end up empty.
    let plan = plan_ok("ARG A=$B\nARG B=$A\nFROM busybox\nARG A\nARG B\nENV X=[$A][$B]\n");
    assert_eq!(last_config(&plan), &ConfigChange::Env(vec![("X".into(), "[][]".into())]));
}

#[test]
fn predefined_platform_args() {
    let options = PlanOptions { platform: Some("linux/arm64".into()), ..PlanOptions::default() };
    let source =
        "FROM --platform=$BUILDPLATFORM busybox AS b\nARG TARGETARCH\nARG BUILDARCH\nENV T=$TARGETARCH B=$BUILDARCH\n\
                  FROM busybox\nARG TARGETPLATFORM\nCOPY --from=b /x /x\nENV P=$TARGETPLATFORM\n";
    let plan = plan_with(source, &options, &busybox()).unwrap();
    assert_eq!(plan.stages[0].platform, "linux/amd64");
    assert_eq!(plan.stages[1].platform, "linux/arm64");
    assert_eq!(
        plan.stages[0].steps[2].op,
        Op::Config(ConfigChange::Env(vec![("T".into(), "arm64".into()), ("B".into(), "amd64".into())]))
    );
    assert_eq!(last_config(&plan), &ConfigChange::Env(vec![("P".into(), "linux/arm64".into())]));
}

#[test]
fn global_platform_arg_without_value_keeps_the_predefined_value() {
    // BuildKit: `ARG TARGETARCH` before FROM declares the predefined arg; it does not unset it.
    let options = PlanOptions { platform: Some("linux/arm64".into()), ..PlanOptions::default() };
    // (The fake store has only busybox:latest, so the name shows in the lookup that fails.)
    let looked_up = |source: &str| match plan_with(source, &options, &busybox()).unwrap_err().kind {
        PlanErrorKind::MissingBaseImage { reference, .. } => reference,
        other => panic!("{other:?}"),
    };
    assert_eq!(looked_up("ARG TARGETARCH\nFROM busybox:$TARGETARCH\n"), "busybox:arm64");
    // A default still wins, as for any ARG.
    assert_eq!(looked_up("ARG TARGETARCH=x\nFROM busybox:$TARGETARCH\n"), "busybox:x");
}

#[test]
fn unused_build_args_warn() {
    let plan = plan_with(
        "ARG G\nFROM busybox\nARG USED\n",
        &args(&[("USED", "1"), ("G", "1"), ("ZZ", "1"), ("AA", "2")]),
        &busybox(),
    )
    .unwrap();
    assert_eq!(plan.warnings, ["[Warning] One or more build-args [AA ZZ] were not consumed"]);
}

#[test]
fn stages_target_and_pruning() {
    let source = "FROM busybox AS Build\nRUN make\nFROM busybox AS unused\nRUN false\nFROM scratch AS test\nCOPY --from=build /a /a\n\
                  FROM busybox AS final\nCOPY --from=0 /a /b\n";
    let plan = plan_ok(source);
    let kept: Vec<(usize, Option<&str>)> = plan.stages.iter().map(|s| (s.index, s.name.as_deref())).collect();
    assert_eq!(kept, [(0, Some("build")), (3, Some("final"))]);
    assert_eq!(plan.target, 1);
    let Op::Copy(copy) = &last_step(&plan).op else { panic!() };
    assert_eq!(copy.from, CopyFrom::Stage(0));

    let options = PlanOptions { target: Some("TEST".into()), ..PlanOptions::default() };
    let plan = plan_with(source, &options, &busybox()).unwrap();
    let kept: Vec<usize> = plan.stages.iter().map(|s| s.index).collect();
    assert_eq!(kept, [0, 2]);
    assert_eq!(plan.stages[1].base, Base::Scratch);
    assert_eq!(plan.stages[1].steps.len(), 1);

    let options = PlanOptions { target: Some("nope".into()), ..PlanOptions::default() };
    let err = plan_with(source, &options, &busybox()).unwrap_err();
    assert_eq!(err.to_string(), "Dockerfile: target stage \"nope\" could not be found");
}

#[test]
fn unneeded_stages_do_not_resolve_images() {
    let images = busybox();
    let plan = plan_with(
        "FROM missing AS a\nFROM busybox\nRUN x\nFROM busybox AS c\n",
        &PlanOptions { target: Some("c".into()), ..PlanOptions::default() },
        &images,
    )
    .unwrap();
    assert_eq!(plan.stages.len(), 1);
    assert_eq!(*images.calls.borrow(), ["busybox"]);
}

#[test]
fn each_image_is_resolved_once() {
    let images = busybox();
    plan_with(
        "FROM busybox AS a\nFROM busybox AS b\nCOPY --from=a / /\nCOPY --from=busybox / /\n",
        &PlanOptions::default(),
        &images,
    )
    .unwrap();
    assert_eq!(*images.calls.borrow(), ["busybox"]);
}

#[test]
fn copy_from_image_and_stage_inheritance() {
    let images = busybox().with(
        "tools:1",
        BaseImageConfig { env: vec!["TOOL=1".into()], working_dir: "/t".into(), ..Default::default() },
    );
    let plan = plan_with(
        "FROM tools:1 AS t\nENV X=$TOOL\nFROM t\nWORKDIR sub\nCOPY --from=tools:1 /bin/x x\n",
        &PlanOptions::default(),
        &images,
    )
    .unwrap();
    let steps = &plan.stages[1].steps;
    assert_eq!(steps[0].op, Op::Config(ConfigChange::Workdir("/t/sub".into())));
    let Op::Copy(copy) = &steps[1].op else { panic!() };
    assert_eq!(copy.from, CopyFrom::Image("tools:1".into()));
    assert_eq!(copy.dest, "/t/sub/x");
    assert_eq!(plan.stages[0].steps[0].op, Op::Config(ConfigChange::Env(vec![("X".into(), "1".into())])));
}

#[test]
fn onbuild_triggers_of_the_base_image_run_after_from() {
    let images = busybox().with(
        "onb",
        BaseImageConfig {
            onbuild: vec!["ENV FROM_TRIGGER=1".into(), "COPY --from=helper /h /h".into()],
            ..Default::default()
        },
    );
    let plan = plan_with("FROM busybox AS helper\nFROM onb\nRUN true\n", &PlanOptions::default(), &images).unwrap();
    assert_eq!(plan.stages.len(), 2, "a trigger's --from makes the stage needed");
    let steps = &plan.stages[1].steps;
    assert_eq!(steps[0].created_by, "ENV FROM_TRIGGER=1");
    assert_eq!(steps[0].span, plan.stages[1].span);
    assert_eq!(steps[1].created_by, "COPY /h /h # buildkit");
    assert_eq!(steps[2].created_by, "RUN /bin/sh -c true # buildkit");

    let images = busybox().with("bad", BaseImageConfig { onbuild: vec!["FROM x".into()], ..Default::default() });
    let err = plan_with("FROM bad\n", &PlanOptions::default(), &images).unwrap_err().to_string();
    assert_eq!(err, "Dockerfile:1:1: FROM isn't allowed as an ONBUILD trigger");
}

#[test]
fn shell_wraps_shell_forms() {
    let plan =
        plan_ok("FROM busybox\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN a | b\nENTRYPOINT run it\n");
    assert_eq!(last_config(&plan), &ConfigChange::Entrypoint(s(&["/bin/bash", "-eo", "pipefail", "-c", "run it"])));
    let run = plan.stages[0].steps.iter().find_map(|s| match &s.op {
        Op::Run(r) => Some(r),
        _ => None,
    });
    assert_eq!(run.unwrap().argv, s(&["/bin/bash", "-eo", "pipefail", "-c", "a | b"]));
    // The base image's SHELL is used too.
    let images = busybox().with("pwsh", BaseImageConfig { shell: s(&["pwsh", "-c"]), ..Default::default() });
    let plan = plan_with("FROM pwsh\nRUN x\n", &PlanOptions::default(), &images).unwrap();
    assert_eq!(last_run(&plan).argv, s(&["pwsh", "-c", "x"]));
}

#[test]
fn healthcheck_forms() {
    let plan = plan_ok(
        "FROM busybox\nHEALTHCHECK --interval=1m30s --timeout=5s --start-period=1s CMD [\"/bin/check\", \"-q\"]\n",
    );
    let ConfigChange::Healthcheck(h) = last_config(&plan) else { panic!() };
    assert_eq!(h.test, s(&["CMD", "/bin/check", "-q"]));
    assert_eq!(h.interval, Some(90_000_000_000));
    assert_eq!(h.timeout, Some(5_000_000_000));
    assert_eq!(h.start_period, Some(1_000_000_000));
    assert_eq!(h.retries, None);
    assert_eq!(
        last_step(&plan).created_by,
        "HEALTHCHECK &{[\"CMD\" \"/bin/check\" \"-q\"] \"1m30s\" \"5s\" \"1s\" '\\x00'}"
    );
    assert!(plan_err("FROM busybox\nHEALTHCHECK --interval=1x CMD a\n")
        .ends_with("time: unknown unit \"x\" in duration \"1x\""));
    assert!(
        plan_err("FROM busybox\nHEALTHCHECK BOGUS a\n").ends_with("Unknown type \"BOGUS\" in HEALTHCHECK (try CMD)")
    );
    assert!(plan_err("FROM busybox\nHEALTHCHECK --retries=-1 CMD a\n").ends_with("--retries cannot be negative (-1)"));
}

#[test]
fn errors_point_at_the_dockerfile() {
    let cases = [
        ("FROM busybox\nFOO bar\n", "Dockerfile:2:1: unknown instruction: FOO (did you mean FROM?)"),
        ("FROM busybox\n  COPY --frm=x a b\n", "Dockerfile:2:3: Unknown flag: frm (did you mean from?)"),
        ("FROM busybox\nCOPY --chown a b\n", "Dockerfile:2:1: Missing a value on flag: chown"),
        ("FROM busybox\nCOPY --link=maybe a b\n", "Dockerfile:2:1: Expecting boolean value for flag link, not: maybe"),
        ("FROM busybox\nCOPY --from=a --from=b a b\n", "Dockerfile:2:1: Duplicate flag specified: from"),
        ("FROM busybox\nCOPY a\n", "Dockerfile:2:1: COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
        ("FROM busybox\nCOPY --from=nope a b\n", "Dockerfile:2:1: COPY --from=nope: no stage or image named \"nope\": no such image"),
        ("FROM busybox\nCOPY --from=3 a b\n", "Dockerfile:2:1: invalid stage index 3"),
        ("FROM busybox\nCOPY --from=$X a b\n", "Dockerfile:2:1: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"),
        ("FROM busybox:nope\n", "Dockerfile:1:1: base image busybox:nope: no such image"),
        ("FROM busybox AS a\nCOPY --from=b a b\nFROM busybox AS b\nCOPY --from=a x y\n", "Dockerfile:2:1: circular dependency detected on stage: a"),
        ("FROM busybox AS a\nCOPY --from=b a b\nFROM busybox AS b\nFROM a\n", "Dockerfile:2:1: cannot copy from stage \"b\", it needs to be defined before current stage \"a\""),
        ("FROM busybox AS a\nCOPY --from=a x y\n", "Dockerfile:2:1: circular dependency detected on stage: a"),
        ("FROM busybox\nSTOPSIGNAL FOO\n", "Dockerfile:2:1: Invalid signal: FOO"),
        ("FROM busybox\nEXPOSE 80-x\n", "Dockerfile:2:1: Invalid containerPort: 80-x"),
        ("FROM busybox AS 1st\n", "Dockerfile:1:1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"),
        ("FROM busybox\nSHELL /bin/sh -c\n", "Dockerfile:2:1: SHELL requires the arguments to be in JSON form"),
        ("FROM busybox\nENV X=${Y\n", "Dockerfile:2:1: failed to process \"${Y\": syntax error: missing '}'"),
        ("FROM $NOTHING\n", "Dockerfile:1:1: base name ($NOTHING) should not be blank"),
        ("RUN x\n", "Dockerfile:1:1: no build stage in current context"),
        ("FROM busybox\nONBUILD FROM x\n", "Dockerfile:2:1: FROM isn't allowed as an ONBUILD trigger"),
        ("FROM busybox\nWORKDIR\n", "Dockerfile:2:1: WORKDIR requires exactly one argument"),
    ];
    for (source, want) in cases {
        let err = plan_err(source);
        assert_eq!(err, want, "{source:?}");
        assert!(!err.contains('\n'));
    }
    // The file name comes from the options.
    let options = PlanOptions { file_name: "build/Dockerfile.dev".into(), ..PlanOptions::default() };
    let err = plan_with("FROM busybox\nBOGUS\n", &options, &busybox()).unwrap_err();
    assert_eq!(err.to_string(), "build/Dockerfile.dev:2:1: unknown instruction: BOGUS");
    assert_eq!((err.line, err.column), (2, 1));
}

#[test]
fn escape_directive_applies_to_expansion() {
    let plan = plan_ok("# escape=`\nFROM busybox\nARG V=x\nENV A=`$V B=\\$V\n");
    assert_eq!(last_config(&plan), &ConfigChange::Env(vec![("A".into(), "$V".into()), ("B".into(), "\\x".into())]));
}

#[test]
fn base_image_of_another_platform_keeps_its_platform_with_a_warning() {
    let images = FakeImages::default()
        .with("amd", BaseImageConfig { platform: Some("linux/amd64".into()), ..Default::default() })
        .with("arm", BaseImageConfig { platform: Some("linux/arm64".into()), ..Default::default() });
    let options = PlanOptions { platform: Some("linux/arm64".into()), ..PlanOptions::default() };
    let plan = plan_with(
        "FROM amd AS a\nFROM a AS b\nFROM arm AS c\nFROM scratch\nCOPY --from=b / /\nCOPY --from=c / /\n",
        &options,
        &images,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let platforms: Vec<&str> = plan.stages.iter().map(|s| s.platform.as_str()).collect();
    // The layers of `amd` are amd64 whatever was asked; a stage FROM it inherits that.
    assert_eq!(platforms, ["linux/amd64", "linux/amd64", "linux/arm64", "linux/arm64"]);
    let warnings: Vec<&String> = plan.warnings.iter().filter(|w| w.contains("InvalidBaseImagePlatform")).collect();
    assert_eq!(
        warnings,
        ["Dockerfile:1: InvalidBaseImagePlatform: Base image amd was pulled with platform \"linux/amd64\", expected \
             \"linux/arm64\" for current build"]
    );
}

#[test]
fn did_you_mean_hints_where_buildkit_gives_them() {
    let cases = [
        ("FORM busybox\n", "Dockerfile:1:1: unknown instruction: FORM (did you mean FROM?)"),
        ("FROM busybox\nworkdr /x\n", "Dockerfile:2:1: unknown instruction: workdr (did you mean workdir?)"),
        ("FROM busybox\nBOGUS x\n", "Dockerfile:2:1: unknown instruction: BOGUS"),
        ("FROM busybox\nCOPY --chmodd=755 a b\n", "Dockerfile:2:1: Unknown flag: chmodd (did you mean chmod?)"),
        (
            "FROM busybox\nRUN --mout=type=tmpfs,target=/t true\n",
            "Dockerfile:2:1: Unknown flag: mout (did you mean mount?)",
        ),
        ("FROM busybox\nCOPY --zzzzzz a b\n", "Dockerfile:2:1: Unknown flag: zzzzzz"),
        (
            "FROM busybox\nRUN --mount=tpye=cache,target=/c true\n",
            "Dockerfile:2:1: unexpected key 'tpye' in 'tpye=cache' (did you mean type?)",
        ),
        (
            "FROM busybox AS build\nFROM buidl\n",
            "Dockerfile:2:1: base image buidl: no such image (did you mean build?)",
        ),
        ("FROM busybx\n", "Dockerfile:1:1: base image busybx: no such image (did you mean busybox?)"),
        (
            "FROM busybox AS build\nFROM busybox\nCOPY --from=buidl /a /b\n",
            "Dockerfile:3:1: COPY --from=buidl: no stage or image named \"buidl\": no such image (did you mean build?)",
        ),
        (
            "FROM busybox AS build\nFROM busybox\nRUN --mount=from=biuld,target=/b true\n",
            "Dockerfile:3:1: RUN --from=biuld: no stage or image named \"biuld\": no such image (did you mean build?)",
        ),
    ];
    for (source, want) in cases {
        assert_eq!(plan_err(source), want, "{source:?}");
    }
    let options = PlanOptions { target: Some("tset".into()), ..PlanOptions::default() };
    let err = plan_with("FROM busybox AS test\nFROM busybox AS prod\n", &options, &busybox()).unwrap_err();
    assert_eq!(err.to_string(), "Dockerfile: target stage \"tset\" could not be found (did you mean test?)");
}

/// BuildKit's default cache id is the target as written (cleaned), before WORKDIR makes it
/// absolute.
#[test]
fn cache_mount_id_defaults_to_the_target_as_written() {
    let plan = plan_ok(
        "FROM busybox\nWORKDIR /w\nRUN --mount=type=cache,target=./.cache/ --mount=type=cache,target=/abs/./c/ \
         --mount=type=cache,target=x,id=mine true\n",
    );
    let mounts: Vec<BTreeMap<String, String>> = last_run(&plan).mounts.iter().map(|m| m.options.clone()).collect();
    assert_eq!((mounts[0]["id"].as_str(), mounts[0]["target"].as_str()), (".cache", "/w/.cache"));
    assert_eq!(mounts[1]["id"], "/abs/c");
    assert_eq!((mounts[2]["id"].as_str(), mounts[2]["target"].as_str()), ("mine", "/w/x"));
}
