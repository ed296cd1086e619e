//! What a path looks like on the host: [`RemoteStat`], filled by the `ks`
//! shell function ([`STAT_FN`]) that queries and apply scripts call, and read
//! back by [`StatReport`]. Also the checksum helpers file modules compare
//! content with.

use std::collections::HashMap;

use minijinja::Value;
use sha1::Digest;

use crate::modules::args::dict;

/// The shell function queries and apply scripts call per path: `ks LABEL PATH FOLLOW CKSUM`.
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
        dict(self.to_pairs(path, checksum_key))
    }

    /// The keys of [`RemoteStat::to_value`], for a module that adds its own
    /// (`stat`'s `mimetype`).
    pub fn to_pairs(&self, path: &str, checksum_key: bool) -> Vec<(&'static str, Value)> {
        if !self.exists {
            return vec![("exists", Value::from(false))];
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
        v
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

/// What an apply (or stat) script printed: the `ks` stats by label, and
/// `KEY value` lines (such as `BACKUP <path>`).
#[derive(Debug, Default)]
pub struct StatReport {
    pub stats: HashMap<String, RemoteStat>,
    /// `KEY value` lines (those not starting with `@`).
    pub lines: Vec<(String, String)>,
}

impl StatReport {
    pub fn parse(stdout: &[u8]) -> StatReport {
        let text = String::from_utf8_lossy(stdout);
        let mut res = StatReport::default();
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

    /// The stat under `label` (absent when nothing was printed for it).
    pub fn stat(&self, label: &str) -> RemoteStat {
        self.stats.get(label).cloned().unwrap_or_default()
    }

    /// The value of the first `KEY value` line named `key`.
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
