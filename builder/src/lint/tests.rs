//! BuildKit's own lint cases (`frontend/dockerfile/dockerfile_check_test.go`), ported as tables:
//! each Dockerfile with the (rule, line, message) findings BuildKit gives for it. A case runs in
//! both of BuildKit's modes: a build (only the stages the target needs) and a check (every
//! stage); where the two differ the case says so.

use std::collections::BTreeMap;

use super::*;
use crate::frontend::{BaseImageConfig, ImageConfigSource};

type Want<'a> = &'a [(&'a str, usize, &'a str)];

#[derive(Default)]
struct Opts<'a> {
    args: &'a [(&'a str, &'a str)],
    ignore: Option<&'a str>,
    target: Option<&'a str>,
    images: Option<&'a dyn ImageConfigSource>,
}

fn run(dockerfile: &str, all_stages: bool, opts: &Opts) -> Result<LintReport, LintError> {
    let parsed = crate::dockerfile::parse(dockerfile).expect("case parses");
    let ignore = opts.ignore.map(|text| IgnoreMatcher::parse(text, ".dockerignore").expect("valid .dockerignore"));
    let options = LintOptions {
        build_args: opts.args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        target: opts.target.map(str::to_string),
        all_stages,
        ignore: ignore.as_ref(),
        images: opts.images,
        ..LintOptions::default()
    };
    lint(&parsed, &options)
}

fn found(report: &LintReport) -> Vec<(String, usize, String)> {
    report.findings.iter().map(|f| (f.rule.name.to_string(), f.start_line, f.message.clone())).collect()
}

fn wanted(want: Want) -> Vec<(String, usize, String)> {
    let mut want: Vec<(String, usize, String)> =
        want.iter().map(|(r, l, m)| (r.to_string(), *l, m.to_string())).collect();
    want.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.2.cmp(&b.2)));
    want
}

/// The same findings in a build and in a check.
fn case(dockerfile: &str, opts: Opts, want: Want) {
    modes(dockerfile, opts, want, want);
}

fn modes(dockerfile: &str, opts: Opts, build: Want, check: Want) {
    for (all, want) in [(false, build), (true, check)] {
        let report = run(dockerfile, all, &opts).expect("valid check configuration");
        assert_eq!(found(&report), wanted(want), "all_stages={all}\n{dockerfile}");
    }
}

fn error_of(dockerfile: &str, opts: Opts) -> Option<String> {
    run(dockerfile, false, &opts).expect("valid check configuration").error
}

const FROM_AS: &str = "FromAsCasing";
const CASING: &str = "ConsistentInstructionCasing";

#[test]
fn rule_check_option() {
    let df = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts::default(), &[]);
    let df = "#check=skip=all;error=true\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts::default(), &[]);
    assert_eq!(error_of(df, Opts::default()), None);
    let df = "#check=skip=ConsistentInstructionCasing,FromAsCasing\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts::default(), &[]);
    let df =
        "#check=skip=ConsistentInstructionCasing,FromAsCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts::default(), &[]);
    assert_eq!(error_of(df, Opts::default()), None);
    let as_casing: Want = &[(FROM_AS, 2, "'as' and 'FROM' keywords' casing do not match")];
    let df = "#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts::default(), as_casing);
    assert_eq!(error_of(df, Opts::default()), None, "error is off by default");
    let df = "#check=skip=ConsistentInstructionCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts::default(), as_casing);
    assert_eq!(error_of(df, Opts::default()).as_deref(), Some("lint violation found for rules: FromAsCasing"));

    // The build arg replaces the directive.
    let over = [("BUILDKIT_DOCKERFILE_CHECK", "skip=ConsistentInstructionCasing;error=true")];
    let df = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n";
    case(df, Opts { args: &over, ..Opts::default() }, as_casing);
    assert_eq!(
        error_of(df, Opts { args: &over, ..Opts::default() }).as_deref(),
        Some("lint violation found for rules: FromAsCasing")
    );
    let df = "#check=error=true\nFROM scratch as base\ncopy Dockerfile .\n";
    let skip = [("BUILDKIT_DOCKERFILE_CHECK", "skip=all")];
    case(df, Opts { args: &skip, ..Opts::default() }, &[]);
    assert_eq!(error_of(df, Opts { args: &skip, ..Opts::default() }), None);
}

