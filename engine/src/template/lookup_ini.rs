//! The `ini` lookup: reads a key from an INI file (or a Java `.properties`
//! file) found on the controller's search path. It sits below `lookups.rs`,
//! which dispatches to it and hands it the way to find a file; the reading is Python's `configparser` as
//! ansible-core configures it (`=` and `:` delimiters, `#`/`;` full-line
//! comments, indented continuation lines, strict duplicate checks, keys
//! lower-cased unless `case_sensitive`, `%(name)s` interpolation), so a file
//! means the same thing to Keel as to Ansible.

use std::collections::HashSet;
use std::path::PathBuf;

use indexmap::IndexMap;
use minijinja::{Error, ErrorKind, Value};

use super::filters::text;
use super::native::to_bool;
use crate::vars::VarMap;

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// The lookup's options (ansible-core's `ini` documentation), with the
/// `allow_none` alias last.
const OPTIONS: [&str; 11] = [
    "type",
    "file",
    "section",
    "re",
    "encoding",
    "default",
    "case_sensitive",
    "allow_no_value",
    "interpolation",
    "_terms",
    "allow_none",
];

/// Runs the `ini` lookup over its terms; `find` resolves a file name on the
/// task's search path (`files/` first).
pub(super) fn ini(
    terms: &[Value],
    kw: &VarMap,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Vec<Value>, Error> {
    for k in kw.keys() {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(err(format!("'{k}' is not a valid option.")));
        }
    }
    // Options as ansible-core holds them: defaults, then keywords; inline
    // `key=value` words (deprecated) overwrite them for this and later terms.
    let mut opts: IndexMap<String, Value> = IndexMap::new();
    for (k, v) in [
        ("type", Value::from("ini")),
        ("file", Value::from("ansible.ini")),
        ("section", Value::from("global")),
        ("re", Value::from(false)),
        ("encoding", Value::from("utf-8")),
        ("default", Value::from("")),
        ("case_sensitive", Value::from(false)),
        ("allow_no_value", Value::from(false)),
        ("interpolation", Value::from(true)),
    ] {
        opts.insert(k.into(), v);
    }
    for (k, v) in kw {
        let k = if k == "allow_none" {
            "allow_no_value"
        } else {
            k
        };
        opts.insert(k.into(), v.clone());
    }
    let mut out = Vec::new();
    for t in terms {
        let term = text(t);
        let mut key = term.clone();
        if term.contains('=') || term.trim().contains(' ') {
            let params = inline_params(&term);
            let mut updated_key = false;
            for p in &params {
                if p.contains('=') {
                    let parts: Vec<&str> = p.split('=').collect();
                    let [name, value] = parts[..] else {
                        return Err(err(format!(
                            "Could not use '{p}' from {}.",
                            py_list(&params)
                        )));
                    };
                    if !OPTIONS[..9].contains(&name) {
                        return Err(err(format!("'{name}' is not a valid option.")));
                    }
                    opts.insert(name.into(), Value::from(value));
                } else if key == term {
                    // Only the first bare word is the key, as in ansible-core.
                    key = p.clone();
                    updated_key = true;
                }
            }
            if !updated_key {
                return Err(err(format!(
                    "No key to look up was provided as first term within string inline options: {term}"
                )));
            }
        }
        let opt = |k: &str| opts.get(k).cloned().unwrap_or_default();
        let file = text(&opt("file"));
        let properties = text(&opt("type")) == "properties";
        let section = if properties {
            "java_properties".to_string()
        } else {
            text(&opt("section"))
        };
        let path = find(&file)
            .ok_or_else(|| err(format!("Unable to find '{file}' in expected paths.")))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| err(format!("Could not read '{}': {e}", path.display())))?;
        let mut content = decode(&bytes, &text(&opt("encoding")))?;
        if properties {
            content.insert_str(0, "[java_properties]\n");
        }
        let parser = Parser {
            allow_no_value: to_bool(&opt("allow_no_value")),
            case_sensitive: to_bool(&opt("case_sensitive")),
            interpolation: to_bool(&opt("interpolation")),
        };
        let cfg = parser.read(&content).map_err(|e| match e {
            ReadError::DuplicateOption => err(format!("Duplicate option in '{file}'.")),
            other => err(format!("{other} (in '{file}')")),
        })?;
        let Some(items) = cfg.sections.get(&section) else {
            return Err(err(format!("No section '{section}' in '{file}'.")));
        };
        if to_bool(&opt("re")) {
            let re = super::pyre::compile(&key, false, false)?;
            for (k, v) in cfg.items(items) {
                let hit = re
                    .find(&k)
                    .map_err(|e| err(e.to_string()))?
                    .is_some_and(|m| m.start() == 0);
                if hit {
                    out.push(cfg.value(items, &k, v, parser.interpolation)?);
                }
            }
            continue;
        }
        let k = parser.option_name(&key);
        match cfg.lookup(items, &k) {
            None => out.push(opt("default")),
            Some(None) => {}
            Some(Some(raw)) => out.push(cfg.value(items, &k, Some(raw), parser.interpolation)?),
        }
    }
    Ok(out)
}

