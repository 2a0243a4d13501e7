//! BuildKit's build-check rules: names, descriptions, documentation links and message texts.
//!
//! Users' tools match on these strings (CI greps, `# check=skip=` lists), so they are BuildKit's
//! own (`frontend/dockerfile/linter/ruleset.go`), word for word. Each message function builds the
//! one-line detail of a finding.

/// One rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    /// Empty for rules without a documentation page (InvalidBaseImagePlatform).
    pub url: &'static str,
    /// Off unless `# check=experimental=NAME` (or `all`) enables it; `skip=all` does not turn it off.
    pub experimental: bool,
}

const fn rule(name: &'static str, description: &'static str, url: &'static str) -> Rule {
    Rule { name, description, url, experimental: false }
}

pub const STAGE_NAME_CASING: Rule = rule(
    "StageNameCasing",
    "Stage names should be lowercase",
    "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
);
pub const FROM_AS_CASING: Rule = rule(
    "FromAsCasing",
    "The 'as' keyword should match the case of the 'from' keyword",
    "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
);
pub const NO_EMPTY_CONTINUATION: Rule = rule(
    "NoEmptyContinuation",
    "Empty continuation lines will become errors in a future release",
    "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
);
pub const CONSISTENT_INSTRUCTION_CASING: Rule = rule(
    "ConsistentInstructionCasing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
);
pub const DUPLICATE_STAGE_NAME: Rule = rule(
    "DuplicateStageName",
    "Stage names should be unique",
    "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
);
pub const RESERVED_STAGE_NAME: Rule = rule(
    "ReservedStageName",
    "Reserved words should not be used as stage names",
    "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
);
pub const JSON_ARGS_RECOMMENDED: Rule = rule(
    "JSONArgsRecommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
);
pub const MAINTAINER_DEPRECATED: Rule = rule(
    "MaintainerDeprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
);
pub const UNDEFINED_ARG_IN_FROM: Rule = rule(
    "UndefinedArgInFrom",
    "FROM command must use declared ARGs",
    "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
);
pub const WORKDIR_RELATIVE_PATH: Rule = rule(
    "WorkdirRelativePath",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the \
     base image changes",
    "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
);
pub const UNDEFINED_VAR: Rule = rule(
    "UndefinedVar",
    "Variables should be defined before their use",
    "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
);
pub const MULTIPLE_INSTRUCTIONS_DISALLOWED: Rule = rule(
    "MultipleInstructionsDisallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
);
pub const LEGACY_KEY_VALUE_FORMAT: Rule = rule(
    "LegacyKeyValueFormat",
    "Legacy key/value format with whitespace separator should not be used",
    "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
);
pub const INVALID_BASE_IMAGE_PLATFORM: Rule =
    rule("InvalidBaseImagePlatform", "Base image platform does not match expected target platform", "");
pub const REDUNDANT_TARGET_PLATFORM: Rule = rule(
    "RedundantTargetPlatform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
);
pub const SECRETS_USED_IN_ARG_OR_ENV: Rule = rule(
    "SecretsUsedInArgOrEnv",
    "Sensitive data should not be used in the ARG or ENV commands",
    "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
);
pub const INVALID_DEFAULT_ARG_IN_FROM: Rule = rule(
    "InvalidDefaultArgInFrom",
    "Default value for global ARG results in an empty or invalid base image name",
    "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
);
pub const FROM_PLATFORM_FLAG_CONST_DISALLOWED: Rule = rule(
    "FromPlatformFlagConstDisallowed",
    "FROM --platform flag should not use a constant value",
    "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
);
pub const COPY_IGNORED_FILE: Rule = rule(
    "CopyIgnoredFile",
    "Attempting to Copy file that is excluded by .dockerignore",
    "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/",
);
pub const INVALID_DEFINITION_DESCRIPTION: Rule = Rule {
    name: "InvalidDefinitionDescription",
    description: "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. \
                  If this is not intended to be a description comment, add an empty line or comment between the \
                  instruction and the comment.",
    url: "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/",
    experimental: true,
};
pub const EXPOSE_PROTO_CASING: Rule = rule(
    "ExposeProtoCasing",
    "Protocol in EXPOSE instruction should be lowercase",
    "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
);
pub const EXPOSE_INVALID_FORMAT: Rule = rule(
    "ExposeInvalidFormat",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a \
     future release",
    "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
);

/// Every rule, in BuildKit's order.
pub const ALL: &[&Rule] = &[
    &STAGE_NAME_CASING,
    &FROM_AS_CASING,
    &NO_EMPTY_CONTINUATION,
    &CONSISTENT_INSTRUCTION_CASING,
    &DUPLICATE_STAGE_NAME,
    &RESERVED_STAGE_NAME,
    &JSON_ARGS_RECOMMENDED,
    &MAINTAINER_DEPRECATED,
    &UNDEFINED_ARG_IN_FROM,
    &WORKDIR_RELATIVE_PATH,
    &UNDEFINED_VAR,
    &MULTIPLE_INSTRUCTIONS_DISALLOWED,
    &LEGACY_KEY_VALUE_FORMAT,
    &INVALID_BASE_IMAGE_PLATFORM,
    &REDUNDANT_TARGET_PLATFORM,
    &SECRETS_USED_IN_ARG_OR_ENV,
    &INVALID_DEFAULT_ARG_IN_FROM,
    &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    &COPY_IGNORED_FILE,
    &INVALID_DEFINITION_DESCRIPTION,
    &EXPOSE_PROTO_CASING,
    &EXPOSE_INVALID_FORMAT,
];

