//! Shell patterns for `${v#p}`, `${v%p}` and `${v/p/r}`, matched the way BuildKit matches them.
//!
//! BuildKit turns the pattern into a Go regular expression (`*` → `.*` or `.*?`, `?` → `.`,
//! everything else literal; no bracket expressions) and runs Go's `regexp`. To give the same
//! answers we reproduce the parts of that pipeline that are visible in results:
//! - `*` and `?` never match a newline (Go's `.` without the `s` flag);
//! - leftmost-first ("Perl") match priority, greedy or lazy stars;
//! - `ReplaceAllString`'s rules for empty matches and its `$0`/`$$` replacement template.
//!
//! Matching is a Pike VM over the pattern's elements (no backtracking), so time is
//! O(pattern × value) per search and is additionally capped by a step budget shared by the
//! whole expansion: a hostile Dockerfile gets an error, never a hang.

use std::fmt;

/// What a pattern element matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Literal(char),
    /// `?`: any one character except newline.
    AnyChar,
    /// `*`: any run of characters without a newline.
    AnyRun,
}

/// Why a pattern could not be compiled. BuildKit's only failure here is a bad escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InvalidEscape(pub Option<char>);

impl fmt::Display for InvalidEscape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(c) => write!(f, "invalid escape '\\{c}'"),
            None => f.write_str("invalid escape '\\' at end of pattern"),
        }
    }
}

/// Pattern matching ran out of its step budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BudgetExhausted;

/// Steps of matching work left for one expansion (shared by every pattern in a word).
#[derive(Debug)]
pub(super) struct MatchBudget {
    steps_left: u64,
}

impl MatchBudget {
    pub(super) fn new(steps: u64) -> Self {
        MatchBudget { steps_left: steps }
    }

    fn spend(&mut self, steps: u64) -> Result<(), BudgetExhausted> {
        self.steps_left = self.steps_left.checked_sub(steps).ok_or(BudgetExhausted)?;
        Ok(())
    }
}

#[derive(Debug)]
pub(super) struct Pattern {
    elements: Vec<Element>,
    greedy_stars: bool,
}

impl Pattern {
    /// Compiles a shell pattern. `\*`, `\?` and `\\` are literal; `\}` and `\/` are the
    /// separators of `${…}` escaped in the source, and the backslash is dropped. Any other
    /// escape is an error, as in BuildKit. The backslash here is always `\`, whatever the
    /// Dockerfile's escape character is.
    pub(super) fn compile(pattern: &str, greedy_stars: bool) -> Result<Pattern, InvalidEscape> {
        // BuildKit reads the pattern with Go's text/scanner, which drops a leading BOM.
        let pattern = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
        let mut elements = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let element = match c {
                '*' => Element::AnyRun,
                '?' => Element::AnyChar,
                '\\' => {
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(escaped @ ('*' | '?' | '\\')) => Element::Literal(escaped),
                        other => return Err(InvalidEscape(other)),
                    }
                }
                other => Element::Literal(other),
            };
            elements.push(element);
        }
        Ok(Pattern { elements, greedy_stars })
    }

    /// The leftmost-first match of the pattern in `text` starting at or after `from`
    /// (exactly at `from` when `anchored`), as `(start, end)` character indexes.
    pub(super) fn find(
        &self,
        text: &[char],
        from: usize,
        anchored: bool,
        budget: &mut MatchBudget,
    ) -> Result<Option<(usize, usize)>, BudgetExhausted> {
        let state_count = self.elements.len() + 1;
        // Setting up is O(pattern) and replace-all searches once per match, so it is work too.
        budget.spend(state_count as u64)?;
        let mut current = ThreadList::new(state_count);
        let mut next = ThreadList::new(state_count);
        let mut found = None;
        for pos in from..=text.len() {
            // A new thread starting here has the lowest priority, so it goes last.
            if found.is_none() && (!anchored || pos == from) {
                self.add_thread(&mut current, 0, pos, budget)?;
            }
            if current.threads.is_empty() {
                if found.is_some() || anchored {
                    break;
                }
                continue;
            }
            next.clear();
            let input = text.get(pos).copied();
            let threads = std::mem::take(&mut current.threads);
            budget.spend(threads.len() as u64)?;
            for &(state, start) in &threads {
                let Some(&element) = self.elements.get(state) else {
                    // Reached the end of the pattern: a match. Threads after this one have
                    // lower priority and can only produce worse matches, so drop them.
                    found = Some((start, pos));
                    break;
                };
                let advances = match (element, input) {
                    (Element::Literal(want), Some(got)) => want == got,
                    (Element::AnyChar | Element::AnyRun, Some(got)) => got != '\n',
                    (_, None) => false,
                };
                if advances {
                    // A star loops back to itself (its split); other elements move on.
                    let target = if element == Element::AnyRun { state } else { state + 1 };
                    self.add_thread(&mut next, target, start, budget)?;
                }
            }
            current.threads = threads;
            std::mem::swap(&mut current, &mut next);
        }
        Ok(found)
    }

    /// Adds the thread at `state` and everything reachable from it without consuming input,
    /// in priority order. A star at `s` is a choice between "take one more character"
    /// (kept in the list as the thread at `s`) and "go on to `s + 1`"; greedy stars prefer
    /// the first, lazy ones the second. Iterative so long runs of stars cannot overflow the stack.
    fn add_thread(
        &self,
        list: &mut ThreadList,
        state: usize,
        start: usize,
        budget: &mut MatchBudget,
    ) -> Result<(), BudgetExhausted> {
        let is_star = |s: usize| self.elements.get(s) == Some(&Element::AnyRun);
        if self.greedy_stars {
            let mut s = state;
            while list.mark(s) {
                budget.spend(1)?;
                list.threads.push((s, start));
                if !is_star(s) {
                    break;
                }
                s += 1;
            }
        } else {
            let first_star = state;
            let mut s = state;
            while is_star(s) && list.mark(s) {
                budget.spend(1)?;
                s += 1;
            }
            let end_of_stars = s;
            if !is_star(s) && list.mark(s) {
                list.threads.push((s, start));
            }
            for star in (first_star..end_of_stars).rev() {
                list.threads.push((star, start));
            }
        }
        Ok(())
    }
}