#[test]
fn malformed_check_configuration_is_buildkits_error() {
    let bad = run("# check=skip\nFROM scratch\n", false, &Opts::default()).unwrap_err();
    assert_eq!(bad.to_string(), "failed to parse check options: invalid check option \"skip\"");
    let bad = run("# check=error=yes\nFROM scratch\n", false, &Opts::default()).unwrap_err();
    assert_eq!(
        bad.to_string(),
        "failed to parse check options: failed to parse check option \"error=yes\": strconv.ParseBool: parsing \
         \"yes\": invalid syntax"
    );
    let args = [("BUILDKIT_DOCKERFILE_CHECK", "nope=1")];
    let bad = run("FROM scratch\n", false, &Opts { args: &args, ..Opts::default() }).unwrap_err();
    assert_eq!(bad.to_string(), "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"nope\"");
    // After the first space the value is a comment; a malformed comment above an instruction is ignored.
    case("# check=skip=all this is ignored\nFROM scratch as base\n", Opts::default(), &[]);
    case(
        "FROM scratch\n# check=bogus\nMAINTAINER me\n",
        Opts::default(),
        &[("MaintainerDeprecated", 3, "Maintainer instruction is deprecated in favor of using label")],
    );
}

#[test]
fn stage_name() {
    let df = "\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n# warning: 'as' should \
              match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\nFROM scratch AS base3\n";
    case(
        df,
        Opts::default(),
        &[
            ("StageNameCasing", 4, "Stage name 'BadStageName' should be lowercase"),
            (FROM_AS, 8, "'as' and 'FROM' keywords' casing do not match"),
        ],
    );
    let df = "\n# warning: 'AS' should match 'from' cmd casing.\n#\nfrom scratch AS base\n\nfrom scratch as base2\n";
    case(df, Opts::default(), &[(FROM_AS, 4, "'AS' and 'from' keywords' casing do not match")]);
}

#[test]
fn no_empty_continuation() {
    let df = "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n";
    case(df, Opts::default(), &[("NoEmptyContinuation", 6, "Empty continuation line")]);
}

#[test]
fn consistent_instruction_casing() {
    let msg = |c: &str, case: &str| format!("Command '{c}' should match the case of the command majority ({case})");
    let m = msg("From", "uppercase");
    case("\n# warning\n#\nFrom scratch as base\nFROM scratch AS base2\n", Opts::default(), &[(CASING, 4, &m)]);
    let m = msg("copy", "uppercase");
    case("\nFROM scratch\n# w\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n", Opts::default(), &[(CASING, 4, &m)]);
    let m = msg("frOM", "lowercase");
    case("\n# w\n#\nfrOM scratch as base\nfrom scratch as base2\n", Opts::default(), &[(CASING, 4, &m)]);
    let m = msg("COPY", "lowercase");
    case("\nfrom scratch\n# w\nCOPY Dockerfile /foo\ncopy Dockerfile /bar\n", Opts::default(), &[(CASING, 4, &m)]);
    let m = msg("from", "uppercase");
    let df = "\n# w\n#\nfrom scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\nCOPY Dockerfile /baz\n";
    case(df, Opts::default(), &[(CASING, 4, &m)]);
    let m = msg("FROM", "lowercase");
    let df = "\n# w\n#\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n";
    case(df, Opts::default(), &[(CASING, 4, &m)]);
    case("\nfrom scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\n", Opts::default(), &[]);
    case("\nFROM scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\n", Opts::default(), &[]);
    case("\nFROM alpine\nRUN <<'EOT'\nenv\nEOT\n", Opts::default(), &[]);
}

#[test]
fn duplicate_and_reserved_stage_names() {
    let m = "Duplicate stage name \"b\", stage names should be unique";
    case("\nFROM scratch AS b\nFROM scratch AS b\n", Opts::default(), &[("DuplicateStageName", 3, m)]);
    case("\nFROM scratch AS b1\nFROM scratch AS b2\n", Opts::default(), &[]);
    case(
        "\nFROM scratch AS scratch\nFROM scratch AS context\n",
        Opts::default(),
        &[
            ("ReservedStageName", 2, "Stage name should not use the same name as reserved stage \"scratch\""),
            ("ReservedStageName", 3, "Stage name should not use the same name as reserved stage \"context\""),
        ],
    );
    case("\nFROM scratch\nFROM scratch AS a\n", Opts::default(), &[]);
}

