//! `apt`: Debian packages through `dpkg-query`, `apt-get` and `dpkg -i`.
//!
//! Query: one round trip asks `dpkg-query -W -f` for every named package
//! (plus `apt-cache policy` candidates for `state: latest`, the cache's age
//! for `cache_valid_time`, and a `.deb`'s control fields for `deb:`). The
//! packages to touch are computed on the controller. Apply: one `apt-get`
//! (or `dpkg -i`) run with `DEBIAN_FRONTEND=noninteractive` and a lock
//! timeout, which ends by asking `dpkg-query` again, so `changed` comes from
//! what is installed afterwards, not from apt's exit status.

use std::collections::BTreeMap;

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{failure_text, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Apt;

/// `dpkg -l`-style state of one package.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PkgState {
    /// Fully installed (`install ok installed` or `hold ok installed`).
    pub installed: bool,
    /// Removed with its configuration files left behind.
    pub config_files: bool,
    pub version: String,
}

/// The format of every `dpkg-query -W -f` this module runs.
pub const DPKG_FORMAT: &str = "${Package}\\t${db:Status-Abbrev}\\t${Status}\\t${Version}\\n";

/// Parses `dpkg-query -W -f DPKG_FORMAT` output, keyed by package name.
pub fn parse_dpkg(out: &str) -> BTreeMap<String, PkgState> {
    let mut m = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 4 {
            continue;
        }
        let status = f[2];
        let st = PkgState {
            installed: status.ends_with(" installed"),
            config_files: status.ends_with(" config-files"),
            version: f[3].to_string(),
        };
        // `pkg:arch` names show up for multi-arch packages.
        let name = f[0].split(':').next().unwrap_or(f[0]).to_string();
        m.insert(name, st);
    }
    m
}

/// A requested package: `name`, `name=version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgSpec {
    pub name: String,
    pub version: Option<String>,
}

impl PkgSpec {
    pub fn parse(s: &str) -> PkgSpec {
        match s.split_once('=') {
            Some((n, v)) => PkgSpec {
                name: n.trim().into(),
                version: Some(v.trim().into()),
            },
            None => PkgSpec {
                name: s.trim().into(),
                version: None,
            },
        }
    }

    /// Whether the installed version satisfies the pin (`1.2` matches
    /// `1.2-3`, and `1.2*` is a prefix).
    pub fn satisfied_by(&self, st: &PkgState) -> bool {
        if !st.installed {
            return false;
        }
        match &self.version {
            None => true,
            Some(v) => {
                let v = v.trim_end_matches('*');
                st.version == v
                    || st.version.starts_with(&format!("{v}-"))
                    || (self.version.as_deref().unwrap().ends_with('*')
                        && st.version.starts_with(v))
            }
        }
    }

    pub fn arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The apt-get options every run gets.
fn apt_opts(lock_timeout: i64) -> String {
    format!(
        "-y -q -o DPkg::Lock::Timeout={lock_timeout} \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
    )
}

/// Parses `N upgraded, N newly installed, N to remove` from apt-get output:
/// whether it did anything.
pub fn apt_did_something(out: &str) -> bool {
    for l in out.lines() {
        if l.contains(" upgraded, ") && l.contains(" newly installed, ") {
            let nums: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            return nums.iter().take(3).any(|n| *n > 0);
        }
    }
    false
}

/// The arguments `apt` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "apt",
    sets: &[&[
        &["name", "package", "pkg"],
        &["state"],
        &["update_cache", "update-cache"],
        &["cache_valid_time"],
        &["upgrade"],
        &["deb"],
        &["install_recommends", "install-recommends"],
        &["autoremove"],
        &["autoclean"],
        &["purge"],
        &[
            "allow_downgrade",
            "allow-downgrade",
            "allow_downgrades",
            "allow-downgrades",
        ],
        &["default_release", "default-release"],
        &["force"],
        &["only_upgrade"],
        &["lock_timeout"],
        &["dpkg_options"],
        &["allow_unauthenticated", "allow-unauthenticated"],
        &["force_apt_get"],
        &["policy_rc_d"],
        &["fail_on_autoremove"],
        &["allow_change_held_packages"],
        &["clean"],
        &["update_cache_retries"],
        &["update_cache_retry_max_delay"],
    ]],
};

