//! `find`: lists files on the host matching Ansible's criteria. The walk is
//! one remote GNU `find` (plus `grep` for `contains`); name, age, size and
//! type filters run on the controller over its output.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::Value;

use crate::fnmatch::Glob;
use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{FileKind, RemoteStat};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Find;

enum NameMatcher {
    Glob(Vec<Glob>),
    Regex(Vec<regex::Regex>),
}

impl NameMatcher {
    fn new(pats: &[String], use_regex: bool) -> Result<NameMatcher, ModuleError> {
        if use_regex {
            pats.iter()
                .map(|p| {
                    regex::Regex::new(&format!("^(?:{p})"))
                        .map_err(|e| ModuleError::Args(format!("invalid regex {p:?}: {e}")))
                })
                .collect::<Result<_, _>>()
                .map(NameMatcher::Regex)
        } else {
            Ok(NameMatcher::Glob(
                pats.iter().map(|p| Glob::new(p)).collect(),
            ))
        }
    }
    fn any(&self, name: &str) -> bool {
        match self {
            NameMatcher::Glob(g) => g.iter().any(|p| p.is_match(name)),
            NameMatcher::Regex(r) => r.iter().any(|p| p.is_match(name)),
        }
    }
    fn is_empty(&self) -> bool {
        match self {
            NameMatcher::Glob(g) => g.is_empty(),
            NameMatcher::Regex(r) => r.is_empty(),
        }
    }
}

/// Parses `10k`, `-2m`, `1g` into (bytes, negative).
fn parse_size(s: &str) -> Option<(u64, bool)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let s = s.to_ascii_lowercase();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1024,
        "m" | "mb" => 1024 * 1024,
        "g" | "gb" => 1024 * 1024 * 1024,
        "t" | "tb" => 1024u64.pow(4),
        _ => return None,
    };
    Some((num.parse::<u64>().ok()? * mult, neg))
}

/// Parses `2d`, `-1w`, `30` (seconds) into (seconds, negative).
fn parse_age(s: &str) -> Option<(i64, bool)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let s = s.to_ascii_lowercase();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let mult: i64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604800,
        _ => return None,
    };
    Some((num.parse::<i64>().ok()? * mult, neg))
}

/// The arguments `find` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "find",
    sets: &[&[
        &["paths", "name", "path"],
        &["patterns", "pattern"],
        &["excludes", "exclude"],
        &["file_type"],
        &["recurse"],
        &["hidden"],
        &["follow"],
        &["use_regex"],
        &["age"],
        &["age_stamp"],
        &["size"],
        &["contains"],
        &["depth"],
        &["get_checksum"],
        &["checksum_algorithm"],
        &["read_whole_file"],
        &["encoding"],
        &["limit"],
        &["exact_mode"],
        &["mode"],
    ]],
};

#[async_trait::async_trait]
impl Module for Find {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let paths = a
            .list(&["paths", "name", "path"])?
            .ok_or_else(|| a.missing("paths"))?;
        let patterns = a.list(&["patterns", "pattern"])?.unwrap_or_default();
        let excludes = a.list(&["excludes", "exclude"])?.unwrap_or_default();
        let file_type = a
            .choice(
                &["file_type"],
                &["file", "directory", "link", "any"],
                Some("file"),
            )?
            .unwrap_or_default();
        let recurse = a.bool(&["recurse"], false)?;
        let hidden = a.bool(&["hidden"], false)?;
        let follow = a.bool(&["follow"], false)?;
        let use_regex = a.bool(&["use_regex"], false)?;
        let age = a.string(&["age"])?;
        let age_stamp = a
            .choice(&["age_stamp"], &["atime", "ctime", "mtime"], Some("mtime"))?
            .unwrap_or_default();
        let size = a.string(&["size"])?;
        let contains = a.string(&["contains"])?;
        let depth = a.int(&["depth"])?;
        a.ignore(&[
            "get_checksum",
            "checksum_algorithm",
            "read_whole_file",
            "encoding",
            "limit",
            "exact_mode",
            "mode",
        ]);
        a.finish()?;