/// ansible-core's `_parse_params`: the words of an inline term grouped by the
/// option whose `name=` starts them (a value may hold spaces).
fn inline_params(term: &str) -> Vec<String> {
    let mut params: IndexMap<&str, String> = IndexMap::new();
    let mut keys: Vec<&str> = Vec::new();
    let mut this = "key";
    for (i, phrase) in term.split_whitespace().enumerate() {
        if phrase.contains('=') {
            for k in &OPTIONS[..9] {
                if phrase.contains(&format!("{k}=")) {
                    this = k;
                }
            }
        }
        let cur = params.entry(this).or_default();
        if i == 0 || cur.is_empty() {
            *cur = phrase.to_string();
            keys.push(this);
        } else {
            cur.push(' ');
            cur.push_str(phrase);
        }
    }
    keys.iter().map(|k| params[*k].clone()).collect()
}

fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Decodes file bytes in the named encoding (UTF-8 and the ISO 8859 Latin
/// ones Python names; others are refused).
fn decode(bytes: &[u8], encoding: &str) -> Result<String, Error> {
    let enc = encoding.to_ascii_lowercase().replace(['-', '_'], "");
    match enc.as_str() {
        "utf8" | "utf8sig" => {
            let b = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
            String::from_utf8(b.to_vec())
                .map_err(|e| err(format!("'utf-8' codec can't decode the file: {e}")))
        }
        "latin1" | "iso88591" | "l1" | "ascii" => Ok(bytes.iter().map(|&b| b as char).collect()),
        // ISO 8859-15 is Latin-1 with eight code points replaced.
        "iso885915" | "latin9" | "l9" => Ok(bytes
            .iter()
            .map(|&b| match b {
                0xa4 => '€',
                0xa6 => 'Š',
                0xa8 => 'š',
                0xb4 => 'Ž',
                0xb8 => 'ž',
                0xbc => 'Œ',
                0xbd => 'œ',
                0xbe => 'Ÿ',
                _ => b as char,
            })
            .collect()),
        _ => Err(err(format!("unknown encoding: {encoding}"))),
    }
}

/// How `configparser.ConfigParser` is set up for the lookup.
struct Parser {
    allow_no_value: bool,
    case_sensitive: bool,
    interpolation: bool,
}

/// One section: option name → lines of its value (`None`: a key without a
/// value, allowed by `allow_no_value`).
type Section = IndexMap<String, Option<Vec<String>>>;

/// A parsed file: the `DEFAULT` section and the others, in file order.
struct Config {
    defaults: Section,
    sections: IndexMap<String, Section>,
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("Duplicate option")]
    DuplicateOption,
    #[error("While reading: section {0:?} already exists")]
    DuplicateSection(String),
    #[error("File contains no section headers. line {0}: {1:?}")]
    MissingSectionHeader(usize, String),
    #[error("Source contains parsing errors: [line {0}]: {1:?}")]
    Parsing(usize, String),
}