#[async_trait::async_trait]
impl Module for Apt {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let names = a.list(&["name", "package", "pkg"])?.unwrap_or_default();
        let state = a
            .choice(
                &["state"],
                &["absent", "build-dep", "latest", "present", "fixed"],
                Some("present"),
            )?
            .unwrap();
        let update_cache = a.bool(&["update_cache", "update-cache"], false)?;
        let cache_valid_time = a.int(&["cache_valid_time"])?.unwrap_or(0);
        let upgrade = a
            .choice(
                &["upgrade"],
                &["dist", "full", "no", "safe", "yes"],
                Some("no"),
            )?
            .unwrap();
        let deb = a.string(&["deb"])?;
        let install_recommends = a.opt_bool(&["install_recommends", "install-recommends"])?;
        let autoremove = a.bool(&["autoremove"], false)?;
        let autoclean = a.bool(&["autoclean"], false)?;
        let purge = a.bool(&["purge"], false)?;
        let allow_downgrade = a.bool(
            &[
                "allow_downgrade",
                "allow-downgrade",
                "allow_downgrades",
                "allow-downgrades",
            ],
            false,
        )?;
        let default_release = a.string(&["default_release", "default-release"])?;
        let force = a.bool(&["force"], false)?;
        let only_upgrade = a.bool(&["only_upgrade"], false)?;
        let lock_timeout = a.int(&["lock_timeout"])?.unwrap_or(60);
        let dpkg_options = a.string(&["dpkg_options"])?;
        let allow_unauth = a.bool(&["allow_unauthenticated", "allow-unauthenticated"], false)?;
        a.ignore(&[
            "force_apt_get",
            "policy_rc_d",
            "fail_on_autoremove",
            "allow_change_held_packages",
            "clean",
            "update_cache_retries",
            "update_cache_retry_max_delay",
        ]);
        a.finish()?;