/// Threads of the Pike VM for one input position, with a "seen" set so each state is added
/// once (the first, highest-priority time).
struct ThreadList {
    threads: Vec<(usize, usize)>,
    seen_in_generation: Vec<u64>,
    generation: u64,
}

impl ThreadList {
    fn new(state_count: usize) -> Self {
        ThreadList { threads: Vec::new(), seen_in_generation: vec![0; state_count], generation: 1 }
    }

    fn clear(&mut self) {
        self.threads.clear();
        self.generation += 1;
    }

    /// Marks `state` as seen; false if it already was.
    fn mark(&mut self, state: usize) -> bool {
        match self.seen_in_generation.get_mut(state) {
            Some(seen) if *seen != self.generation => {
                *seen = self.generation;
                true
            }
            _ => false,
        }
    }
}

/// Reverses a pattern so that a suffix search becomes a prefix search, keeping each
/// backslash in front of the character it escapes (`a\*c` → `c\*a`), as BuildKit does.
pub(super) fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut reversed = vec!['\0'; chars.len()];
    let last = chars.len().saturating_sub(1);
    let mut i = 0;
    while i < chars.len() {
        let out = last - i;
        if chars[i] == '\\' && i != last {
            reversed[out - 1] = '\\';
            reversed[out] = chars[i + 1];
            i += 2;
        } else {
            reversed[out] = chars[i];
            i += 1;
        }
    }
    reversed.into_iter().collect()
}

/// Errors of the pattern operators, before they are given the word's context.
#[derive(Debug)]
pub(super) enum PatternFailure {
    Invalid(InvalidEscape),
    Budget,
    TooLarge,
}

impl From<InvalidEscape> for PatternFailure {
    fn from(e: InvalidEscape) -> Self {
        PatternFailure::Invalid(e)
    }
}

impl From<BudgetExhausted> for PatternFailure {
    fn from(_: BudgetExhausted) -> Self {
        PatternFailure::Budget
    }
}

/// `${v#p}` (lazy) and `${v##p}` (greedy): `value` without the matching prefix.
pub(super) fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
    budget: &mut MatchBudget,
) -> Result<String, PatternFailure> {
    let compiled = Pattern::compile(pattern, greedy)?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match compiled.find(&chars, 0, true, budget)? {
        Some((_, end)) => chars[end..].iter().collect(),
        None => value.to_owned(),
    })
}

/// `${v%p}` (lazy) and `${v%%p}` (greedy): `value` without the matching suffix. Regular
/// expressions find leftmost matches, so BuildKit reverses pattern and value and trims a
/// prefix; we do the same so the corner cases agree.
pub(super) fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
    budget: &mut MatchBudget,
) -> Result<String, PatternFailure> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy, budget)?;
    Ok(trimmed.chars().rev().collect())
}

