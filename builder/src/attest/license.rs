//! Licenses as recorded by package managers → SPDX license expressions. Known identifiers (and
//! Debian's short names such as `GPL-2+`, `Expat`) become SPDX list IDs; anything else becomes a
//! `LicenseRef-…` that the document defines in `hasExtractedLicensingInfos`, as syft does, so the
//! document stays valid.

use std::collections::BTreeMap;

/// SPDX license list IDs kiln recognises (a subset of list version 3.25: what Debian, Alpine,
/// PyPI and npm packages commonly declare).
const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.0",
    "Apache-1.1",
    "Apache-2.0",
    "APSL-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "BlueOak-1.0.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-2-Clause-Patent",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSD-4-Clause-UC",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "curl",
    "ECL-2.0",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.1",
    "EUPL-1.2",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "GFDL-1.1-only",
    "GFDL-1.1-or-later",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MIT-CMU",
    "MPL-1.0",
    "MPL-1.1",
    "MPL-2.0",
    "MPL-2.0-no-copyleft-exception",
    "MS-PL",
    "NCSA",
    "OFL-1.1",
    "OpenSSL",
    "OLDAP-2.8",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Sleepycat",
    "TCL",
    "Unicode-3.0",
    "Unicode-DFS-2015",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// SPDX exception IDs that may follow `WITH`.
const SPDX_EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-2.0",
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "GCC-exception-2.0",
    "GCC-exception-3.1",
    "LLVM-exception",
    "Linux-syscall-note",
    "OpenSSL-exception",
    "Font-exception-2.0",
    "Libtool-exception",
    "Qt-GPL-exception-1.0",
    "Qt-LGPL-exception-1.1",
    "u-boot-exception-2.0",
    "WxWindows-exception-3.1",
];