#[test]
fn json_args_recommended() {
    let m =
        |i: &str| format!("JSON arguments recommended for {i} to prevent unintended behavior related to OS signals");
    case("\nFROM scratch\nCMD mycommand\n", Opts::default(), &[("JSONArgsRecommended", 3, &m("CMD"))]);
    case("\nFROM scratch\nENTRYPOINT mycommand\n", Opts::default(), &[("JSONArgsRecommended", 3, &m("ENTRYPOINT"))]);
    case("\nFROM scratch\nSHELL [\"/usr/bin/customshell\"]\nCMD mycommand\n", Opts::default(), &[]);
    case("\nFROM scratch\nSHELL [\"/usr/bin/customshell\"]\nENTRYPOINT mycommand\n", Opts::default(), &[]);
    let df = "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nCMD mycommand\n";
    case(df, Opts::default(), &[]);
    let df = "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nENTRYPOINT mycommand\n";
    case(df, Opts::default(), &[]);
}

#[test]
fn maintainer_deprecated() {
    let m = "Maintainer instruction is deprecated in favor of using label";
    case("\nFROM scratch\nMAINTAINER me@example.org\n", Opts::default(), &[("MaintainerDeprecated", 3, m)]);
    case("\nFROM scratch\nLABEL org.opencontainers.image.authors=\"me@example.org\"\n", Opts::default(), &[]);
    case("\nFROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n", Opts::default(), &[]);
    case("\nFROM scratch\n# check=skip=JSONArgsRecommended\nENTRYPOINT mycommand\n", Opts::default(), &[]);
    case("\nFROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER me@example.org\n", Opts::default(), &[]);
}

#[test]
fn warnings_before_error() {
    let df = "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n";
    case(
        df,
        Opts::default(),
        &[
            ("StageNameCasing", 2, "Stage name 'BadStageName' should be lowercase"),
            ("MaintainerDeprecated", 3, "Maintainer instruction is deprecated in favor of using label"),
        ],
    );
}

#[test]
fn undeclared_arg_in_from() {
    case("\nARG base=scratch\nFROM $base\nCOPY Dockerfile .\n", Opts::default(), &[]);
    case(
        "\nARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n",
        Opts::default(),
        &[],
    );
    case("\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n", Opts::default(), &[]);
    case("\nARG DEBUG\nFROM scratch${DEBUG}\nCOPY Dockerfile .\n", Opts::default(), &[]);
    case("\nARG DEBUG\nFROM scra${DEBUG:-tch}\nCOPY Dockerfile .\n", Opts::default(), &[]);
    case("\nARG DEBUG=\"\"\nFROM scratch${DEBUG-@bogus}\nCOPY Dockerfile .\n", Opts::default(), &[]);
    let m = "FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)";
    case(
        "\nFROM --platform=$BULIDPLATFORM scratch\nCOPY Dockerfile .\n",
        Opts::default(),
        &[("UndefinedArgInFrom", 2, m)],
    );
    let df = "\nARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\nCOPY Dockerfile .\n\t";
    let m = "FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?)";
    case(df, Opts::default(), &[("UndefinedArgInFrom", 4, m)]);
    let df = "\nARG tag=latest\nFROM busybox:${tag}${version} AS b\nCOPY Dockerfile .\n";
    case(df, Opts::default(), &[("UndefinedArgInFrom", 3, "FROM argument 'version' is not declared")]);
}

#[test]
fn workdir_relative_path() {
    let m = "Relative workdir \"app/\" can have unexpected results if the base image changes";
    case("\nFROM scratch\nWORKDIR app/\n", Opts::default(), &[("WorkdirRelativePath", 3, m)]);
    case("\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n", Opts::default(), &[]);
    case("\nFROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n", Opts::default(), &[]);
}

