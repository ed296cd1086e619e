//! `package_facts`: the installed packages as the fact `packages` (a list of
//! versions per name). Keel reads the apt manager natively — what
//! ansible-core gets from python-apt, taken from `dpkg-query` and
//! `apt-cache policy` in one query round trip: the installed version, its
//! architecture and section, and the origin of the first package file
//! that carries that version. Never a change, so check mode runs it too.

use std::collections::HashMap;

use indexmap::IndexMap;
use minijinja::Value;

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::vars::VarMap;

pub struct PackageFacts;

static PARAMS: Params = Params {
    module: "package_facts",
    sets: &[&[&["manager"], &["strategy"]]],
};

/// ansible-core's package managers (and their aliases); Keel reads apt.
const MANAGERS: &[&str] = &[
    "apk", "apt", "pacman", "pkg", "pkg5", "pkg_info", "pkgng", "portage", "rpm",
];

const QUERY: &str = r#"export LANG=C LC_ALL=C
command -v dpkg-query >/dev/null 2>&1 && command -v apt-cache >/dev/null 2>&1 || { echo '@@none'; exit 0; }
echo "@@arch $(dpkg --print-architecture)"
dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${Section}\n' > /dev/null 2>&1 || { echo '@@none'; exit 0; }
echo '@@dpkg'
dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${Section}\n'
echo '@@files'
apt-cache policy
echo '@@sections'
# python-apt takes a version's section from the archive's index, which may
# differ from the package's own: the first index record of each installed
# version (any compression apt reads, through apt-helper).
{ dpkg-query -W -f '${Package}\t${Version}\n'; echo '@@@'
  /usr/lib/apt/apt-helper cat-file /var/lib/apt/lists/*_Packages* 2>/dev/null; echo; } |
awk 'in_lists == 0 { if ($0 == "@@@") { in_lists = 1; FS = "\n" } else { want[$0] = 1 }; next }
  /^Package: / { p = substr($0, 10) } /^Version: / { v = substr($0, 10) } /^Section: / { s = substr($0, 10) }
  /^$/ { k = p "\t" v; if ((k in want) && !(k in seen)) { seen[k] = 1; print k "\t" s }; p = ""; v = ""; s = "" }'
echo '@@policy'
dpkg-query -W -f '${db:Status-Abbrev}\t${binary:Package}\n' | while IFS="$(printf '\t')" read -r st name; do
  case "$st" in ?n*|?c*) ;; *) printf '%s\n' "$name" ;; esac
done | xargs -r apt-cache policy
"#;

/// One installed package as dpkg lists it.
struct Installed {
    key: String,
    name: String,
    version: String,
    arch: String,
    section: String,
}

/// The part of the output after `@@name`, up to the next marker.
fn section<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let tag = format!("@@{name}\n");
    let start = out.find(&tag)? + tag.len();
    let rest = &out[start..];
    let end = rest.find("\n@@").map(|i| i + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A package file line without its pin priority: `http://… main amd64 Packages`.
fn file_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let (prio, rest) = t.split_once(' ')?;
    prio.parse::<i64>().ok()?;
    Some(rest.trim())
}

/// Each package file's `o=` (its Release file's Origin), from `apt-cache policy`.
fn origins(files: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    for line in files.lines() {
        if let Some(rel) = line.trim_start().strip_prefix("release ") {
            if let Some(k) = current.take() {
                let o = rel
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("o="))
                    .unwrap_or("")
                    .to_string();
                out.insert(k, o);
            }
        } else if line.starts_with(' ') && !line.starts_with("     ") {
            current = file_key(line).map(str::to_string);
        }
    }
    out
}

/// Per package (as `apt-cache policy` heads it): the first package file
/// listed under the installed (`***`) version.
fn first_files(policy: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut pkg: Option<String> = None;
    let mut in_installed = false;
    for line in policy.lines() {
        if !line.starts_with(' ') {
            pkg = line.strip_suffix(':').map(str::to_string);
            in_installed = false;
        } else if line.starts_with(" *** ") {
            in_installed = true;
        } else if line.starts_with("        ") {
            if in_installed {
                if let (Some(p), Some(k)) = (&pkg, file_key(line)) {
                    out.entry(p.clone()).or_insert_with(|| k.to_string());
                }
            }
        } else if line.starts_with("     ") {
            in_installed = false;
        }
    }
    out
}

fn installed(dpkg: &str, native: &str) -> Vec<Installed> {
    dpkg.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [st, name, version, arch, section] = f.as_slice() else {
                return None;
            };
            // python-apt's is_installed: any state with a current version.
            let mut c = st.chars();
            c.next();
            if matches!(c.next(), Some('n' | 'c') | None) {
                return None;
            }
            let key = if *arch == native || *arch == "all" {
                name.to_string()
            } else {
                format!("{name}:{arch}")
            };
            Some(Installed {
                key,
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
                section: section.to_string(),
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl Module for PackageFacts {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let managers = a.list(&["manager"])?.unwrap_or_else(|| vec!["auto".into()]);
        a.choice(&["strategy"], &["first", "all"], Some("first"))?;
        a.finish()?;
        let managers: Vec<String> = managers.iter().map(|m| m.to_lowercase()).collect();
        let unsupported: Vec<&String> = managers
            .iter()
            .filter(|m| *m != "auto" && !MANAGERS.contains(&m.as_str()))
            .collect();
        if !unsupported.is_empty() {
            let list: Vec<&str> = unsupported.iter().map(|s| s.as_str()).collect();
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Unsupported package managers requested: {}",
                list.join(", ")
            ))));
        }
        let wants_apt = managers.iter().any(|m| m == "auto" || m == "apt");
        let out = if wants_apt {
            ctx.run(QUERY, None).await?.stdout_str()
        } else {
            "@@none\n".to_string()
        };
        let native = out
            .lines()
            .find_map(|l| l.strip_prefix("@@arch "))
            .unwrap_or("")
            .to_string();
        let pkgs = match section(&out, "dpkg") {
            Some(d) if !out.contains("@@none") => installed(d, &native),
            _ => Vec::new(),
        };
        if pkgs.is_empty() {
            let mut r = ModuleResult::failed(format!(
                "Could not detect a supported package manager from the following list: {managers:?}, \
                 or the required Python library is not installed. Check warnings for details."
            ));
            if wants_apt {
                r.data.insert(
                    "warnings".into(),
                    Value::from(vec![
                        "Keel reads the apt package manager only (dpkg and apt-cache)",
                    ]),
                );
            }
            return Ok(Plan::done(r));
        }
        let origin_of = origins(section(&out, "files").unwrap_or(""));
        let first = first_files(section(&out, "policy").unwrap_or(""));
        let archive_sections: HashMap<(&str, &str), &str> = section(&out, "sections")
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                Some(((f.next()?, f.next()?), f.next()?))
            })
            .collect();
        let mut table: IndexMap<String, Vec<Value>> = IndexMap::new();
        for p in pkgs {
            let origin = first
                .get(&p.key)
                .or_else(|| first.get(&p.name))
                .and_then(|f| origin_of.get(f))
                .cloned()
                .unwrap_or_default();
            let entry = dict([
                ("name", Value::from(p.key.clone())),
                ("version", Value::from(p.version.clone())),
                ("arch", Value::from(p.arch)),
                (
                    "category",
                    Value::from(
                        archive_sections
                            .get(&(p.name.as_str(), p.version.as_str()))
                            .map(|s| s.to_string())
                            .unwrap_or(p.section),
                    ),
                ),
                ("origin", Value::from(origin)),
                ("source", Value::from("apt")),
            ]);
            table.entry(p.key).or_default().push(entry);
        }
        let packages: IndexMap<String, Value> = table
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        let mut facts = VarMap::new();
        facts.insert("packages".into(), dict(packages));
        let mut r = ModuleResult::ok();
        r.facts = Some(facts);
        Ok(Plan::done(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_versions_first_file_gives_the_origin() {
        let files = "Package files:\n 100 /var/lib/dpkg/status\n     release a=now\n \
            500 http://deb.debian.org/debian bookworm/main amd64 Packages\n     \
            release v=12.15,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64\n     origin deb.debian.org\nPinned packages:\n";
        let o = origins(files);
        assert_eq!(
            o["http://deb.debian.org/debian bookworm/main amd64 Packages"],
            "Debian"
        );
        assert_eq!(o["/var/lib/dpkg/status"], "");
        let policy = "adduser:\n  Installed: 3.134\n  Candidate: 3.134\n  Version table:\n \
            *** 3.134 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n        100 /var/lib/dpkg/status\n\
            local:\n  Installed: 1.0\n  Candidate: 1.0\n  Version table:\n     2.0 500\n        500 http://x y/main amd64 Packages\n \
            *** 1.0 100\n        100 /var/lib/dpkg/status\n";
        let f = first_files(policy);
        assert_eq!(
            f["adduser"],
            "http://deb.debian.org/debian bookworm/main amd64 Packages"
        );
        assert_eq!(f["local"], "/var/lib/dpkg/status");
        let i = installed(
            "ii \tadduser\t3.134\tall\tadmin\nrc \tgone\t1\tamd64\tx\nii \tlibx\t1\ti386\tlibs\n",
            "amd64",
        );
        assert_eq!(i.len(), 2);
        assert_eq!(i[1].key, "libx:i386");
    }
}
