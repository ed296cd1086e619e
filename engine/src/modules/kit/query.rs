//! The *query* half of a module: one `sh` script that learns everything the
//! module needs to decide, in one round trip.
//!
//! A [`Query`] gathers named sections (a command's output, a whole file, a
//! yes/no test, the stat of a path) into one script. Every section starts
//! with a random token line, so file bodies come back byte for byte and no
//! output of one section can be mistaken for another. [`Answers`] reads them
//! back by name. Every user value must reach the script through
//! [`quote`](crate::shell::quote); the helpers here quote literal paths
//! themselves.

use std::collections::HashMap;

use super::stat::{RemoteStat, StatReport, STAT_FN};
use crate::modules::{ModuleError, TaskContext};
use crate::shell::quote;

/// A query script under construction.
pub struct Query {
    token: String,
    script: String,
    /// Whether [`STAT_FN`] is already defined in the script.
    stat_fn: bool,
    /// How many [`Query::raw`] blocks so far (each is its own section).
    raws: usize,
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
            stat_fn: false,
            raws: 0,
        }
    }

    fn header(&mut self, name: &str) {
        self.script
            .push_str(&format!("printf '\\n%s %s\\n' '{}' '{name}'\n", self.token));
    }

    /// Adds a section whose body is whatever `shell` prints (its own stderr
    /// is kept out of the answer). `shell` must quote its own user values.
    pub fn section(&mut self, name: &str, shell: &str) -> &mut Self {
        self.header(name);
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

    /// Adds a section that prints `1` when `shell` succeeds, else `0`.
    pub fn test(&mut self, name: &str, shell: &str) -> &mut Self {
        self.section(name, &format!("if {shell}; then echo 1; else echo 0; fi"))
    }

    /// Adds shell lines that may set variables later sections use (`d=...`)
    /// and may print `KEY value` lines, read back with [`Answers::line`].
    /// They must quote their own user values.
    pub fn raw(&mut self, shell: &str) -> &mut Self {
        let name = format!("raw#{}", self.raws);
        self.raws += 1;
        self.header(&name);
        self.script.push_str(shell);
        if !shell.ends_with('\n') {
            self.script.push('\n');
        }
        self
    }

    /// Stats `path_expr` (a shell word, already quoted, or `"$var"`) under
    /// `label`: type, mode, owner, size, times, link target and, with a
    /// `checksum` tool such as `sha1sum`, a regular file's checksum.
    pub fn stat_expr(
        &mut self,
        label: &str,
        path_expr: &str,
        follow: bool,
        checksum: Option<&str>,
    ) -> &mut Self {
        if !self.stat_fn {
            self.stat_fn = true;
            self.script.push_str(STAT_FN);
        }
        self.header(&format!("stat:{label}"));
        self.script.push_str(&format!(
            "ks {} {} {} {}\n",
            label,
            path_expr,
            if follow { "1" } else { "0" },
            checksum.unwrap_or("''")
        ));
        self
    }

    /// Stats a literal path (see [`Query::stat_expr`]).
    pub fn stat(
        &mut self,
        label: &str,
        path: &str,
        follow: bool,
        checksum: Option<&str>,
    ) -> &mut Self {
        let q = quote(path);
        self.stat_expr(label, &q, follow, checksum)
    }

    /// Reads the body of the regular, readable file at `path_expr` (a shell
    /// word), for [`Answers::content`].
    pub fn content_expr(&mut self, path_expr: &str) -> &mut Self {
        let p = path_expr;
        self.section(
            "content",
            &format!("if [ -f {p} ] && [ -r {p} ]; then echo 1; cat -- {p}; else echo 0; fi"),
        )
    }

    pub fn script(&self) -> &str {
        &self.script
    }

    /// Runs the query (one round trip). The exit status is not looked at:
    /// each section reports what it found.
    pub async fn run(&self, ctx: &TaskContext<'_>) -> Result<Answers, ModuleError> {
        let out = ctx.run(self.script.clone(), None).await?;
        Ok(Answers::parse(&self.token, &out.stdout))
    }

    /// Like [`Query::run`], with `stdin` for the script (a secret the
    /// script reads before its sections, such as a passphrase).
    pub async fn run_with_stdin(
        &self,
        ctx: &TaskContext<'_>,
        stdin: Vec<u8>,
    ) -> Result<Answers, ModuleError> {
        let out = ctx.run(self.script.clone(), Some(stdin)).await?;
        Ok(Answers::parse(&self.token, &out.stdout))
    }

    /// Like [`Query::run`], but a non-zero exit status of the script (its
    /// last section) fails the module: for queries that must work, such as
    /// the stat of the file a module is about to change.
    pub async fn run_checked(&self, ctx: &TaskContext<'_>) -> Result<Answers, ModuleError> {
        let out = ctx.run(self.script.clone(), None).await?;
        if out.rc != 0 {
            return Err(ModuleError::Failed(format!(
                "querying the host failed (rc={}): {}",
                out.rc,
                out.stderr_str().trim()
            )));
        }
        Ok(Answers::parse(&self.token, &out.stdout))
    }
}

