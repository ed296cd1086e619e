//! The query and apply halves shared by the file modules.
//!
//! *Query*: [`Probe`] builds one `sh` script that stats any number of paths
//! (type, mode, owner, size, times, link target, checksum) and optionally
//! dumps one file's content, so a module learns everything in one round trip.
//! *Apply*: [`FileWrite`] writes content atomically (temp file in the same
//! directory, `chmod`/`chown`, optional validate and backup, then `mv -f`).
//! Every user-supplied path reaches the script through [`quote`].

use std::collections::HashMap;

use minijinja::Value;
use sha1::Digest;

use super::super::args::dict;
use super::super::{ModuleError, TaskContext};
use crate::transport::quote;

/// Separates the probe's stat lines from the one file body it may dump.
const CONTENT_MARK: &[u8] = b"\n@@KEEL-CONTENT@@\n";

/// The shell function the probe calls per path: `ks LABEL PATH FOLLOW CKSUM`.
pub const STAT_FN: &str = r#"ks() {
if [ "$3" = 1 ] && [ -e "$2" ]; then s=$(stat -L -c '%f %u %g %s %Y %X %Z %i %h %d %U %G' -- "$2")
elif [ -L "$2" ] || [ -e "$2" ]; then s=$(stat -c '%f %u %g %s %Y %X %Z %i %h %d %U %G' -- "$2")
else echo "@$1 -"; return 0; fi
echo "@$1 S $s"
a=; [ -r "$2" ] && a=${a}r; [ -w "$2" ] && a=${a}w; [ -x "$2" ] && a=${a}x; echo "@$1 A $a"
if [ -L "$2" ]; then echo "@$1 L $(readlink -- "$2")"; echo "@$1 R $(readlink -f -- "$2")"; fi
if [ -n "$4" ] && [ -f "$2" ] && [ -r "$2" ]; then echo "@$1 C $($4 < "$2")"; fi
}
"#;

/// What kind of filesystem object a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Link,
    Char,
    Block,
    Fifo,
    Socket,
}

impl FileKind {
    fn from_mode(raw: u32) -> FileKind {
        match raw & 0o170000 {
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Link,
            0o020000 => FileKind::Char,
            0o060000 => FileKind::Block,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => FileKind::File,
        }
    }

    /// The word Ansible's `file` module uses for a state.
    pub fn state_name(self) -> &'static str {
        match self {
            FileKind::Dir => "directory",
            FileKind::Link => "link",
            _ => "file",
        }
    }
}

/// One path as the host sees it.
#[derive(Debug, Clone, Default)]
pub struct RemoteStat {
    pub exists: bool,
    pub kind: Option<FileKind>,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    pub inode: u64,
    pub nlink: u64,
    pub dev: u64,
    pub owner: String,
    pub group: String,
    pub readable: bool,
    pub writeable: bool,
    pub executable: bool,
    pub link_target: Option<String>,
    pub link_source: Option<String>,
    pub checksum: Option<String>,
}

impl RemoteStat {
    pub fn is_dir(&self) -> bool {
        self.kind == Some(FileKind::Dir)
    }
    pub fn is_file(&self) -> bool {
        self.kind == Some(FileKind::File)
    }
    pub fn is_link(&self) -> bool {
        self.kind == Some(FileKind::Link)
    }

    /// Ansible's `"0644"` rendering of the permission bits.
    pub fn mode_str(&self) -> String {
        format!("{:04o}", self.mode)
    }

    /// The stat dictionary of Ansible's `stat` module.
    pub fn to_value(&self, path: &str, checksum_key: bool) -> Value {
        if !self.exists {
            return dict([("exists", Value::from(false))]);
        }
        let m = self.mode;
        let k = self.kind.unwrap_or(FileKind::File);
        let mut v: Vec<(&str, Value)> = vec![
            ("exists", true.into()),
            ("path", path.into()),
            ("mode", self.mode_str().into()),
            ("isdir", (k == FileKind::Dir).into()),
            ("isreg", (k == FileKind::File).into()),
            ("islnk", (k == FileKind::Link).into()),
            ("ischr", (k == FileKind::Char).into()),
            ("isblk", (k == FileKind::Block).into()),
            ("isfifo", (k == FileKind::Fifo).into()),
            ("issock", (k == FileKind::Socket).into()),
            ("uid", self.uid.into()),
            ("gid", self.gid.into()),
            ("pw_name", self.owner.clone().into()),
            ("gr_name", self.group.clone().into()),
            ("size", self.size.into()),
            ("mtime", (self.mtime as f64).into()),
            ("atime", (self.atime as f64).into()),
            ("ctime", (self.ctime as f64).into()),
            ("inode", self.inode.into()),
            ("nlink", self.nlink.into()),
            ("dev", self.dev.into()),
            ("readable", self.readable.into()),
            ("writeable", self.writeable.into()),
            ("executable", self.executable.into()),
            ("isuid", (m & 0o4000 != 0).into()),
            ("isgid", (m & 0o2000 != 0).into()),
            ("rusr", (m & 0o400 != 0).into()),
            ("wusr", (m & 0o200 != 0).into()),
            ("xusr", (m & 0o100 != 0).into()),
            ("rgrp", (m & 0o040 != 0).into()),
            ("wgrp", (m & 0o020 != 0).into()),
            ("xgrp", (m & 0o010 != 0).into()),
            ("roth", (m & 0o004 != 0).into()),
            ("woth", (m & 0o002 != 0).into()),
            ("xoth", (m & 0o001 != 0).into()),
        ];
        if let Some(t) = &self.link_target {
            v.push(("lnk_target", t.clone().into()));
        }
        if let Some(s) = &self.link_source {
            v.push(("lnk_source", s.clone().into()));
        }
        if checksum_key {
            if let Some(c) = &self.checksum {
                v.push(("checksum", c.clone().into()));
            }
        }
        dict(v)
    }
}

