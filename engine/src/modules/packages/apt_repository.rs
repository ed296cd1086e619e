//! `apt_repository` and `deb822_repository`: APT source entries under
//! `/etc/apt/sources.list.d/`.
//!
//! `apt_repository` manages one-line `deb ...` entries. Query: one round
//! trip reads `/etc/apt/sources.list` and every `sources.list.d/*.list`.
//! The controller then decides: a repo already enabled anywhere is left
//! alone, a commented-out one is re-enabled where it is, a new one goes to
//! `<filename>.list` (named from the URI, as Ansible does); `absent` drops
//! the line from every file (and a file left empty). Only then are the
//! changed files written, followed by `apt-get update` when asked.
//!
//! `deb822_repository` renders one `<name>.sources` stanza and replaces the
//! file when its text differs. `apt_repository` with a mapping as `repo`
//! uses the same path.

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::modules::args::{scalar_string, to_bool, ModeSpec, ModuleArgs, Params};
use crate::modules::kit::{apply, text_diff, write_file, FileOwner, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct AptRepository;
pub struct Deb822Repository;

const SOURCES_D: &str = "/etc/apt/sources.list.d";

/// A one-line source entry, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// `deb` or `deb-src`, options (`[arch=amd64]`) and the rest, each
    /// whitespace-collapsed.
    pub words: Vec<String>,
}