/// Other spellings seen in package metadata (lowercased) → SPDX IDs.
const ALIASES: &[(&str, &str)] = &[
    ("expat", "MIT"),
    ("mit license", "MIT"),
    ("the mit license", "MIT"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("apache 2.0", "Apache-2.0"),
    ("apache-2", "Apache-2.0"),
    ("apache 2", "Apache-2.0"),
    ("apache license 2.0", "Apache-2.0"),
    ("apache license, version 2.0", "Apache-2.0"),
    ("apache software license", "Apache-2.0"),
    ("psf", "PSF-2.0"),
    ("psf-2", "PSF-2.0"),
    ("psfl", "PSF-2.0"),
    ("python software foundation license", "PSF-2.0"),
    ("zlib", "Zlib"),
    ("isc license", "ISC"),
    ("mpl 2.0", "MPL-2.0"),
    ("mozilla public license 2.0 (mpl 2.0)", "MPL-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("perl", "Artistic-1.0-Perl"),
    ("cc0", "CC0-1.0"),
    ("unlicense", "Unlicense"),
    ("the unlicense (unlicense)", "Unlicense"),
    ("boost software license 1.0 (bsl-1.0)", "BSL-1.0"),
    ("bsl", "BSL-1.0"),
];

/// Python trove classifiers (`License :: OSI Approved :: …`) → SPDX IDs.
const CLASSIFIERS: &[(&str, &str)] = &[
    ("MIT License", "MIT"),
    ("BSD License", "BSD-3-Clause"),
    ("Apache Software License", "Apache-2.0"),
    ("ISC License (ISCL)", "ISC"),
    ("Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("GNU General Public License v2 (GPLv2)", "GPL-2.0-only"),
    ("GNU General Public License v2 or later (GPLv2+)", "GPL-2.0-or-later"),
    ("GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
    ("GNU General Public License v3 or later (GPLv3+)", "GPL-3.0-or-later"),
    ("GNU Lesser General Public License v2 (LGPLv2)", "LGPL-2.0-only"),
    ("GNU Lesser General Public License v2 or later (LGPLv2+)", "LGPL-2.0-or-later"),
    ("GNU Lesser General Public License v3 (LGPLv3)", "LGPL-3.0-only"),
    ("GNU Lesser General Public License v3 or later (LGPLv3+)", "LGPL-3.0-or-later"),
    ("The Unlicense (Unlicense)", "Unlicense"),
    ("Zope Public License", "ZPL-2.1"),
];

/// The SPDX ID for a trove classifier's last part, if kiln knows it.
pub fn classifier(text: &str) -> Option<&'static str> {
    let last = text.rsplit("::").next()?.trim();
    CLASSIFIERS.iter().find(|(c, _)| *c == last).map(|(_, id)| *id)
}

/// The SPDX ID for one license name, if it is one kiln recognises.
pub fn spdx_id(name: &str) -> Option<String> {
    let name = name.trim();
    if let Some(id) = SPDX_IDS.iter().find(|id| id.eq_ignore_ascii_case(name)) {
        return Some(id.to_string());
    }
    let lower = name.to_ascii_lowercase();
    if let Some((_, id)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some(id.to_string());
    }
    // Debian and old SPDX spellings: GPL-2, GPL-2+, GPL-2.0, GPL-2.0+, LGPL-2.1+, GFDL-1.3 …
    let (base, later) = match lower.strip_suffix('+') {
        Some(b) => (b.trim_end(), true),
        None => (lower.as_str(), lower.ends_with("-or-later")),
    };
    let base = base.trim_end_matches("-or-later").trim_end_matches("-only");
    for family in ["agpl", "lgpl", "gpl", "gfdl"] {
        let Some(version) = base.strip_prefix(family).map(|v| v.trim_start_matches(['-', 'v'])) else { continue };
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            break;
        }
        let version = if version.contains('.') { version.to_string() } else { format!("{version}.0") };
        let id = format!("{}-{version}-{}", family.to_ascii_uppercase(), if later { "or-later" } else { "only" });
        return SPDX_IDS.contains(&id.as_str()).then_some(id);
    }
    None
}

/// Collects the `LicenseRef-…` licenses a document uses, with the names they stand for.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    /// LicenseRef ID → the license name as recorded.
    pub refs: BTreeMap<String, String>,
}

impl Extracted {
    /// A `LicenseRef-` ID for a name that is not on the SPDX list (syft's sanitising: anything
    /// but letters, digits, `.` and `-` becomes `-`).
    pub fn reference(&mut self, name: &str) -> String {
        let sanitized: String = name
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
            .collect();
        let id = format!("LicenseRef-{}", sanitized.trim_start_matches("LicenseRef-"));
        self.refs.entry(id.clone()).or_insert_with(|| name.trim().to_string());
        id
    }

    /// One recorded license value → a valid SPDX expression: SPDX expressions (`MIT OR
    /// Apache-2.0`, `GPL-2.0-only WITH Linux-syscall-note`) keep their shape with each ID
    /// checked; an unknown ID becomes a LicenseRef. A long free-text value (a whole license
    /// text) becomes one LicenseRef named by its first line.
    pub fn expression(&mut self, value: &str) -> String {
        let value = value.trim();
        if let Some(id) = spdx_id(value) {
            return id;
        }
        if value.contains('\n') || value.len() > 200 {
            let first = value.lines().next().unwrap_or("").chars().take(64).collect::<String>();
            return self.reference(if first.trim().is_empty() { "unknown" } else { &first });
        }
        let tokens = tokenize(value);
        let operators = ["AND", "OR", "WITH"];
        let looks_like_expression = tokens.iter().any(|t| operators.contains(&t.to_ascii_uppercase().as_str()));
        if !looks_like_expression {
            return self.reference(value);
        }
        let mut out: Vec<String> = Vec::new();
        let mut after_with = false;
        for token in tokens {
            let upper = token.to_ascii_uppercase();
            if operators.contains(&upper.as_str()) {
                out.push(upper.clone());
                after_with = upper == "WITH";
                continue;
            }
            if token == "(" || token == ")" {
                out.push(token);
                continue;
            }
            if after_with {
                after_with = false;
                match SPDX_EXCEPTIONS.iter().find(|e| e.eq_ignore_ascii_case(&token)) {
                    Some(e) => out.push(e.to_string()),
                    None => {
                        // An unknown exception cannot follow WITH: record it as a license of its own.
                        out.pop();
                        out.push("AND".into());
                        out.push(self.reference(&token));
                    }
                }
                continue;
            }
            let id = spdx_id(&token).unwrap_or_else(|| self.reference(&token));
            out.push(id);
        }
        let joined = out.join(" ").replace("( ", "(").replace(" )", ")");
        if balanced(&out) {
            joined
        } else {
            self.reference(value)
        }
    }

    /// Several declared licenses of one package joined as syft joins them (`A AND (B OR C)`), or
    /// `NOASSERTION` when there are none.
    pub fn declared(&mut self, licenses: &[String]) -> String {
        let mut parts: Vec<String> = Vec::new();
        for license in licenses {
            let expression = self.expression(license);
            let compound = expression.contains(' ') && !(expression.starts_with('(') && expression.ends_with(')'));
            let part = if compound && licenses.len() > 1 { format!("({expression})") } else { expression };
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        if parts.is_empty() {
            "NOASSERTION".to_string()
        } else {
            parts.join(" AND ")
        }
    }
}

fn tokenize(value: &str) -> Vec<String> {
    value.replace('(', " ( ").replace(')', " ) ").split_whitespace().map(str::to_string).collect()
}

/// Parentheses balance and operators sit between operands.
fn balanced(tokens: &[String]) -> bool {
    let mut depth = 0i32;
    let mut expect_operand = true;
    for t in tokens {
        match t.as_str() {
            "(" => {
                if !expect_operand {
                    return false;
                }
                depth += 1;
            }
            ")" => {
                if expect_operand {
                    return false;
                }
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            "AND" | "OR" | "WITH" => {
                if expect_operand {
                    return false;
                }
                expect_operand = true;
            }
            _ => {
                if !expect_operand {
                    return false;
                }
                expect_operand = false;
            }
        }
    }
    depth == 0 && !expect_operand
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_spdx_spellings_map_to_list_ids() {
        assert_eq!(spdx_id("GPL-2+").as_deref(), Some("GPL-2.0-or-later"));
        assert_eq!(spdx_id("GPL-2").as_deref(), Some("GPL-2.0-only"));
        assert_eq!(spdx_id("LGPL-2.1+").as_deref(), Some("LGPL-2.1-or-later"));
        assert_eq!(spdx_id("GPL-3.0-or-later").as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(spdx_id("Expat").as_deref(), Some("MIT"));
        assert_eq!(spdx_id("bsd-3-clause").as_deref(), Some("BSD-3-Clause"));
        assert_eq!(spdx_id("GPL-9"), None);
        assert_eq!(spdx_id("public-domain"), None);
    }

    #[test]
    fn expressions_stay_valid() {
        let mut x = Extracted::default();
        assert_eq!(x.expression("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(x.expression("GPL-2.0-only WITH Linux-syscall-note"), "GPL-2.0-only WITH Linux-syscall-note");
        assert_eq!(x.expression("GPL-2.0-or-later and MIT"), "GPL-2.0-or-later AND MIT");
        assert_eq!(x.expression("(MIT OR public-domain)"), "(MIT OR LicenseRef-public-domain)");
        assert_eq!(x.expression("public domain"), "LicenseRef-public-domain");
        assert_eq!(x.expression("MIT OR"), "LicenseRef-MIT-OR");
        assert_eq!(x.refs.get("LicenseRef-public-domain").map(String::as_str), Some("public-domain"));
        assert_eq!(
            x.declared(&["GPL-2+".into(), "MIT OR BSD-2-clause".into()]),
            "GPL-2.0-or-later AND (MIT OR BSD-2-Clause)"
        );
        assert_eq!(x.declared(&[]), "NOASSERTION");
        assert_eq!(classifier("License :: OSI Approved :: MIT License"), Some("MIT"));
    }
}