#[test]
fn undefined_vars() {
    case("\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n", Opts::default(), &[]);
    case("\nFROM alpine AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n", Opts::default(), &[]);
    case("\nFROM alpine\nRUN echo $PATH\n", Opts::default(), &[]);
    let df = "\nFROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n";
    case(df, Opts::default(), &[("UndefinedVar", 3, "Usage of undefined variable '$foo'")]);
    let df = "\nFROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n\t";
    let m = "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)";
    case(df, Opts::default(), &[("UndefinedVar", 6, m)]);
    let m = "Usage of undefined variable '$PAHT' (did you mean $PATH?)";
    case("\nFROM alpine\nENV PATH=$PAHT:/tmp/bin\n\t\t", Opts::default(), &[("UndefinedVar", 3, m)]);
}

#[test]
fn all_targets_in_a_check() {
    let df = "\nFROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n";
    modes(
        df,
        Opts::default(),
        &[("UndefinedVar", 6, "Usage of undefined variable '$bar'")],
        &[
            ("UndefinedVar", 3, "Usage of undefined variable '$foo'"),
            ("UndefinedVar", 6, "Usage of undefined variable '$bar'"),
        ],
    );
    // With --target, a check too looks only at what the target needs.
    let report = run(df, true, &Opts { target: Some("first"), ..Opts::default() }).unwrap();
    assert_eq!(found(&report), wanted(&[("UndefinedVar", 3, "Usage of undefined variable '$foo'")]));
}

#[test]
fn multiple_instructions_disallowed() {
    let m = |i: &str| {
        format!("Multiple {i} instructions should not be used in the same stage because only the last one will be used")
    };
    let (e, c, h) = (m("ENTRYPOINT"), m("CMD"), m("HEALTHCHECK"));
    let rule = "MultipleInstructionsDisallowed";
    let df = "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myapp\"]\nCMD \
              [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n";
    case(df, Opts::default(), &[(rule, 3, &e), (rule, 5, &c), (rule, 7, &h)]);
    let df = "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nCOPY <<EOF \
              /a.txt\nHello, World!\nEOF\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD \
              [\"/myotherapp\"]\n";
    case(df, Opts::default(), &[(rule, 3, &e), (rule, 4, &c), (rule, 5, &h)]);
    let df = "\nFROM scratch AS a\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\n\nFROM a \
              AS b\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n";
    case(df, Opts::default(), &[]);
}

#[test]
fn legacy_key_value_format() {
    let env = "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format";
    let label = "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format";
    let rule = "LegacyKeyValueFormat";
    case("\nFROM scratch\nENV testkey value\nLABEL key value\n", Opts::default(), &[(rule, 3, env), (rule, 4, label)]);
    case("\nFROM scratch\nENV testkey=value\nLABEL key=value\n", Opts::default(), &[]);
    // Only a check sees the stage the target does not need.
    let df = "\nFROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n";
    modes(df, Opts::default(), &[], &[(rule, 5, env), (rule, 6, label)]);
    let df = "\nFROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n# \
              check=skip=LegacyKeyValueFormat\nLABEL key value\n";
    case(df, Opts::default(), &[]);
}

#[test]
fn redundant_target_platform() {
    let m =
        |v: &str| format!("Setting platform to predefined {v} in FROM is redundant as this is the default behavior");
    let rule = "RedundantTargetPlatform";
    case("\nFROM --platform=$TARGETPLATFORM scratch\n", Opts::default(), &[(rule, 2, &m("$TARGETPLATFORM"))]);
    case("\nFROM --platform=${TARGETPLATFORM} scratch\n", Opts::default(), &[(rule, 2, &m("${TARGETPLATFORM}"))]);
    case("\n# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n", Opts::default(), &[]);
}

