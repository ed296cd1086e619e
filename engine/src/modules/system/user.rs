//! `user`: a local account, through `getent`, `useradd`, `usermod`,
//! `userdel`, `chpasswd -e` and `ssh-keygen`.
//!
//! Query: one round trip reads the passwd, shadow and whole group database
//! (plus whether the SSH key file exists). The wanted state is compared on
//! the controller; the apply round trip runs only the commands for what
//! differs and prints the account as it ends up, which the result reports.

use std::collections::BTreeSet;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::accounts::{GroupEntry, Passwd};
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct User;

struct Want {
    uid: Option<i64>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    append: bool,
    shell: Option<String>,
    home: Option<String>,
    create_home: bool,
    move_home: bool,
    comment: Option<String>,
    password: Option<String>,
    update_always: bool,
    system: bool,
    expires: Option<f64>,
    non_unique: bool,
    gen_key: bool,
    key_type: String,
    key_bits: i64,
    key_file: String,
    key_comment: String,
    key_passphrase: Option<String>,
}

/// The arguments `user` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "user",
    sets: &[&[
        &["name", "user"],
        &["state"],
        &["remove"],
        &["force"],
        &["uid"],
        &["group"],
        &["groups"],
        &["append"],
        &["shell"],
        &["home"],
        &["create_home", "createhome"],
        &["move_home"],
        &["comment"],
        &["password"],
        &["update_password"],
        &["system"],
        &["expires"],
        &["non_unique"],
        &["generate_ssh_key"],
        &["ssh_key_type"],
        &["ssh_key_bits"],
        &["ssh_key_file"],
        &["ssh_key_comment"],
        &["ssh_key_passphrase"],
        &["local"],
        &["seuser"],
        &["skeleton"],
        &["umask"],
        &["password_lock"],
        &["hidden"],
        &["login_class"],
        &["profile"],
        &["authorization"],
        &["role"],
        &["password_expire_max"],
        &["password_expire_min"],
        &["password_expire_warn"],
        &["uid_min"],
        &["uid_max"],
    ]],
};

#[async_trait::async_trait]
impl Module for User {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name", "user"])?;
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap();
        let remove = a.bool(&["remove"], false)?;
        let force = a.bool(&["force"], false)?;
        let w = Want {
            uid: a.int(&["uid"])?,
            group: a.string(&["group"])?,
            groups: a.list(&["groups"])?,
            append: a.bool(&["append"], false)?,
            shell: a.string(&["shell"])?,
            home: a.string(&["home"])?,
            create_home: a.bool(&["create_home", "createhome"], true)?,
            move_home: a.bool(&["move_home"], false)?,
            comment: a.string(&["comment"])?,
            password: a.string(&["password"])?,
            update_always: a
                .choice(
                    &["update_password"],
                    &["always", "on_create"],
                    Some("always"),
                )?
                .as_deref()
                == Some("always"),
            system: a.bool(&["system"], false)?,
            expires: a.float(&["expires"])?,
            non_unique: a.bool(&["non_unique"], false)?,
            gen_key: a.bool(&["generate_ssh_key"], false)?,
            key_type: a.string(&["ssh_key_type"])?.unwrap_or_else(|| "rsa".into()),
            key_bits: a.int(&["ssh_key_bits"])?.unwrap_or(0),
            key_file: a.string(&["ssh_key_file"])?.unwrap_or_default(),
            key_comment: a
                .string(&["ssh_key_comment"])?
                .unwrap_or_else(|| format!("ansible-generated on {}", ctx.host)),
            key_passphrase: a.string(&["ssh_key_passphrase"])?,
        };
        a.ignore(&[
            "local",
            "seuser",
            "skeleton",
            "umask",
            "password_lock",
            "hidden",
            "login_class",
            "profile",
            "authorization",
            "role",
            "password_expire_max",
            "password_expire_min",
            "password_expire_warn",
            "uid_min",
            "uid_max",
        ]);
        a.finish()?;
        let key_file = if w.key_file.is_empty() {
            format!(".ssh/id_{}", w.key_type)
        } else {
            w.key_file.clone()
        };