impl Parser {
    /// `optionxform`: lower-case unless case-sensitive.
    fn option_name(&self, name: &str) -> String {
        if self.case_sensitive {
            name.to_string()
        } else {
            name.to_lowercase()
        }
    }

    /// `ConfigParser.read_file` with ansible-core's settings.
    fn read(&self, content: &str) -> Result<Config, ReadError> {
        let mut cfg = Config {
            defaults: Section::new(),
            sections: IndexMap::new(),
        };
        // Where the current section lives: `None` before any header.
        let mut cur: Option<Option<String>> = None;
        let mut opt: Option<String> = None;
        let mut indent_level = 0usize;
        let mut seen_sections: HashSet<String> = HashSet::new();
        let mut seen_options: HashSet<(String, String)> = HashSet::new();
        let mut first_error: Option<ReadError> = None;
        for (n, line) in content.lines().enumerate() {
            let lineno = n + 1;
            let stripped = line.trim();
            let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
            let value = if is_comment { "" } else { stripped };
            if value.is_empty() {
                // Blank lines belong to a value being continued; comments do not.
                if !is_comment {
                    if let (Some(sect), Some(o)) = (&cur, &opt) {
                        if let Some(Some(lines)) = section_mut(&mut cfg, sect).get_mut(o) {
                            lines.push(String::new());
                        }
                    }
                }
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if let (Some(sect), Some(o), true) = (&cur, &opt, indent > indent_level) {
                if let Some(Some(lines)) = section_mut(&mut cfg, sect).get_mut(o) {
                    lines.push(value.to_string());
                    continue;
                }
            }
            indent_level = indent;
            if let Some(header) = value
                .strip_prefix('[')
                .and_then(|v| v.rfind(']').map(|i| &v[..i]))
                .filter(|h| !h.is_empty())
            {
                let name = header.to_string();
                if name == "DEFAULT" {
                    cur = Some(None);
                } else {
                    if !seen_sections.insert(name.clone()) {
                        return Err(ReadError::DuplicateSection(name));
                    }
                    cfg.sections.entry(name.clone()).or_default();
                    cur = Some(Some(name));
                }
                opt = None;
                continue;
            }
            let Some(sect) = cur.clone() else {
                return Err(ReadError::MissingSectionHeader(lineno, line.to_string()));
            };
            match self.split_option(value) {
                Some((name, val)) if !name.is_empty() => {
                    let name = self.option_name(name.trim_end());
                    let sect_key = sect.clone().unwrap_or_else(|| "DEFAULT".into());
                    if !seen_options.insert((sect_key, name.clone())) {
                        return Err(ReadError::DuplicateOption);
                    }
                    section_mut(&mut cfg, &sect)
                        .insert(name.clone(), val.map(|v| vec![v.trim().to_string()]));
                    opt = Some(name);
                }
                _ => {
                    first_error.get_or_insert(ReadError::Parsing(lineno, line.to_string()));
                    // configparser keeps reading and reports at the end.
                    opt = None;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(cfg),
        }
    }

    /// `OPTCRE`: the name up to the first `=` or `:`, then the value; with
    /// `allow_no_value` a line without a delimiter is a key without value.
    fn split_option<'a>(&self, line: &'a str) -> Option<(&'a str, Option<&'a str>)> {
        match line.find(['=', ':']) {
            Some(i) => Some((line[..i].trim_end(), Some(line[i + 1..].trim_start()))),
            None if self.allow_no_value => Some((line.trim_end(), None)),
            None => None,
        }
    }
}

fn section_mut<'a>(cfg: &'a mut Config, sect: &Option<String>) -> &'a mut Section {
    match sect {
        None => &mut cfg.defaults,
        Some(name) => cfg.sections.entry(name.clone()).or_default(),
    }
}

impl Config {
    /// `items(section)`: the defaults overlaid by the section's own options.
    fn items(&self, section: &Section) -> Vec<(String, Option<String>)> {
        let mut all: IndexMap<String, Option<String>> = IndexMap::new();
        for (k, v) in self.defaults.iter().chain(section.iter()) {
            all.insert(k.clone(), v.as_ref().map(|l| join_lines(l)));
        }
        all.into_iter().collect()
    }

