//! Host patterns, as in a play's `hosts:` and `--limit`: `all`/`*`, names of
//! groups and hosts, globs (`web*`), regexes (`~web0[12]`), unions (`a:b`,
//! `a,b`), intersections (`&b`), exclusions (`!b`), subscripts (`g[0]`,
//! `g[1:3]` inclusive, `g[-1]`, `g[1:]`) and `@file` (one pattern per line).
//!
//! Evaluation follows Ansible's `InventoryManager`: plain terms first, then
//! `&` terms, then `!` terms; a group expands breadth-first to its hosts; a
//! name matching nothing is a warning, not an error. IPv6 addresses are not
//! split on their colons.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::{Inventory, InventoryError, LOCALHOST_NAMES};
use crate::diag::Diagnostic;
use crate::fnmatch::Glob;

/// What ansible-playbook's check of the host list found, before it runs
/// anything (see [`Inventory::check_host_list`]).
#[derive(Debug, Clone, Default)]
pub struct HostListCheck {
    /// The inventory has no host: only the implicit localhost, which `all`
    /// does not match. ansible-playbook warns (`localhost_warning`).
    pub empty: bool,
    /// The inventory has hosts and the limit leaves none of them: an error
    /// ([`NO_HOSTS_TO_TARGET`]) before anything runs.
    pub no_hosts: bool,
    /// The limit's own warnings (a term that matched nothing).
    pub warnings: Vec<Diagnostic>,
}

/// ansible-playbook's error when `--limit` leaves no host of a non-empty
/// inventory.
pub const NO_HOSTS_TO_TARGET: &str =
    "Specified inventory, host pattern and/or --limit leaves us with no hosts to target.";

/// ansible-playbook's warning for an inventory without hosts.
pub const EMPTY_HOST_LIST: &str = "provided hosts list is empty, only localhost is available. \
                                   Note that the implicit localhost does not match 'all'";

/// The hosts a pattern selected and the warnings it raised.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub hosts: Vec<String>,
    pub warnings: Vec<Diagnostic>,
}

/// Evaluates `pattern` against `inv`.
impl Inventory {
    /// Hosts matching an Ansible host pattern, in inventory order. Names that
    /// match nothing are logged as warnings; see [`Inventory::select_detailed`].
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, InventoryError> {
        let sel = self.select_detailed(pattern)?;
        for w in &sel.warnings {
            tracing::warn!("{w}");
        }
        Ok(sel.hosts)
    }

    /// ansible-playbook's check before a run, even `--syntax-check`: is the
    /// inventory empty, and does `limit` leave any of its hosts?
    /// `--limit localhost` leaves none when localhost is only implicit.
    pub fn check_host_list(&self, limit: Option<&str>) -> Result<HostListCheck, InventoryError> {
        let all = self.select_detailed("all")?.hosts;
        if all.is_empty() {
            return Ok(HostListCheck {
                empty: true,
                ..Default::default()
            });
        }
        let Some(limit) = limit else {
            return Ok(HostListCheck::default());
        };
        let allowed = self.select_detailed(limit)?;
        let allowed_set: HashSet<&String> = allowed.hosts.iter().collect();
        Ok(HostListCheck {
            empty: false,
            no_hosts: !all.iter().any(|h| allowed_set.contains(h)),
            warnings: allowed.warnings,
        })
    }

    /// Like [`Inventory::select`], returning the warnings instead of logging them.
    pub fn select_detailed(&self, pattern: &str) -> Result<Selection, InventoryError> {
        select(self, pattern)
    }
}

fn select(inv: &Inventory, pattern: &str) -> Result<Selection, Diagnostic> {
    let mut sel = Selection::default();
    let mut terms = Vec::new();
    for term in split_patterns(pattern) {
        if let Some(file) = term.strip_prefix('@') {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Diagnostic::new(format!("cannot read limit file '{file}': {e}")))?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                terms.extend(split_patterns(line));
            }
        } else {
            terms.push(term);
        }
    }
    let terms = order_patterns(terms);
    let mut hosts: Vec<String> = Vec::new();
    for term in &terms {
        if let Some(rest) = term.strip_prefix('!') {
            let that: HashSet<String> = match_one(inv, rest, &mut sel.warnings)?
                .into_iter()
                .collect();
            hosts.retain(|h| !that.contains(h));
        } else if let Some(rest) = term.strip_prefix('&') {
            let that: HashSet<String> = match_one(inv, rest, &mut sel.warnings)?
                .into_iter()
                .collect();
            hosts.retain(|h| that.contains(h));
        } else {
            let mut existing: HashSet<String> = hosts.iter().cloned().collect();
            for h in match_one(inv, term, &mut sel.warnings)? {
                if existing.insert(h.clone()) {
                    hosts.push(h);
                }
            }
        }
    }
    sel.hosts = hosts;
    Ok(sel)
}

/// Splits on commas, or else on colons that are not part of an IPv6
/// address or a `[x:y]` subscript.
pub fn split_patterns(pattern: &str) -> Vec<String> {
    let parts: Vec<String> = if pattern.contains(',') {
        pattern.split(',').map(String::from).collect()
    } else if is_ipv6_like(pattern) {
        vec![pattern.to_string()]
    } else {
        // Runs of anything but blanks, ':' and brackets, or whole `[...]` groups.
        static TERM: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?:[^\s:\[\]]|\[[^\]]*\])+").expect("static regex"));
        TERM.find_iter(pattern)
            .map(|m| m.as_str().to_string())
            .collect()
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn is_ipv6_like(p: &str) -> bool {
    let inner = match p.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((addr, port))
                // `[addr]` or `[addr]:port`; anything else after the bracket
                // (found by fuzzing: a multi-byte character there) is no address.
                if port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())) =>
            {
                addr
            }
            _ => return false,
        },
        None => p,
    };
    inner.matches(':').count() >= 2
        && inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// Plain terms, then `&` terms, then `!` terms; `all` first if no plain term.