impl SourceLine {
    /// Parses `deb [opts] uri suite comps...`; `None` for anything else.
    pub fn parse(line: &str) -> Option<SourceLine> {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = line;
        let kind = rest.split_whitespace().next()?;
        if kind != "deb" && kind != "deb-src" {
            return None;
        }
        rest = rest[kind.len()..].trim_start();
        let mut words = vec![kind.to_string()];
        if let Some(r) = rest.strip_prefix('[') {
            let (opts, after) = r.split_once(']')?;
            let mut o: Vec<&str> = opts.split_whitespace().collect();
            o.sort_unstable();
            words.push(format!("[{}]", o.join(" ")));
            rest = after;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        if parts.len() < 2 {
            return None;
        }
        words.push(parts[0].trim_end_matches('/').to_string());
        words.extend(parts[1..].iter().map(|s| s.to_string()));
        Some(SourceLine { words })
    }
}

/// The file name Ansible picks for a repo line: the URI's host and path
/// with every run of other characters turned into `_`.
pub fn suggest_filename(repo: &str) -> String {
    let no_opts = regex::Regex::new(r"\[[^\]]+\]")
        .unwrap()
        .replace_all(repo, "")
        .into_owned();
    let no_proto = regex::Regex::new(r"\w+://")
        .unwrap()
        .replace_all(&no_opts, "")
        .into_owned();
    let first = no_proto
        .split_whitespace()
        .find(|p| *p != "deb" && *p != "deb-src")
        .unwrap_or("");
    let first = first.rsplit_once('@').map(|(_, h)| h).unwrap_or(first);
    first
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// One sources file as read from the host.
struct SourcesFile {
    path: String,
    text: String,
}

/// Splits the query's `sources` section (`\0path\n` headers) into files.
fn split_files(dump: &str) -> Vec<SourcesFile> {
    dump.split('\u{1}')
        .skip(1)
        .filter_map(|chunk| {
            let (path, text) = chunk.split_once('\n')?;
            Some(SourcesFile {
                path: path.to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

/// Whether a line is the entry `want`, and whether it is commented out.
fn matches(line: &str, want: &SourceLine) -> Option<bool> {
    let t = line.trim_start();
    if let Some(c) = t.strip_prefix('#') {
        return (SourceLine::parse(c).as_ref() == Some(want)).then_some(true);
    }
    (SourceLine::parse(t).as_ref() == Some(want)).then_some(false)
}

fn octal_mode(m: Option<ModeSpec>, default: u32) -> Result<u32, ModuleError> {
    match m {
        None => Ok(default),
        Some(ModeSpec::Octal(n)) => Ok(n),
        Some(other) => Err(ModuleError::Args(format!(
            "mode must be octal here, got {other:?}"
        ))),
    }
}

/// Writes or removes files, then refreshes the cache if asked. `changes`
/// holds (path, before, after); `None` after means delete.
async fn commit(
    ctx: &TaskContext<'_>,
    changes: &[(String, Option<String>, Option<String>)],
    mode: u32,
    update_cache: bool,
) -> Result<Result<bool, String>, ModuleError> {
    let mut updated = false;
    for (path, before, after) in changes {
        match after {
            Some(text) => {
                if let Err(e) = write_file(
                    ctx,
                    path,
                    text.as_bytes(),
                    FileOwner {
                        mode: Some(mode),
                        owner: None,
                        group: None,
                    },
                    before.is_some(),
                    true,
                )
                .await?
                {
                    return Ok(Err(e));
                }
            }
            None => {
                if let Err(e) = apply(ctx, &format!("rm -f -- {}", quote(path)), None).await? {
                    return Ok(Err(e));
                }
            }
        }
    }
    if update_cache && !changes.is_empty() {
        if let Err(e) = apply(
            ctx,
            "DEBIAN_FRONTEND=noninteractive apt-get -q update >&2",
            None,
        )
        .await?
        {
            return Ok(Err(format!("Failed to update apt cache: {e}")));
        }
        updated = true;
    }
    Ok(Ok(updated))
}

fn finish(
    ctx: &TaskContext<'_>,
    mut res: ModuleResult,
    changes: &[(String, Option<String>, Option<String>)],
) -> ModuleResult {
    res.changed = !changes.is_empty();
    if ctx.diff {
        for (p, b, a) in changes {
            res.diff.push(text_diff(p, b.as_deref(), a.as_deref()));
        }
    }
    res
}

/// The arguments `apt_repository` accepts (each: the name, then its aliases).
static APT_REPOSITORY_PARAMS: Params = Params {
    module: "apt_repository",
    sets: &[&[
        &["repo"],
        &["state"],
        &["filename"],
        &["update_cache", "update-cache"],
        &["mode"],
        &["codename"],
        &["validate_certs"],
        &["install_python_apt"],
        &["update_cache_retries"],
        &["update_cache_retry_max_delay"],
    ]],
};

#[async_trait::async_trait]
impl Module for AptRepository {
    fn params(&self) -> Option<&'static Params> {
        Some(&APT_REPOSITORY_PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&APT_REPOSITORY_PARAMS, args);
        let repo_v = a.value(&["repo"]);
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap();
        let filename = a.string(&["filename"])?;
        let update_cache = a.bool(&["update_cache", "update-cache"], true)?;
        let mode = octal_mode(a.mode(&["mode"])?, 0o644)?;
        a.ignore(&[
            "codename",
            "validate_certs",
            "install_python_apt",
            "update_cache_retries",
            "update_cache_retry_max_delay",
        ]);
        let Some(repo_v) = repo_v else {
            return Err(a.missing("repo"));
        };
        a.finish()?;
        if repo_v.kind() == ValueKind::Map {
            let mut m = Args::new();
            if let Ok(keys) = repo_v.try_iter() {
                for k in keys {
                    if let Ok(v) = repo_v.get_item(&k) {
                        m.insert(k.to_string(), v);
                    }
                }
            }
            if !m.contains_key("name") {
                let Some(f) = &filename else {
                    return Err(ModuleError::Args(
                        "a deb822 repo mapping needs a 'name' or the task's 'filename'".into(),
                    ));
                };
                m.insert("name".into(), Value::from(f.clone()));
            }
            m.insert("state".into(), Value::from(state.clone()));
            m.insert("mode".into(), Value::from(format!("{mode:04o}")));
            // A mapping is a deb822 repository: that module's plan, then the
            // cache update this module owes when it changed something.
            let m2 = m.clone();
            let preview = async move {
                let mut r = Deb822Repository.plan(&m, ctx).await?.planned().await?;
                r.data.insert("cache_updated".into(), Value::from(false));
                Ok(r)
            };
            let apply_it = async move {
                let mut r = Deb822Repository.plan(&m2, ctx).await?.applied().await?;
                if r.changed && update_cache && !r.failed {
                    if let Err(e) = apply(
                        ctx,
                        "DEBIAN_FRONTEND=noninteractive apt-get -q update >&2",
                        None,
                    )
                    .await?
                    {
                        return Ok(ModuleResult::failed(format!(
                            "Failed to update apt cache: {e}"
                        )));
                    }
                }
                r.data.insert(
                    "cache_updated".into(),
                    Value::from(r.changed && update_cache),
                );
                Ok(r)
            };
            return Ok(Plan::fused(preview, apply_it));
        }
        let repo = scalar_string(&repo_v)
            .unwrap_or_default()
            .trim()
            .to_string();
        if repo.starts_with("ppa:") {
            return Ok(Plan::done(ModuleResult::failed(
                "PPA repositories are not supported; give the full 'deb ...' line",
            )));
        }
        let Some(want) = SourceLine::parse(&repo) else {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Invalid repository string: {repo}"
            ))));
        };

        let mut q = Query::new();
        q.section(
            "sources",
            &format!(
                "for f in /etc/apt/sources.list {SOURCES_D}/*.list; do [ -f \"$f\" ] || continue; printf '\\001%s\\n' \"$f\"; cat -- \"$f\"; done"
            ),
        );
        let ans = q.run(ctx).await?;
        let files = split_files(ans.text("sources"));

        let target = format!(
            "{SOURCES_D}/{}.list",
            filename
                .as_deref()
                .map(|f| f.trim_end_matches(".list").to_string())
                .unwrap_or_else(|| suggest_filename(&repo))
        );
        let mut changes: Vec<(String, Option<String>, Option<String>)> = Vec::new();
        if state == "present" {
            let enabled = files
                .iter()
                .any(|f| f.text.lines().any(|l| matches(l, &want) == Some(false)));
            if !enabled {
                // Re-enable a commented copy where it is, else add a line.
                if let Some(f) = files
                    .iter()
                    .find(|f| f.text.lines().any(|l| matches(l, &want) == Some(true)))
                {
                    let mut done = false;
                    let text: String = f
                        .text
                        .lines()
                        .map(|l| {
                            if !done && matches(l, &want) == Some(true) {
                                done = true;
                                format!("{repo}\n")
                            } else {
                                format!("{l}\n")
                            }
                        })
                        .collect();
                    changes.push((f.path.clone(), Some(f.text.clone()), Some(text)));
                } else {
                    let before = files
                        .iter()
                        .find(|f| f.path == target)
                        .map(|f| f.text.clone());
                    let mut text = before.clone().unwrap_or_default();
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&repo);
                    text.push('\n');
                    changes.push((target.clone(), before, Some(text)));
                }
            }
        } else {
            for f in &files {
                if !f.text.lines().any(|l| matches(l, &want).is_some()) {
                    continue;
                }
                let text: String = f
                    .text
                    .lines()
                    .filter(|l| matches(l, &want).is_none())
                    .map(|l| format!("{l}\n"))
                    .collect();
                let after = if text.trim().is_empty() && f.path != "/etc/apt/sources.list" {
                    None
                } else {
                    Some(text)
                };
                changes.push((f.path.clone(), Some(f.text.clone()), after));
            }
        }
        let added: Vec<String> = changes
            .iter()
            .filter(|c| c.2.is_some())
            .map(|c| c.0.clone())
            .collect();
        let removed: Vec<String> = changes
            .iter()
            .filter(|c| c.2.is_none())
            .map(|c| c.0.clone())
            .collect();
        let mut res = ModuleResult::ok()
            .with("repo", repo.clone())
            .with("state", state.clone())
            .with(
                "sources_added",
                if state == "present" {
                    added.clone()
                } else {
                    vec![]
                },
            )
            .with(
                "sources_removed",
                if state == "absent" {
                    changes.iter().map(|c| c.0.clone()).collect()
                } else {
                    removed.clone()
                },
            );
        res.data.insert("cache_updated".into(), false.into());
        let res = finish(ctx, res, &changes);
        if changes.is_empty() {
            return Ok(Plan::done(res));
        }
        Ok(Plan::change(res.clone(), async move {
            let mut res = res;
            match commit(ctx, &changes, mode, update_cache).await? {
                Ok(u) => res.data.insert("cache_updated".into(), u.into()),
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            Ok(res)
        }))
    }
}

/// The `.sources` file name Ansible derives from `name`.
pub fn deb822_filename(name: &str) -> String {
    let lowered = name.to_lowercase();
    let dashed = regex::Regex::new(r"[_\s]+")
        .unwrap()
        .replace_all(&lowered, "-")
        .into_owned();
    dashed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect()
}

/// A deb822 field value: lists are space separated, booleans `yes`/`no`.
fn field_value(v: &Value) -> Option<String> {
    match v.kind() {
        ValueKind::Seq => Some(
            v.try_iter()
                .ok()?
                .filter_map(|i| scalar_string(&i))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ValueKind::Bool => Some(if v.is_true() { "yes" } else { "no" }.into()),
        _ => scalar_string(v),
    }
}

/// A multi-line value (an inline key) in deb822 continuation form.
fn fold(v: &str) -> String {
    let v = v.trim_end();
    if !v.contains('\n') {
        return v.to_string();
    }
    let mut out = String::new();
    for l in v.lines() {
        out.push_str("\n ");
        out.push_str(if l.trim().is_empty() { "." } else { l });
    }
    out
}

/// The arguments `deb822_repository` accepts (each: the name, then its aliases).
static DEB822_REPOSITORY_PARAMS: Params = Params {
    module: "deb822_repository",
    sets: &[&[
        &["name"],
        &["state"],
        &["mode"],
        &["types"],
        &["uris"],
        &["suites"],
        &["components"],
        &["architectures"],
        &["languages"],
        &["targets"],
        &["pdiffs"],
        &["by_hash"],
        &["allow_insecure"],
        &["allow_weak"],
        &["allow_downgrade_to_insecure"],
        &["check_valid_until"],
        &["check_date"],
        &["date_max_future"],
        &["inrelease_path"],
        &["trusted"],
        &["signed_by"],
        &["enabled"],
        &["install_python_debian"],
        &["repolib"],
    ]],
};

#[async_trait::async_trait]
impl Module for Deb822Repository {
    fn params(&self) -> Option<&'static Params> {
        Some(&DEB822_REPOSITORY_PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&DEB822_REPOSITORY_PARAMS, args);
        let name = a.req_string(&["name"])?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap();
        let mode = octal_mode(a.mode(&["mode"])?, 0o644)?;
        let types = a.value(&["types"]);
        let uris = a.value(&["uris"]);
        let suites = a.value(&["suites"]);
        let components = a.value(&["components"]);
        let fields: Vec<(&str, Option<Value>)> = vec![
            ("Architectures", a.value(&["architectures"])),
            ("Languages", a.value(&["languages"])),
            ("Targets", a.value(&["targets"])),
            ("PDiffs", a.value(&["pdiffs"])),
            ("By-Hash", a.value(&["by_hash"])),
            ("Allow-Insecure", a.value(&["allow_insecure"])),
            ("Allow-Weak", a.value(&["allow_weak"])),
            (
                "Allow-Downgrade-To-Insecure",
                a.value(&["allow_downgrade_to_insecure"]),
            ),
            ("Check-Valid-Until", a.value(&["check_valid_until"])),
            ("Check-Date", a.value(&["check_date"])),
            ("Date-Max-Future", a.value(&["date_max_future"])),
            ("InRelease-Path", a.value(&["inrelease_path"])),
            ("Trusted", a.value(&["trusted"])),
            ("Signed-By", a.value(&["signed_by"])),
            ("Enabled", a.value(&["enabled"])),
        ];
        a.ignore(&["install_python_debian", "repolib"]);
        a.finish()?;
        if let Some(e) = fields
            .iter()
            .find(|(k, _)| *k == "Enabled")
            .and_then(|f| f.1.as_ref())
        {
            if to_bool(e).is_none() {
                return Err(ModuleError::Args(format!(
                    "argument 'enabled' of module deb822_repository: {e} is not a valid boolean"
                )));
            }
        }
        let path = format!("{SOURCES_D}/{}.sources", deb822_filename(&name));

        let mut text = format!("X-Repolib-Name: {name}\n");
        if state == "present" {
            let types = types
                .as_ref()
                .and_then(field_value)
                .unwrap_or_else(|| "deb".into());
            text.push_str(&format!("Types: {types}\n"));
            for (key, v, req) in [
                ("URIs", &uris, true),
                ("Suites", &suites, true),
                ("Components", &components, false),
            ] {
                match v.as_ref().and_then(field_value) {
                    Some(s) => text.push_str(&format!("{key}: {s}\n")),
                    None if req => {
                        return Err(ModuleError::Args(format!(
                            "missing required arguments: {} (module deb822_repository)",
                            key.to_lowercase()
                        )))
                    }
                    None => {}
                }
            }
            for (k, v) in &fields {
                if let Some(s) = v.as_ref().and_then(field_value) {
                    let s = if v.as_ref().is_some_and(|v| v.kind() != ValueKind::Bool)
                        && to_bool(v.as_ref().unwrap()).is_some()
                        && matches!(*k, "Enabled" | "Trusted" | "PDiffs" | "By-Hash")
                    {
                        if to_bool(v.as_ref().unwrap()) == Some(true) {
                            "yes".into()
                        } else {
                            "no".into()
                        }
                    } else {
                        s
                    };
                    let folded = fold(&s);
                    let sep = if folded.starts_with('\n') { "" } else { " " };
                    text.push_str(&format!("{k}:{sep}{folded}\n"));
                }
            }
        }

        let mut q = Query::new();
        q.file("cur", &path);
        let ans = q.run(ctx).await?;
        let before = ans.file("cur").map(str::to_string);
        let after = (state == "present").then_some(text.clone());
        let mut changes = Vec::new();
        if before != after {
            changes.push((path.clone(), before, after));
        }
        let res = ModuleResult::ok()
            .with("dest", path.clone())
            .with(
                "repo",
                if state == "present" {
                    text
                } else {
                    String::new()
                },
            )
            .with("state", state);
        let res = finish(ctx, res, &changes);
        if changes.is_empty() {
            return Ok(Plan::done(res));
        }
        Ok(Plan::change(res.clone(), async move {
            if let Err(e) = commit(ctx, &changes, mode, false).await? {
                return Ok(ModuleResult::failed(e));
            }
            Ok(res)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_follow_ansible() {
        assert_eq!(
            suggest_filename("deb [arch=amd64] http://dl.google.com/linux/chrome/deb/ stable main"),
            "dl_google_com_linux_chrome_deb"
        );
        assert_eq!(
            suggest_filename("deb https://user:pw@repo.example.org/apt bookworm main"),
            "repo_example_org_apt"
        );
        assert_eq!(deb822_filename("Google Chrome_x"), "google-chrome-x");
    }

    #[test]
    fn source_lines_compare_normalised() {
        let a =
            SourceLine::parse("deb  [arch=amd64 signed-by=/k]  http://x/y/ bookworm main").unwrap();
        let b = SourceLine::parse("deb [signed-by=/k arch=amd64] http://x/y bookworm main # note")
            .unwrap();
        assert_eq!(a, b);
        assert!(SourceLine::parse("deb http://x").is_none());
        assert_eq!(
            matches(
                "# deb http://x/y bookworm main",
                &SourceLine::parse("deb http://x/y bookworm main").unwrap()
            ),
            Some(true)
        );
    }
}
