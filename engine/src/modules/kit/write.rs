//! The *apply* half of a module: scripts that change the host.
//!
//! [`apply`] runs a `set -e` script and turns a non-zero exit into the
//! task's failure message. [`FileWrite`] replaces one file atomically (a
//! temp file in the same directory, `chmod`/`chown`, optional `validate` and
//! backup, then `mv -f`) and stats the result in the same round trip;
//! [`write_file`] is its short form for modules that own a config file.

use super::stat::{RemoteStat, StatReport, STAT_FN};
use crate::modules::{ModuleError, TaskContext};
use crate::shell::quote;
use crate::transport::Output;

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

/// `DEBIAN_FRONTEND=noninteractive`-style environment prefix for a script.
pub fn env_prefix(vars: &[(&str, &str)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect()
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

/// Where the bytes of a [`FileWrite`] come from.
pub enum Source<'a> {
    /// Sent on the command's stdin.
    Bytes(&'a [u8]),
    /// A file already on the host (`remote_src`).
    RemotePath(&'a str),
}

/// An atomic replace of one file on the host.
pub struct FileWrite<'a> {
    pub dest: &'a str,
    pub source: Source<'a>,
    /// Explicit permission bits; `None` keeps an existing file's mode, or
    /// uses `0666 & ~umask` for a new one.
    pub mode: Option<u32>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub backup: bool,
    pub validate: Option<&'a str>,
    /// Whether `dest` existed at query time (keeps its mode/owner).
    pub dest_exists: bool,
    /// Create missing parent directories first (`copy` to `dir/`).
    pub make_parents: bool,
}

/// Exit status of the write script when `validate` refused the file.
pub const VALIDATE_RC: i32 = 86;

/// The outcome of a [`FileWrite`].
pub struct WriteOutcome {
    pub backup_file: Option<String>,
    /// The file as it is after the write.
    pub final_stat: RemoteStat,
}

impl FileWrite<'_> {
    /// The apply script and its stdin.
    pub fn script(&self) -> Result<(String, Option<Vec<u8>>), ModuleError> {
        let dest = quote(self.dest);
        let (dir, base) = split_path(self.dest);
        let tmp = format!(
            "{}/.{}.keel{:08x}.tmp",
            if dir.is_empty() { "." } else { dir },
            base,
            rand::random::<u32>()
        );
        let mut s = format!(
            "d={dest}\nt={}\ntrap 'rm -f -- \"$t\"' EXIT\nset -e\n",
            quote(&tmp)
        );
        if self.make_parents && !dir.is_empty() {
            s.push_str(&format!("mkdir -p -- {}\n", quote(dir)));
        }
        let stdin = match &self.source {
            Source::Bytes(b) => {
                s.push_str("(umask 077; cat > \"$t\")\n");
                Some(b.to_vec())
            }
            Source::RemotePath(p) => {
                s.push_str(&format!("(umask 077; cp -- {} \"$t\")\n", quote(p)));
                None
            }
        };
        match self.mode {
            Some(m) => s.push_str(&format!("chmod {:04o} \"$t\"\n", m)),
            None if self.dest_exists => s.push_str("chmod --reference=\"$d\" \"$t\"\n"),
            None => s.push_str("chmod \"$(printf %o $((0666 & ~$(umask))))\" \"$t\"\n"),
        }
        if self.owner.is_none() && self.group.is_none() && self.dest_exists {
            s.push_str("chown --reference=\"$d\" \"$t\" 2>/dev/null || true\n");
        }
        if let Some(o) = self.owner {
            s.push_str(&format!("chown -- {} \"$t\"\n", quote(o)));
        }
        if let Some(g) = self.group {
            s.push_str(&format!("chgrp -- {} \"$t\"\n", quote(g)));
        }
        if let Some(v) = self.validate {
            s.push_str(&validate_snippet(v, &tmp)?);
        }
        if self.backup && self.dest_exists {
            s.push_str(BACKUP_SNIPPET);
        }
        s.push_str("mv -f -- \"$t\" \"$d\"\n");
        s.push_str("set +e\n");
        s.push_str(STAT_FN);
        s.push_str("ks final \"$d\" 0 ''\n");
        Ok((s, stdin))
    }

    /// Runs the write (one round trip).
    pub async fn run(
        &self,
        ctx: &TaskContext<'_>,
    ) -> Result<Result<WriteOutcome, String>, ModuleError> {
        let (script, stdin) = self.script()?;
        let out = ctx.run(script, stdin).await?;
        if out.rc == VALIDATE_RC {
            return Ok(Err(format!(
                "failed to validate: {}",
                out.stderr_str().trim()
            )));
        }
        if out.rc != 0 {
            return Ok(Err(format!(
                "failed to write {}: {}",
                self.dest,
                out.stderr_str().trim()
            )));
        }
        let parsed = StatReport::parse(&out.stdout);
        Ok(Ok(WriteOutcome {
            backup_file: parsed.line("BACKUP").map(str::to_string),
            final_stat: parsed.stat("final"),
        }))
    }
}

/// Copies `$d` to Ansible's backup name and prints `BACKUP <path>`.
pub const BACKUP_SNIPPET: &str = "if [ -e \"$d\" ]; then b=\"$d.$$.$(date +%Y-%m-%d@%H:%M:%S)~\"; cp -p -- \"$d\" \"$b\"; echo \"BACKUP $b\"; fi\n";

/// Runs a `validate` command line on `path` (`%s` replaced), without a shell
/// interpreting the user's text; exits with [`VALIDATE_RC`] on failure.
pub fn validate_snippet(validate: &str, path: &str) -> Result<String, ModuleError> {
    if !validate.contains("%s") {
        return Err(ModuleError::Args(format!(
            "validate must contain %s: {validate}"
        )));
    }
    let words = shell_words::split(validate).map_err(|e| {
        ModuleError::Args(format!("cannot parse validate command {validate:?}: {e}"))
    })?;
    let argv: Vec<String> = words
        .iter()
        .map(|w| quote(&w.replace("%s", path)))
        .collect();
    Ok(format!(
        "set +e\nvout=$({} 2>&1); vrc=$?\nset -e\nif [ $vrc -ne 0 ]; then printf '%s\\n' \"$vout\" >&2; exit {VALIDATE_RC}; fi\n",
        argv.join(" ")
    ))
}

/// Splits a path into (dir, base), both without a trailing slash.
pub fn split_path(p: &str) -> (&str, &str) {
    let t = p.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) => ("/", &t[1..]),
        Some(i) => (&t[..i], &t[i + 1..]),
        None => ("", t),
    }
}
