//! Word expansion against BuildKit's shell lexer: its own test vectors (the `envVarTest` and
//! `wordsTest` data files and the cases of `lex_test.go`, re-expressed here as Rust tables),
//! then a table per operator, quoting and escape rules with both escape characters, the
//! lexer options, the limits, and a property test that no input panics or hangs.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kiln_builder::shell::{Env, ExpandErrorKind, Lexer, MAX_EXPANDED_LEN, MAX_NESTING_DEPTH};
use proptest::prelude::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs `(input, expected)` cases; `None` means BuildKit reports an error.
fn check_values(lexer: &Lexer, env: &dyn Env, cases: &[(&str, Option<&str>)]) {
    let mut failures = Vec::new();
    for &(input, expected) in cases {
        let got = lexer.process_word(input, env).map(|e| e.value);
        let ok = match (expected, &got) {
            (Some(want), Ok(value)) => want == value,
            (None, Err(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// BuildKit's `envVarTest`, lines for Unix (`A` and `U`), with its environment
/// `PWD=/home SHELL=bash KOREAN=한국어 NULL=`.
const ENV_VAR_TEST: &[(&str, Option<&str>)] = &[
    (r"hello", Some(r"hello")),
    (r"he'll'o", Some(r"hello")),
    (r"he'llo", None),
    (r"he\'llo", Some(r"he'llo")),
    (r"he\\'llo", None),
    (r"abc\tdef", Some(r"abctdef")),
    (r#""abc\tdef""#, Some(r"abc\tdef")),
    (r#""abc\\tdef""#, Some(r"abc\tdef")),
    (r"'abc\tdef'", Some(r"abc\tdef")),
    (r"hello\", Some(r"hello")),
    (r"hello\\", Some(r"hello\")),
    (r#""hello"#, None),
    (r#""hello\""#, None),
    (r#""hel'lo""#, Some(r"hel'lo")),
    (r"'hello", None),
    (r"'hello\'", Some(r"hello\")),
    (r"'hello\there'", Some(r"hello\there")),
    (r"'hello\\there'", Some(r"hello\\there")),
    (r#""''""#, Some(r"''")),
    (r"$.", Some(r"$.")),
    (r"$1", Some(r"")),
    (r"he$1x", Some(r"hex")),
    (r"he$.x", Some(r"he$.x")),
    (r"he$pwd.", Some(r"he.")),
    (r"he$PWD", Some(r"he/home")),
    (r"he\$PWD", Some(r"he$PWD")),
    (r"he\\$PWD", Some(r"he\/home")),
    (r#""he\$PWD""#, Some(r"he$PWD")),
    (r#""he\\$PWD""#, Some(r"he\/home")),
    (r"\${}", Some(r"${}")),
    (r"\${}aaa", Some(r"${}aaa")),
    (r"he\${}", Some(r"he${}")),
    (r"he\${}xx", Some(r"he${}xx")),
    (r"${}", None),
    (r"${}aaa", None),
    (r"he${}", None),
    (r"he${}xx", None),
    (r"he${hi}", Some(r"he")),
    (r"he${hi}xx", Some(r"hexx")),
    (r"he${PWD}", Some(r"he/home")),
    (r"he${.}", None),
    (r"he${XXX:-000}xx", Some(r"he000xx")),
    (r"he${PWD:-000}xx", Some(r"he/homexx")),
    (r"he${XXX:-$PWD}xx", Some(r"he/homexx")),
    (r"he${XXX:-${PWD:-yyy}}xx", Some(r"he/homexx")),
    (r"he${XXX:-${YYY:-yyy}}xx", Some(r"heyyyxx")),
    (r"he${XXX:YYY}", None),
    (r"he${XXX:+${PWD}}xx", Some(r"hexx")),
    (r"he${PWD:+${XXX}}xx", Some(r"hexx")),
    (r"he${PWD:+${SHELL}}xx", Some(r"hebashxx")),
    (r"he${XXX:+000}xx", Some(r"hexx")),
    (r"he${PWD:+000}xx", Some(r"he000xx")),
    (r"'he${XX}'", Some(r"he${XX}")),
    (r#""he${PWD}""#, Some(r"he/home")),
    (r#""he'$PWD'""#, Some(r"he'/home'")),
    (r#""$PWD""#, Some(r"/home")),
    (r"'$PWD'", Some(r"$PWD")),
    (r"'\$PWD'", Some(r"\$PWD")),
    (r#"'"hello"'"#, Some(r#""hello""#)),
    (r"he\$PWD", Some(r"he$PWD")),
    (r#""he\$PWD""#, Some(r"he$PWD")),
    (r"'he\$PWD'", Some(r"he\$PWD")),
    (r"he${PWD", None),
    (r"he${PWD:=000}xx", None),
    (r"he${PWD:+${PWD}:}xx", Some(r"he/home:xx")),
    (r"he${XXX:-\$PWD:}xx", Some(r"he$PWD:xx")),
    (r"he${XXX:-\${PWD}z}xx", Some(r"he${PWDz}xx")),
    (r"안녕하세요", Some(r"안녕하세요")),
    (r"안'녕'하세요", Some(r"안녕하세요")),
    (r"안'녕하세요", None),
    (r"안녕\'하세요", Some(r"안녕'하세요")),
    (r"안\\'녕하세요", None),
    (r"안녕\t하세요", Some(r"안녕t하세요")),
    (r#""안녕\t하세요""#, Some(r"안녕\t하세요")),
    (r"'안녕\t하세요", None),
    (r"안녕하세요\", Some(r"안녕하세요")),
    (r"안녕하세요\\", Some(r"안녕하세요\")),
    (r#""안녕하세요"#, None),
    (r#""안녕하세요\""#, None),
    (r#""안녕'하세요""#, Some(r"안녕'하세요")),
    (r"'안녕하세요", None),
    (r"'안녕하세요\'", Some(r"안녕하세요\")),
    (r"안녕$1x", Some(r"안녕x")),
    (r"안녕$.x", Some(r"안녕$.x")),
    (r"안녕$pwd.", Some(r"안녕.")),
    (r"안녕$PWD", Some(r"안녕/home")),
    (r"안녕\$PWD", Some(r"안녕$PWD")),
    (r"안녕\\$PWD", Some(r"안녕\/home")),
    (r"안녕\${}", Some(r"안녕${}")),
    (r"안녕\${}xx", Some(r"안녕${}xx")),
    (r"안녕${}", None),
    (r"안녕${}xx", None),
    (r"안녕${hi}", Some(r"안녕")),
    (r"안녕${hi}xx", Some(r"안녕xx")),
    (r"안녕${PWD}", Some(r"안녕/home")),
    (r"안녕${.}", None),
    (r"안녕${XXX:-000}xx", Some(r"안녕000xx")),
    (r"안녕${PWD:-000}xx", Some(r"안녕/homexx")),
    (r"안녕${XXX:-$PWD}xx", Some(r"안녕/homexx")),
    (r"안녕${XXX:-${PWD:-yyy}}xx", Some(r"안녕/homexx")),
    (r"안녕${XXX:-${YYY:-yyy}}xx", Some(r"안녕yyyxx")),
    (r"안녕${XXX:YYY}", None),
    (r"안녕${XXX:+${PWD}}xx", Some(r"안녕xx")),
    (r"안녕${PWD:+${XXX}}xx", Some(r"안녕xx")),
    (r"안녕${PWD:+${SHELL}}xx", Some(r"안녕bashxx")),
    (r"안녕${XXX:+000}xx", Some(r"안녕xx")),
    (r"안녕${PWD:+000}xx", Some(r"안녕000xx")),
    (r"'안녕${XX}'", Some(r"안녕${XX}")),
    (r#""안녕${PWD}""#, Some(r"안녕/home")),
    (r#""안녕'$PWD'""#, Some(r"안녕'/home'")),
    (r#"'"안녕"'"#, Some(r#""안녕""#)),
    (r"안녕\$PWD", Some(r"안녕$PWD")),
    (r#""안녕\$PWD""#, Some(r"안녕$PWD")),
    (r"'안녕\$PWD'", Some(r"안녕\$PWD")),
    (r"안녕${PWD", None),
    (r"안녕${PWD:=000}xx", None),
    (r"안녕${PWD:+${PWD}:}xx", Some(r"안녕/home:xx")),
    (r"안녕${XXX:-\$PWD:}xx", Some(r"안녕$PWD:xx")),
    (r"안녕${XXX:-\${PWD}z}xx", Some(r"안녕${PWDz}xx")),
    (r"$KOREAN", Some(r"한국어")),
    (r"안녕$KOREAN", Some(r"안녕한국어")),
    (r"${{aaa}", None),
    (r"${aaa}}", Some(r"}")),
    (r"${aaa", None),
    (r"${{aaa:-bbb}", None),
    (r"${aaa:-bbb}}", Some(r"bbb}")),
    (r"${aaa:-bbb", None),
    (r"${aaa:-bbb}", Some(r"bbb")),
    (r"${aaa:-${bbb:-ccc}}", Some(r"ccc")),
    (r"${aaa:-bbb ${foo}", None),
    (r"${aaa:-bbb {foo}", Some(r"bbb {foo")),
    (r"${:}", None),
    (r"${:-bbb}", None),
    (r"${:+bbb}", None),
];

/// The positional and special parameter lines of BuildKit's `envVarTest`: they are never set
/// in a Dockerfile, and each special parameter is one character long.
const SPECIAL_PARAMETER_TEST: &[(&str, Option<&str>)] = &[
    ("$1", Some("")),
    ("${1}", Some("")),
    ("${1:+bbb}", Some("")),
    ("${1:-bbb}", Some("bbb")),
    ("$2", Some("")),
    ("${2:-bbb}", Some("bbb")),
    ("$10", Some("")),
    ("${10}", Some("")),
    ("${10:+bbb}", Some("")),
    ("${10:-bbb}", Some("bbb")),
    ("$0", Some("")),
    ("${0:-bbb}", Some("bbb")),
    ("$@", Some("")),
    ("${@}", Some("")),
    ("${@:+bbb}", Some("")),
    ("${@:-bbb}", Some("bbb")),
    ("$@@@", Some("@@")),
    ("$@aaa", Some("aaa")),
    ("${@}aaa", Some("aaa")),
    (r#""$@""#, Some("")),
    (r#""${@:-bbb}""#, Some("bbb")),
    (r#""$@@@""#, Some("@@")),
    (r#""$@aaa""#, Some("aaa")),
    ("$*", Some("")),
    ("${*:-bbb}", Some("bbb")),
    ("$*aaa", Some("aaa")),
    ("$#", Some("")),
    ("${#}", Some("")),
    ("${#:-bbb}", Some("bbb")),
    ("$#aaa", Some("aaa")),
    ("$?", Some("")),
    ("${?:-bbb}", Some("bbb")),
    ("$-", Some("")),
    ("${-:-bbb}", Some("bbb")),
    ("$$", Some("")),
    ("$$$", Some("$")),
    ("${$:-bbb}", Some("bbb")),
    ("$!", Some("")),
    ("${!:-bbb}", Some("bbb")),
    ("$NULL", Some("")),
    ("${NULL:-bbb}", Some("bbb")),
    ("${NULL-bbb}", Some("")),
    ("${NULL:+bbb}", Some("")),
    ("${NULL+bbb}", Some("bbb")),
];

fn env_var_test_env() -> HashMap<String, String> {
    env(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")])
}

#[test]
fn buildkit_env_var_test() {
    check_values(&Lexer::new('\\'), &env_var_test_env(), ENV_VAR_TEST);
}

#[test]
fn buildkit_env_var_test_with_key_value_list_env() {
    // BuildKit runs the same file through `ProcessWord(word, []string{"K=V"})` as well.
    let list = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="];
    check_values(&Lexer::new('\\'), &list, ENV_VAR_TEST);
}

#[test]
fn buildkit_special_parameters() {
    check_values(&Lexer::new('\\'), &env_var_test_env(), SPECIAL_PARAMETER_TEST);
}

/// BuildKit's `wordsTest`: a line `ENV k=v` adds to the environment of the lines after it;
/// other lines are `input` and the words `ProcessWords` gives (`["error"]` for an error).
const WORDS_TEST: &[(&str, &[&str])] = &[
    ("hello", &["hello"]),
    ("hello${hi}bye", &["hellobye"]),
    ("ENV hi=hi", &[]),
    ("hello${hi}bye", &["hellohibye"]),
    ("ENV space=abc  def", &[]),
    ("hello${space}bye", &["helloabc", "defbye"]),
    (r#"hello"${space}"bye"#, &["helloabc  defbye"]),
    (r#"hello "${space}"bye"#, &["hello", "abc  defbye"]),
    ("ENV leading=  ab c", &[]),
    ("hello${leading}def", &["hello", "ab", "cdef"]),
    (r#"hello"${leading}" def"#, &["hello  ab c", "def"]),
    (r#"hello"${leading}""#, &["hello  ab c"]),
    ("hello${leading}", &["hello", "ab", "c"]),
    ("ENV trailing=ab c   ", &[]),
    ("hello${trailing}", &["helloab", "c"]),
    ("hello${trailing}d", &["helloab", "c", "d"]),
    (r#"hello"${trailing}"d"#, &["helloab c   d"]),
    (r#"hel"lo${trailing}""#, &["helloab c   "]),
    (r#"hello" there  ""#, &["hello there  "]),
    ("hello there     ", &["hello", "there"]),
    (r"hello\ there", &["hello there"]),
    (r#"hello" there"#, &["error"]),
    (r#"hello\" there"#, &["hello\"", "there"]),
    (r#"hello"\\there""#, &[r"hello\there"]),
    (r#"hello"\there""#, &[r"hello\there"]),
    (r"hello'\\there'", &[r"hello\\there"]),
    (r"hello'\there'", &[r"hello\there"]),
    ("hello'$there'", &["hello$there"]),
];

#[test]
fn buildkit_words_test() {
    let lexer = Lexer::new('\\');
    let mut envs: Vec<String> = Vec::new();
    for &(line, expected) in WORDS_TEST {
        if let Some(assignment) = line.strip_prefix("ENV ") {
            envs.push(assignment.to_string());
            continue;
        }
        let words = lexer.process_words(line.trim(), &envs).unwrap_or_else(|_| vec!["error".to_string()]);
        assert_eq!(words, expected, "input {line:?}");
    }
}

/// `TestProcessWithMatches` from BuildKit's `lex_test.go`: value, and which names were found
/// set (matched) or not (unmatched). `None` for the value means an error.
struct MatchCase {
    input: &'static str,
    env: &'static [(&'static str, &'static str)],
    expected: Option<&'static str>,
    matched: &'static [&'static str],
    unmatched: &'static [&'static str],
}

const XXX_AND_EMPTY_BAR: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];

const MATCH_CASES: &[MatchCase] = &[
    MatchCase { input: "x", env: &[("DUMMY", "dummy")], expected: Some("x"), matched: &[], unmatched: &[] },
    MatchCase {
        input: "x ${UNUSED}",
        env: &[("DUMMY", "dummy")],
        expected: Some("x "),
        matched: &[],
        unmatched: &["UNUSED"],
    },
    MatchCase { input: "x ${FOO}", env: &[("FOO", "y")], expected: Some("x y"), matched: &["FOO"], unmatched: &[] },
    MatchCase {
        input: "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
        env: XXX_AND_EMPTY_BAR,
        expected: Some("xxx  ccc"),
        matched: &["FOO", "BAR"],
        unmatched: &["BAZ"],
    },
    MatchCase {
        input: "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
        env: XXX_AND_EMPTY_BAR,
        expected: Some("xxx bbb ccc"),
        matched: &["FOO", "BAR"],
        unmatched: &["BAZ"],
    },
    MatchCase { input: "${FOO:-}", env: XXX_AND_EMPTY_BAR, expected: Some("xxx"), matched: &["FOO"], unmatched: &[] },
    MatchCase { input: "${FOO:-}", env: &[], expected: Some(""), matched: &[], unmatched: &["FOO"] },
    MatchCase {
        input: "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
        env: XXX_AND_EMPTY_BAR,
        expected: Some("aaa bbb "),
        matched: &["FOO", "BAR"],
        unmatched: &["BAZ"],
    },
    MatchCase {
        input: "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
        env: XXX_AND_EMPTY_BAR,
        expected: Some("aaa  "),
        matched: &["FOO", "BAR"],
        unmatched: &["BAZ"],
    },
    MatchCase { input: "${FOO?aaa}", env: XXX_AND_EMPTY_BAR, expected: Some("xxx"), matched: &["FOO"], unmatched: &[] },
    MatchCase { input: "${BAR?bbb}", env: XXX_AND_EMPTY_BAR, expected: Some(""), matched: &["BAR"], unmatched: &[] },
    MatchCase { input: "${BAZ?ccc}", env: XXX_AND_EMPTY_BAR, expected: None, matched: &[], unmatched: &["BAZ"] },
    MatchCase {
        input: "${FOO:?aaa}",
        env: XXX_AND_EMPTY_BAR,
        expected: Some("xxx"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase { input: "${BAR:?bbb}", env: XXX_AND_EMPTY_BAR, expected: None, matched: &[], unmatched: &[] },
    MatchCase { input: "${BAZ:?ccc}", env: XXX_AND_EMPTY_BAR, expected: None, matched: &[], unmatched: &[] },
    MatchCase { input: "${BAZ:?}", env: XXX_AND_EMPTY_BAR, expected: None, matched: &[], unmatched: &[] },
    MatchCase { input: "${FOO=aaa}", env: XXX_AND_EMPTY_BAR, expected: None, matched: &[], unmatched: &[] },
    MatchCase { input: "${FOO=:aaa}", env: XXX_AND_EMPTY_BAR, expected: None, matched: &[], unmatched: &[] },
    MatchCase { input: "${FOO=}", env: &[], expected: None, matched: &[], unmatched: &[] },
    MatchCase {
        input: r"${FOO#()[]{\}^$.\*\?|\\}",
        env: &[("FOO", r"()[]{}^$.*?|\x")],
        expected: Some("x"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase {
        input: r"${FOO%%\**}",
        env: &[("FOO", "xx**")],
        expected: Some("xx"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase { input: "${FOO#*x*y}", env: &[("FOO", "xxyy")], expected: Some("y"), matched: &["FOO"], unmatched: &[] },
    MatchCase { input: "${FOO#*}", env: &[("FOO", "xxyy")], expected: Some("xxyy"), matched: &["FOO"], unmatched: &[] },
    MatchCase {
        input: "${FOO#$BAR}",
        env: &[("FOO", "xxyy"), ("BAR", "x")],
        expected: Some("xyy"),
        matched: &["FOO", "BAR"],
        unmatched: &[],
    },
    MatchCase {
        input: "${FOO#$BAR}",
        env: &[("FOO", "xxyy"), ("BAR", "")],
        expected: Some("xxyy"),
        matched: &["FOO", "BAR"],
        unmatched: &[],
    },
    MatchCase { input: "${FOO#}", env: &[("FOO", "xxyy")], expected: Some("xxyy"), matched: &["FOO"], unmatched: &[] },
    MatchCase { input: "${FOO##*x}", env: &[("FOO", "xxyy")], expected: Some("yy"), matched: &["FOO"], unmatched: &[] },
    MatchCase { input: "${FOO##}", env: &[("FOO", "xxyy")], expected: Some("xxyy"), matched: &["FOO"], unmatched: &[] },
    MatchCase {
        input: r"${FOO#?\?}",
        env: &[("FOO", "???y")],
        expected: Some("?y"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase {
        input: "${ABC:-.}${FOO%x}${ABC:-.}",
        env: &[("FOO", "xxyy")],
        expected: Some(".xxyy."),
        matched: &["FOO"],
        unmatched: &["ABC"],
    },
    MatchCase {
        input: r"${FOO%%\**\*}",
        env: &[("FOO", "a***yy*")],
        expected: Some("a"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase { input: "${FOO%}", env: &[("FOO", "xxyy")], expected: Some("xxyy"), matched: &["FOO"], unmatched: &[] },
    MatchCase {
        input: "${FOO%%$BAR}",
        env: &[("FOO", "xxyy"), ("BAR", "")],
        expected: Some("xxyy"),
        matched: &["FOO", "BAR"],
        unmatched: &[],
    },
    MatchCase {
        input: "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        env: &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
        expected: Some("/foo.*/*.txt - /foo..*.txt"),
        matched: &["FOO", "NEEDLE"],
        unmatched: &[],
    },
    MatchCase {
        input: "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        env: &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
        expected: Some("/tmp/bar.txt - /bar.txt"),
        matched: &["FOO", "NEEDLE"],
        unmatched: &[],
    },
    MatchCase {
        input: "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        env: &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
        expected: Some("/foo/b/c.txt - /foo/c.txt"),
        matched: &["FOO", "NEEDLE", "REPLACEMENT"],
        unmatched: &[],
    },
    MatchCase {
        input: "${FOO/$NEEDLE/$REPLACEMENT}",
        env: &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
        expected: Some("https://google.de"),
        matched: &["FOO", "NEEDLE", "REPLACEMENT"],
        unmatched: &[],
    },
    MatchCase {
        input: r"${FOO//\//\/}",
        env: &[("FOO", "/tmp/foo.txt")],
        expected: Some(r"\/tmp\/foo.txt"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase {
        input: "${FOO/$BAR/ww}",
        env: &[("FOO", "xxyy"), ("BAR", "")],
        expected: Some("wwxxyy"),
        matched: &["FOO", "BAR"],
        unmatched: &[],
    },
    MatchCase { input: "${FOO//ww}", env: &[("FOO", "xxyy")], expected: None, matched: &[], unmatched: &[] },
    MatchCase { input: "${FOO//}", env: &[("FOO", "xxyy")], expected: None, matched: &[], unmatched: &[] },
    MatchCase {
        input: "${FOO///}",
        env: &[("FOO", "xxyy")],
        expected: Some("xxyy"),
        matched: &["FOO"],
        unmatched: &[],
    },
    MatchCase { input: "${FOO///}", env: &[], expected: Some(""), matched: &[], unmatched: &["FOO"] },
];

#[test]
fn buildkit_process_with_matches() {
    let lexer = Lexer::new('\\');
    for case in MATCH_CASES {
        let result = lexer.process_word(case.input, &env(case.env));
        match (case.expected, result) {
            (None, Err(_)) => {}
            (None, Ok(got)) => panic!("{:?}: expected an error, got {got:?}", case.input),
            (Some(_), Err(e)) => panic!("{:?}: {e}", case.input),
            (Some(want), Ok(got)) => {
                assert_eq!(got.value, want, "{:?}", case.input);
                assert_eq!(got.matched, names(case.matched), "matched names of {:?}", case.input);
                assert_eq!(got.unmatched, names(case.unmatched), "unmatched names of {:?}", case.input);
            }
        }
    }
}

#[test]
fn buildkit_mandatory_env_vars() {
    let lexer = Lexer::new('\\');
    let set = env(&[("VAR", "plain"), ("ARG", "x")]);
    let empty = env(&[("VAR", ""), ("ARG", "x")]);
    let unset = env(&[("ARG", "x")]);
    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";

    assert_eq!(lexer.process_word(no_empty, &set).unwrap().value, "plain");
    for env in [&empty, &unset] {
        let err = lexer.process_word(no_empty, env).unwrap_err();
        assert!(err.to_string().contains("message herex"), "{err}");
    }
    assert_eq!(lexer.process_word(no_unset, &set).unwrap().value, "plain");
    assert_eq!(lexer.process_word(no_unset, &empty).unwrap().value, "");
    let err = lexer.process_word(no_unset, &unset).unwrap_err();
    assert!(err.to_string().contains("message herex"), "{err}");
}

#[test]
fn buildkit_platform_release_name() {
    let lexer = Lexer::new('\\');
    let release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let mut vars = env(&[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]);
    assert_eq!(lexer.process_word(release, &vars).unwrap().value, "something-v1.2.3.linux-arm-v7.tar.gz");
    vars.insert("TARGETARCH".into(), "arm64".into());
    vars.insert("TARGETVARIANT".into(), String::new());
    assert_eq!(lexer.process_word(release, &vars).unwrap().value, "something-v1.2.3.linux-arm64.tar.gz");
    vars.remove("TARGETVARIANT");
    assert_eq!(lexer.process_word(release, &vars).unwrap().value, "something-v1.2.3.linux-arm64.tar.gz");
}

fn operator_env() -> HashMap<String, String> {
    env(&[
        ("SET", "value"),
        ("EMPTY", ""),
        ("FILE", "archive.tar.gz"),
        ("PATHS", "/usr/local/bin:/usr/bin"),
        ("SPACED", "a  b"),
        ("MULTILINE", "one\ntwo"),
        ("STAR", "*"),
    ])
}

/// Every operator against a set, an empty and an unset variable.
const OPERATOR_CASES: &[(&str, Option<&str>)] = &[
    ("$SET", Some("value")),
    ("${SET}", Some("value")),
    ("${SET}x", Some("valuex")),
    ("$SETx", Some("")),
    ("$SET$SET", Some("valuevalue")),
    ("$", Some("$")),
    ("a$", Some("a$")),
    ("$ a", Some("$ a")),
    ("$/", Some("$/")),
    // :- and -
    ("${SET:-d}", Some("value")),
    ("${EMPTY:-d}", Some("d")),
    ("${UNSET:-d}", Some("d")),
    ("${SET-d}", Some("value")),
    ("${EMPTY-d}", Some("")),
    ("${UNSET-d}", Some("d")),
    ("${UNSET:-}", Some("")),
    // :+ and +
    ("${SET:+a}", Some("a")),
    ("${EMPTY:+a}", Some("")),
    ("${UNSET:+a}", Some("")),
    ("${SET+a}", Some("a")),
    ("${EMPTY+a}", Some("a")),
    ("${UNSET+a}", Some("")),
    // :? and ?
    ("${SET:?m}", Some("value")),
    ("${EMPTY:?m}", None),
    ("${UNSET:?m}", None),
    ("${SET?m}", Some("value")),
    ("${EMPTY?m}", Some("")),
    ("${UNSET?m}", None),
    // # ## % %%
    ("${FILE#*.}", Some("tar.gz")),
    ("${FILE##*.}", Some("gz")),
    ("${FILE%.*}", Some("archive.tar")),
    ("${FILE%%.*}", Some("archive")),
    ("${FILE#a?c}", Some("hive.tar.gz")),
    ("${FILE#x}", Some("archive.tar.gz")),
    ("${FILE%.gz}", Some("archive.tar")),
    ("${FILE%%*}", Some("")),
    ("${FILE%*}", Some("archive.tar.gz")),
    ("${FILE##*}", Some("")),
    ("${FILE#\\*}", Some("archive.tar.gz")),
    ("${STAR#\\*}", Some("")),
    ("${UNSET#x}", Some("")),
    ("${EMPTY%x}", Some("")),
    ("${SET:#v}", Some("alue")),
    // BuildKit has no bracket expressions: `[` is literal.
    ("${FILE%[.]gz}", Some("archive.tar.gz")),
    ("${FILE#[a]}", Some("archive.tar.gz")),
    // Wildcards do not cross newlines (Go's `.`).
    ("${MULTILINE#*o}", Some("ne\ntwo")),
    ("${MULTILINE##*o}", Some("ne\ntwo")),
    ("${MULTILINE##*e}", Some("\ntwo")),
    ("${MULTILINE%%\n*}", Some("one")),
    // / and //
    ("${PATHS/:/;}", Some("/usr/local/bin;/usr/bin")),
    (r"${PATHS//\//|}", Some("|usr|local|bin:|usr|bin")),
    ("${PATHS/bin*/X}", Some("/usr/local/X")),
    ("${PATHS//u?r/U}", Some("/U/local/bin:/U/bin")),
    ("${PATHS/nomatch/X}", Some("/usr/local/bin:/usr/bin")),
    ("${SET//}", None),
    ("${SET//a/$STAR}", Some("v*lue")),
    ("${UNSET/a/b}", Some("")),
    ("${SET/#v/x}", Some("value")),
    // Operators BuildKit does not have.
    ("${#SET}", None),
    ("${SET:=x}", None),
    ("${SET=x}", None),
    ("${SET:1}", None),
    ("${SET:1:2}", None),
    ("${SET^^}", None),
    ("${!SET}", None),
    ("${SET x}", None),
    // Nesting.
    ("${SET:-${EMPTY:-${UNSET:-deep}}}", Some("value")),
    ("${UNSET:-${EMPTY:-${UNSET2:-deep}}}", Some("deep")),
    ("${SET:+${SET}-${SET}}", Some("value-value")),
    ("${FILE%.${UNSET:-gz}}", Some("archive.tar")),
    ("${UNSET:-'a  b'}", Some("a  b")),
    (r#"${UNSET:-"$SET  x"}"#, Some("value  x")),
    (r#""${UNSET:-"inner"}""#, Some("inner")),
    (r"${UNSET:-a\}b}", Some("a}b")),
    // Syntax errors.
    ("${", None),
    ("${SET", None),
    ("${SET:-", None),
    ("${SET:-x", None),
    ("${SET/a", None),
    ("${SET/a/b", None),
    ("${}", None),
    ("${:-x}", None),
    ("${{SET}}", None),
    (r"${FILE#\x}", None),
];

#[test]
fn every_operator() {
    check_values(&Lexer::new('\\'), &operator_env(), OPERATOR_CASES);
}

/// Quotes and escapes with the default escape character.
const BACKSLASH_CASES: &[(&str, Option<&str>)] = &[
    (r"a\ b", Some("a b")),
    (r"a\\b", Some(r"a\b")),
    (r"\$SET", Some("$SET")),
    (r"\${SET}", Some("${SET}")),
    (r#"\"a\""#, Some(r#""a""#)),
    (r"\'a\'", Some("'a'")),
    (r#""a\"b""#, Some(r#"a"b"#)),
    (r#""a\$SET""#, Some("a$SET")),
    (r#""a\\b""#, Some(r"a\b")),
    (r#""a\nb""#, Some(r"a\nb")),
    (r#""a`b""#, Some("a`b")),
    (r"'a\'", Some(r"a\")),
    (r"'a\nb'", Some(r"a\nb")),
    (r#"'"$SET"'"#, Some(r#""$SET""#)),
    (r#""'$SET'""#, Some("'value'")),
    ("a`b", Some("a`b")),
    (r"trailing\", Some("trailing")),
    (r#""unterminated\"#, None),
    (r#""unterminated"#, None),
    ("'unterminated", None),
    ("\"a b\"'c d'e\\ f", Some("a bc de f")),
];

#[test]
fn backslash_escape() {
    check_values(&Lexer::new('\\'), &operator_env(), BACKSLASH_CASES);
}

/// The same ideas with `# escape=``: the backslash is an ordinary character (Windows paths).
const BACKTICK_CASES: &[(&str, Option<&str>)] = &[
    (r"C:\path\to", Some(r"C:\path\to")),
    (r"C:\$SET", Some(r"C:\value")),
    ("a` b", Some("a b")),
    ("a``b", Some("a`b")),
    ("`$SET", Some("$SET")),
    ("`${SET}", Some("${SET}")),
    (r#""a`"b""#, Some(r#"a"b"#)),
    (r#""a`$SET""#, Some("a$SET")),
    (r#""a``b""#, Some("a`b")),
    (r#""a`nb""#, Some("a`nb")),
    (r#""a\""#, Some(r"a\")),
    (r#""a\"b"#, Some(r"a\b")),
    ("'a`'", Some("a`")),
    ("trailing`", Some("trailing")),
    ("${UNSET:-a`}b}", Some("a}b")),
    (r"${FILE%\.gz}", None),
    ("${FILE%.gz}", Some("archive.tar")),
];

#[test]
fn backtick_escape() {
    check_values(&Lexer::new('`'), &operator_env(), BACKTICK_CASES);
}

#[test]
fn words_split_on_unquoted_whitespace_only() {
    let lexer = Lexer::new('\\');
    let env = operator_env();
    let words = |text: &str| lexer.process_words(text, &env).unwrap();
    assert_eq!(words("8080 8443/tcp"), ["8080", "8443/tcp"]);
    assert_eq!(words("$SPACED \"$SPACED\" '$SPACED'"), ["a", "b", "a  b", "$SPACED"]);
    assert_eq!(words("a\\ b  c"), ["a b", "c"]);
    assert_eq!(words("\"\" a ''"), ["a"]);
    assert_eq!(words("  "), Vec::<String>::new());
    assert_eq!(words("${UNSET:-x y}"), ["x", "y"]);
    assert_eq!(words("\t$MULTILINE\n"), ["one", "two"]);
    // process_word keeps the spaces.
    assert_eq!(lexer.process_word("$SPACED c", &env).unwrap().value, "a  b c");
}

#[test]
fn set_unset_and_declared_without_value() {
    let lexer = Lexer::new('\\');
    let declared: HashMap<String, Option<String>> =
        [("ARG_ONLY".to_string(), None), ("EMPTY".to_string(), Some(String::new()))].into_iter().collect();
    let expanded = lexer.process_word("${ARG_ONLY-unset}/${EMPTY-unset}", &declared).unwrap();
    assert_eq!(expanded.value, "unset/");
    assert_eq!(expanded.matched, names(&["EMPTY"]));
    assert_eq!(expanded.unmatched, names(&["ARG_ONLY"]));
}

#[test]
fn referenced_names_include_unused_branches() {
    let lexer = Lexer::new('\\');
    let expanded = lexer.process_word("${SET:+$FILE}${UNSET:-$EMPTY}'$QUOTED'", &operator_env()).unwrap();
    assert_eq!(expanded.matched, names(&["SET", "FILE", "EMPTY"]));
    assert_eq!(expanded.unmatched, names(&["UNSET"]));
}

#[test]
fn error_messages_name_the_word_and_the_problem() {
    let lexer = Lexer::new('\\');
    let env = operator_env();
    let message = |word: &str| lexer.process_word(word, &env).unwrap_err().to_string();
    assert_eq!(message("${UNSET:?must be set}"), r#"failed to process "${UNSET:?must be set}": UNSET: must be set"#);
    assert_eq!(message("${EMPTY:?}"), r#"failed to process "${EMPTY:?}": EMPTY: is not allowed to be empty"#);
    assert_eq!(message("${UNSET?}"), r#"failed to process "${UNSET?}": UNSET: is not allowed to be unset"#);
    assert!(message("'abc").ends_with("unexpected end of statement while looking for matching single-quote"));
    assert!(message("\"abc").ends_with("unexpected end of statement while looking for matching double-quote"));
    assert!(message("${abc").ends_with("syntax error: missing '}'"));
    assert!(message("${abc/x").ends_with("syntax error: missing '/' in ${}"));
    assert!(message("${}").ends_with("syntax error: bad substitution"));
    assert!(message("${SET:=x}").ends_with("unsupported modifier (:=) in substitution"));
    assert!(message(r"${SET#\x}").ends_with(r"invalid pattern (\x) in substitution: invalid escape '\x'"));
    // BuildKit reports any failure that runs into the end of the word as the missing brace.
    assert!(message("${SET:-${UNSET:?x}").ends_with("syntax error: missing '}'"));
    assert!(message("${SET:-${UNSET:?x}}").ends_with("UNSET: x"));
}

#[test]
fn lexer_options() {
    let env = operator_env();
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    assert_eq!(
        lexer.process_word("$UNSET ${UNSET} ${UNSET:-x} ${UNSET//a/b} ${UNSET#p} $SET", &env).unwrap().value,
        "$UNSET ${UNSET} ${UNSET:-x} ${UNSET/a/b} ${UNSET#p} value"
    );

    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    assert_eq!(lexer.process_words(r#"'a b' "c $SET""#, &env).unwrap(), ["'a b'", "\"c value\""]);

    let mut lexer = Lexer::new('\\');
    lexer.raw_escapes = true;
    assert_eq!(lexer.process_word(r#"a\ b "c\"d""#, &env).unwrap().value, r#"a\ b c\"d"#);

    let mut lexer = Lexer::new('\\');
    lexer.skip_process_quotes = true;
    assert_eq!(lexer.process_word(r#"'$SET' "x""#, &env).unwrap().value, r#"'value' "x""#);
}

fn nested_default(levels: usize) -> String {
    format!("{}x{}", "${UNSET:-".repeat(levels), "}".repeat(levels))
}

#[test]
fn nesting_depth_is_limited() {
    let lexer = Lexer::new('\\');
    let env = operator_env();
    assert_eq!(lexer.process_word(&nested_default(MAX_NESTING_DEPTH), &env).unwrap().value, "x");
    let err = lexer.process_word(&nested_default(MAX_NESTING_DEPTH + 1), &env).unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::TooDeep);
    // Far deeper than the limit: still an error, not a stack overflow.
    let err = lexer.process_word(&nested_default(100_000), &env).unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::TooDeep);
    let quoted = format!("{}x{}", "${UNSET:-\"".repeat(5000), "\"}".repeat(5000));
    assert_eq!(lexer.process_word(&quoted, &env).unwrap_err().kind, ExpandErrorKind::TooDeep);
}

#[test]
fn expanded_size_is_limited() {
    let lexer = Lexer::new('\\');
    let big = "a".repeat(MAX_EXPANDED_LEN / 2 + 1);
    let env = env(&[("BIG", big.as_str()), ("SMALL", "ab")]);
    assert_eq!(lexer.process_word("$BIG", &env).unwrap().value.len(), big.len());
    assert_eq!(lexer.process_word("$BIG$BIG", &env).unwrap_err().kind, ExpandErrorKind::TooLarge);
    assert_eq!(lexer.process_word("${BIG:+$BIG}${BIG}", &env).unwrap_err().kind, ExpandErrorKind::TooLarge);
    assert_eq!(lexer.process_word("${BIG//a/aa}", &env).unwrap_err().kind, ExpandErrorKind::TooLarge);
    assert_eq!(lexer.process_word("${BIG//}", &env).unwrap_err().kind, ExpandErrorKind::MissingSlash);
    assert_eq!(lexer.process_word("${BIG///-}", &env).unwrap_err().kind, ExpandErrorKind::TooLarge);
}

#[test]
fn hostile_patterns_finish_quickly() {
    let lexer = Lexer::new('\\');
    let long = "a".repeat(100_000);
    let env = env(&[("LONG", long.as_str())]);
    let hostile = [
        format!("${{LONG#{}b}}", "*a".repeat(2000)),
        format!("${{LONG%%{}b}}", "*a".repeat(2000)),
        format!("${{LONG//{}b/x}}", "a*".repeat(2000)),
        "${LONG//a/b}".to_string(),
        "${LONG//?/b}".to_string(),
    ];
    for word in &hostile {
        let started = Instant::now();
        let result = lexer.process_word(word, &env);
        assert!(started.elapsed() < Duration::from_secs(20), "{} took {:?}", &word[..20], started.elapsed());
        match result {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind, ExpandErrorKind::PatternTooExpensive, "{}", &word[..20]),
        }
    }
}

const FRAGMENTS: &[&str] = &[
    "$", "{", "}", "${", "${A", "${B", "${U", ":", "-", "+", "?", "#", "%", "/", "//", "*", "\\", "`", "'", "\"", " ",
    "\n", "a", "x", "0", "@", "[", "]", "é", "\u{feff}", "\u{a0}", "$A", ":-", ":?", "##", "%%",
];

fn fragment_word() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn arbitrary_words_never_panic_and_finish(
        word in prop_oneof![fragment_word(), any::<String>()],
        backtick in any::<bool>(),
        raw_quotes in any::<bool>(),
        raw_escapes in any::<bool>(),
        skip_unset_env in any::<bool>(),
    ) {
        let mut lexer = Lexer::new(if backtick { '`' } else { '\\' });
        lexer.raw_quotes = raw_quotes;
        lexer.raw_escapes = raw_escapes;
        lexer.skip_unset_env = skip_unset_env;
        let env = env(&[("A", "a*b?c"), ("B", ""), ("C", "x y\nz")]);
        let started = Instant::now();
        let first = lexer.process(&word, &env);
        prop_assert!(started.elapsed() < Duration::from_secs(2));
        // Expansion is a pure function of word and environment.
        prop_assert_eq!(first, lexer.process(&word, &env));
    }
}

/// Found by the `shell_expand` fuzz target: nested `%` patterns over a 4 KiB value made the
/// matcher work for 0.4 s per word. It must stay an error well under that.
#[test]
fn nested_suffix_patterns_over_a_large_value_stay_cheap() {
    let text = include_str!("data/shell-expand-slow-pattern.txt");
    let mut env: std::collections::BTreeMap<String, Option<String>> = std::collections::BTreeMap::new();
    env.insert("BIG".into(), Some("x".repeat(4096)));
    for escape in ['\\', '`'] {
        let start = std::time::Instant::now();
        let lexer = Lexer::new(escape);
        let _ = lexer.process_word(text, &env);
        let _ = lexer.process_words(text, &env);
        // Debug builds are ~10x slower than release; 5 s leaves room for a loaded CI machine.
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
    }
}