        let qn = quote(&name);
        let mut q = Query::new();
        q.section("pw", &format!("getent passwd {qn}"))
            .section("shadow", &format!("getent shadow {qn}"))
            .section("groups", "getent group");
        if w.gen_key {
            let kf = if key_file.starts_with('/') {
                quote(&key_file)
            } else {
                format!("\"$h\"/{}", quote(&key_file))
            };
            q.test(
                "key",
                &format!("h=$(getent passwd {qn} | cut -d: -f6); [ -n \"$h\" ] && [ -f {kf} ]"),
            );
        }
        let ans = q.run(ctx).await?;
        let cur = Passwd::parse(ans.trimmed("pw"));
        let shadow: Vec<String> = ans
            .trimmed("shadow")
            .split(':')
            .map(str::to_string)
            .collect();
        let groups: Vec<GroupEntry> = ans
            .text("groups")
            .lines()
            .filter_map(GroupEntry::parse)
            .collect();

        let mut res = ModuleResult::ok()
            .with("name", name.clone())
            .with("state", state.clone());
        if state == "absent" {
            res.data.insert("force".into(), force.into());
            res.data.insert("remove".into(), remove.into());
            let Some(p) = cur else {
                return Ok(Plan::done(res));
            };
            res.changed = true;
            if ctx.diff {
                res.diff
                    .push(state_diff(&format!("user {name}"), &describe(&p), &[]));
            }
            let cmd = format!(
                "userdel{}{} {qn}\n",
                if remove { " -r" } else { "" },
                if force { " -f" } else { "" }
            );
            return Ok(Plan::change(res.clone(), async move {
                Ok(match apply(ctx, &cmd, None).await? {
                    Ok(_) => res,
                    Err(e) => ModuleResult::failed(e).with("name", name),
                })
            }));
        }

        // Resolve the wanted primary group and supplementary groups.
        let find_group = |g: &str| -> Option<&GroupEntry> {
            groups.iter().find(|e| e.name == g).or_else(|| {
                g.parse::<u32>()
                    .ok()
                    .and_then(|n| groups.iter().find(|e| e.gid == n))
            })
        };
        let want_gid = match &w.group {
            Some(g) => match find_group(g) {
                Some(e) => Some(e.gid),
                None => {
                    return Ok(Plan::done(
                        ModuleResult::failed(format!("Group {g} does not exist"))
                            .with("name", name),
                    ))
                }
            },
            None => None,
        };
        let mut want_groups: Option<BTreeSet<String>> = None;
        if let Some(gs) = &w.groups {
            let mut set = BTreeSet::new();
            for g in gs {
                match find_group(g) {
                    Some(e) => {
                        set.insert(e.name.clone());
                    }
                    None => {
                        return Ok(Plan::done(
                            ModuleResult::failed(format!("Group {g} does not exist"))
                                .with("name", name),
                        ))
                    }
                }
            }
            want_groups = Some(set);
        }
        let cur_groups: BTreeSet<String> = groups
            .iter()
            .filter(|g| g.members.contains(&name))
            .map(|g| g.name.clone())
            .collect();