        let patterns = NameMatcher::new(&patterns, use_regex)?;
        let excludes = NameMatcher::new(&excludes, use_regex)?;
        let age = match &age {
            Some(s) => Some(
                parse_age(s)
                    .ok_or_else(|| ModuleError::Args(format!("failed to process age: {s}")))?,
            ),
            None => None,
        };
        let size = match &size {
            Some(s) => Some(
                parse_size(s)
                    .ok_or_else(|| ModuleError::Args(format!("failed to process size: {s}")))?,
            ),
            None => None,
        };
        let maxdepth = if recurse {
            depth.map(|d| d.max(1))
        } else {
            Some(1)
        };

        let mut script = String::new();
        for p in &paths {
            script.push_str(&format!(
                "if [ -d {q} ]; then find {L}{q} -mindepth 1 {md}{c}-printf '%y %m %s %T@ %A@ %C@ %U %G %u %g %n %i\\t%p\\0'; else printf 'SKIP\\t%s\\0' {q}; fi\n",
                q = quote(p),
                L = if follow { "-L " } else { "" },
                md = maxdepth.map(|d| format!("-maxdepth {d} ")).unwrap_or_default(),
                c = contains
                    .as_ref()
                    .map(|c| format!("\\( ! -type f -o -exec grep -qE -- {} {{}} \\; \\) ", quote(c)))
                    .unwrap_or_default(),
            ));
        }
        let out = ctx.run(script, None).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut files = Vec::new();
        let mut examined = 0u64;
        let mut skipped: Vec<(String, Value)> = Vec::new();
        for rec in out.stdout.split(|b| *b == 0) {
            let rec = String::from_utf8_lossy(rec);
            let Some((head, path)) = rec.split_once('\t') else {
                continue;
            };
            if head == "SKIP" {
                skipped.push((path.to_string(), Value::from(format!("{path} was skipped as it does not seem to be a valid directory or it cannot be accessed"))));
                continue;
            }
            examined += 1;
            let f: Vec<&str> = head.split(' ').collect();
            if f.len() < 12 {
                continue;
            }
            let kind = match f[0] {
                "d" => FileKind::Dir,
                "l" => FileKind::Link,
                "c" => FileKind::Char,
                "b" => FileKind::Block,
                "p" => FileKind::Fifo,
                "s" => FileKind::Socket,
                _ => FileKind::File,
            };
            let base = path.rsplit('/').next().unwrap_or(path);
            if !hidden && base.starts_with('.') {
                continue;
            }
            let type_ok = match file_type.as_str() {
                "file" => kind == FileKind::File,
                "directory" => kind == FileKind::Dir,
                "link" => kind == FileKind::Link,
                _ => true,
            };
            if !type_ok {
                continue;
            }
            if !patterns.is_empty() && !patterns.any(base) {
                continue;
            }
            if !excludes.is_empty() && excludes.any(base) {
                continue;
            }
            let secs = |s: &str| {
                s.split('.')
                    .next()
                    .and_then(|x| x.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let st = RemoteStat {
                exists: true,
                kind: Some(kind),
                mode: u32::from_str_radix(f[1], 8).unwrap_or(0),
                size: f[2].parse().unwrap_or(0),
                mtime: secs(f[3]),
                atime: secs(f[4]),
                ctime: secs(f[5]),
                uid: f[6].parse().unwrap_or(0),
                gid: f[7].parse().unwrap_or(0),
                owner: f[8].to_string(),
                group: f[9].to_string(),
                nlink: f[10].parse().unwrap_or(0),
                inode: f[11].parse().unwrap_or(0),
                ..Default::default()
            };
            if let Some((secs_limit, neg)) = age {
                let stamp = match age_stamp.as_str() {
                    "atime" => st.atime,
                    "ctime" => st.ctime,
                    _ => st.mtime,
                };
                let age = now - stamp;
                if (neg && age > secs_limit) || (!neg && age < secs_limit) {
                    continue;
                }
            }
            if let Some((bytes, neg)) = size {
                if kind != FileKind::File && file_type != "any" {
                    continue;
                }
                if (neg && st.size > bytes) || (!neg && st.size < bytes) {
                    continue;
                }
            }
            files.push(st.to_value(path, false));
        }
        let matched = files.len();
        Ok(Plan::done(
            ModuleResult::ok()
                .with("files", Value::from(files))
                .with("matched", matched)
                .with("examined", examined)
                .with("skipped_paths", crate::modules::args::dict(skipped))
                .with("msg", "All paths examined"),
        ))
    }
}