/// ` (did you mean X?)`-style tail used by the two "undefined" rules.
fn suggestion(prefix: &str, suggest: Option<&str>) -> String {
    suggest.map(|s| format!(" (did you mean {prefix}{s}?)")).unwrap_or_default()
}

pub fn stage_name_casing(stage: &str) -> String {
    format!("Stage name '{stage}' should be lowercase")
}
pub fn from_as_casing(from: &str, as_word: &str) -> String {
    format!("'{as_word}' and '{from}' keywords' casing do not match")
}
pub fn no_empty_continuation() -> String {
    "Empty continuation line".to_string()
}
pub fn consistent_instruction_casing(command: &str, casing: &str) -> String {
    format!("Command '{command}' should match the case of the command majority ({casing})")
}
pub fn duplicate_stage_name(stage: &str) -> String {
    format!("Duplicate stage name {}, stage names should be unique", go_quote(stage))
}
pub fn reserved_stage_name(stage: &str) -> String {
    format!("Stage name should not use the same name as reserved stage {}", go_quote(stage))
}
pub fn json_args_recommended(instruction: &str) -> String {
    format!("JSON arguments recommended for {instruction} to prevent unintended behavior related to OS signals")
}
pub fn maintainer_deprecated() -> String {
    "Maintainer instruction is deprecated in favor of using label".to_string()
}
pub fn undefined_arg_in_from(arg: &str, suggest: Option<&str>) -> String {
    format!("FROM argument '{arg}' is not declared{}", suggestion("", suggest))
}
pub fn workdir_relative_path(workdir: &str) -> String {
    format!("Relative workdir {} can have unexpected results if the base image changes", go_quote(workdir))
}
pub fn undefined_var(var: &str, suggest: Option<&str>) -> String {
    format!("Usage of undefined variable '${var}'{}", suggestion("$", suggest))
}
pub fn multiple_instructions_disallowed(instruction: &str) -> String {
    format!(
        "Multiple {instruction} instructions should not be used in the same stage because only the last one will be \
         used"
    )
}
pub fn legacy_key_value_format(instruction: &str) -> String {
    format!("\"{instruction} key=value\" should be used instead of legacy \"{instruction} key value\" format")
}
pub fn invalid_base_image_platform(image: &str, expected: &str, actual: &str) -> String {
    format!(
        "Base image {image} was pulled with platform {}, expected {} for current build",
        go_quote(actual),
        go_quote(expected)
    )
}
pub fn redundant_target_platform(platform_var: &str) -> String {
    format!("Setting platform to predefined {platform_var} in FROM is redundant as this is the default behavior")
}
pub fn secrets_used_in_arg_or_env(instruction: &str, key: &str) -> String {
    format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {})", go_quote(key))
}
pub fn invalid_default_arg_in_from(base: &str) -> String {
    format!("Default value for ARG {base} results in empty or invalid base image name")
}
pub fn from_platform_flag_const_disallowed(platform: &str) -> String {
    format!("FROM --platform flag should not use constant value {}", go_quote(platform))
}
pub fn copy_ignored_file(command: &str, file: &str) -> String {
    format!("Attempting to {command} file {} that is excluded by .dockerignore", go_quote(file))
}
pub fn invalid_definition_description(instruction: &str, name: &str) -> String {
    format!("Comment for {instruction} should follow the format: `# {name} <description>`")
}
pub fn expose_proto_casing(port: &str) -> String {
    format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase")
}
pub fn expose_invalid_format(port: &str) -> String {
    format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'")
}

/// Go's `%q` of a string (what BuildKit's messages use for names).
pub(crate) fn go_quote(s: &str) -> String {
    crate::frontend::history::go_quote(s)
}

/// The rule of this name, if BuildKit has one.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_two_rules_with_unique_names_and_one_experimental() {
        assert_eq!(ALL.len(), 22);
        let mut names: Vec<&str> = ALL.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 22);
        assert_eq!(ALL.iter().filter(|r| r.experimental).count(), 1);
        assert!(ALL.iter().all(|r| r.url.is_empty() == (r.name == "InvalidBaseImagePlatform")));
        assert_eq!(by_name("FromAsCasing"), Some(&FROM_AS_CASING));
        assert_eq!(by_name("fromascasing"), None);
    }

    #[test]
    fn suggestions_are_appended_only_when_there_is_one() {
        assert_eq!(undefined_var("foo", None), "Usage of undefined variable '$foo'");
        assert_eq!(
            undefined_var("DIR_ASSET", Some("DIR_ASSETS")),
            "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)"
        );
        assert_eq!(
            undefined_arg_in_from("MYARCH", Some("MY_ARCH")),
            "FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?)"
        );
    }
}