/// Checksum tools by Ansible's `checksum_algorithm` name.
pub fn checksum_tool(algo: &str) -> Option<&'static str> {
    match algo {
        "sha1" => Some("sha1sum"),
        "sha224" => Some("sha224sum"),
        "sha256" => Some("sha256sum"),
        "sha384" => Some("sha384sum"),
        "sha512" => Some("sha512sum"),
        "md5" => Some("md5sum"),
        _ => None,
    }
}

/// SHA-1 of bytes on the controller, hex.
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

/// A query script under construction.
pub struct Probe {
    script: String,
    content: Option<String>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe::new()
    }
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            script: STAT_FN.to_string(),
            content: None,
        }
    }

    /// Stats `path_expr` (a shell word, already quoted, or `"$var"`) under
    /// `label`. `checksum` is a tool such as `sha1sum`.
    pub fn stat_expr(
        &mut self,
        label: &str,
        path_expr: &str,
        follow: bool,
        checksum: Option<&str>,
    ) -> &mut Self {
        self.script.push_str(&format!(
            "ks {} {} {} {}\n",
            label,
            path_expr,
            if follow { "1" } else { "0" },
            checksum.unwrap_or("''")
        ));
        self
    }

    /// Stats a literal path.
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

    /// Adds raw shell lines (they must quote their own user values).
    pub fn raw(&mut self, lines: &str) -> &mut Self {
        self.script.push_str(lines);
        if !lines.ends_with('\n') {
            self.script.push('\n');
        }
        self
    }

    /// Dumps the content of the regular file at `path_expr` after the stats
    /// (only one body per probe).
    pub fn content_expr(&mut self, path_expr: &str) -> &mut Self {
        self.content = Some(path_expr.to_string());
        self
    }

    pub fn script(&self) -> String {
        let mut s = self.script.clone();
        if let Some(p) = &self.content {
            s.push_str(&format!(
                "if [ -f {p} ] && [ -r {p} ]; then printf '\\n@@KEEL-CONTENT@@\\n'; cat -- {p}; fi\n"
            ));
        }
        s
    }

    /// Runs the probe (one round trip).
    pub async fn run(&self, ctx: &TaskContext<'_>) -> Result<ProbeResult, ModuleError> {
        let out = ctx.run(self.script(), None).await?;
        if out.rc != 0 {
            return Err(ModuleError::Failed(format!(
                "querying the host failed (rc={}): {}",
                out.rc,
                out.stderr_str().trim()
            )));
        }
        Ok(ProbeResult::parse(&out.stdout))
    }
}

/// What a probe printed.
#[derive(Debug, Default)]
pub struct ProbeResult {
    pub stats: HashMap<String, RemoteStat>,
    /// `KEY value` lines printed by raw probe lines (not starting with `@`).
    pub lines: Vec<(String, String)>,
    pub content: Option<Vec<u8>>,
}