#[test]
fn secrets_used_in_arg_or_env() {
    let df = "# check=skip=InvalidDefinitionDescription\n\nFROM scratch\nARG SECRET_PASSPHRASE\nENV SUPER_Secret=foo\nENV \
              password=bar secret=baz\nARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\nENV \
              git_key=\nENV PUBLIC_KEY=\nARG public_token\nARG SECRET_PASSPHRASE_FILE\nENV password_file=bar \
              secret_File=baz\nARG AUTH_MODULE_VERSION\n# check=skip=SecretsUsedInArgOrEnv // allow secret in \
              environment\nENV password=bar\n# check=skip=SecretsUsedInArgOrEnv // allow secret in arg\nARG password\n# \
              check=skip=all // is local to only this instruction\nENV alternate_password=bar\n# check=skip=all // \
              is local to only this instruction\nARG alternate_password\n";
    let m = |i: &str, k: &str| format!("Do not use ARG or ENV instructions for sensitive data ({i} \"{k}\")");
    let rule = "SecretsUsedInArgOrEnv";
    case(
        df,
        Opts::default(),
        &[
            (rule, 4, &m("ARG", "SECRET_PASSPHRASE")),
            (rule, 5, &m("ENV", "SUPER_Secret")),
            (rule, 6, &m("ENV", "password")),
            (rule, 6, &m("ENV", "secret")),
            (rule, 7, &m("ARG", "auth")),
            (rule, 7, &m("ARG", "super_duper_secret_token")),
            (rule, 8, &m("ENV", "apikey")),
            (rule, 9, &m("ENV", "git_key")),
        ],
    );
}

#[test]
fn invalid_default_arg_in_from() {
    let rule = "InvalidDefaultArgInFrom";
    let m = |b: &str| format!("Default value for ARG {b} results in empty or invalid base image name");
    let args = [("VERSION", "latest")];
    case(
        "\nARG VERSION\nFROM busybox:$VERSION\n",
        Opts { args: &args, ..Opts::default() },
        &[(rule, 3, &m("busybox:$VERSION"))],
    );
    let args = [("IMAGE", "busybox:latest")];
    case("\nARG IMAGE\nFROM $IMAGE\n", Opts { args: &args, ..Opts::default() }, &[(rule, 3, &m("$IMAGE"))]);
    let args = [("SFX", "box:latest")];
    case(
        "\nARG SFX=\"box:\"\nFROM busy${SFX}\n",
        Opts { args: &args, ..Opts::default() },
        &[(rule, 3, &m("busy${SFX}"))],
    );
    let args = [("VERSION", "latest")];
    case("\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n", Opts { args: &args, ..Opts::default() }, &[]);
    let args = [("BUSYBOX_VARIANT", "-musl")];
    case(
        "\nARG BUSYBOX_VARIANT=\"\"\nFROM busybox:stable${BUSYBOX_VARIANT}\n",
        Opts { args: &args, ..Opts::default() },
        &[],
    );
    case(
        "\n\tARG BUSYBOX_VARIANT\n\tFROM busybox:stable${BUSYBOX_VARIANT}\n\t",
        Opts { args: &args, ..Opts::default() },
        &[],
    );
}

#[test]
fn from_platform_flag_const_disallowed() {
    let m = "FROM --platform flag should not use constant value \"linux/amd64\"";
    case("\nFROM --platform=linux/amd64 scratch\n", Opts::default(), &[("FromPlatformFlagConstDisallowed", 2, m)]);
    case("\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n", Opts::default(), &[]);
    case("\nFROM --platform=linux/amd64 scratch AS linux\n", Opts::default(), &[]);
}

#[test]
fn copy_ignored_files() {
    let rule = "CopyIgnoredFile";
    let ignore = Some("\nDockerfile\n");
    let want: Want = &[
        (rule, 3, "Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore"),
        (rule, 4, "Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore"),
    ];
    case("\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n", Opts { ignore, ..Opts::default() }, want);
    let df = "# check=skip=CopyIgnoredFile\n\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n";
    case(df, Opts { ignore, ..Opts::default() }, &[]);
    let df = "\nFROM scratch AS base\nCOPY Dockerfile /foobar\nADD Dockerfile /windy\n\nFROM base\nCOPY --from=base \
              /foobar /Dockerfile\n";
    case(df, Opts { ignore: Some("\nfoobar\n"), ..Opts::default() }, &[]);
    let ignore = Some("\n**\n!Dockerfile\n");
    case("\nFROM scratch\nCOPY ./Dockerfile .\n", Opts { ignore, ..Opts::default() }, &[]);
    case("\nFROM scratch\nCOPY . .\n\t", Opts { ignore, ..Opts::default() }, &[]);
    // The context root itself.
    case("\nFROM scratch\nCOPY . .\n", Opts { ignore: Some("\n.*\n"), ..Opts::default() }, &[]);
    let m = "Attempting to Copy file \".\" that is excluded by .dockerignore";
    case("\nFROM scratch\nCOPY . .\n", Opts { ignore: Some("\n*\n"), ..Opts::default() }, &[(rule, 3, m)]);
    // ./x is cleaned to x, and a URL for ADD is not a context file.
    let m = "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore";
    let df = "FROM scratch\nCOPY ./secret.txt /\nADD https://example.com/secret.txt /\n";
    case(df, Opts { ignore: Some("secret.txt\n"), ..Opts::default() }, &[(rule, 2, m)]);
}

