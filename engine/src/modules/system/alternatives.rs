//! `alternatives` (community.general): installs, selects, sets to auto or
//! removes an alternative with `update-alternatives`. The query reads
//! `update-alternatives --display` (as community.general parses it); the
//! decision follows that module step by step; the apply step runs the
//! `update-alternatives` commands it chose, in one round trip.

use std::collections::BTreeMap;

use minijinja::Value;
use regex::Regex;
use serde_json::{json, Map, Value as Json};

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::apply;
use crate::modules::{Args, FileDiff, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;
use crate::template::value_from_json;

pub struct Alternatives;

static PARAMS: Params = Params {
    module: "alternatives",
    sets: &[&[
        &["name"],
        &["path"],
        &["family"],
        &["link"],
        &["priority"],
        &["state"],
        &["subcommands", "slaves"],
    ]],
};

/// A follower link (`--slave link name path`).
#[derive(Debug, Clone, PartialEq)]
struct Sub {
    name: String,
    path: String,
    link: Option<String>,
}

impl Sub {
    fn json(&self) -> Json {
        json!({"name": self.name, "path": self.path, "link": self.link})
    }
}

/// One installed alternative of the group.
#[derive(Debug, Clone)]
struct Alt {
    priority: i64,
    family: String,
    subs: Vec<Sub>,
}

/// What `--display` says about the group.
#[derive(Debug, Default)]
struct Current {
    mode: Option<String>,
    path: Option<String>,
    link: Option<String>,
    alts: BTreeMap<String, Alt>,
}

fn parse(out: &str, wanted_subs: Option<&[Sub]>) -> Current {
    let re = |p: &str| Regex::new(p).expect("valid pattern");
    let mode_re = re(r"(?m)\s-\s(?:status\sis\s)?(\w*)(?:\smode|.)$");
    let mut c = Current::default();
    let Some(m) = mode_re.captures(out) else {
        return c;
    };
    c.mode = Some(m[1].to_string());
    c.path = re(r"(?m)^\s*link currently points to (.*)$")
        .captures(out)
        .map(|m| m[1].to_string());
    c.link = re(r"(?m)^\s*link \w+ is (.*)$")
        .captures(out)
        .map(|m| m[1].to_string());
    let mut sub_links: BTreeMap<String, String> = re(r"(?m)^\s*(?:slave|follower) (\S+) is (.*)$")
        .captures_iter(out)
        .map(|m| (m[1].to_string(), m[2].to_string()))
        .collect();
    if sub_links.is_empty() {
        if let Some(w) = wanted_subs {
            sub_links = w
                .iter()
                .map(|s| (s.name.clone(), s.link.clone().unwrap_or_default()))
                .collect();
        }
    }
    let alt_re =
        re(r"(?m)^(/.*)\s-\s(?:family\s(\S+)\s)?priority\s(\d+)((?:\s+(?:slave|follower).*)*)");
    let sub_re = re(r"(?m)^\s+(?:slave|follower) (.*): (.*)$");
    for m in alt_re.captures_iter(out) {
        let subs = sub_re
            .captures_iter(m.get(4).map_or("", |s| s.as_str()))
            .filter(|s| &s[2] != "(null)")
            .map(|s| Sub {
                name: s[1].to_string(),
                path: s[2].to_string(),
                link: sub_links.get(&s[1]).cloned(),
            })
            .collect();
        c.alts.insert(
            m[1].to_string(),
            Alt {
                priority: m[3].parse().unwrap_or(0),
                family: m.get(2).map_or("", |f| f.as_str()).to_string(),
                subs,
            },
        );
    }
    c
}

fn subs_arg(v: Option<Value>) -> Result<Option<Vec<Sub>>, ModuleError> {
    let Some(v) = v.filter(|v| !v.is_none() && !v.is_undefined()) else {
        return Ok(None);
    };
    let bad = || ModuleError::Args("subcommands must be a list of {name, path, link}".into());
    let mut out = Vec::new();
    for item in v.try_iter().map_err(|_| bad())? {
        let field = |k: &str| {
            item.get_attr(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or_else(bad)
        };
        out.push(Sub {
            name: field("name")?,
            path: field("path")?,
            link: Some(field("link")?),
        });
    }
    Ok(Some(out))
}

/// A diff side as ansible-core shows a structure: sorted JSON, four-space
/// indents.
fn shown(v: &Json) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let sorted: Json = serde_json::from_str(&v.to_string()).unwrap_or(Json::Null);
    let _ = serde::Serialize::serialize(&sorted, &mut ser);
    String::from_utf8(buf).unwrap_or_default() + "\n"
}

#[async_trait::async_trait]
impl Module for Alternatives {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name"])?;
        let path = a.string(&["path"])?;
        let family = a.string(&["family"])?;
        let link_arg = a.string(&["link"])?;
        let priority_arg = a.int(&["priority"])?;
        let state = a
            .choice(
                &["state"],
                &["present", "selected", "absent", "auto"],
                Some("selected"),
            )?
            .unwrap_or_default();
        let subs_param = subs_arg(a.value(&["subcommands", "slaves"]))?;
        a.finish()?;
        if path.is_none() && family.is_none() {
            return Ok(Plan::done(ModuleResult::failed(
                "one of the following is required: path, family",
            )));
        }

        let q = format!(
            "export LC_ALL=C\ncommand -v update-alternatives >/dev/null 2>&1 || {{ echo '@@missing'; exit 0; }}\n\
             p=$(command -v update-alternatives); echo \"@@bin $p\"\n\
             test -e {path} && echo '@@path-exists'\n\
             update-alternatives --display {name} 2>/dev/null\n",
            path = quote(path.as_deref().unwrap_or("")),
            name = quote(&name),
        );
        let out = ctx.run(q, None).await?.stdout_str();
        if out.contains("@@missing") {
            return Ok(Plan::done(ModuleResult::failed(
                "Failed to find required executable \"update-alternatives\" in paths: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )));
        }
        let path_exists = out.contains("@@path-exists\n");
        let display: String = out
            .lines()
            .filter(|l| !l.starts_with("@@"))
            .map(|l| format!("{l}\n"))
            .collect();
        let cur = parse(&display, subs_param.as_deref());
        let link = link_arg.clone().or_else(|| cur.link.clone());
        let priority = priority_arg.unwrap_or_else(|| {
            path.as_ref()
                .and_then(|p| cur.alts.get(p))
                .map_or(50, |a| a.priority)
        });
        let subs: Option<Vec<Sub>> = subs_param.clone().or_else(|| {
            path.as_ref()
                .and_then(|p| cur.alts.get(p))
                .map(|a| a.subs.clone())
                .filter(|s| !s.is_empty())
        });

        let mut before = Map::new();
        let mut after = Map::new();
        if let Some(p) = &path {
            match cur.alts.get(p) {
                Some(alt) => {
                    before.insert("state".into(), json!("present"));
                    before.insert("path".into(), json!(p));
                    before.insert("priority".into(), json!(alt.priority));
                    before.insert("link".into(), json!(cur.link));
                    if !alt.subs.is_empty() {
                        before.insert(
                            "subcommands".into(),
                            Json::Array(alt.subs.iter().map(Sub::json).collect()),
                        );
                    }
                    if cur.mode.as_deref() == Some("manual") && cur.path.as_deref() != Some(p) {
                        before.insert("state".into(), json!("selected"));
                    }
                }
                None => {
                    before.insert("state".into(), json!("absent"));
                }
            }
        } else if cur.mode.is_some() {
            before.insert("state".into(), json!("absent"));
        }
        // `--display` failing (no such group) leaves `before` empty, as in
        // community.general, which fills it only after a successful parse.
        if cur.mode.is_none() {
            before.clear();
        }

        let mut cmds: Vec<String> = Vec::new();
        let mut msgs: Vec<String> = Vec::new();
        let present = matches!(state.as_str(), "present" | "selected" | "auto");
        if present {
            if let Some(p) = &path {
                let needs_install = match cur.alts.get(p) {
                    None => true,
                    Some(alt) => {
                        priority_arg.is_some_and(|want| want != alt.priority)
                            // community.general compares the whole
                            // entries, links included, both ways.
                            || subs_param.as_ref().is_some_and(|want| {
                                !alt.subs.iter().all(|s| want.contains(s))
                                    || !want.iter().all(|s| alt.subs.contains(s))
                            })
                    }
                };
                if needs_install {
                    if !path_exists {
                        return Ok(Plan::done(ModuleResult::failed(format!(
                            "Specified path {p} does not exist"
                        ))));
                    }
                    let Some(l) = &link else {
                        return Ok(Plan::done(ModuleResult::failed(
                            "Needed to install the alternative, but unable to do so as we are missing the link",
                        )));
                    };
                    let mut cmd = format!(
                        "update-alternatives --install {} {} {} {}",
                        quote(l),
                        quote(&name),
                        quote(p),
                        priority
                    );
                    if let Some(f) = &family {
                        cmd.push_str(&format!(" --family {}", quote(f)));
                    }
                    if subs_param.is_some() {
                        for s in subs.iter().flatten() {
                            cmd.push_str(&format!(
                                " --slave {} {} {}",
                                quote(s.link.as_deref().unwrap_or("")),
                                quote(&s.name),
                                quote(&s.path)
                            ));
                        }
                    }
                    cmds.push(cmd);
                    msgs.push(format!("Install alternative '{p}' for '{name}'."));
                    after.insert("state".into(), json!("present"));
                    after.insert("path".into(), json!(p));
                    after.insert("family".into(), json!(family));
                    after.insert("priority".into(), json!(priority));
                    after.insert("link".into(), json!(link));
                    if let Some(s) = &subs {
                        after.insert(
                            "subcommands".into(),
                            Json::Array(s.iter().map(Sub::json).collect()),
                        );
                    }
                }
            }
            let same_path = path.is_some() && cur.path == path;
            let same_family = cur
                .path
                .as_ref()
                .and_then(|p| cur.alts.get(p))
                .is_some_and(|a| Some(&a.family) == family.as_ref());
            if state == "selected" && !(same_path || same_family) {
                let arg = path.clone().or_else(|| family.clone()).unwrap_or_default();
                cmds.push(format!(
                    "update-alternatives --set {} {}",
                    quote(&name),
                    quote(&arg)
                ));
                msgs.push(format!("Set alternative '{arg}' for '{name}'."));
                after.insert("state".into(), json!("selected"));
            }
            if state == "auto" && cur.mode.as_deref() == Some("manual") {
                cmds.push(format!("update-alternatives --auto {}", quote(&name)));
                msgs.push(format!("Set alternative to auto for '{name}'."));
                after.insert("state".into(), json!("present"));
            }
        } else if let Some(p) = path.as_ref().filter(|p| cur.alts.contains_key(*p)) {
            cmds.push(format!(
                "update-alternatives --remove {} {}",
                quote(&name),
                quote(p)
            ));
            msgs.push(format!("Remove alternative '{p}' from '{name}'."));
            after = Map::new();
            after.insert("state".into(), json!("absent"));
        }

        let diff_obj = if ctx.diff {
            json!({"before": Json::Object(before.clone()), "after": Json::Object(after.clone())})
        } else {
            json!({"before": {}, "after": {}})
        };
        let mut res = ModuleResult::changed(!cmds.is_empty()).with_msg(msgs.join(" "));
        res.data.insert("diff".into(), value_from_json(&diff_obj));
        if ctx.diff && !cmds.is_empty() {
            res.diff.push(FileDiff {
                before_header: String::new(),
                after_header: String::new(),
                before: shown(&Json::Object(before)),
                after: shown(&Json::Object(after)),
            });
        }
        if cmds.is_empty() {
            return Ok(Plan::done(res));
        }
        let script = format!("export LC_ALL=C\n{}\n", cmds.join("\n"));
        Ok(Plan::change(res.clone(), async move {
            if let Err(e) = apply(ctx, &script, None).await? {
                return Ok(ModuleResult::failed(e));
            }
            Ok(res)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn display_output_is_read_as_community_general_reads_it() {
        let out = "editor - auto mode\n  link best version is /bin/nano\n  link currently points to /bin/nano\n  link editor is /usr/bin/editor\n  slave editor.1.gz is /usr/share/man/man1/editor.1.gz\n\
            /bin/nano - priority 40\n  slave editor.1.gz: /usr/share/man/man1/nano.1.gz\n\
            /usr/bin/vim.basic - priority 30\n  slave editor.1.gz: /usr/share/man/man1/vim.1.gz\n";
        let c = parse(out, None);
        assert_eq!(c.mode.as_deref(), Some("auto"));
        assert_eq!(c.path.as_deref(), Some("/bin/nano"));
        assert_eq!(c.link.as_deref(), Some("/usr/bin/editor"));
        assert_eq!(c.alts["/bin/nano"].priority, 40);
        assert_eq!(
            c.alts["/usr/bin/vim.basic"].subs[0].link.as_deref(),
            Some("/usr/share/man/man1/editor.1.gz")
        );
    }
}