impl ProbeResult {
    pub fn parse(stdout: &[u8]) -> ProbeResult {
        let (head, content) = match find(stdout, CONTENT_MARK) {
            Some(i) => (
                &stdout[..i],
                Some(stdout[i + CONTENT_MARK.len()..].to_vec()),
            ),
            None => (stdout, None),
        };
        let text = String::from_utf8_lossy(head);
        let mut res = ProbeResult {
            content,
            ..Default::default()
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix('@') else {
                if let Some((k, v)) = line.split_once(' ') {
                    res.lines.push((k.to_string(), v.to_string()));
                } else if !line.is_empty() {
                    res.lines.push((line.to_string(), String::new()));
                }
                continue;
            };
            let (label, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let st = res.stats.entry(label.to_string()).or_default();
            let (tag, val) = rest.split_once(' ').unwrap_or((rest, ""));
            match tag {
                "S" => parse_stat_line(st, val),
                "A" => {
                    st.readable = val.contains('r');
                    st.writeable = val.contains('w');
                    st.executable = val.contains('x');
                }
                "L" => st.link_target = Some(val.to_string()),
                "R" => st.link_source = Some(val.to_string()),
                "C" => st.checksum = val.split_whitespace().next().map(str::to_string),
                _ => {}
            }
        }
        res
    }

    /// The stat under `label` (absent when the probe printed nothing).
    pub fn stat(&self, label: &str) -> RemoteStat {
        self.stats.get(label).cloned().unwrap_or_default()
    }

    /// The value of the first raw `KEY value` line named `key`.
    pub fn line(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_stat_line(st: &mut RemoteStat, val: &str) {
    let f: Vec<&str> = val.split(' ').collect();
    if f.len() < 12 {
        return;
    }
    let raw = u32::from_str_radix(f[0], 16).unwrap_or(0);
    st.exists = true;
    st.kind = Some(FileKind::from_mode(raw));
    st.mode = raw & 0o7777;
    st.uid = f[1].parse().unwrap_or(0);
    st.gid = f[2].parse().unwrap_or(0);
    st.size = f[3].parse().unwrap_or(0);
    st.mtime = f[4].parse().unwrap_or(0);
    st.atime = f[5].parse().unwrap_or(0);
    st.ctime = f[6].parse().unwrap_or(0);
    st.inode = f[7].parse().unwrap_or(0);
    st.nlink = f[8].parse().unwrap_or(0);
    st.dev = f[9].parse().unwrap_or(0);
    st.owner = f[10].to_string();
    st.group = f[11..].join(" ");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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
        let parsed = ProbeResult::parse(&out.stdout);
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

/// A unified diff for `ModuleResult::diff`.
pub fn file_diff(path: &str, before: &[u8], after: &[u8]) -> super::super::FileDiff {
    super::super::FileDiff {
        before_header: path.to_string(),
        after_header: path.to_string(),
        before: String::from_utf8_lossy(before).into_owned(),
        after: String::from_utf8_lossy(after).into_owned(),
    }
}

/// A before/after diff of a path's state, the way Ansible shows one for
/// `file`: `{'path': ..., 'state': ...}` per side.
pub fn state_diff(
    path: &str,
    before: &[(&str, String)],
    after: &[(&str, String)],
) -> super::super::FileDiff {
    let render = |pairs: &[(&str, String)]| {
        let mut s = format!("path: {path}\n");
        for (k, v) in pairs {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s
    };
    super::super::FileDiff {
        before_header: path.to_string(),
        after_header: path.to_string(),
        before: render(before),
        after: render(after),
    }
}

/// The shell commands that bring `$p`'s mode and ownership to the wanted
/// values, and whether anything differs from `st`.
pub fn attr_commands(
    st: &RemoteStat,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> (String, bool) {
    let mut s = String::new();
    let mut changed = false;
    if let Some(m) = mode {
        if !st.exists || st.mode != m {
            s.push_str(&format!("chmod {:04o} -- \"$p\"\n", m));
            changed = true;
        }
    }
    if let Some(o) = owner {
        if !st.exists || (st.owner != o && st.uid.to_string() != o) {
            s.push_str(&format!("chown -h -- {} \"$p\"\n", quote(o)));
            changed = true;
        }
    }
    if let Some(g) = group {
        if !st.exists || (st.group != g && st.gid.to_string() != g) {
            s.push_str(&format!("chgrp -h -- {} \"$p\"\n", quote(g)));
            changed = true;
        }
    }
    (s, changed)
}

/// The common return values of a file written or inspected on the host.
pub fn file_result_values(path_key: &str, path: &str, st: &RemoteStat) -> Vec<(String, Value)> {
    let mut v = vec![(path_key.to_string(), Value::from(path))];
    if st.exists {
        v.push(("mode".into(), st.mode_str().into()));
        v.push(("owner".into(), st.owner.clone().into()));
        v.push(("group".into(), st.group.clone().into()));
        v.push(("uid".into(), st.uid.into()));
        v.push(("gid".into(), st.gid.into()));
        v.push(("size".into(), st.size.into()));
        v.push((
            "state".into(),
            st.kind.map(FileKind::state_name).unwrap_or("file").into(),
        ));
    } else {
        v.push(("state".into(), "absent".into()));
    }
    v
}