/// `${v/p/r}` and `${v//p/r}`. Stars are greedy. Replacing the first match inserts `replacement`
/// as it is; replacing all goes through Go's `ReplaceAllString`, where `$0` in the replacement
/// stands for the match and `$$` for `$` (BuildKit inherits that).
pub(super) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    replace_all: bool,
    max_len: usize,
    budget: &mut MatchBudget,
) -> Result<String, PatternFailure> {
    let compiled = Pattern::compile(pattern, true)?;
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    if !replace_all {
        return Ok(match compiled.find(&chars, 0, false, budget)? {
            Some((start, end)) => {
                out.extend(&chars[..start]);
                out.push_str(replacement);
                out.extend(&chars[end..]);
                if out.len() > max_len {
                    return Err(PatternFailure::TooLarge);
                }
                out
            }
            None => value.to_owned(),
        });
    }

    // Go's replaceAll: after each match search again from its end, but always move on by at
    // least one character, and skip an empty match right after the previous match.
    let mut last_match_end = 0;
    let mut search_from = 0;
    while search_from <= chars.len() {
        let Some((start, end)) = compiled.find(&chars, search_from, false, budget)? else {
            break;
        };
        out.extend(&chars[last_match_end..start]);
        if end > last_match_end || start == 0 {
            expand_go_template(replacement, &chars[start..end], &mut out);
        }
        if out.len() > max_len {
            return Err(PatternFailure::TooLarge);
        }
        last_match_end = end;
        search_from = if search_from + 1 > end { search_from + 1 } else { end };
    }
    out.extend(&chars[last_match_end..]);
    if out.len() > max_len {
        return Err(PatternFailure::TooLarge);
    }
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is `$`, `$0`/`${0}` the match,
/// any other well-formed `$name`/`${name}` is empty, and a malformed `$` stays literal.
fn expand_go_template(template: &str, matched: &[char], out: &mut String) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match parse_template_reference(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.extend(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Reads `name` or `{name}` at the start of `s` (name: Go letters, digits, `_`).
fn parse_template_reference(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(body) => (body, true),
        None => (s, false),
    };
    let name_len: usize = body
        .chars()
        .take_while(|&c| super::lex::is_go_letter(c) || super::lex::is_go_digit(c) || c == '_')
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let (name, after) = body.split_at(name_len);
    if braced {
        let after = after.strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> MatchBudget {
        MatchBudget::new(u64::MAX)
    }

    fn find(pattern: &str, greedy: bool, text: &str, anchored: bool) -> Option<(usize, usize)> {
        let chars: Vec<char> = text.chars().collect();
        Pattern::compile(pattern, greedy).unwrap().find(&chars, 0, anchored, &mut budget()).unwrap()
    }

    #[test]
    fn escapes_follow_buildkit() {
        assert!(Pattern::compile("\\*\\?\\\\", true).is_ok());
        assert!(Pattern::compile("\\}\\/", true).is_ok());
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(Pattern::compile(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reverse_keeps_escapes_in_front() {
        let cases = [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
            ("", ""),
        ];
        for (pattern, expected) in cases {
            assert_eq!(reverse_pattern(pattern), expected, "{pattern:?}");
        }
    }

    #[test]
    fn lazy_and_greedy_priority() {
        assert_eq!(find("*x", false, "axbx", true), Some((0, 2)));
        assert_eq!(find("*x", true, "axbx", true), Some((0, 4)));
        assert_eq!(find("*", false, "abc", true), Some((0, 0)));
        assert_eq!(find("*", true, "abc", true), Some((0, 3)));
        assert_eq!(find("*x*y", false, "xxyy", true), Some((0, 3)));
        assert_eq!(find("b*", true, "abcb", false), Some((1, 4)));
        assert_eq!(find("", true, "abc", false), Some((0, 0)));
        assert_eq!(find("z", true, "abc", false), None);
    }

    #[test]
    fn wildcards_stop_at_newline() {
        assert_eq!(find("*", true, "ab\ncd", true), Some((0, 2)));
        assert_eq!(find("a?c", true, "a\nc", false), None);
        assert_eq!(find("a\nc", true, "a\nc", false), Some((0, 3)));
    }

    #[test]
    fn replace_all_matches_go_regexp() {
        let all = |p: &str, v: &str, r: &str| replace(p, v, r, true, usize::MAX, &mut budget()).unwrap();
        assert_eq!(all("", "abc", "-"), "-a-b-c-");
        assert_eq!(all("*", "abc", "-"), "-");
        assert_eq!(all("b*", "abcb", "<$0>"), "a<bcb>");
        assert_eq!(all("b", "abcb", "$$"), "a$c$");
        assert_eq!(all("b", "abcb", "${0}${1}$x$"), "ab$cb$");
        assert_eq!(all("x", "abc", "-"), "abc");
    }

    #[test]
    fn budget_stops_pathological_matching() {
        let text: Vec<char> = "a".repeat(2000).chars().collect();
        let pattern = Pattern::compile(&"*a".repeat(500), false).unwrap();
        let mut small = MatchBudget::new(10_000);
        assert_eq!(pattern.find(&text, 0, false, &mut small), Err(BudgetExhausted));
    }
}