        let specs: Vec<PkgSpec> = names.iter().map(|n| PkgSpec::parse(n)).collect();
        let mut q = Query::new();
        let mut queried: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        if let Some(d) = &deb {
            let qd = quote(d);
            q.section(
                "deb",
                &format!("dpkg-deb -f {qd} Package Version Architecture"),
            )
            .test("deb_exists", &format!("[ -f {qd} ]"));
            q.raw(&format!("debpkg=$(dpkg-deb -f {qd} Package 2>/dev/null)"));
        }
        let mut pkg_args: Vec<String> = queried.iter().map(|n| quote(n)).collect();
        if deb.is_some() {
            pkg_args.push("$debpkg".into());
        }
        if !pkg_args.is_empty() {
            q.section(
                "dpkg",
                &format!("dpkg-query -W -f '{DPKG_FORMAT}' {}", pkg_args.join(" ")),
            );
        }
        if state == "latest" && !specs.is_empty() {
            q.section(
                "policy",
                &format!(
                    "LC_ALL=C apt-cache policy {}",
                    queried
                        .iter()
                        .map(|n| quote(n))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            );
        }
        if update_cache {
            q.section(
                "cache_age",
                "for f in /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists/partial; do \
                 if [ -e \"$f\" ]; then echo $(( $(date +%s) - $(stat -c %Y \"$f\") )); break; fi; done",
            );
        }
        let ans = q.run(ctx).await?;
        let installed = parse_dpkg(ans.text("dpkg"));

        let mut res = ModuleResult::ok();
        let env = "export DEBIAN_FRONTEND=noninteractive\nexport LC_ALL=C\n";
        let mut script = String::from(env);
        let mut wants_update = false;
        if update_cache {
            let age: Option<i64> = ans.trimmed("cache_age").parse().ok();
            wants_update = cache_valid_time == 0 || age.is_none_or(|a| a > cache_valid_time);
        }

        // What would change.
        let opts = apt_opts(lock_timeout);
        let mut extra = String::new();
        match install_recommends {
            Some(true) => extra.push_str(" -o APT::Install-Recommends=yes"),
            Some(false) => extra.push_str(" --no-install-recommends"),
            None => {}
        }
        if let Some(r) = &default_release {
            extra.push_str(&format!(" -t {}", quote(r)));
        }
        if allow_downgrade {
            extra.push_str(" --allow-downgrades");
        }
        if force || allow_unauth {
            extra.push_str(" --allow-unauthenticated");
        }
        if only_upgrade {
            extra.push_str(" --only-upgrade");
        }
        if let Some(o) = &dpkg_options {
            for opt in o.split(',').filter(|s| !s.is_empty()) {
                extra.push_str(&format!(" -o Dpkg::Options::=--{}", quote(opt.trim())));
            }
        }
        let mut planned: Vec<String> = Vec::new();
        let mut actions = String::new();
        let missing =
            |s: &PkgSpec| !s.satisfied_by(installed.get(&s.name).unwrap_or(&PkgState::default()));
        match state.as_str() {
            "present" | "fixed" => {
                let todo: Vec<&PkgSpec> = specs.iter().filter(|s| missing(s)).collect();
                if !todo.is_empty() || state == "fixed" {
                    let list: Vec<String> = todo.iter().map(|s| quote(&s.arg())).collect();
                    planned.extend(todo.iter().map(|s| s.arg()));
                    actions.push_str(&format!(
                        "apt-get {opts}{extra} install{} {}\n",
                        if state == "fixed" { " -f" } else { "" },
                        list.join(" ")
                    ));
                }
            }
            "latest" => {
                let cand = parse_candidates(ans.text("policy"));
                let mut todo = Vec::new();
                for s in &specs {
                    let st = installed.get(&s.name).cloned().unwrap_or_default();
                    let c = cand.get(&s.name).cloned();
                    if !st.installed
                        || (c
                            .as_deref()
                            .is_some_and(|c| c != "(none)" && c != st.version))
                        || wants_update
                    {
                        todo.push(s);
                    }
                }
                if !todo.is_empty() {
                    planned.extend(todo.iter().map(|s| s.arg()));
                    let list: Vec<String> = todo.iter().map(|s| quote(&s.arg())).collect();
                    actions.push_str(&format!(
                        "apt-get {opts}{extra} install {}\n",
                        list.join(" ")
                    ));
                }
            }
            "absent" => {
                let todo: Vec<&PkgSpec> = specs
                    .iter()
                    .filter(|s| {
                        let st = installed.get(&s.name).cloned().unwrap_or_default();
                        st.installed || (purge && st.config_files)
                    })
                    .collect();
                if !todo.is_empty() {
                    planned.extend(todo.iter().map(|s| s.name.clone()));
                    let list: Vec<String> = todo.iter().map(|s| quote(&s.name)).collect();
                    actions.push_str(&format!(
                        "apt-get {opts} remove{} {}\n",
                        if purge { " --purge" } else { "" },
                        list.join(" ")
                    ));
                }
            }
            "build-dep" => {
                let list: Vec<String> = specs.iter().map(|s| quote(&s.name)).collect();
                actions.push_str(&format!(
                    "apt-get {opts}{extra} build-dep {}\n",
                    list.join(" ")
                ));
            }
            _ => {}
        }
        if let Some(d) = &deb {
            if !ans.yes("deb_exists") {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "Unable to install package: {d} does not exist on the host"
                ))));
            }
            // `dpkg-deb -f` with several fields prints `Field: value` lines.
            let field = |k: &str| {
                ans.text("deb")
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix(k)
                            .and_then(|r| r.strip_prefix(':'))
                            .map(str::trim)
                    })
                    .unwrap_or("")
            };
            let (dn, dv) = (field("Package"), field("Version"));
            let st = installed.get(dn).cloned().unwrap_or_default();
            if !st.installed || st.version != dv {
                planned.push(format!("{dn}={dv}"));
                queried.push(dn.to_string());
                actions.push_str(&format!(
                    "dpkg --force-confdef --force-confold -i {} || apt-get {opts} install -f\n",
                    quote(d)
                ));
            }
        }
        let upgrade_cmd = match upgrade.as_str() {
            "no" => None,
            "dist" | "full" => Some("dist-upgrade"),
            _ => Some("upgrade"),
        };
        if let Some(u) = upgrade_cmd {
            actions.push_str(&format!("apt-get {opts}{extra} {u}\n"));
        }
        if autoremove {
            actions.push_str(&format!(
                "apt-get {opts} autoremove{}\n",
                if purge { " --purge" } else { "" }
            ));
        }
        if autoclean {
            actions.push_str(&format!("apt-get {opts} autoclean\n"));
        }
        // Upgrades and autoremove can only be judged by apt itself; in check
        // mode it simulates them.
        let needs_sim = upgrade_cmd.is_some() || autoremove;
        if actions.is_empty() && !wants_update {
            res.data.insert("cache_updated".into(), false.into());
            return Ok(Plan::done(res));
        }
        // Check mode reports the plan; upgrades and autoremove, which only apt
        // itself can judge, it asks apt to simulate (read-only).
        let mut preview = res.clone();
        preview.data.insert("cache_updated".into(), false.into());
        preview.changed = !planned.is_empty()
            || wants_update && specs.is_empty() && deb.is_none() && upgrade_cmd.is_none();
        if ctx.diff && !planned.is_empty() {
            preview.diff.push(plan_diff(&state, &planned));
        }
        let simulate = (needs_sim && planned.is_empty()).then(|| {
            let mut sim = String::from(env);
            if let Some(u) = upgrade_cmd {
                sim.push_str(&format!("apt-get -s {opts}{extra} {u}\n"));
            }
            if autoremove {
                sim.push_str(&format!("apt-get -s {opts} autoremove\n"));
            }
            sim
        });
        let preview = async move {
            if let Some(sim) = simulate {
                let out = ctx.run(sim, None).await?;
                preview.changed = apt_did_something(&out.stdout_str());
            }
            Ok(preview)
        };
        let apply = async move {
            if wants_update {
                script.push_str(&format!(
                    "apt-get -q -o DPkg::Lock::Timeout={lock_timeout} update >&2 || exit 97\necho CACHE_UPDATED\n"
                ));
            }
            script.push_str("set -e\n");
            script.push_str(&actions);
            script.push_str("set +e\n");
            if !queried.is_empty() {
                script.push_str(&format!(
                    "printf '@@DPKG@@\\n'\ndpkg-query -W -f '{DPKG_FORMAT}' {} 2>/dev/null\n",
                    queried
                        .iter()
                        .map(|n| quote(n))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            script.push_str("exit 0\n");
            let out = ctx.run(script, None).await?;
            let stdout = out.stdout_str();
            let (log, after) = stdout.split_once("@@DPKG@@\n").unwrap_or((&stdout, ""));
            let cache_updated = log.lines().any(|l| l == "CACHE_UPDATED");
            res.data
                .insert("cache_updated".into(), cache_updated.into());
            if cache_updated {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                res.data.insert("cache_update_time".into(), now.into());
            }
            res.data
                .insert("stdout".into(), log.replace("CACHE_UPDATED\n", "").into());
            res.data.insert("stderr".into(), out.stderr_str().into());
            if out.rc != 0 {
                let mut r = ModuleResult::failed(if out.rc == 97 {
                    format!("Failed to update apt cache: {}", failure_text(&out))
                } else {
                    format!("apt-get failed: {}", failure_text(&out))
                });
                r.data = res.data;
                return Ok(r);
            }
            let after_state = parse_dpkg(after);
            let pkg_changed = queried
                .iter()
                .any(|n| installed.get(n) != after_state.get(n));
            res.changed = pkg_changed
                || ((upgrade_cmd.is_some() || autoremove) && apt_did_something(log))
                || (cache_updated && specs.is_empty() && deb.is_none() && upgrade_cmd.is_none());
            if ctx.diff && pkg_changed {
                res.diff.push(plan_diff(&state, &planned));
            }
            Ok(res)
        };
        Ok(Plan::fused(preview, apply))
    }
}

fn plan_diff(state: &str, planned: &[String]) -> crate::modules::FileDiff {
    let verb = if state == "absent" {
        "removed"
    } else {
        "installed"
    };
    let mut d = state_diff("packages", &[], &[(verb, planned.join(", "))]);
    d.before = String::new();
    d
}

/// `apt-cache policy` candidates, by package.
pub fn parse_candidates(out: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut cur: Option<String> = None;
    for l in out.lines() {
        if !l.starts_with(' ') && l.ends_with(':') {
            cur = Some(l.trim_end_matches(':').to_string());
        } else if let Some(c) = l.trim().strip_prefix("Candidate:") {
            if let Some(n) = &cur {
                m.insert(n.clone(), c.trim().to_string());
            }
        }
    }
    m
}

/// The value of a list argument for results.
pub fn list_value(v: &[String]) -> Value {
    Value::from(v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_output_is_parsed() {
        let m = parse_dpkg(
            "bash\tii \tinstall ok installed\t5.2.15-2\nfoo\trc \tdeinstall ok config-files\t1.0\nbar:amd64\tun \tunknown ok not-installed\t\n",
        );
        assert!(m["bash"].installed);
        assert!(m["foo"].config_files && !m["foo"].installed);
        assert!(!m["bar"].installed);
    }

    #[test]
    fn version_pins_match_debian_revisions() {
        let st = PkgState {
            installed: true,
            config_files: false,
            version: "1.2-3".into(),
        };
        assert!(PkgSpec::parse("x=1.2").satisfied_by(&st));
        assert!(PkgSpec::parse("x=1.2-3").satisfied_by(&st));
        assert!(PkgSpec::parse("x=1.*").satisfied_by(&st));
        assert!(!PkgSpec::parse("x=1.3").satisfied_by(&st));
    }

    #[test]
    fn apt_summary_line_tells_whether_anything_happened() {
        assert!(!apt_did_something(
            "0 upgraded, 0 newly installed, 0 to remove and 3 not upgraded."
        ));
        assert!(apt_did_something(
            "2 upgraded, 0 newly installed, 0 to remove and 0 not upgraded."
        ));
        assert!(apt_did_something(
            "0 upgraded, 0 newly installed, 1 to remove and 0 not upgraded."
        ));
    }

    #[test]
    fn policy_candidates() {
        let m = parse_candidates("bash:\n  Installed: 5.2\n  Candidate: 5.3\n  Version table:\n");
        assert_eq!(m["bash"], "5.3");
    }
}
