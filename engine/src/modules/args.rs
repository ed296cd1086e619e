//! Typed argument parsing for modules: the first thing every module does.
//!
//! A module wraps its templated [`Args`] in a [`ModuleArgs`], pulls each
//! parameter out with a typed getter (aliases allowed), then calls
//! [`ModuleArgs::finish`], which rejects any argument nobody asked for with a
//! "did you mean" hint. Coercions follow Ansible: `yes`/`on`/`1` are booleans,
//! `"0644"` and `0o644` are modes, `"a,b"` is a list where Ansible splits on
//! commas.

use indexmap::IndexMap;
use minijinja::value::ValueKind;
use minijinja::Value;

use super::{Args, ModuleError};

/// A file mode as a task may spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSpec {
    /// Absolute permission bits (`0644`, `"0644"`, `420`).
    Octal(u32),
    /// A `chmod`-style symbolic mode (`u=rw,g=r,o=`, `a+x`).
    Symbolic(String),
    /// `preserve`: keep the source file's mode (`copy`).
    Preserve,
}

impl ModeSpec {
    /// The mode a file with `current` permissions ends up with. `Preserve`
    /// yields `None` (the caller knows the source mode).
    pub fn resolve(&self, current: u32, is_dir: bool) -> Result<Option<u32>, ModuleError> {
        match self {
            ModeSpec::Octal(m) => Ok(Some(*m)),
            ModeSpec::Preserve => Ok(None),
            ModeSpec::Symbolic(s) => apply_symbolic(s, current, is_dir).map(Some),
        }
    }
}

/// Applies a symbolic mode (`u+x,g-w,o=r`, `a=rX`) to `current`.
pub fn apply_symbolic(spec: &str, current: u32, is_dir: bool) -> Result<u32, ModuleError> {
    let bad = || ModuleError::Args(format!("bad symbolic permission for mode: {spec}"));
    let mut mode = current & 0o7777;
    for clause in spec.split(',') {
        let clause = clause.trim();
        let ops_at = clause.find(['=', '+', '-']).ok_or_else(bad)?;
        let (who_s, mut rest) = clause.split_at(ops_at);
        let mut who = 0u32;
        for c in who_s.chars() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return Err(bad()),
            };
        }
        if who == 0 {
            who = 0o7777;
        }
        // Several operations may follow one `who` (`u=rw+x`).
        while !rest.is_empty() {
            let op = rest.as_bytes()[0];
            rest = &rest[1..];
            let end = rest.find(['=', '+', '-']).unwrap_or(rest.len());
            let perms = &rest[..end];
            rest = &rest[end..];
            let mut bits = 0u32;
            for c in perms.chars() {
                bits |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' => {
                        if is_dir || mode & 0o111 != 0 {
                            0o111
                        } else {
                            0
                        }
                    }
                    's' => 0o6000,
                    't' => 0o1000,
                    'u' => spread(mode >> 6 & 7),
                    'g' => spread(mode >> 3 & 7),
                    'o' => spread(mode & 7),
                    _ => return Err(bad()),
                };
            }
            let bits = bits & who;
            match op {
                b'=' => {
                    // `=` clears the who's rwx (and its special bit) first.
                    mode = (mode & !(who & 0o7777)) | bits;
                }
                b'+' => mode |= bits,
                b'-' => mode &= !bits,
                _ => return Err(bad()),
            }
        }
    }
    Ok(mode)
}

fn spread(rwx: u32) -> u32 {
    rwx << 6 | rwx << 3 | rwx
}

/// Builds a map value with string keys, keeping insertion order.
pub fn dict<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
    let m: IndexMap<Value, Value> = pairs
        .into_iter()
        .map(|(k, v)| (Value::from(k.into()), v))
        .collect();
    Value::from(m)
}

/// Converts a [`VarMap`](crate::vars::VarMap)-like map into a value.
pub fn map_value(m: &IndexMap<String, Value>) -> Value {
    dict(m.iter().map(|(k, v)| (k.clone(), v.clone())))
}

/// Ansible's boolean coercion, shared by modules and the executor.
pub fn to_bool(v: &Value) -> Option<bool> {
    match v.kind() {
        ValueKind::Bool => Some(v.is_true()),
        ValueKind::Number => v.as_i64().map(|n| n != 0),
        ValueKind::String => match v.as_str()?.trim().to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" | "1" | "y" | "t" => Some(true),
            "no" | "off" | "false" | "0" | "n" | "f" | "" => Some(false),
            _ => None,
        },
        ValueKind::None | ValueKind::Undefined => None,
        _ => None,
    }
}

