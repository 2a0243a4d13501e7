//! The cases of the differential suite. Each names where its substance comes from: BuildKit's
//! `frontend/dockerfile/dockerfile_test.go` (`bk:testName`), `dockerfile_runmount_test.go`
//! (`bk-mount:`), `dockerfile_heredoc_test.go` (`bk-heredoc:`), buildah's `tests/bud.bats` and
//! `tests/bud/*` (`buildah:`), or "common" for the Dockerfiles people usually write. None is copied;
//! each is rewritten for the busybox bases (`@BB@`, `@IMPORT@`, `@USR@`, see `mod.rs`).
//!
//! Where docker 20.10 (BuildKit 0.8, built-in dockerfile frontend 1.2) is older than current
//! BuildKit, the case carries current BuildKit's result as an explicit expectation (`Expect::Newer`,
//! `Expect::NewerFails`), from the BuildKit test named in its comment. The 20.10 differences:
//! - heredocs (`RUN <<EOF`, `COPY <<EOF`): 20.10 rejects them; current BuildKit runs/writes them.
//! - `COPY --parents`, `COPY --exclude`: 20.10 says "Unknown flag"; current BuildKit keeps the
//!   source's parent directories / leaves the excluded paths out.
//! - `COPY --link`: 20.10 rejects it; the result is the same files as a plain COPY.
//! - `COPY --chmod` with a symbolic mode (`u+x`): 20.10 only takes octal; dockerfile 1.14+ applies it.
//! - `RUN --network`: 20.10 says "Unknown flag: network" (covered by `docker_compare`).
//! - `SOURCE_DATE_EPOCH` as a build arg: 20.10 ignores it; BuildKit 0.11+ sets the image's and
//!   history's `created` to it.
//! - build checks (`# check=error=true`): 20.10 has none; current BuildKit fails the build on a
//!   violation (`FromAsCasing`) with "lint violation".
//! - error texts: a failing RUN is `executor failed running [/bin/sh -c false]: exit code: 1` in
//!   20.10 and `process "/bin/sh -c false" did not complete successfully: exit code: 1` now; a
//!   missing COPY source is `failed to compute cache key: "/missing.txt" not found: not found` in
//!   20.10 and `failed to calculate checksum of ref …: "/missing.txt": not found` now. The cases ask
//!   for the parts both share plus current BuildKit's wording.

use std::path::Path;

/// One Dockerfile built by kiln and docker.
pub struct Case {
    pub name: &'static str,
    /// Where the case comes from (for the reader; see the module doc).
    #[allow(dead_code)]
    pub from: &'static str,
    /// The Dockerfile, with `@BB@`, `@IMPORT@`, `@USR@` for the bases.
    pub dockerfile: &'static str,
    /// Its name in the context (`-f` is always passed).
    pub dockerfile_name: &'static str,
    /// Context files: `dir/` a directory, `name@0755` a mode (default 0644), content `-> t` a symlink.
    pub files: &'static [(&'static str, &'static str)],
    /// Extra flags for both tools (`--build-arg`, `--target`, `--label`).
    pub flags: &'static [&'static str],
    /// `--secret id=ID,src=FILE` for both tools.
    pub secrets: &'static [(&'static str, &'static str)],
    /// Makes context content that `files` cannot (archives).
    pub prepare: Option<fn(&Path)>,
    /// Also compare what each layer changes (for RUN steps).
    pub layer_changes: bool,
    /// Also compare the `created` times (only meaningful with SOURCE_DATE_EPOCH).
    pub times: bool,
    pub expect: Expect,
}