/// The sections a [`Query`] printed, by name.
#[derive(Debug, Default)]
pub struct Answers {
    sections: HashMap<String, Section>,
    /// `KEY value` lines of the [`Query::raw`] blocks, in script order.
    lines: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Section {
    bytes: Vec<u8>,
    text: String,
}

impl Answers {
    pub fn parse(token: &str, stdout: &[u8]) -> Answers {
        let sep = format!("\n{token} ");
        let sep = sep.as_bytes();
        let mut starts = Vec::new();
        let mut i = 0;
        while let Some(at) = find(&stdout[i..], sep) {
            starts.push(i + at);
            i += at + sep.len();
        }
        let mut answers = Answers::default();
        let mut raws: Vec<(usize, String)> = Vec::new();
        for (n, &at) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(stdout.len());
            let chunk = &stdout[at + sep.len()..end];
            let (name, body) = match chunk.iter().position(|&b| b == b'\n') {
                Some(nl) => (&chunk[..nl], &chunk[nl + 1..]),
                None => (chunk, &chunk[chunk.len()..]),
            };
            let name = String::from_utf8_lossy(name).into_owned();
            let text = String::from_utf8_lossy(body).into_owned();
            if let Some(k) = name.strip_prefix("raw#").and_then(|k| k.parse().ok()) {
                raws.push((k, text.clone()));
            }
            answers.sections.insert(
                name,
                Section {
                    bytes: body.to_vec(),
                    text,
                },
            );
        }
        raws.sort_by_key(|(k, _)| *k);
        for (_, text) in raws {
            answers
                .lines
                .extend(StatReport::parse(text.as_bytes()).lines);
        }
        answers
    }

    /// A section's text ("" when it printed nothing).
    pub fn text(&self, name: &str) -> &str {
        self.sections
            .get(name)
            .map(|s| s.text.as_str())
            .unwrap_or("")
    }

    /// A section's bytes (empty when it printed nothing).
    pub fn bytes(&self, name: &str) -> &[u8] {
        self.sections
            .get(name)
            .map(|s| s.bytes.as_slice())
            .unwrap_or(&[])
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

    /// A [`Query::file`] answer as bytes.
    pub fn file_bytes(&self, name: &str) -> Option<&[u8]> {
        let b = self.sections.get(name).map(|s| s.bytes.as_slice())?;
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        (&b[..nl] == b"1").then(|| &b[(nl + 1).min(b.len())..])
    }

    /// The [`Query::content_expr`] body: `None` when the file was missing
    /// or unreadable.
    pub fn content(&self) -> Option<Vec<u8>> {
        self.file_bytes("content").map(<[u8]>::to_vec)
    }

    /// The [`Query::stat`] answer under `label` (`exists: false` when the
    /// path is missing).
    pub fn stat(&self, label: &str) -> RemoteStat {
        StatReport::parse(self.text(&format!("stat:{label}")).as_bytes()).stat(label)
    }

    /// The value of the first `KEY value` line a [`Query::raw`] block
    /// printed.
    pub fn line(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every `KEY value` line the [`Query::raw`] blocks printed.
    pub fn lines(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_file_bodies_byte_for_byte() {
        let t = "@@T@@";
        let out = format!("\n{t} a\n1\nx\ny\n{t} b\n0\n\n{t} c\n1\nno-newline");
        let a = Answers::parse(t, out.as_bytes());
        assert_eq!(a.file("a"), Some("x\ny"));
        assert_eq!(a.file("b"), None);
        assert_eq!(a.file("c"), Some("no-newline"));
        assert_eq!(a.text("missing"), "");
    }

    #[test]
    fn binary_bodies_raw_lines_and_stats_share_one_script() {
        let t = "@@T@@";
        let mut out = format!("\n{t} raw#0\nD /x/y\n\n{t} stat:p\n@p S 81a4 0 0 3 1 2 3 4 1 5 root root\n@p A rw\n\n{t} content\n1\n").into_bytes();
        out.extend_from_slice(&[0, 159, 146, 150]);
        let a = Answers::parse(t, &out);
        assert_eq!(a.line("D"), Some("/x/y"));
        let st = a.stat("p");
        assert!(st.exists && st.is_file() && st.readable && !st.executable);
        assert_eq!(st.mode, 0o644);
        assert_eq!(a.content(), Some(vec![0, 159, 146, 150]));
        assert!(!a.stat("other").exists);
    }
}