#[test]
fn definition_description_is_experimental() {
    let df =
        "# check=skip=all;experimental=InvalidDefinitionDescription\n# foo this is the foo\nARG foo=bar\n\n# base \
              this is the base image\nFROM scratch AS base\n\n# version this is the version number\nARG \
              version=latest\n\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n\n# comment for \
              something other than ARG or FROM\nCOPY Dockerfile .\n";
    case(df, Opts::default(), &[]);
    let df = "# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n# BasE this is \
              the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a \
              bad comment\nARG foo=baz bar=qux baz=quux\n";
    let rule = "InvalidDefinitionDescription";
    case(
        df,
        Opts::default(),
        &[
            (rule, 3, "Comment for ARG should follow the format: `# foo <description>`"),
            (rule, 5, "Comment for FROM should follow the format: `# base <description>`"),
            (rule, 7, "Comment for ARG should follow the format: `# version <description>`"),
            (rule, 9, "Comment for ARG should follow the format: `# <arg_key> <description>`"),
        ],
    );
    // Off unless enabled.
    case("# bar this is the bar\nARG foo=bar\nFROM scratch\n", Opts::default(), &[]);
}

#[test]
fn expose_rules() {
    let df = "\nFROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n";
    let rule = "ExposeProtoCasing";
    case(
        df,
        Opts::default(),
        &[
            (rule, 3, "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase"),
            (rule, 3, "Defined protocol '8080/TCP' in EXPOSE instruction should be lowercase"),
        ],
    );
    let df = "\nFROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n";
    let m = |p: &str| format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{p}'");
    let rule = "ExposeInvalidFormat";
    case(
        df,
        Opts::default(),
        &[(rule, 3, &m("127.0.0.1:80:80")), (rule, 3, &m("[::1]:8080:8080")), (rule, 3, &m("5000:5000"))],
    );
}