pub enum Expect {
    /// kiln's image is docker's.
    Same,
    /// Both fail; both outputs contain every `both` text, kiln's also every `kiln` text (current
    /// BuildKit's wording where 20.10's differs).
    Fails { both: &'static [&'static str], kiln: &'static [&'static str] },
    /// docker 20.10 cannot build this; kiln must give current BuildKit's result: the listed
    /// `describe_image` lines. With `docker`, docker builds that stand-in Dockerfile (same files
    /// without the new syntax) and everything but the history is compared too.
    Newer { docker: Option<&'static str>, kiln: &'static [(&'static str, Want)] },
    /// docker 20.10 builds this, current BuildKit fails with these texts (kiln must too).
    NewerFails { kiln: &'static [&'static str] },
}

/// An expected `describe_image` value.
pub enum Want {
    /// The value starts with this.
    Line(&'static str),
    /// A regular file: "MODE UID:GID" and its content.
    File(&'static str, &'static str),
    /// No such key.
    Absent,
}

const D: Case = Case {
    name: "",
    from: "common",
    dockerfile: "",
    dockerfile_name: "Dockerfile",
    files: &[],
    flags: &[],
    secrets: &[],
    prepare: None,
    layer_changes: false,
    times: false,
    expect: Expect::Same,
};

/// Cases that differ from docker today, each with the cause in one line. The test fails if a listed
/// case matches (remove it) or an unlisted one differs.
pub const KNOWN_DIFFERING: &[(&str, &str)] = &[];

pub const CASES: &[Case] = &[
    // ---------------------------------------------------------------- config and metadata
    Case {
        name: "env-scoping",
        from: "bk:testEnvEmptyFormatting + common",
        dockerfile: r#"FROM @BB@
ENV PATH=/opt/tool/bin:$PATH
ENV A=1 B="two words" C=${A}-c
ENV E="" F= G=x
ENV myenv foo%sbar
ENV QUOTED="a\"b" SINGLE='no $A here' ESCAPED=a\ b
RUN echo "$PATH|$A|$B|$C|$E|$F|$G|$myenv|$QUOTED|$SINGLE|$ESCAPED" > /env.txt
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "env-on-import-base",
        from: "bk:testDefaultEnvWithArgs (image with no Env gets the default PATH)",
        dockerfile: r#"FROM @IMPORT@
ENV HOME=/root
RUN echo "$PATH" > /path.txt
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "import-base-untouched",
        from: "common (the docker-imported base with its null fields, no instructions but FROM + LABEL)",
        dockerfile: "FROM @IMPORT@\nLABEL touched=no\n",
        ..D
    },
    Case {
        name: "arg-global-scoping",
        from: "bk:testGlobalArg + bk:testArgDefaultExpansion",
        dockerfile: r#"ARG TAG=latest
ARG GLOBAL=g
FROM @BB@
ARG GLOBAL
ARG FOO=bar
ARG BAR=${FOO}:${FOO}
ARG NOVALUE
ENV BAZ=$BAR TAGSEEN=${TAG:-unset} G=$GLOBAL NV=${NOVALUE:-none}
RUN echo "$TAG|$GLOBAL|$FOO|$BAR|$NOVALUE" > /args.txt
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "arg-build-arg-history",
        from: "bk:testExportedHistory (RUN history carries the build args it sees)",
        dockerfile: r#"FROM @BB@
ARG VERSION=1.0
ARG EMPTY
ARG UNUSED=x
RUN echo "$VERSION" > /version
ARG LATE=late
RUN echo "$LATE $EMPTY" > /late
"#,
        flags: &["--build-arg", "VERSION=2.0", "--build-arg", "EMPTY=", "--build-arg", "NOTDECLARED=1"],
        layer_changes: true,
        ..D
    },
    Case {
        name: "arg-in-from",
        from: "bk:testGlobalArg (ARG used in FROM)",
        dockerfile: r#"ARG BASE=@BB@
ARG FLAVOUR=plain
FROM ${BASE} AS base
ARG FLAVOUR
LABEL flavour=$FLAVOUR
FROM base
"#,
        flags: &["--build-arg", "FLAVOUR=given"],
        ..D
    },
    Case {
        name: "expose-expansion",
        from: "bk:testExposeExpansion",
        dockerfile: r#"FROM @BB@
ARG PORTS="3000 4000/udp"
EXPOSE $PORTS
EXPOSE 5000 80/TCP
EXPOSE 6000-6002
"#,
        ..D
    },
    Case {
        name: "labels-and-flag",
        from: "bk:testLabels (--label on the command line) + base label override",
        dockerfile: r#"FROM @BB@
LABEL org.example.flavour=overridden "spaced key"="v" multi="line \
continued"
LABEL from.file=1 cli.override=file
"#,
        flags: &["--label", "cli.only=yes", "--label", "cli.override=cli"],
        ..D
    },
    Case {
        name: "volume-forms",
        from: "common",
        dockerfile: r#"FROM @BB@
ARG V=/var/lib/app
RUN mkdir -p /data
VOLUME $V
VOLUME ["/data", "/logs"]
VOLUME /a /b
RUN echo after > /data/written-after-volume
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "healthcheck-forms",
        from: "bk:testHealthcheck-like (docker integration TestBuildHealthcheck*)",
        dockerfile: r#"FROM @BB@ AS one
HEALTHCHECK CMD wget -q http://localhost/ || exit 1
FROM one AS two
HEALTHCHECK --interval=1m30s --timeout=10s --retries=2 CMD ["/bin/true", "arg"]
FROM two
HEALTHCHECK NONE
"#,
        ..D
    },
    Case {
        name: "healthcheck-inherited",
        from: "common",
        dockerfile: r#"FROM @BB@ AS one
HEALTHCHECK --start-period=5s CMD true
FROM one
LABEL child=1
"#,
        ..D
    },
    Case {
        name: "stopsignal-forms",
        from: "common",
        dockerfile: r#"FROM @BB@ AS a
STOPSIGNAL 9
FROM a
ARG SIG=SIGQUIT
STOPSIGNAL $SIG
"#,
        ..D
    },
    Case {
        name: "shell-instruction",
        from: "bk:testCmdShell",
        dockerfile: r#"FROM @BB@
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "$0 $-" > /shell.txt
CMD echo hello
ENTRYPOINT echo entry
SHELL ["/bin/sh", "-xc"]
HEALTHCHECK CMD echo ok
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "cmd-inherited-from-base",
        from: "common (base has CMD [\"sh\"])",
        dockerfile: "FROM @BB@\nENV X=1\n",
        ..D
    },
    Case {
        name: "entrypoint-resets-cmd",
        from: "bk:testIgnoreEntrypoint-like + docker TestBuildClearCmd",
        dockerfile: r#"FROM @BB@ AS a
ENTRYPOINT ["/bin/echo"]
FROM a AS b
CMD ["kept"]
FROM b
ENTRYPOINT /bin/echo shell form
"#,
        ..D
    },
    Case {
        name: "cmd-json-forms",
        from: "docker TestBuildShCmdJSONEntrypoint + common",
        dockerfile: r#"FROM @BB@
CMD ["echo", "a \"quoted\" word", "tab\there", "ünï"]
ENTRYPOINT [bad json
LABEL x=1
"#,
        ..D
    },
    Case {
        name: "cmd-empty-json",
        from: "docker TestBuildEmptyCmd",
        dockerfile: "FROM @BB@\nCMD []\nENTRYPOINT []\n",
        ..D
    },
    Case {
        name: "user-forms",
        from: "bk:testUser",
        dockerfile: r#"FROM @BB@ AS a
USER app
RUN id -u > /tmp/uid-name
FROM a AS b
USER 1000:50
RUN id -u > /tmp/uid-num && id -g > /tmp/gid-num
FROM b
ARG U=nobody
USER ${U}
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "onbuild-triggers",
        from: "bk:testOnBuildCleared + docker TestBuildOnBuild*",
        dockerfile: r#"FROM @BB@ AS parent
ONBUILD RUN echo triggered > /onbuild-ran
ONBUILD LABEL from-onbuild=yes
ONBUILD ENV TRIGGERED=1
LABEL parent=1
FROM parent AS child
RUN test -f /onbuild-ran && echo child > /child
FROM child
LABEL grandchild=1
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "maintainer-and-comments",
        from: "common (parser: comments inside continuations, empty continuation lines)",
        dockerfile: r#"# a comment
FROM @BB@
MAINTAINER someone <a@b.c>
RUN echo a \
# a comment in the middle
    b \

    c > /words
LABEL a=1 \
      b=2
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "escape-backtick-workdir",
        from: "docker TestBuildEscapeDirective-like",
        dockerfile: "# escape=`\nFROM @BB@\nWORKDIR /a\\b\nENV P=C:\\x `\n    Q=2\nRUN echo \"$P\" > f.txt\n",
        layer_changes: true,
        ..D
    },
    // ---------------------------------------------------------------- WORKDIR and USER
    Case {
        name: "workdir-creates",
        from: "bk:testWorkdirCreatesDir",
        dockerfile: r#"FROM @BB@
WORKDIR /a/b/c
WORKDIR d
WORKDIR ../e
ENV W=/w
WORKDIR $W/sub
COPY a.txt ./
"#,
        files: &[("a.txt", "a\n")],
        ..D
    },
    Case {
        name: "workdir-user-owned",
        from: "bk:testWorkdirUser (WORKDIR made after USER belongs to that user)",
        dockerfile: r#"FROM @BB@
USER app
WORKDIR /mydir
RUN stat -c '%U:%G %a' /mydir > /tmp/st && id -un > owner-test
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "workdir-exists",
        from: "bk:testWorkdirExists (an existing directory keeps its owner and mode)",
        dockerfile: r#"FROM @BB@
RUN mkdir -m 0750 /existing && chown 1000:50 /existing
WORKDIR /existing
USER app
WORKDIR /existing
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "workdir-symlink",
        from: "buildah:bud/workdir-symlink (WORKDIR through a symlink writes into its target)",
        dockerfile: r#"FROM @BB@
RUN mkdir -p /var/lib/tempest && ln -s /var/lib/tempest /tempest
WORKDIR /tempest
RUN touch ./in-workdir
COPY a.txt .
"#,
        files: &[("a.txt", "a\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "workdir-relative-on-import",
        from: "common (a relative WORKDIR on a base without WorkingDir)",
        dockerfile: "FROM @IMPORT@\nWORKDIR rel\nWORKDIR deeper\nRUN pwd > /pwd\n",
        layer_changes: true,
        ..D
    },
    // ---------------------------------------------------------------- COPY
    Case {
        name: "copy-to-dot-newer",
        from: "common (`COPY f /app/.`, `COPY f .` after WORKDIR); BuildKit's NormalizePath keeps a trailing `/.` as a directory, docker 20.10 makes a file /app",
        dockerfile: r#"FROM @BB@
COPY a.txt /app/.
COPY a.txt /app2/./
WORKDIR /w
COPY a.txt .
COPY a.txt ./renamed
"#,
        files: &[("a.txt", "a\n")],
        expect: Expect::Newer {
            docker: Some("FROM @BB@\nCOPY a.txt /app/\nCOPY a.txt /app2/\nWORKDIR /w\nCOPY a.txt .\nCOPY a.txt ./renamed\n"),
            kiln: &[("fs /app/a.txt", Want::File("0644 0:0", "a\n")), ("fs /app2/a.txt", Want::File("0644 0:0", "a\n"))],
        },
        ..D
    },
    Case {
        name: "copy-rename-vs-into",
        from: "common",
        dockerfile: r#"FROM @BB@
COPY a.txt /newname
COPY a.txt /tmp
COPY a.txt /made/dir/
COPY dir /dircontents
COPY dir/ /dircontents2/
"#,
        files: &[("a.txt", "a\n"), ("dir/x", "x\n"), ("dir/sub/y", "y\n")],
        ..D
    },
    Case {
        name: "copy-relative",
        from: "bk:testCopyRelative",
        dockerfile: r#"FROM @BB@
WORKDIR /test1
WORKDIR test2
COPY foo ./
COPY foo ../
COPY foo bar
WORKDIR /test3
COPY foo /test3/baz
"#,
        files: &[("foo", "hello\n")],
        ..D
    },
    Case {
        name: "copy-empty-dest",
        from: "bk:testEmptyDestDir",
        dockerfile: "FROM @BB@\nENV empty=\"\"\nWORKDIR /w\nCOPY testfile $empty\n",
        files: &[("testfile", "contents0")],
        ..D
    },
    Case {
        name: "copy-var-substitution",
        from: "bk:testCopyVarSubstitution",
        dockerfile: "FROM @BB@\nENV FOO=bar\nCOPY $FOO baz\nCOPY ${FOO} /${FOO}-dir/\n",
        files: &[("bar", "bar-content\n")],
        ..D
    },
    Case {
        name: "copy-wildcards",
        from: "bk:testCopyWildcards",
        dockerfile: r#"FROM @BB@
COPY *.go /gofiles/
COPY f*.go foo2.go /foo2/
COPY sub/* /subdest/
COPY sub/dir* /subdest2/
COPY [fg]oo?.go /charclass/
"#,
        files: &[
            ("foo.go", "foo\n"),
            ("foo2.go", "foo2\n"),
            ("goo1.go", "goo1\n"),
            ("sub/dirfile", "df\n"),
            ("sub/dir1/nested", "n\n"),
            ("sub/other", "o\n"),
        ],
        ..D
    },
    Case {
        name: "copy-wildcard-nothing",
        from: "bk:testCopyWildcardCache / empty wildcard (AllowEmptyWildcard)",
        dockerfile: "FROM @BB@\nCOPY *.nomatch /dst/\nCOPY a.txt nomatch* /dst2/\n",
        files: &[("a.txt", "a\n")],
        ..D
    },
    Case {
        name: "copy-whitespace",
        from: "bk:testCopyWhitespace",
        dockerfile: r#"FROM @BB@
COPY ["a b.txt", "/x y/"]
COPY ["sp dir", "/sp dest/"]
"#,
        files: &[("a b.txt", "ab\n"), ("sp dir/f", "f\n")],
        ..D
    },
    Case {
        name: "copy-override-files",
        from: "bk:testCopyOverrideFiles",
        dockerfile: "FROM @BB@\nCOPY sub/dir1/ /sub/\nCOPY sub/dir2/ /sub/\nCOPY sub/dir1/f /sub/g\n",
        files: &[("sub/dir1/f", "one\n"), ("sub/dir1/g", "g1\n"), ("sub/dir2/f", "two\n"), ("sub/dir2/h", "h\n")],
        ..D
    },
    Case {
        name: "copy-chown-forms",
        from: "bk:testCopyChown + bk:testDockerfileAddChownExpand",
        dockerfile: r#"FROM @BB@
ARG grp=staff
ENV owner=app
COPY --chown=${owner}:${grp} a.txt /named/
COPY --chown=1001 a.txt /uid-only
COPY --chown=1001:1002 dir /numeric/
COPY --chown=app a.txt /user-only
ADD --chown=nobody:nogroup a.txt /added
"#,
        files: &[("a.txt", "a\n"), ("dir/x@0600", "x\n"), ("dir/sub/", "")],
        ..D
    },
    Case {
        name: "copy-chown-group-only",
        from: "BuildKit's readUser (no user part: uid 0, the named group's gid)",
        dockerfile: "FROM @BB@\nCOPY --chown=:50 a.txt /group-only\nCOPY --chown=:staff a.txt /group-name\n",
        files: &[("a.txt", "a\n")],
        ..D
    },
    Case {
        name: "copy-chown-create-dest",
        from: "bk:testCopyChownCreateDest",
        dockerfile: "FROM @BB@\nCOPY --chown=app:app a.txt /new/deep/dir/\nCOPY --chown=1000:1000 dir /other/deep\n",
        files: &[("a.txt", "a\n"), ("dir/x", "x\n")],
        ..D
    },
    Case {
        name: "copy-chown-existing-dir",
        from: "bk:testCopyChownExistingDir",
        dockerfile: r#"FROM @BB@
RUN mkdir -m 0777 /existing && chown 65534:65534 /existing && mkdir -p /existing/sub && chmod 0700 /existing/sub
COPY --chown=app:staff dir /existing/
COPY --chown=1000:1000 a.txt /existing/sub/
"#,
        files: &[("a.txt", "a\n"), ("dir/sub/b", "b\n"), ("dir/c", "c\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "copy-chmod-octal",
        from: "bk:testCopyChmod",
        dockerfile: r#"FROM @BB@
COPY --chmod=755 a.txt /exec
COPY --chmod=0400 dir /ro/
COPY --chown=app --chmod=640 a.txt /both
"#,
        files: &[("a.txt", "a\n"), ("dir/x", "x\n"), ("dir/sub/y", "y\n")],
        ..D
    },
    Case {
        name: "copy-chmod-special-bits-newer",
        from: "bk issue 3920, fixed by fsutil PR 168 (BuildKit 0.13): --chmod keeps setuid, setgid and sticky; docker 20.10 drops them",
        dockerfile: "FROM @BB@\nCOPY --chmod=7777 a.txt /all-bits\nCOPY --chmod=4755 a.txt /suid\n",
        files: &[("a.txt", "a\n")],
        expect: Expect::Newer {
            docker: Some("FROM @BB@\nCOPY a.txt /all-bits\nCOPY a.txt /suid\nRUN chmod 7777 /all-bits && chmod 4755 /suid\n"),
            kiln: &[("fs /all-bits", Want::File("7777 0:0", "a\n")), ("fs /suid", Want::File("4755 0:0", "a\n"))],
        },
        ..D
    },
    Case {
        name: "copy-from-stage-abs",
        from: "bk:testCopyFromAbsolute-like + bk:testMultiStageCaseInsensitive",
        dockerfile: r#"FROM @BB@ AS Build
RUN mkdir -p /out/sub && echo o > /out/o && echo s > /out/sub/s && chown -R 1000:50 /out
FROM @BB@
COPY --from=build /out/ /
COPY --from=BUILD /out /copied
COPY --from=0 /out/sub/s /s-by-index
COPY --from=build --chown=nobody /out/o /chowned
"#,
        ..D
    },
    Case {
        name: "copy-from-image",
        from: "bk:testMultiStageImplicitFrom",
        dockerfile: "FROM scratch\nCOPY --from=@IMPORT@ /etc/passwd /etc/passwd\nCOPY --from=@USR@ /bin/sh /sh\n",
        ..D
    },
    Case {
        name: "copy-from-scratch-stage",
        from: "bk:testCopyFromScratch-like",
        dockerfile: "FROM scratch AS s\nCOPY a.txt /a\nCOPY dir /d\nFROM @BB@\nCOPY --from=s / /out/\n",
        files: &[("a.txt", "a\n"), ("dir/x", "x\n")],
        ..D
    },
    Case {
        name: "copy-through-symlink-context",
        from: "bk:testCopyThroughSymlinkContext",
        dockerfile: "FROM scratch\nCOPY link/foo .\nCOPY link /via-link\n",
        files: &[("real/foo", "contents\n"), ("link", "-> real")],
        ..D
    },
    Case {
        name: "copy-through-symlink-multistage",
        from: "bk:testCopyThroughSymlinkMultiStage",
        dockerfile: r#"FROM @BB@ AS build
RUN mkdir -p /real && echo c > /real/foo && ln -s real /link && ln -s /real/foo /abs-file-link
FROM scratch
COPY --from=build /link/foo /foo
COPY --from=build /abs-file-link /copied-link
COPY --from=build /link /link-itself
"#,
        ..D
    },
    Case {
        name: "copy-dest-symlink-file",
        from: "buildah:bud/dest-symlink + bk:testSymlinkDestination",
        dockerfile: r#"FROM @BB@
RUN mkdir /data && ln -s /data /link-dir && ln -s missing-target /dangling && echo old > /data/f && ln -s /data/f /file-link
COPY a.txt /link-dir/
COPY a.txt /dangling
COPY a.txt /file-link
"#,
        files: &[("a.txt", "a\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "copy-symlinks-in-source",
        from: "bk:testCopyFollowAllSymlinks + buildah:bud/symlink",
        dockerfile: "FROM @BB@\nCOPY dir /dir\nCOPY dir/rel-link /single-rel\n",
        files: &[
            ("dir/f", "f\n"),
            ("dir/rel-link", "-> f"),
            ("dir/up-link", "-> ../outside"),
            ("outside", "o\n"),
        ],
        ..D
    },
    Case {
        name: "copy-modes-preserved",
        from: "common",
        dockerfile: "FROM @BB@\nCOPY . /ctx/\n",
        files: &[
            ("run.sh@0755", "#!/bin/sh\n"),
            ("private@0600", "p\n"),
            ("group@0664", "g\n"),
            ("d/@0700", ""),
            ("d/inner@0444", "i\n"),
            (".hidden", "h\n"),
        ],
        ..D
    },
    Case {
        name: "copy-link-newer",
        from: "bk:testCopyLink-like (COPY --link: same files as COPY)",
        dockerfile: "FROM @BB@\nCOPY --link a.txt /linked/\nCOPY --link --chown=app dir /linked-dir\n",
        files: &[("a.txt", "a\n"), ("dir/x", "x\n")],
        expect: Expect::Newer {
            docker: Some("FROM @BB@\nCOPY a.txt /linked/\nCOPY --chown=app dir /linked-dir\n"),
            kiln: &[("fs /linked/a.txt", Want::File("0644 0:0", "a\n")), ("fs /linked-dir/x", Want::File("0644 1000:1000", "x\n"))],
        },
        ..D
    },
    Case {
        name: "copy-parents-newer",
        from: "bk:testCopyParents",
        dockerfile: r#"FROM scratch
COPY --parents foo1/foo2/bar /
COPY --parents x/a.txt y/b.txt /out/
COPY --parents ./z/./keep/c.txt /pivot/
"#,
        files: &[("foo1/foo2/bar", "bar\n"), ("x/a.txt", "a\n"), ("y/b.txt", "b\n"), ("z/keep/c.txt", "c\n")],
        expect: Expect::Newer {
            docker: None,
            kiln: &[
                ("fs /foo1/foo2/bar", Want::File("0644 0:0", "bar\n")),
                ("fs /out/x/a.txt", Want::File("0644 0:0", "a\n")),
                ("fs /out/y/b.txt", Want::File("0644 0:0", "b\n")),
                ("fs /pivot/keep/c.txt", Want::File("0644 0:0", "c\n")),
                ("fs /pivot/z", Want::Absent),
            ],
        },
        ..D
    },
    Case {
        name: "copy-exclude-newer",
        from: "bk:testCopyExclude",
        dockerfile: "FROM scratch\nCOPY --exclude=*.log --exclude=skip/ . /app/\n",
        files: &[("keep.txt", "k\n"), ("drop.log", "d\n"), ("sub/also.log", "d\n"), ("sub/ok", "ok\n"), ("skip/x", "x\n")],
        expect: Expect::Newer {
            docker: None,
            kiln: &[
                ("fs /app/keep.txt", Want::File("0644 0:0", "k\n")),
                ("fs /app/sub/ok", Want::File("0644 0:0", "ok\n")),
                ("fs /app/drop.log", Want::Absent),
                // like .dockerignore, `*.log` is matched from the source's root only
                ("fs /app/sub/also.log", Want::File("0644 0:0", "d\n")),
                ("fs /app/skip", Want::Absent),
            ],
        },
        ..D
    },
    Case {
        name: "copy-chmod-symbolic-newer",
        from: "bk:testCopyChmodSymbolic (dockerfile 1.14)",
        dockerfile: "FROM scratch\nCOPY --chmod=u+x,go-r a.txt /a\nCOPY --chmod=u=rwX,go=rX dir /d\n",
        files: &[("a.txt", "a\n"), ("dir/x@0600", "x\n"), ("dir/sub/@0700", "")],
        expect: Expect::Newer {
            docker: None,
            kiln: &[
                ("fs /a", Want::File("0700 0:0", "a\n")),
                ("fs /d/x", Want::File("0644 0:0", "x\n")),
                ("fs /d/sub", Want::Line("dir 0755 0:0")),
            ],
        },
        ..D
    },
    // ---------------------------------------------------------------- merged-/usr base
    Case {
        name: "usr-copy-through-base-symlinks",
        from: "common (merged-/usr images: Debian 12+, Fedora)",
        dockerfile: r#"FROM @USR@
COPY tool /bin/mytool
COPY lib.so /lib/x86_64/
COPY pid /var/run/app.pid
COPY dir /sbin/
"#,
        files: &[("tool@0755", "#!/bin/sh\n"), ("lib.so", "so\n"), ("pid", "1\n"), ("dir/admin", "a\n")],
        ..D
    },
    Case {
        name: "usr-workdir-and-run",
        from: "common + buildah:bud/workdir-symlink",
        dockerfile: r#"FROM @USR@
WORKDIR /var/run/app
RUN echo here > here.txt && mkdir -p /lib/modules && touch /bin/added
COPY a.txt ./
"#,
        files: &[("a.txt", "a\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "usr-add-tar-through-symlinks",
        from: "common (ADD of a tar whose paths go through /bin and /lib symlinks)",
        dockerfile: "FROM @USR@\nADD rootfs.tar /\n",
        prepare: Some(prepare_rootfs_tar),
        ..D
    },
    Case {
        name: "usr-copy-from-stage-with-symlinks",
        from: "common",
        dockerfile: r#"FROM @USR@ AS src
RUN echo x > /lib/from-stage
FROM @BB@
COPY --from=src /lib/from-stage /copied
COPY --from=src /lib /lib-link
COPY --from=src /var/run/ /varrun/
"#,
        ..D
    },
    // ---------------------------------------------------------------- ADD
    Case {
        name: "add-archive-forms",
        from: "bk:testDockerfileAddArchive",
        dockerfile: r#"FROM @BB@
ADD t.tar /plain/
ADD t.tar.gz /gz
ADD t.tar.bz2 /bz2/
ADD t.tar.xz /xz/
ADD notreally.tar.gz /fake/
ADD t.tar /file-target
"#,
        prepare: Some(prepare_archives),
        ..D
    },
    Case {
        name: "add-archive-wildcard",
        from: "bk:testDockerfileAddArchiveWildcard",
        dockerfile: "FROM @BB@\nADD *.tar /dest\n",
        prepare: Some(prepare_archives),
        ..D
    },
    Case {
        name: "add-chmod-chown",
        from: "bk:testDockerfileAddChownExpand + buildah:bud/add-chmod",
        dockerfile: "FROM @BB@\nARG group=50\nENV owner=1000\nADD --chown=${owner}:${group} --chmod=750 a.txt /owned\n",
        files: &[("a.txt", "a\n")],
        ..D
    },
    Case {
        name: "add-tar-chown-newer",
        from: "bk file/unpack: mapArchiveHeaderOwner (an explicit --chown overrides the archive's owners)",
        // docker 20.10 keeps the archive's owners (1000:50, 0:0) on the extracted entries and
        // chowns only the directory it creates; current BuildKit gives every extracted entry the
        // --chown owner.
        dockerfile: "FROM @BB@\nADD --chown=app t.tar /extracted/\n",
        prepare: Some(prepare_archives),
        expect: Expect::Newer {
            docker: None,
            kiln: &[
                ("fs /extracted", Want::Line("dir 0755 1000:1000")),
                ("fs /extracted/pkg", Want::Line("dir 0750 1000:1000")),
                ("fs /extracted/pkg/data", Want::File("0640 1000:1000", "archived\n")),
                ("fs /extracted/pkg/link", Want::Line("symlink 0777 1000:1000 -> data")),
                ("fs /extracted/top", Want::File("0755 1000:1000", "top\n")),
            ],
        },
        ..D
    },
    Case {
        name: "add-dir-and-files",
        from: "common",
        dockerfile: "FROM @BB@\nADD dir /added-dir\nADD a.txt dir/ /multi/\n",
        files: &[("a.txt", "a\n"), ("dir/x", "x\n"), ("dir/sub/y@0600", "y\n")],
        ..D
    },
    // ---------------------------------------------------------------- .dockerignore
    Case {
        name: "dockerignore-exceptions",
        from: "bk:testDockerignore",
        dockerfile: "FROM @BB@\nCOPY . /ctx/\n",
        files: &[
            (".dockerignore", "# comment\n*.log\n!keep.log\n/top-only.txt\nbuild\n!build/dist/**\n**/*.tmp\nDockerfile\n"),
            ("a.log", "a\n"),
            ("keep.log", "k\n"),
            ("top-only.txt", "t\n"),
            ("sub/top-only.txt", "s\n"),
            ("sub/x.tmp", "x\n"),
            ("sub/deep/y.tmp", "y\n"),
            ("build/obj.o", "o\n"),
            ("build/dist/app", "app\n"),
            ("src/main.c", "c\n"),
        ],
        ..D
    },
    Case {
        name: "dockerignore-everything-but",
        from: "bk:testDockerignore (`*` then exceptions) + buildah:bud/dockerignore",
        dockerfile: "FROM @BB@\nCOPY . /ctx/\n",
        files: &[
            (".dockerignore", "*\n!src\nsrc/**/*.md\n!src/README.md\n"),
            ("other", "o\n"),
            ("src/a.c", "a\n"),
            ("src/README.md", "r\n"),
            ("src/doc/x.md", "x\n"),
            ("src/doc/y.txt", "y\n"),
        ],
        ..D
    },
    Case {
        name: "dockerignore-per-dockerfile",
        from: "bk:testDockerignoreOverride (<Dockerfile>.dockerignore wins)",
        dockerfile: "FROM @BB@\nCOPY . /ctx/\n",
        dockerfile_name: "build.Dockerfile",
        files: &[
            (".dockerignore", "a.txt\n"),
            ("build.Dockerfile.dockerignore", "b.txt\n"),
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
        ],
        ..D
    },
    Case {
        name: "dockerignore-copy-ignored-fails",
        from: "bk:testDockerignore (an ignored file is not in the context)",
        dockerfile: "FROM @BB@\nCOPY secret.txt /\n",
        files: &[(".dockerignore", "secret.txt\n"), ("secret.txt", "s\n")],
        expect: Expect::Fails { both: &["secret.txt", "not found"], kiln: &[] },
        ..D
    },
    // ---------------------------------------------------------------- multi-stage and targets
    Case {
        name: "stage-inherits-config",
        from: "common",
        dockerfile: r#"FROM @BB@ AS base
ENV FROM_BASE=1
WORKDIR /srv
USER app
ARG NOT_INHERITED=x
FROM base AS mid
RUN echo "${NOT_INHERITED:-empty} $FROM_BASE $(pwd) $(id -un)" > /tmp/seen
FROM mid
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "stage-unneeded-fails",
        from: "bk:testNoSnapshotLeak-like: stages the target does not need are not built",
        dockerfile: "FROM @BB@ AS broken\nRUN exit 1\nFROM @BB@\nRUN echo ok > /ok\n",
        layer_changes: true,
        ..D
    },
    Case {
        name: "target-first-stage",
        from: "bk:testTarget-like",
        dockerfile: "FROM @BB@ AS first\nLABEL stage=first\nFROM first AS second\nRUN exit 1\n",
        flags: &["--target", "first"],
        ..D
    },
    Case {
        name: "scratch-only-metadata",
        from: "bk:testScratchConfig-like",
        dockerfile: "FROM scratch\nENV PATH=/bin A=b\nCMD [\"/app\"]\nLABEL l=1\n",
        // docker 20.10 builds it but `docker save` refuses an image without layers ("empty
        // export - not implemented"), so the config BuildKit writes is spelled out here.
        expect: Expect::Newer {
            docker: None,
            kiln: &[
                ("layers", Want::Line("0")),
                ("config.Env", Want::Line(r#"["PATH=/bin","A=b"]"#)),
                ("config.Cmd", Want::Line(r#"["/app"]"#)),
                ("config.Labels", Want::Line(r#"{"l":"1"}"#)),
                ("fs /", Want::Absent),
            ],
        },
        ..D
    },
    Case {
        name: "scratch-with-copy",
        from: "buildah:bud/from-scratch",
        dockerfile: "FROM scratch\nCOPY a.txt /\nCOPY dir /dir\nWORKDIR /dir\n",
        files: &[("a.txt", "a\n"), ("dir/x", "x\n")],
        ..D
    },
    // ---------------------------------------------------------------- RUN
    Case {
        name: "run-exec-form",
        from: "docker TestBuildJSONEmptyRun-like + common",
        dockerfile: r#"FROM @BB@
USER app
RUN ["sh", "-c", "echo \"$HOME $USER $(id -u)\" > /tmp/home"]
USER root
RUN ["/bin/sh", "-c", "echo \"$0\" > /arg0"]
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "run-as-root-ids-newer",
        from: "bk:testUserAdditionalGids (CVE-2022-36109: the primary group is always a supplementary one)",
        // docker 20.10 prints `uid=0(root) gid=0(root)`; current BuildKit adds the primary group to
        // the supplementary ones, so `id` shows `groups=0(root)`. docker builds a stand-in that
        // writes that line.
        dockerfile: "FROM @BB@\nRUN id > /id && umask > /umask && echo \"$HOME\" > /home-env\n",
        expect: Expect::Newer {
            docker: Some(
                "FROM @BB@\nRUN echo 'uid=0(root) gid=0(root) groups=0(root)' > /id && umask > /umask && echo \"$HOME\" > /home-env\n",
            ),
            kiln: &[("fs /id", Want::File("0644 0:0", "uid=0(root) gid=0(root) groups=0(root)\n"))],
        },
        ..D
    },
    Case {
        name: "run-volume-dir-kept",
        from: "bk (BuildKit keeps RUN changes under a VOLUME path, unlike the classic builder)",
        dockerfile: "FROM @BB@\nRUN mkdir /vol\nVOLUME /vol\nRUN echo x > /vol/file && mkdir /vol/d\n",
        layer_changes: true,
        ..D
    },
    Case {
        name: "run-mount-cache-shared",
        from: "bk-mount:testCacheMountDefaultID + bk-mount:testMountRWCache",
        dockerfile: r#"FROM @BB@
RUN --mount=type=cache,target=/mycache echo first > /mycache/foo
RUN --mount=type=cache,target=/mycache cat /mycache/foo > /seen-default-id
RUN --mount=type=cache,id=other,target=/mycache ls /mycache > /seen-other-id
RUN --mount=type=cache,target=/mycache,readonly ls /mycache > /seen-readonly
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "run-mount-cache-user",
        from: "bk-mount:testCacheMountUser",
        dockerfile: r#"FROM @BB@
USER app
RUN --mount=type=cache,target=/home/app/.cache,uid=1000,gid=1000 touch /home/app/.cache/x && stat -c '%u:%g' /home/app/.cache > /tmp/cache-owner
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "run-mount-tmpfs-and-env-newer",
        from: "bk-mount:testMountTmpfs + bk-mount:testMountEnvAcrossStages",
        // docker 20.10 shows the expanded target in its progress but mounts the tmpfs at the
        // unexpanded `$MNT`; current BuildKit expands ENV in --mount options (testMountEnvAcrossStages).
        dockerfile: r#"FROM @BB@ AS first
ENV MNT=/mount-here
RUN --mount=type=tmpfs,target=$MNT touch $MNT/x && ls $MNT > /listed
FROM first
RUN --mount=type=tmpfs,target=${MNT} test ! -e ${MNT}/x && echo clean > /second
"#,
        layer_changes: true,
        expect: Expect::Newer {
            docker: Some(
                "FROM @BB@ AS first\nENV MNT=/mount-here\nRUN --mount=type=tmpfs,target=/mount-here touch $MNT/x && ls $MNT > /listed\nFROM first\nRUN --mount=type=tmpfs,target=/mount-here test ! -e ${MNT}/x && echo clean > /second\n",
            ),
            kiln: &[("fs /listed", Want::File("0644 0:0", "x\n")), ("fs /second", Want::File("0644 0:0", "clean\n")), ("fs /mount-here", Want::Line("dir 0755 0:0"))],
        },
        ..D
    },
    Case {
        name: "run-mount-bind-context",
        from: "bk-mount:testMountFromContext-like",
        dockerfile: r#"FROM @BB@
RUN --mount=target=/ctx cat /ctx/data.txt > /from-ctx
RUN --mount=type=bind,source=sub,target=/s,rw echo new > /s/added && ls /s > /listed
"#,
        files: &[("data.txt", "data\n"), ("sub/f", "f\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "run-mount-secret",
        from: "bk-mount:testSecretMounts-like",
        dockerfile: r#"FROM @BB@
RUN --mount=type=secret,id=mysecret cat /run/secrets/mysecret > /tmp/len-check && wc -c < /tmp/len-check > /len && rm /tmp/len-check
RUN --mount=type=secret,id=mysecret,target=/custom ls -l /custom | cut -c1-10 > /perm
"#,
        secrets: &[("mysecret", "hunter2\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "run-whiteouts-on-base",
        from: "common (apt-get clean style deletes from a base layer)",
        dockerfile: r#"FROM @BB@
RUN rm -rf /home/app /etc/group && rm /bin/vi
RUN mkdir -p /var/cache/x && echo y > /var/cache/x/y
RUN rm -rf /var/cache/x && mkdir /var/cache/x
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "usr-run-replace-symlink",
        from: "common (a RUN that turns a base symlink into a directory and back)",
        dockerfile: "FROM @USR@\nRUN rm /var/run && mkdir /var/run && echo x > /var/run/real\nRUN rm /sbin && ln -s bin /sbin\n",
        layer_changes: true,
        ..D
    },
    Case {
        name: "user-added-by-run",
        from: "common (a user added in the Dockerfile, then used by COPY --chown, USER and RUN)",
        dockerfile: r#"FROM @BB@
RUN echo 'svc:x:1500:1500:service:/srv:/bin/sh' >> /etc/passwd && echo 'svc:x:1500:' >> /etc/group && mkdir -p /srv && chown svc:svc /srv
COPY --chown=svc:svc a.txt /srv/
USER svc
RUN id -u > /srv/uid && echo "$HOME" > /srv/home
"#,
        files: &[("a.txt", "a\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "healthcheck-start-interval-newer",
        from: "bk:testHealthcheckStartInterval-like (HEALTHCHECK --start-interval, dockerfile 1.6)",
        // docker 20.10: `Unknown flag: start-interval`
        dockerfile: "FROM @BB@\nHEALTHCHECK --start-period=10s --start-interval=5s CMD true\n",
        expect: Expect::Newer {
            docker: None,
            kiln: &[("config.Healthcheck", Want::Line(r#"{"StartInterval":5000000000,"StartPeriod":10000000000,"Test":["CMD-SHELL","true"]}"#))],
        },
        ..D
    },
    // ---------------------------------------------------------------- parser edges people hit
    Case {
        name: "parser-crlf-line-endings",
        from: "common (a Dockerfile saved on Windows)",
        dockerfile: "FROM @BB@\r\nENV A=1 \\\r\n    B=2\r\nRUN echo \"$A$B\" > /ab\r\nLABEL x=y\r\nCMD [\"sh\"]\r\n",
        layer_changes: true,
        ..D
    },
    Case {
        name: "parser-utf8-bom",
        from: "bk parser (a leading UTF-8 byte order mark is dropped)",
        dockerfile: "\u{feff}FROM @BB@\nLABEL bom=stripped\n",
        ..D
    },
    Case {
        name: "parser-lowercase-and-continuations",
        from: "bk parser tests (instructions are case-insensitive; `\\` then blanks continues the line)",
        dockerfile: "from @BB@ as base\nenv A=1\nrun echo one \\   \n    two > /words\nlabel l=1 \\\n\n  m=2\nFROM base\n",
        layer_changes: true,
        ..D
    },
    Case {
        name: "label-escapes",
        from: "bk shell lexer (quotes and backslashes in LABEL/ENV)",
        dockerfile: r#"FROM @BB@
ENV HOME_REF=$HOME
LABEL a="line1\nline2" b='single\q $HOME' c=with\"quote d="dollar \$HOME" e="${HOME_REF}" f=a\ b\ c
ENV Q="it's" R='say "hi"' S=back\\slash
"#,
        ..D
    },
    Case {
        name: "build-arg-with-spaces",
        from: "common (--build-arg values with spaces and =)",
        dockerfile: "FROM @BB@\nARG MSG\nARG EQ\nLABEL msg=$MSG eq=\"$EQ\"\nRUN echo \"$MSG|$EQ\" > /args\n",
        flags: &["--build-arg", "MSG=hello world", "--build-arg", "EQ=a=b=c"],
        layer_changes: true,
        ..D
    },
    Case {
        name: "workdir-trailing-slash",
        from: "common",
        dockerfile: "FROM @BB@\nWORKDIR /a/b/\nWORKDIR c/\nWORKDIR /x//y/../z\n",
        ..D
    },
    Case {
        name: "copy-odd-modes",
        from: "common (unreadable, setgid and group-writable context files)",
        dockerfile: "FROM @BB@\nCOPY . /ctx/\n",
        files: &[
            ("none@0000", "n\n"),
            ("setgid@2755", "g\n"),
            ("writable@0666", "w\n"),
            ("closed/@0000", ""),
            ("sticky/@1777", ""),
            ("sticky/f", "f\n"),
        ],
        ..D
    },
    // ---------------------------------------------------------------- heredocs (newer than 20.10)
    Case {
        name: "heredoc-copy-expansion-newer",
        from: "bk-heredoc:testCopyHeredoc + testHeredocVarSubstitution",
        dockerfile: "# syntax=docker/dockerfile:1\nFROM @BB@\nARG name=world\nCOPY <<EOF /hello\nHello ${name}!\nEOF\nCOPY <<\"EOF\" /quoted\nHello ${name}!\nEOF\nCOPY --chmod=755 <<EOF /script.sh\n#!/bin/sh\necho hi\nEOF\n",
        expect: Expect::Newer {
            docker: Some("FROM @BB@\nRUN printf 'Hello world!\\n' > /hello && printf 'Hello ${name}!\\n' > /quoted && printf '#!/bin/sh\\necho hi\\n' > /script.sh && chmod 755 /script.sh\n"),
            kiln: &[
                ("fs /hello", Want::File("0644 0:0", "Hello world!\n")),
                ("fs /quoted", Want::File("0644 0:0", "Hello ${name}!\n")),
                ("fs /script.sh", Want::File("0755 0:0", "#!/bin/sh\necho hi\n")),
            ],
        },
        ..D
    },
    Case {
        name: "heredoc-run-multiple-newer",
        from: "bk-heredoc:testRunHeredoc + testHeredocIndent",
        dockerfile: "FROM @BB@\nRUN <<EOF\necho one > /one\necho two > /two\nEOF\nRUN cat <<A > /a && cat <<-B > /b\nalpha\nA\n\tbeta\nB\n",
        expect: Expect::Newer {
            docker: Some("FROM @BB@\nRUN echo one > /one && echo two > /two\nRUN echo alpha > /a && echo beta > /b\n"),
            kiln: &[
                ("fs /one", Want::File("0644 0:0", "one\n")),
                ("fs /two", Want::File("0644 0:0", "two\n")),
                ("fs /a", Want::File("0644 0:0", "alpha\n")),
                ("fs /b", Want::File("0644 0:0", "beta\n")),
            ],
        },
        ..D
    },
    Case {
        name: "run-network-flag-newer",
        from: "bk:testNetworkNone-like (RUN --network, dockerfile 1.3; 20.10 says \"Unknown flag: network\")",
        dockerfile: "FROM @BB@\nRUN --network=none echo isolated > /net-none\nRUN --network=default echo default > /net-default\n",
        layer_changes: true,
        expect: Expect::Newer {
            docker: Some("FROM @BB@\nRUN echo isolated > /net-none\nRUN echo default > /net-default\n"),
            kiln: &[("fs /net-none", Want::File("0644 0:0", "isolated\n")), ("fs /net-default", Want::File("0644 0:0", "default\n"))],
        },
        ..D
    },
    // ---------------------------------------------------------------- SOURCE_DATE_EPOCH (newer)
    Case {
        name: "source-date-epoch-build-arg-newer",
        from: "bk:testReproSourceDateEpoch",
        dockerfile: "FROM @BB@\nRUN echo x > /x\nENV A=1\n",
        flags: &["--build-arg", "SOURCE_DATE_EPOCH=1700000000"],
        times: true,
        expect: Expect::Newer {
            docker: None,
            kiln: &[
                ("created", Want::Line("\"2023-11-14T22:13:20Z\"")),
                ("history[04].created", Want::Line("\"2023-11-14T22:13:20Z\"")),
                ("history[05].created", Want::Line("\"2023-11-14T22:13:20Z\"")),
                ("fs /x", Want::File("0644 0:0", "x\n")),
            ],
        },
        ..D
    },
    // ---------------------------------------------------------------- more config, args, users
    Case {
        name: "env-replacement-everywhere",
        from: "docker TestBuildEnvironmentReplacement{User,Expose,Workdir,Volume,Env}",
        dockerfile: r#"FROM @BB@
ENV user=app port=8080 dir=/srv/app vol=/cache sig=SIGINT lbl=value
USER ${user}
EXPOSE ${port}/tcp $port/udp
WORKDIR ${dir}
VOLUME ${vol}
STOPSIGNAL $sig
LABEL key=${lbl} "${lbl}-as-key"=x
ENV copy=${user}:${port} unset=${nothing:-default} alt=${user:+set}
"#,
        ..D
    },
    Case {
        name: "arg-env-precedence",
        from: "bk:testArgEnvPrecedence-like (ENV wins over ARG of the same name)",
        dockerfile: r#"FROM @BB@
ENV NAME=from-env
ARG NAME=from-arg
ARG ONLYARG=arg-value
RUN echo "$NAME $ONLYARG" > /seen
ENV ONLYARG=${ONLYARG}-in-env
"#,
        flags: &["--build-arg", "NAME=from-cli"],
        layer_changes: true,
        ..D
    },
    Case {
        name: "builtin-platform-args",
        from: "bk:testBuiltinArgs-like (TARGETARCH & co. exist once declared)",
        dockerfile: r#"FROM --platform=$BUILDPLATFORM @BB@
ARG TARGETOS
ARG TARGETARCH
ARG TARGETPLATFORM
ARG BUILDARCH
ARG UNDECLARED_IS_EMPTY
RUN echo "$TARGETOS/$TARGETARCH $TARGETPLATFORM $BUILDARCH [$UNDECLARED_IS_EMPTY]" > /platform
LABEL arch=$TARGETARCH
"#,
        layer_changes: true,
        ..D
    },
    Case {
        name: "user-unknown-uid",
        from: "common (numeric USER not in /etc/passwd)",
        dockerfile: "FROM @BB@\nUSER 4242\nRUN id -u > /tmp/u && id -g > /tmp/g && echo \"$HOME\" > /tmp/h\n",
        layer_changes: true,
        ..D
    },
    Case {
        name: "user-then-copy-owner",
        from: "common (COPY after USER is still owned by root)",
        dockerfile: "FROM @BB@\nUSER app\nWORKDIR /home/app/work\nCOPY a.txt .\nCOPY --chown=app a.txt owned.txt\n",
        files: &[("a.txt", "a\n")],
        ..D
    },
    Case {
        name: "copy-dir-dot-contents",
        from: "common (`COPY dir/. dest/`, `COPY . .`)",
        dockerfile: "FROM @BB@\nCOPY dir/. /dot/\nWORKDIR /all\nCOPY . .\n",
        files: &[("dir/x", "x\n"), ("dir/sub/y", "y\n")],
        ..D
    },
    Case {
        name: "copy-from-stage-wildcard",
        from: "bk:testCopyWildcards (from a stage)",
        dockerfile: r#"FROM @BB@ AS build
RUN mkdir -p /out && echo a > /out/a.txt && echo b > /out/b.txt && echo c > /out/c.log
FROM @BB@
COPY --from=build /out/*.txt /txt/
COPY --from=build --chmod=600 /out/c.log /private.log
"#,
        ..D
    },
    Case {
        name: "copy-overwrite-changes-mode",
        from: "common (a later COPY replaces a file written by RUN)",
        dockerfile: "FROM @BB@\nRUN echo old > /f && chmod 4755 /f && chown 1000:50 /f\nCOPY f /f\n",
        files: &[("f", "new\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "onbuild-copy-context",
        from: "bk:testOnBuildCopy-like (an ONBUILD COPY runs in the child's context)",
        dockerfile: "FROM @BB@ AS parent\nONBUILD COPY a.txt /onbuild/\nFROM parent\nRUN cat /onbuild/a.txt > /seen\n",
        files: &[("a.txt", "a\n")],
        layer_changes: true,
        ..D
    },
    Case {
        name: "fail-target-missing",
        from: "bk:testTarget-like (unknown --target)",
        dockerfile: "FROM @BB@ AS only\nLABEL a=b\n",
        flags: &["--target", "nosuch"],
        // 20.10: `failed to reach build target nosuch in Dockerfile`
        expect: Expect::Fails { both: &["nosuch"], kiln: &["target stage \"nosuch\" could not be found"] },
        ..D
    },
    Case {
        name: "fail-secret-required-missing",
        from: "bk-mount:testSecretRequired-like",
        dockerfile: "FROM @BB@\nRUN --mount=type=secret,id=absent,required=true true\n",
        // 20.10 and current BuildKit: `secret absent not found: not found`
        expect: Expect::Fails { both: &["secret absent not found: not found"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-copy-absolute-symlink-source",
        from: "bk:testCopyFollowAllSymlinks (a context symlink is resolved inside the context)",
        dockerfile: "FROM @BB@\nCOPY abs-link /single-abs\n",
        files: &[("abs-link", "-> /etc/passwd")],
        // 20.10: `failed to compute cache key: "/etc/passwd" not found: not found`
        expect: Expect::Fails { both: &["not found"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-copy-outside-context",
        from: "common (`..` cannot leave the context)",
        dockerfile: "FROM @BB@\nCOPY ../outside.txt /\n",
        expect: Expect::Fails { both: &["outside.txt", "not found"], kiln: &[] },
        ..D
    },
    // ---------------------------------------------------------------- failures
    Case {
        name: "fail-run-exit-code",
        from: "bk:testInvalidCommand-like",
        dockerfile: "FROM @BB@\nRUN echo before && false\n",
        expect: Expect::Fails {
            both: &["exit code: 1"],
            kiln: &["process \"/bin/sh -c echo before && false\" did not complete successfully: exit code: 1"],
        },
        ..D
    },
    Case {
        name: "fail-run-exec-exit-code",
        from: "common",
        dockerfile: "FROM @BB@\nRUN [\"sh\", \"-c\", \"exit 3\"]\n",
        expect: Expect::Fails { both: &["exit code: 3"], kiln: &["did not complete successfully: exit code: 3"] },
        ..D
    },
    Case {
        name: "fail-unknown-instruction",
        from: "bk:testDockerfileInvalidInstruction",
        dockerfile: "FROM @BB@\nFNTRYPOINT [\"/bin/sh\"]\n",
        expect: Expect::Fails { both: &["unknown instruction: FNTRYPOINT"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-copy-missing-source",
        from: "bk:testCopyMissing-like",
        dockerfile: "FROM @BB@\nCOPY missing.txt /\n",
        expect: Expect::Fails { both: &["\"/missing.txt\"", "not found"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-copy-from-missing-path",
        from: "common",
        dockerfile: "FROM @BB@ AS a\nFROM @BB@\nCOPY --from=a /no/such/file /x\n",
        // 20.10: `lstat /var/lib/docker/…/merged/no/such/file: no such file or directory`
        expect: Expect::Fails { both: &["/no/such/file"], kiln: &["not found"] },
        ..D
    },
    Case {
        name: "copy-chown-unknown-user",
        from: "BuildKit's readUser: a name not in /etc/passwd or /etc/group is silently 0",
        dockerfile: "FROM @BB@\nCOPY --chown=nosuchuser a.txt /u\nCOPY --chown=app:nosuchgroup a.txt /g\n",
        files: &[("a.txt", "a\n")],
        ..D
    },
    Case {
        name: "fail-user-unknown-at-run",
        from: "bk:testUser (unknown user at RUN)",
        dockerfile: "FROM @BB@\nUSER ghost\nRUN true\n",
        expect: Expect::Fails { both: &["ghost"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-from-empty-arg",
        from: "bk:testArgDefaultExpansion (FROM with an empty ARG)",
        dockerfile: "ARG IMAGE\nFROM ${IMAGE}\n",
        expect: Expect::Fails { both: &["base name (${IMAGE}) should not be blank"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-env-without-value",
        from: "parser",
        dockerfile: "FROM @BB@\nENV ONLYNAME\n",
        expect: Expect::Fails { both: &["ENV must have two arguments"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-mount-type-invalid",
        from: "bk-mount:testMountInvalid",
        dockerfile: "FROM @BB@\nRUN --mount=type=invalid,target=/x true\n",
        expect: Expect::Fails { both: &["unsupported mount type \"invalid\""], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-bind-mount-readonly",
        from: "bk-mount:testMountRO-like",
        dockerfile: "FROM @BB@\nRUN --mount=type=bind,target=/m touch /m/x\n",
        expect: Expect::Fails { both: &["Read-only file system"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-circular-stage",
        from: "bk:testCircularDependency-like",
        dockerfile: "FROM @BB@ AS a\nCOPY --from=b /x /x\nFROM @BB@ AS b\nCOPY --from=a /y /y\n",
        expect: Expect::Fails { both: &["circular dependency detected on stage"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-no-from",
        from: "parser",
        dockerfile: "LABEL a=b\n",
        expect: Expect::Fails { both: &["no build stage in current context"], kiln: &[] },
        ..D
    },
    Case {
        name: "fail-chmod-invalid",
        from: "bk:testCopyChmod (invalid mode)",
        // docker 20.10 ignores a --chmod it cannot parse; current BuildKit rejects a numeric-looking
        // one with `invalid chmod parameter: '8888'. it should be octal string and between 0 and 07777`.
        dockerfile: "FROM @BB@\nCOPY --chmod=8888 a.txt /\n",
        files: &[("a.txt", "a\n")],
        expect: Expect::NewerFails { kiln: &["8888", "chmod"] },
        ..D
    },
    Case {
        name: "fail-check-error-newer",
        from: "bk:lint tests (FromAsCasing with check=error=true)",
        dockerfile: "# check=error=true\nFROM @BB@ as base\nRUN true\n",
        expect: Expect::NewerFails { kiln: &["lint violation", "FromAsCasing"] },
        ..D
    },
];

/// `t.tar`, `t.tar.gz`, `t.tar.bz2`, `t.tar.xz` (the same tree: a directory, a file owned by
/// 1000:50, a symlink) and `notreally.tar.gz` (not an archive).
fn prepare_archives(ctx: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, uid: u64, data: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(if uid == 0 { 0 } else { 50 });
        h.set_mtime(1_600_000_000);
        if kind == tar::EntryType::Symlink {
            h.set_size(0);
            b.append_link(&mut h, path, data).unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
    };
    add("pkg/", tar::EntryType::Directory, 0o750, 1000, "");
    add("pkg/data", tar::EntryType::Regular, 0o640, 1000, "archived\n");
    add("pkg/link", tar::EntryType::Symlink, 0o777, 0, "data");
    add("top", tar::EntryType::Regular, 0o755, 0, "top\n");
    let tar_bytes = b.into_inner().unwrap();
    std::fs::write(ctx.join("t.tar"), &tar_bytes).unwrap();
    for (name, tool) in [("t.tar.gz", "gzip"), ("t.tar.bz2", "bzip2"), ("t.tar.xz", "xz")] {
        let out = std::process::Command::new(tool)
            .arg("-c")
            .arg(ctx.join("t.tar"))
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(out.status.success(), "{tool} failed");
        std::fs::write(ctx.join(name), out.stdout).unwrap();
    }
    std::fs::write(ctx.join("notreally.tar.gz"), "just text\n").unwrap();
}

/// `rootfs.tar` with paths under `bin/`, `lib/` and `var/run/`, which are symlinks in `@USR@`.
fn prepare_rootfs_tar(ctx: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(ctx.join("rootfs.tar")).unwrap());
    for (path, kind, mode, data) in [
        ("bin/", tar::EntryType::Directory, 0o755, ""),
        ("bin/added-tool", tar::EntryType::Regular, 0o755, "#!/bin/sh\n"),
        ("lib/added.so", tar::EntryType::Regular, 0o644, "so\n"),
        ("var/run/added.pid", tar::EntryType::Regular, 0o644, "7\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
}