fn order_patterns(terms: Vec<String>) -> Vec<String> {
    let (mut regular, mut inter, mut excl) = (Vec::new(), Vec::new(), Vec::new());
    for t in terms {
        if t.starts_with('!') {
            excl.push(t);
        } else if t.starts_with('&') {
            inter.push(t);
        } else {
            regular.push(t);
        }
    }
    if regular.is_empty() {
        regular.push("all".to_string());
    }
    regular.extend(inter);
    regular.extend(excl);
    regular
}

/// A subscript after a pattern: one index, or an inclusive range.
#[derive(Debug, Clone, Copy)]
enum Subscript {
    Index(i64),
    Range(usize, Option<usize>),
}

fn parse_subscript(pattern: &str) -> (&str, Option<Subscript>) {
    if pattern.starts_with('~') {
        return (pattern, None);
    }
    static SUBSCRIPT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$").expect("static regex")
    });
    let Some(c) = SUBSCRIPT.captures(pattern) else {
        return (pattern, None);
    };
    let base = c.get(1).unwrap().as_str();
    if let Some(i) = c.get(2) {
        return match i.as_str().parse() {
            Ok(i) => (base, Some(Subscript::Index(i))),
            Err(_) => (pattern, None),
        };
    }
    let start = c.get(3).unwrap().as_str().parse().unwrap_or(usize::MAX);
    let end = c.get(5).unwrap().as_str();
    let end = if end.is_empty() {
        None
    } else {
        end.parse().ok()
    };
    (base, Some(Subscript::Range(start, end)))
}

fn apply_subscript(hosts: Vec<String>, sub: Subscript) -> Vec<String> {
    let n = hosts.len();
    match sub {
        Subscript::Index(i) => {
            let idx = if i < 0 { n as i64 + i } else { i };
            if idx < 0 || idx as usize >= n {
                Vec::new()
            } else {
                vec![hosts[idx as usize].clone()]
            }
        }
        Subscript::Range(start, end) => {
            let end = end.map(|e| e.saturating_add(1)).unwrap_or(n).min(n);
            if start >= end {
                Vec::new()
            } else {
                hosts[start..end].to_vec()
            }
        }
    }
}

/// Hosts for one term (no `&`/`!` prefix), before de-duplication.
fn match_one(
    inv: &Inventory,
    term: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<String>, Diagnostic> {
    let (expr, sub) = parse_subscript(term);
    let matcher = compile(expr)?;
    let mut results = Vec::new();
    let groups: Vec<&String> = if expr == "all" || expr == "*" {
        vec![inv.groups.get_index(0).map(|(k, _)| k).expect("all exists")]
    } else {
        inv.groups.keys().filter(|g| matcher.is_match(g)).collect()
    };
    for g in &groups {
        results.extend(inv.group_hosts(g));
    }
    let special = expr.starts_with('~') || expr.contains(['.', '?', '*', '[']);
    if groups.is_empty() || special {
        results.extend(inv.hosts.keys().filter(|h| matcher.is_match(h)).cloned());
    }
    if results.is_empty() && LOCALHOST_NAMES.contains(&expr) {
        if let Some(h) = inv.implicit_localhost(expr) {
            results.push(h.name);
        }
    }
    if results.is_empty() && groups.is_empty() && expr != "all" {
        warnings.push(Diagnostic::new(format!(
            "Could not match supplied host pattern, ignoring: {expr}"
        )));
    }
    Ok(match sub {
        Some(sub) => apply_subscript(results, sub),
        None => results,
    })
}

/// What one term matches names with.
enum Matcher {
    Glob(Glob),
    Regex(Regex),
}

impl Matcher {
    fn is_match(&self, name: &str) -> bool {
        match self {
            Matcher::Glob(g) => g.is_match(name),
            Matcher::Regex(re) => re.is_match(name),
        }
    }
}

/// `~regex` (anchored at the start, like Python's `re.match`) or a glob.
fn compile(expr: &str) -> Result<Matcher, Diagnostic> {
    let Some(re) = expr.strip_prefix('~') else {
        return Ok(Matcher::Glob(Glob::new(expr)));
    };
    Regex::new(&format!("^(?:{re})"))
        .map(Matcher::Regex)
        .map_err(|e| {
            Diagnostic::new(format!("invalid host pattern '{expr}'")).hint(
                e.to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(split_patterns("web:db"), ["web", "db"]);
        assert_eq!(split_patterns("web,!db"), ["web", "!db"]);
        assert_eq!(
            split_patterns("all:!web[0:1]:&x"),
            ["all", "!web[0:1]", "&x"]
        );
        assert_eq!(split_patterns("fe80::1"), ["fe80::1"]);
        assert_eq!(split_patterns("2001:db8::1,web"), ["2001:db8::1", "web"]);
        assert_eq!(split_patterns("[::1]:22"), ["[::1]:22"]);
    }

    /// Regression (fuzz target `host_pattern`): a non-ASCII character right
    /// after `[...]` made the port check slice inside it and panic.
    #[test]
    fn bracket_then_multibyte_char() {
        assert!(!is_ipv6_like("[::1]\u{19b}:22."));
        assert_eq!(split_patterns("[::1]\u{e9}:22"), ["[::1]\u{e9}", "22"]);
        let inv = Inventory::default();
        // An error is a fine answer; a panic is the bug.
        let _ = inv.select_detailed("[:?:zK \0jqmp`e03]\u{19b}:22.");
    }
}