        let mut cmd = String::new();
        let mut set_password = false;
        match &cur {
            None => {
                cmd.push_str("useradd");
                if let Some(u) = w.uid {
                    cmd.push_str(&format!(" -u {u}"));
                    if w.non_unique {
                        cmd.push_str(" -o");
                    }
                }
                if let Some(g) = want_gid {
                    cmd.push_str(&format!(" -g {g}"));
                } else if groups.iter().any(|g| g.name == name) {
                    // useradd would refuse to create the user's own group.
                    cmd.push_str(&format!(" -g {qn}"));
                }
                if let Some(gs) = &want_groups {
                    if !gs.is_empty() {
                        cmd.push_str(&format!(" -G {}", quote(&join(gs))));
                    }
                }
                if let Some(c) = &w.comment {
                    cmd.push_str(&format!(" -c {}", quote(c)));
                }
                if let Some(h) = &w.home {
                    cmd.push_str(&format!(" -d {}", quote(h)));
                }
                if let Some(s) = &w.shell {
                    cmd.push_str(&format!(" -s {}", quote(s)));
                }
                if let Some(e) = w.expires {
                    cmd.push_str(&format!(" -e {}", quote(&expire_arg(e))));
                }
                if w.system {
                    cmd.push_str(" -r");
                }
                cmd.push_str(if w.create_home { " -m" } else { " -M" });
                cmd.push_str(&format!(" {qn}\n"));
                set_password = w.password.is_some();
            }
            Some(p) => {
                let mut m = String::new();
                if let Some(u) = w.uid {
                    if u != i64::from(p.uid) {
                        m.push_str(&format!(" -u {u}"));
                        if w.non_unique {
                            m.push_str(" -o");
                        }
                    }
                }
                if let Some(g) = want_gid {
                    if g != p.gid {
                        m.push_str(&format!(" -g {g}"));
                    }
                }
                if let Some(gs) = &want_groups {
                    let primary = groups
                        .iter()
                        .find(|g| g.gid == want_gid.unwrap_or(p.gid))
                        .map(|g| g.name.clone());
                    let gs: BTreeSet<String> = gs
                        .iter()
                        .filter(|g| Some(*g) != primary.as_ref())
                        .cloned()
                        .collect();
                    if w.append {
                        if !gs.is_subset(&cur_groups) {
                            m.push_str(&format!(" -a -G {}", quote(&join(&gs))));
                        }
                    } else if gs != cur_groups {
                        m.push_str(&format!(" -G {}", quote(&join(&gs))));
                    }
                }
                if let Some(c) = &w.comment {
                    if *c != p.comment {
                        m.push_str(&format!(" -c {}", quote(c)));
                    }
                }
                if let Some(h) = &w.home {
                    if h.trim_end_matches('/') != p.home.trim_end_matches('/') {
                        m.push_str(&format!(" -d {}", quote(h)));
                        if w.move_home {
                            m.push_str(" -m");
                        }
                    }
                }
                if let Some(s) = &w.shell {
                    if *s != p.shell {
                        m.push_str(&format!(" -s {}", quote(s)));
                    }
                }
                if let Some(e) = w.expires {
                    let cur_exp = shadow.get(7).cloned().unwrap_or_default();
                    let want = if e < 0.0 {
                        String::new()
                    } else {
                        ((e / 86400.0).floor() as i64).to_string()
                    };
                    if cur_exp != want {
                        m.push_str(&format!(" -e {}", quote(&expire_arg(e))));
                    }
                }
                if !m.is_empty() {
                    cmd.push_str(&format!("usermod{m} {qn}\n"));
                }
                if let Some(pw) = &w.password {
                    set_password =
                        w.update_always && shadow.get(1).map(String::as_str) != Some(pw.as_str());
                }
            }
        }
        let mut stdin = None;
        if set_password {
            cmd.push_str("chpasswd -e\n");
            stdin = Some(format!("{name}:{}\n", w.password.as_deref().unwrap_or("")).into_bytes());
        }
        let gen_key = w.gen_key && !ans.yes("key");
        if gen_key {
            let kf = if key_file.starts_with('/') {
                quote(&key_file)
            } else {
                format!("\"$h\"/{}", quote(&key_file))
            };
            let bits = if w.key_bits > 0 {
                format!(" -b {}", w.key_bits)
            } else {
                String::new()
            };
            cmd.push_str(&format!(
                "h=$(getent passwd {qn} | cut -d: -f6); k={kf}; d=$(dirname \"$k\")\n\
                 if [ ! -d \"$d\" ]; then mkdir -p \"$d\"; chmod 0700 \"$d\"; chown {qn}: \"$d\"; fi\n\
                 ssh-keygen -q -t {}{bits} -C {} -N {} -f \"$k\" </dev/null >/dev/null\n\
                 chown {qn}: \"$k\" \"$k.pub\"\n",
                quote(&w.key_type),
                quote(&w.key_comment),
                quote(w.key_passphrase.as_deref().unwrap_or("")),
            ));
        }
        res.changed = !cmd.is_empty();
        if res.changed && ctx.diff {
            let before = cur.as_ref().map(describe).unwrap_or_default();
            let mut after = before.clone();
            if after.is_empty() {
                after.push(("name", name.clone()));
            }
            let mut set = |k: &'static str, v: String| {
                if let Some(e) = after.iter_mut().find(|(n, _)| *n == k) {
                    e.1 = v;
                } else {
                    after.push((k, v));
                }
            };
            if let Some(u) = w.uid {
                set("uid", u.to_string());
            }
            if let Some(g) = want_gid {
                set("group", g.to_string());
            }
            if let Some(c) = &w.comment {
                set("comment", c.clone());
            }
            if let Some(h) = &w.home {
                set("home", h.clone());
            }
            if let Some(s) = &w.shell {
                set("shell", s.clone());
            }
            if let Some(gs) = &want_groups {
                let all: BTreeSet<String> = if w.append {
                    gs.union(&cur_groups).cloned().collect()
                } else {
                    gs.clone()
                };
                set("groups", join(&all));
            }
            if set_password {
                set("password", "(changed)".into());
            }
            res.diff
                .push(state_diff(&format!("user {name}"), &before, &after));
        }
        if res.changed {
            cmd.push_str(&format!(
                "echo \"PW $(getent passwd {qn})\"\necho \"GR $(id -Gn {qn})\"\n"
            ));
            if w.gen_key {
                let kf = if key_file.starts_with('/') {
                    quote(&key_file)
                } else {
                    format!(
                        "\"$(getent passwd {qn} | cut -d: -f6)\"/{}",
                        quote(&key_file)
                    )
                };
                cmd.push_str(&format!(
                    "k={kf}; echo \"KF $k\"; echo \"PK $(cat \"$k.pub\")\"; echo \"FP $(ssh-keygen -lf \"$k.pub\")\"\n"
                ));
            }
        }
        // The account as the result reports it: from the apply step's own
        // `getent`/`id` lines when it ran, else as queried.
        let report = move |mut res: ModuleResult, final_pw: Option<String>| -> ModuleResult {
            let line = |key: &str| {
                final_pw.as_deref().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix(key).map(str::to_string))
                })
            };
            let now = line("PW ").and_then(|l| Passwd::parse(&l)).or(cur.clone());
            if let Some(p) = &now {
                res.data.insert("uid".into(), p.uid.into());
                res.data.insert("group".into(), p.gid.into());
                res.data.insert("comment".into(), p.comment.clone().into());
                res.data.insert("home".into(), p.home.clone().into());
                res.data.insert("shell".into(), p.shell.clone().into());
            }
            if let Some(gs) = line("GR ") {
                let list: Vec<&str> = gs.split_whitespace().skip(1).collect();
                res.data.insert("groups".into(), list.join(",").into());
            } else if want_groups.is_some() || !cur_groups.is_empty() {
                res.data.insert("groups".into(), join(&cur_groups).into());
            }
            res.data.insert("system".into(), w.system.into());
            res.data.insert("append".into(), w.append.into());
            res.data.insert("move_home".into(), w.move_home.into());
            if cur.is_none() {
                res.data.insert("create_home".into(), w.create_home.into());
            }
            if w.password.is_some() {
                res.data
                    .insert("password".into(), "NOT_LOGGING_PASSWORD".into());
            }
            if w.gen_key {
                res.data.insert(
                    "ssh_key_file".into(),
                    line("KF ").unwrap_or_else(|| key_file.clone()).into(),
                );
                if let Some(pk) = line("PK ") {
                    res.data.insert("ssh_public_key".into(), pk.into());
                }
                if let Some(fp) = line("FP ") {
                    res.data.insert("ssh_fingerprint".into(), fp.into());
                }
            }
            res
        };
        if !res.changed {
            return Ok(Plan::done(report(res, None)));
        }
        let planned = report(res.clone(), None);
        Ok(Plan::change(planned, async move {
            match apply(ctx, &cmd, stdin).await? {
                Ok(out) => Ok(report(res, Some(out.stdout_str()))),
                Err(e) => Ok(ModuleResult::failed(e).with("name", name)),
            }
        }))
    }
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(",")
}

/// `useradd -e` wants a date; a negative `expires` clears the expiry.
fn expire_arg(epoch: f64) -> String {
    if epoch < 0.0 {
        return String::new();
    }
    let days = (epoch / 86400.0).floor() as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn describe(p: &Passwd) -> Vec<(&'static str, String)> {
    vec![
        ("name", p.name.clone()),
        ("uid", p.uid.to_string()),
        ("group", p.gid.to_string()),
        ("comment", p.comment.clone()),
        ("home", p.home.clone()),
        ("shell", p.shell.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_are_gregorian() {
        assert_eq!(expire_arg(0.0), "1970-01-01");
        assert_eq!(expire_arg(1_700_000_000.0), "2023-11-14");
        assert_eq!(expire_arg(951_782_400.0), "2000-02-29");
        assert_eq!(expire_arg(-1.0), "");
    }
}