/// A string view of a scalar value (numbers and bools print as Ansible would).
pub fn scalar_string(v: &Value) -> Option<String> {
    match v.kind() {
        ValueKind::String => v.as_str().map(str::to_string),
        ValueKind::Number => Some(v.to_string()),
        ValueKind::Bool => Some(if v.is_true() { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// Typed access to one task's module arguments.
pub struct ModuleArgs<'a> {
    module: &'static str,
    params: &'static Params,
    args: &'a Args,
    known: Vec<&'static str>,
}

impl<'a> ModuleArgs<'a> {
    /// Arguments checked against the module's declared [`Params`].
    pub fn new(params: &'static Params, args: &'a Args) -> ModuleArgs<'a> {
        ModuleArgs {
            module: params.module,
            params,
            args,
            known: Vec::new(),
        }
    }

    /// A getter asked for a name the module's [`Params`] does not declare:
    /// the declaration is what the resolver checks, so it must be complete.
    fn declared(&self, names: &[&'static str]) {
        debug_assert!(
            names.iter().all(|n| self.params.accepts(n)),
            "module {} reads {names:?}, which its Params do not declare",
            self.module
        );
    }

    /// The module name used in messages.
    pub fn module(&self) -> &'static str {
        self.module
    }

    fn err(&self, msg: String) -> ModuleError {
        ModuleError::Args(msg)
    }

    /// The raw value of the first of `names` that is set (not null/undefined).
    pub fn value(&mut self, names: &[&'static str]) -> Option<Value> {
        self.declared(names);
        self.known.extend_from_slice(names);
        names
            .iter()
            .filter_map(|n| self.args.get(*n))
            .find(|v| !v.is_none() && !v.is_undefined())
            .cloned()
    }

    /// Whether the task passed any of `names` (without consuming it).
    pub fn has(&self, name: &str) -> bool {
        self.args
            .get(name)
            .is_some_and(|v| !v.is_none() && !v.is_undefined())
    }

    pub fn string(&mut self, names: &[&'static str]) -> Result<Option<String>, ModuleError> {
        match self.value(names) {
            None => Ok(None),
            Some(v) => match scalar_string(&v) {
                Some(s) => Ok(Some(s)),
                None => Err(self.err(format!(
                    "argument '{}' of module {} is of type {} and we were unable to convert to str",
                    names[0],
                    self.module,
                    v.kind()
                ))),
            },
        }
    }

    pub fn req_string(&mut self, names: &[&'static str]) -> Result<String, ModuleError> {
        match self.string(names)? {
            Some(s) => Ok(s),
            None => Err(self.missing(names[0])),
        }
    }

    /// The error for a required argument that is missing.
    pub fn missing(&self, name: &str) -> ModuleError {
        // A typo of the required name is the likelier story: say so.
        for key in self.args.keys() {
            if !self.known.contains(&key.as_str()) && crate::diag::suggest(key, [name]).is_some() {
                return self.err(format!(
                    "unsupported parameter '{key}' for module {}; did you mean '{name}'?",
                    self.module
                ));
            }
        }
        self.err(format!(
            "missing required arguments: {name} (module {})",
            self.module
        ))
    }

    pub fn bool(&mut self, names: &[&'static str], default: bool) -> Result<bool, ModuleError> {
        Ok(self.opt_bool(names)?.unwrap_or(default))
    }

    pub fn opt_bool(&mut self, names: &[&'static str]) -> Result<Option<bool>, ModuleError> {
        match self.value(names) {
            None => Ok(None),
            Some(v) => match to_bool(&v) {
                Some(b) => Ok(Some(b)),
                None => Err(self.err(format!(
                    "argument '{}' of module {}: the value {} is not a valid boolean; \
                     valid booleans include yes/no, true/false, on/off, 1/0",
                    names[0],
                    self.module,
                    quote_repr(&v)
                ))),
            },
        }
    }

    pub fn int(&mut self, names: &[&'static str]) -> Result<Option<i64>, ModuleError> {
        match self.value(names) {
            None => Ok(None),
            Some(v) => {
                if let Some(n) = v.as_i64() {
                    return Ok(Some(n));
                }
                let parsed = v
                    .as_str()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .or_else(|| {
                        // 1.0 → 1, as Python's int() on a float would.
                        f64::try_from(v.clone())
                            .ok()
                            .filter(|f| f.fract() == 0.0)
                            .map(|f| f as i64)
                    });
                parsed.map(Some).ok_or_else(|| {
                    self.err(format!(
                        "argument '{}' of module {}: {} cannot be converted to an int",
                        names[0],
                        self.module,
                        quote_repr(&v)
                    ))
                })
            }
        }
    }

    pub fn float(&mut self, names: &[&'static str]) -> Result<Option<f64>, ModuleError> {
        match self.value(names) {
            None => Ok(None),
            Some(v) => {
                if let Ok(f) = f64::try_from(v.clone()) {
                    return Ok(Some(f));
                }
                v.as_str()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .map(Some)
                    .ok_or_else(|| {
                        self.err(format!(
                            "argument '{}' of module {}: {} cannot be converted to a float",
                            names[0],
                            self.module,
                            quote_repr(&v)
                        ))
                    })
            }
        }
    }

    /// A list of strings; a string is split on commas, as Ansible does for
    /// `type='list'` parameters.
    pub fn list(&mut self, names: &[&'static str]) -> Result<Option<Vec<String>>, ModuleError> {
        match self.value(names) {
            None => Ok(None),
            Some(v) => match v.kind() {
                ValueKind::String => Ok(Some(
                    v.as_str()
                        .unwrap_or_default()
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )),
                ValueKind::Seq | ValueKind::Iterable => {
                    let mut out = Vec::new();
                    for item in v.try_iter().map_err(|e| self.err(e.to_string()))? {
                        match scalar_string(&item) {
                            Some(s) => out.push(s),
                            None => {
                                return Err(self.err(format!(
                                "argument '{}' of module {}: list elements must be strings, got {}",
                                names[0],
                                self.module,
                                item.kind()
                            )))
                            }
                        }
                    }
                    Ok(Some(out))
                }
                _ => scalar_string(&v).map(|s| Some(vec![s])).ok_or_else(|| {
                    self.err(format!(
                        "argument '{}' of module {} must be a list, got {}",
                        names[0],
                        self.module,
                        v.kind()
                    ))
                }),
            },
        }
    }

    /// A list that must not be split on commas (a single string is one item).
    pub fn list_no_split(
        &mut self,
        names: &[&'static str],
    ) -> Result<Option<Vec<String>>, ModuleError> {
        match self.value(names) {
            Some(v) if v.kind() == ValueKind::String => {
                Ok(Some(vec![v.as_str().unwrap_or_default().to_string()]))
            }
            Some(_) => {
                // Re-read through `list` (the value is known to be a sequence).
                self.known.truncate(self.known.len() - names.len());
                self.list(names)
            }
            None => Ok(None),
        }
    }

    /// One of a fixed set of words.
    pub fn choice(
        &mut self,
        names: &[&'static str],
        choices: &[&'static str],
        default: Option<&'static str>,
    ) -> Result<Option<String>, ModuleError> {
        match self.string(names)? {
            None => Ok(default.map(str::to_string)),
            Some(s) if choices.contains(&s.as_str()) => Ok(Some(s)),
            Some(s) => Err(self.err(format!(
                "value of {} must be one of: {}, got: {} (module {})",
                names[0],
                choices.join(", "),
                s,
                self.module
            ))),
        }
    }

    /// A file mode: octal int (already decoded by YAML), octal string, or
    /// symbolic string.
    pub fn mode(&mut self, names: &[&'static str]) -> Result<Option<ModeSpec>, ModuleError> {
        let Some(v) = self.value(names) else {
            return Ok(None);
        };
        if let Some(n) = v.as_i64() {
            if !(0..=0o7777).contains(&n) {
                return Err(self.err(format!("mode {n} is out of range (module {})", self.module)));
            }
            return Ok(Some(ModeSpec::Octal(n as u32)));
        }
        let Some(s) = v.as_str() else {
            return Err(self.err(format!(
                "mode must be an octal number or a string, got {}",
                v.kind()
            )));
        };
        let s = s.trim();
        if s == "preserve" {
            return Ok(Some(ModeSpec::Preserve));
        }
        let digits = s.strip_prefix("0o").unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let n = u32::from_str_radix(digits, 8).map_err(|e| self.err(e.to_string()))?;
            if n > 0o7777 {
                return Err(self.err(format!("mode {s} is out of range (module {})", self.module)));
            }
            return Ok(Some(ModeSpec::Octal(n)));
        }
        // Validate the symbolic form now so a typo fails before touching the host.
        apply_symbolic(s, 0, false)?;
        Ok(Some(ModeSpec::Symbolic(s.to_string())))
    }

    /// Declares names the module accepts but ignores (Ansible-only knobs).
    pub fn ignore(&mut self, names: &[&'static str]) {
        self.declared(names);
        self.known.extend_from_slice(names);
    }

    /// Rejects any argument the module does not declare, as ansible-core
    /// does when the task runs (the resolver only warns, so `when` and
    /// `ignore_errors` apply); this also catches what templating or
    /// `module_defaults` brought in.
    pub fn finish(self) -> Result<(), ModuleError> {
        let unknown = self.params.unsupported(
            self.args
                .keys()
                .map(String::as_str)
                .filter(|k| !self.known.contains(k)),
        );
        if unknown.is_empty() {
            return Ok(());
        }
        // ansible-core's words; the resolver's warning gave the did-you-mean.
        Err(ModuleError::Args(self.params.unsupported_message(&unknown)))
    }
}

/// One accepted argument: its name, then its aliases.
pub type Param = &'static [&'static str];

/// The arguments a module accepts, declared once in the module's file.
///
/// The resolver checks a task's argument names against it before any
/// connection opens ([`Params::unsupported`]) and warns; the task fails on
/// them when it runs, in [`ModuleArgs::finish`], which also sees what only
/// templating reveals (a whole-argument template, `module_defaults`). `sets` lets a module add a kit's shared
/// arguments (`FILE_ATTR_PARAMS`, `RUN_OPT_PARAMS`) to its own.
#[derive(Debug)]
pub struct Params {
    pub module: &'static str,
    pub sets: &'static [&'static [Param]],
}

impl Params {
    /// Every accepted name, aliases included.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sets
            .iter()
            .flat_map(|s| s.iter())
            .flat_map(|p| p.iter())
            .copied()
    }

    pub fn accepts(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    /// The names among `keys` this module does not accept, sorted.
    pub fn unsupported<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Vec<&'k str> {
        let mut v: Vec<&str> = keys.into_iter().filter(|k| !self.accepts(k)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The accepted name closest to a misspelt `key`, if any is close.
    pub fn suggest(&self, key: &str) -> Option<&'static str> {
        crate::diag::suggest(key, self.names())
    }

    /// ansible-core's wording: `Unsupported parameters for (copy) module:
    /// bogus. Supported parameters include: backup, ... (aliases).`
    pub fn unsupported_message(&self, unknown: &[&str]) -> String {
        let mut names: Vec<&str> = Vec::new();
        let mut aliases: Vec<&str> = Vec::new();
        for p in self.sets.iter().flat_map(|s| s.iter()) {
            if let Some((first, rest)) = p.split_first() {
                names.push(first);
                aliases.extend(rest);
            }
        }
        names.sort_unstable();
        names.dedup();
        aliases.sort_unstable();
        aliases.dedup();
        let mut msg = format!(
            "Unsupported parameters for ({}) module: {}. Supported parameters include: {}",
            self.module,
            unknown.join(", "),
            names.join(", ")
        );
        if !aliases.is_empty() {
            msg.push_str(&format!(" ({})", aliases.join(", ")));
        }
        msg.push('.');
        msg
    }
}

fn quote_repr(v: &Value) -> String {
    match v.as_str() {
        Some(s) => format!("'{s}'"),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes_apply_like_chmod() {
        assert_eq!(apply_symbolic("u=rw,g=r,o=r", 0o777, false).unwrap(), 0o644);
        assert_eq!(apply_symbolic("u+x", 0o644, false).unwrap(), 0o744);
        assert_eq!(apply_symbolic("g-w", 0o664, false).unwrap(), 0o644);
        assert_eq!(apply_symbolic("a=r", 0o755, false).unwrap(), 0o444);
        assert_eq!(
            apply_symbolic("u=rwx,g=rx,o=", 0o600, false).unwrap(),
            0o750
        );
        assert_eq!(apply_symbolic("a+X", 0o644, true).unwrap(), 0o755);
        assert_eq!(apply_symbolic("a+X", 0o644, false).unwrap(), 0o644);
        assert_eq!(apply_symbolic("+x", 0o600, false).unwrap(), 0o711);
        assert!(apply_symbolic("z+x", 0o600, false).is_err());
    }
}