    /// An option's raw value: `None` when absent, `Some(None)` when it has
    /// no value.
    fn lookup(&self, section: &Section, name: &str) -> Option<Option<String>> {
        section
            .get(name)
            .or_else(|| self.defaults.get(name))
            .map(|v| v.as_ref().map(|l| join_lines(l)))
    }

    /// The value as `get` returns it: `BasicInterpolation` expands
    /// `%(name)s` from the same section (and defaults) and `%%` to `%`.
    fn value(
        &self,
        section: &Section,
        name: &str,
        raw: Option<String>,
        interpolate: bool,
    ) -> Result<Value, Error> {
        let Some(raw) = raw else {
            return Ok(Value::from(()));
        };
        if !interpolate {
            return Ok(Value::from(raw));
        }
        self.interpolate(section, name, &raw, 1).map(Value::from)
    }

    fn interpolate(
        &self,
        section: &Section,
        name: &str,
        raw: &str,
        depth: usize,
    ) -> Result<String, Error> {
        // configparser's MAX_INTERPOLATION_DEPTH.
        if depth > 10 {
            return Err(err(format!(
                "Recursion limit exceeded in value substitution: option '{name}'"
            )));
        }
        let mut out = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("%%") {
                out.push('%');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("%(") {
                let Some(end) = r.find(")s") else {
                    return Err(err(format!(
                        "bad interpolation variable reference '{rest}'"
                    )));
                };
                let var = r[..end].to_lowercase();
                let Some(Some(v)) = self.lookup(section, &var) else {
                    return Err(err(format!(
                        "Bad value substitution: option '{name}' references '{var}', which is not set"
                    )));
                };
                out.push_str(&self.interpolate(section, &var, &v, depth + 1)?);
                rest = &r[end + 2..];
            } else {
                return Err(err(format!(
                    "'%' must be followed by '%' or '(', found: '{rest}'"
                )));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A multi-line value: its lines joined, trailing blank lines dropped.
fn join_lines(lines: &[String]) -> String {
    lines.join("\n").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> Parser {
        Parser {
            allow_no_value: false,
            case_sensitive: false,
            interpolation: true,
        }
    }

    #[test]
    fn reads_sections_continuations_and_comments() {
        let cfg = parser()
            .read("[a]\n# c\nKey = v1\nmulti: one\n  two\n\n[b]\nx=%(y)s/z\ny = base\n")
            .unwrap();
        let a = &cfg.sections["a"];
        assert_eq!(cfg.lookup(a, "key"), Some(Some("v1".into())));
        assert_eq!(cfg.lookup(a, "multi"), Some(Some("one\ntwo".into())));
        let b = &cfg.sections["b"];
        let v = cfg.value(b, "x", Some("%(y)s/z".into()), true).unwrap();
        assert_eq!(v.as_str(), Some("base/z"));
    }

    #[test]
    fn duplicates_and_missing_values_are_refused_like_configparser() {
        assert!(matches!(
            parser().read("[r]\nname = a\nNAME = b\n"),
            Err(ReadError::DuplicateOption)
        ));
        let cs = Parser {
            case_sensitive: true,
            ..parser()
        };
        assert!(cs.read("[r]\nname = a\nNAME = b\n").is_ok());
        assert!(matches!(
            parser().read("[m]\nskip-innodb\n"),
            Err(ReadError::Parsing(2, _))
        ));
        let nv = Parser {
            allow_no_value: true,
            ..parser()
        };
        let cfg = nv.read("[m]\nskip-innodb\n").unwrap();
        assert_eq!(cfg.lookup(&cfg.sections["m"], "skip-innodb"), Some(None));
    }

    #[test]
    fn inline_params_group_words_by_option() {
        assert_eq!(
            inline_params("value1   type=properties  file=a b.properties"),
            vec!["value1", "type=properties", "file=a b.properties"]
        );
        assert_eq!(inline_params("file=lookup.ini"), vec!["file=lookup.ini"]);
    }
}