/// An image source that has every image, built for one platform.
struct OnePlatform(&'static str);

impl ImageConfigSource for OnePlatform {
    fn base_config(&self, _reference: &str, _platform: &str) -> Result<BaseImageConfig, String> {
        Ok(BaseImageConfig {
            env: vec!["PATH=/bin".to_string(), "FROM_IMAGE=1".to_string()],
            platform: Some(self.0.to_string()),
            ..BaseImageConfig::default()
        })
    }
}

#[test]
fn base_image_platform_mismatch_and_base_environment() {
    let images = OnePlatform("linux/arm64");
    let df = "\nFROM registry.test/buildkit/testbaseimageplatform:latest\nENV foo=bar\n\t";
    let m = "Base image registry.test/buildkit/testbaseimageplatform:latest was pulled with platform \"linux/arm64\", \
             expected \"linux/amd64\" for current build";
    case(df, Opts { images: Some(&images), ..Opts::default() }, &[("InvalidBaseImagePlatform", 2, m)]);
    let same = OnePlatform("linux/amd64");
    case(df, Opts { images: Some(&same), ..Opts::default() }, &[]);
    // The base image's environment counts as defined.
    case("FROM img\nCOPY $FROM_IMAGE /\n", Opts { images: Some(&same), ..Opts::default() }, &[]);
    case(
        "FROM img\nCOPY $FROM_IMAGE /\n",
        Opts::default(),
        &[("UndefinedVar", 2, "Usage of undefined variable '$FROM_IMAGE'")],
    );
}

#[test]
fn error_lists_each_rule_once_in_the_order_found() {
    let df = "# check=error=true\nFROM scratch as base\nMAINTAINER a\nMAINTAINER b\nFROM scratch as other\n";
    assert_eq!(
        error_of(df, Opts::default()).as_deref(),
        Some("lint violation found for rules: FromAsCasing, MaintainerDeprecated")
    );
}

#[test]
fn ten_megabyte_dockerfile_is_linted_quickly() {
    // One big stage (ENV, ARG, COPY and RUN lines with variables), then a chain of stages.
    let mut df = String::from("FROM scratch AS base\n");
    let padding = "x".repeat(400);
    let mut i = 0;
    while df.len() < 10 * 1024 * 1024 {
        df.push_str(&format!(
            "ENV VAR_{i}=value_{i} OTHER_{i}=$VAR_{i}\nARG A_{i}=x\nCOPY src_$A_{i} /dst/$UNDEFINED_{i}\nRUN echo \
             $VAR_{i} {padding}\n"
        ));
        i += 1;
    }
    let stages = 2000;
    for s in 0..stages {
        df.push_str(&format!("FROM base AS s{s}\nENV S_{s}=1\nCMD x\n"));
    }
    assert!(df.len() > 10 * 1024 * 1024 && df.len() < crate::dockerfile::MAX_FILE_BYTES);
    let parsed = crate::dockerfile::parse(&df).expect("parses");
    let started = std::time::Instant::now();
    let report = lint(&parsed, &LintOptions { all_stages: true, ..LintOptions::default() }).unwrap();
    let took = started.elapsed();
    eprintln!("linted {} bytes, {} findings, in {took:?}", df.len(), report.findings.len());
    // `ENV A=1 B=$A` expands B with the environment before the line (BuildKit's semantics): both
    // `$VAR_i` there and `$UNDEFINED_i` are undefined.
    assert_eq!(report.findings.iter().filter(|f| f.rule.name == "UndefinedVar").count(), 2 * i);
    assert_eq!(report.findings.iter().filter(|f| f.rule.name == "JSONArgsRecommended").count(), stages);
    assert!(took.as_secs_f64() < if cfg!(debug_assertions) { 20.0 } else { 3.0 }, "linting took {took:?}");
}

/// Counts lookups.
struct Counting(std::sync::atomic::AtomicUsize);

impl ImageConfigSource for Counting {
    fn base_config(&self, reference: &str, _platform: &str) -> Result<BaseImageConfig, String> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if reference == "missing" {
            return Err("no such image".to_string());
        }
        Ok(BaseImageConfig::default())
    }
}

#[test]
fn cached_images_ask_once_per_reference_and_platform() {
    let inner = Counting(std::sync::atomic::AtomicUsize::new(0));
    let cached = CachedImages::new(&inner);
    for _ in 0..3 {
        assert!(cached.base_config("busybox", "linux/amd64").is_ok());
        assert!(cached.base_config("missing", "linux/amd64").is_err());
    }
    assert!(cached.base_config("busybox", "linux/arm64").is_ok());
    assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// Every Dockerfile of the shared conformance corpus (DESIGN.md §4) lints without a panic, in a
/// check and in a build; skipped where the corpus is not present.
#[test]
fn conformance_corpus_lints_without_panicking() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/dockerfiles");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: no corpus at {}", dir.display());
        return;
    };
    let mut files = 0;
    let mut findings = 0;
    let mut stack: Vec<std::path::PathBuf> = entries.flatten().map(|e| e.path()).collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let Ok(parsed) = crate::dockerfile::parse_bytes(&bytes) else { continue };
        files += 1;
        for all_stages in [false, true] {
            if let Ok(report) = lint(&parsed, &LintOptions { all_stages, ..LintOptions::default() }) {
                findings += report.findings.len();
            }
        }
    }
    eprintln!("linted {files} Dockerfiles, {findings} findings");
    assert!(files > 100, "the corpus has Dockerfiles");
}

#[test]
fn a_platform_list_is_checked_for_its_first_platform() {
    let df = "FROM --platform=$TARGETPLATFORM scratch\nCOPY $X /\n";
    let parsed = crate::dockerfile::parse(df).unwrap();
    let options = LintOptions { platform: Some("linux/arm64,linux/amd64".into()), ..LintOptions::default() };
    let report = lint(&parsed, &options).unwrap();
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.name).collect();
    assert_eq!(rules, ["RedundantTargetPlatform", "UndefinedVar"]);
}
