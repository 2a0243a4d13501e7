//! BuildKit's `did you mean …?` hints (its `util/suggest`): the closest of the known names by
//! Levenshtein distance, when it is closer than 3 edits and not the value itself.

/// Distance a suggestion must stay under (BuildKit's, taken from HCL).
const MAX_DISTANCE: usize = 3;

/// The option nearest to `value`, if one is nearer than [`MAX_DISTANCE`]; None when `value` is one
/// of the options (the error was about something else). Case-insensitive search answers in the
/// case `value` was written in when that was all lower or all upper case.
pub fn search<'a>(value: &str, options: impl IntoIterator<Item = &'a str>, case_sensitive: bool) -> Option<String> {
    let wanted = if case_sensitive { value.to_string() } else { value.to_lowercase() };
    let mut best: Option<(usize, String)> = None;
    for option in options {
        let option = if case_sensitive { option.to_string() } else { option.to_lowercase() };
        if option == wanted {
            return None;
        }
        let distance = strsim::levenshtein(&wanted, &option);
        if distance < best.as_ref().map_or(MAX_DISTANCE, |(d, _)| *d) {
            best = Some((distance, option));
        }
    }
    let (_, found) = best?;
    Some(if case_sensitive {
        found
    } else if value == value.to_lowercase() {
        found.to_lowercase()
    } else if value == value.to_uppercase() {
        found.to_uppercase()
    } else {
        found
    })
}

/// ` (did you mean X?)` for a suggestion, nothing without one: appended to an error message.
pub fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// The instruction names, for unknown instructions.
pub const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Images a mistyped FROM most likely meant, besides the Dockerfile's stages (as BuildKit).
pub fn common_images() -> Vec<String> {
    ["alpine", "busybox", "centos", "debian", "golang", "ubuntu", "fedora"]
        .iter()
        .flat_map(|name| [name.to_string(), format!("{name}:latest")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_option_under_three_edits_in_the_writers_case() {
        assert_eq!(search("FORM", INSTRUCTIONS.iter().copied(), false).as_deref(), Some("FROM"));
        assert_eq!(search("runn", INSTRUCTIONS.iter().copied(), false).as_deref(), Some("run"));
        assert_eq!(search("Coppy", INSTRUCTIONS.iter().copied(), false).as_deref(), Some("copy"));
        assert_eq!(search("BOGUS", INSTRUCTIONS.iter().copied(), false), None, "too far from every name");
        assert_eq!(search("from", ["chmod", "from"], true), None, "an exact match suggests nothing");
        assert_eq!(search("frm", ["chmod", "from", "chown"], true).as_deref(), Some("from"));
        assert_eq!(search("Build", ["build"], true).as_deref(), Some("build"), "case counts as an edit");
    }
}
