//! Query and apply plumbing shared by the system, package, network and
//! source modules.
//!
//! *Query*: a [`Query`] gathers any number of named sections (a whole file,
//! the output of `getent`, `crontab -l`...) into one `sh` script, so a module
//! learns the host's state in one round trip. Sections are separated by a
//! random token, so file bodies come back byte for byte.
//! *Apply*: [`apply`] runs a `set -e` script and turns a non-zero exit into a
//! task failure; [`write_file`] replaces a file atomically through
//! [`FileWrite`](crate::modules::files::remote::FileWrite).

use std::collections::HashMap;

use crate::modules::files::remote::{FileWrite, Source};
use crate::modules::{FileDiff, ModuleError, ModuleResult, TaskContext};
use crate::transport::{quote, Output};

/// A query script under construction.
pub struct Query {
    token: String,
    script: String,
}

impl Default for Query {
    fn default() -> Self {
        Query::new()
    }
}

impl Query {
    pub fn new() -> Query {
        Query {
            token: format!("@@KEEL-{:016x}@@", rand::random::<u64>()),
            script: String::new(),
        }
    }

    /// Adds a section whose body is whatever `shell` prints (its own stderr
    /// is kept out of the answer). `shell` must quote its own user values.
    pub fn section(&mut self, name: &str, shell: &str) -> &mut Self {
        self.script
            .push_str(&format!("printf '\\n%s %s\\n' '{}' '{name}'\n", self.token));
        self.script
            .push_str(&format!("{{\n{shell}\n}} 2>/dev/null\n"));
        self
    }

    /// Adds a section holding a regular file: first line `1` or `0` (whether
    /// the file exists), then its bytes.
    pub fn file(&mut self, name: &str, path: &str) -> &mut Self {
        self.file_expr(name, &quote(path))
    }

    /// Like [`Query::file`] with a shell word (`"$p"`) for the path.
    pub fn file_expr(&mut self, name: &str, p: &str) -> &mut Self {
        self.section(
            name,
            &format!("if [ -f {p} ]; then echo 1; cat -- {p}; else echo 0; fi"),
        )
    }

    /// Adds shell lines outside any section (setting variables later
    /// sections use). They must print nothing.
    pub fn raw(&mut self, shell: &str) -> &mut Self {
        self.script.push_str(shell);
        self.script.push('\n');
        self
    }

    /// Adds a section that prints `1` when `shell` succeeds, else `0`.
    pub fn test(&mut self, name: &str, shell: &str) -> &mut Self {
        self.section(name, &format!("if {shell}; then echo 1; else echo 0; fi"))
    }

    pub fn script(&self) -> &str {
        &self.script
    }

    /// Runs the query (one round trip).
    pub async fn run(&self, ctx: &TaskContext<'_>) -> Result<Answers, ModuleError> {
        let out = ctx.run(self.script.clone(), None).await?;
        Ok(Answers::parse(&self.token, &out.stdout_str()))
    }
}

/// The sections a [`Query`] printed, by name.
#[derive(Debug, Default)]
pub struct Answers {
    sections: HashMap<String, String>,
}

impl Answers {
    pub fn parse(token: &str, stdout: &str) -> Answers {
        let mut sections = HashMap::new();
        let sep = format!("\n{token} ");
        for chunk in stdout.split(sep.as_str()).skip(1) {
            let (name, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
            sections.insert(name.to_string(), body.to_string());
        }
        Answers { sections }
    }

    /// A section's text ("" when it printed nothing).
    pub fn text(&self, name: &str) -> &str {
        self.sections.get(name).map(String::as_str).unwrap_or("")
    }

    /// A section's text without trailing whitespace.
    pub fn trimmed(&self, name: &str) -> &str {
        self.text(name).trim_end()
    }

    /// A [`Query::test`] answer.
    pub fn yes(&self, name: &str) -> bool {
        self.text(name).trim() == "1"
    }

    /// A [`Query::file`] answer: `None` when the file is missing.
    pub fn file(&self, name: &str) -> Option<&str> {
        let t = self.text(name);
        let (flag, body) = t.split_once('\n').unwrap_or((t, ""));
        (flag == "1").then_some(body)
    }
}

/// Runs an apply script under `set -e`; a non-zero exit is returned as the
/// failure message (stderr, else stdout).
pub async fn apply(
    ctx: &TaskContext<'_>,
    script: &str,
    stdin: Option<Vec<u8>>,
) -> Result<Result<Output, String>, ModuleError> {
    let out = ctx.run(format!("set -e\n{script}"), stdin).await?;
    if out.rc != 0 {
        return Ok(Err(failure_text(&out)));
    }
    Ok(Ok(out))
}

/// The most useful text of a failed command.
pub fn failure_text(out: &Output) -> String {
    let e = out.stderr_str();
    let e = e.trim();
    if e.is_empty() {
        format!("rc={}: {}", out.rc, out.stdout_str().trim())
    } else {
        e.to_string()
    }
}

/// Ownership and mode of a file a module writes.
#[derive(Debug, Clone, Default)]
pub struct FileOwner<'a> {
    pub mode: Option<u32>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// Replaces `path` with `content` atomically (one round trip).
pub async fn write_file(
    ctx: &TaskContext<'_>,
    path: &str,
    content: &[u8],
    attrs: FileOwner<'_>,
    exists: bool,
    make_parents: bool,
) -> Result<Result<(), String>, ModuleError> {
    let w = FileWrite {
        dest: path,
        source: Source::Bytes(content),
        mode: attrs.mode,
        owner: attrs.owner,
        group: attrs.group,
        backup: false,
        validate: None,
        dest_exists: exists,
        make_parents,
    };
    Ok(w.run(ctx).await?.map(|_| ()))
}

/// A before/after diff of a file's text (`/dev/null` for a missing side).
pub fn text_diff(path: &str, before: Option<&str>, after: Option<&str>) -> FileDiff {
    FileDiff {
        before_header: if before.is_some() {
            path.into()
        } else {
            "/dev/null".into()
        },
        after_header: if after.is_some() {
            path.into()
        } else {
            "/dev/null".into()
        },
        before: before.unwrap_or("").to_string(),
        after: after.unwrap_or("").to_string(),
    }
}

/// A before/after diff of a named object's attributes (`key: value` lines).
pub fn state_diff(name: &str, before: &[(&str, String)], after: &[(&str, String)]) -> FileDiff {
    let render = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect::<String>()
    };
    FileDiff {
        before_header: name.to_string(),
        after_header: name.to_string(),
        before: render(before),
        after: render(after),
    }
}

/// Turns the inner failure of [`apply`]/[`write_file`] into a result.
pub fn failed(msg: String) -> ModuleResult {
    ModuleResult::failed(msg)
}

/// `DEBIAN_FRONTEND=noninteractive`-style environment prefix for a script.
pub fn env_prefix(vars: &[(&str, &str)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_file_bodies_byte_for_byte() {
        let t = "@@T@@";
        let out = format!("\n{t} a\n1\nx\ny\n{t} b\n0\n\n{t} c\n1\nno-newline");
        let a = Answers::parse(t, &out);
        assert_eq!(a.file("a"), Some("x\ny"));
        assert_eq!(a.file("b"), None);
        assert_eq!(a.file("c"), Some("no-newline"));
        assert_eq!(a.text("missing"), "");
    }
}
