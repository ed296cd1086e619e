//! `locale_gen` (community.general): makes locales present or absent on
//! Debian and Ubuntu with the glibc mechanism (`/etc/locale.gen` and
//! `locale-gen`).
//!
//! Query: one round trip reads `/etc/locale.gen`, the list of supported
//! locales and `locale -a`. Decide: as community.general does, a locale
//! must be supported (or already built), and the task changes something
//! when the locales' presence differs from the wanted state. Apply: the
//! edited `/etc/locale.gen` (commented in or out, line by line, with that
//! module's pattern) is written in place and `locale-gen` rebuilds, in one
//! round trip.
//!
//! A known trap kept on purpose: community.general reports `changed: false`
//! in check mode even when the run would build or remove locales. Keel
//! reports the same and adds a warning that says what the run would do.

use minijinja::Value;
use regex::Regex;

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::kit::{apply, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct LocaleGen;

static PARAMS: Params = Params {
    module: "locale_gen",
    sets: &[&[&["name"], &["state"]]],
};

const ETC_LOCALE_GEN: &str = "/etc/locale.gen";
const VAR_LIB_LOCALES: &str = "/var/lib/locales/supported.d";
const SUPPORTED: &str = "/usr/share/i18n/SUPPORTED";

/// `locale -a` spells encodings its own way; community.general's
/// `fix_case` maps both sides to one spelling before comparing.
fn fix_case(name: &str) -> String {
    const NORMAL: &[(&str, &str)] = &[
        (".utf8", ".UTF-8"),
        (".eucjp", ".EUC-JP"),
        (".iso885915", ".ISO-8859-15"),
        (".cp1251", ".CP1251"),
        (".koi8r", ".KOI8-R"),
        (".armscii8", ".ARMSCII-8"),
        (".euckr", ".EUC-KR"),
        (".gbk", ".GBK"),
        (".gb18030", ".GB18030"),
        (".euctw", ".EUC-TW"),
    ];
    let mut n = name.to_string();
    for (from, to) in NORMAL {
        n = n.replace(from, to);
    }
    n
}

fn not_built<'n>(names: &'n [String], built: &str) -> Vec<&'n str> {
    let have: Vec<String> = built.lines().map(fix_case).collect();
    names
        .iter()
        .filter(|n| !have.contains(&fix_case(n)))
        .map(String::as_str)
        .collect()
}

/// `set_locale_glibc`: each line naming a locale is commented in or out.
fn edit_locale_gen(text: &str, names: &[String], enable: bool) -> String {
    let patterns: Vec<(Regex, &String)> = names
        .iter()
        .map(|n| {
            let re = Regex::new(&format!(r"^#?\s*{} (?P<charset>.+)", regex::escape(n)))
                .expect("escaped pattern");
            (re, n)
        })
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut body = body.to_string();
        for (re, name) in &patterns {
            let with = if enable {
                format!("{name} ${{charset}}")
            } else {
                format!("# {name} ${{charset}}")
            };
            body = re.replace(&body, with.as_str()).into_owned();
        }
        out.push_str(&body);
        out.push_str(end);
    }
    out
}

fn names_value(names: &[String]) -> Value {
    Value::from(
        names
            .iter()
            .map(|n| Value::from(n.as_str()))
            .collect::<Vec<_>>(),
    )
}

/// The values community.general's module helper returns with every result.
fn shaped(mut r: ModuleResult, names: &[String]) -> ModuleResult {
    r.data
        .insert("diff".into(), dict(Vec::<(String, Value)>::new()));
    r.with("mechanism", "glibc")
        .with("name", names_value(names))
        .with("ubuntu_mode", false)
}

#[async_trait::async_trait]
impl Module for LocaleGen {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let names = a.list(&["name"])?.ok_or_else(|| a.missing("name"))?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        a.finish()?;

        let mut q = Query::new();
        q.test("glibc", &format!("[ -e {ETC_LOCALE_GEN} ]"));
        q.test("legacy", &format!("[ -e {VAR_LIB_LOCALES} ]"));
        q.file("gen", ETC_LOCALE_GEN);
        q.file("supported", SUPPORTED);
        q.section("built", "LC_ALL=C locale -a 2>/dev/null");
        let ans = q.run(ctx).await?;
        if !ans.yes("glibc") {
            return Ok(Plan::done(ModuleResult::failed(if ans.yes("legacy") {
                "Keel's locale_gen supports the glibc mechanism (/etc/locale.gen) only; this host uses /var/lib/locales/supported.d".to_string()
            } else {
                format!("{VAR_LIB_LOCALES} and {ETC_LOCALE_GEN} are missing. Is the package \"locales\" installed?")
            })));
        }
        let built = ans.text("built").to_string();
        let line_re = Regex::new(r"^\s*#?\s*(\S+[\._\S]+) (\S+)\s*$").expect("valid pattern");
        let supported: Vec<String> = ans
            .file("supported")
            .unwrap_or("")
            .lines()
            .filter_map(|l| line_re.captures(l).map(|m| m[1].to_string()))
            .collect();
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !supported.contains(n))
            .cloned()
            .collect();
        let unavailable = not_built(&unknown, &built);
        if !unavailable.is_empty() {
            let mut r = ModuleResult::failed(format!(
                "The following locales you have entered are not available on your system: {}",
                unavailable.join(", ")
            ));
            let vars = dict([
                ("mechanism", Value::from("glibc")),
                ("name", names_value(&names)),
                ("ubuntu_mode", Value::from(false)),
            ]);
            let output = dict([
                ("diff", dict(Vec::<(String, Value)>::new())),
                ("mechanism", Value::from("glibc")),
                ("name", names_value(&names)),
                ("ubuntu_mode", Value::from(false)),
            ]);
            r.data.insert("output".into(), output);
            r.data.insert("vars".into(), vars);
            return Ok(Plan::done(shaped(r, &names)));
        }

        let present = not_built(&names, &built).is_empty();
        if present == (state == "present") {
            return Ok(Plan::done(shaped(ModuleResult::ok(), &names)));
        }
        let mut planned = shaped(ModuleResult::ok(), &names);
        planned.data.insert(
            "warnings".into(),
            Value::from(vec![Value::from(format!(
                "check mode: community.general's locale_gen reports no change here, but the run would {} {}",
                if state == "present" { "build" } else { "remove" },
                names.join(", ")
            ))]),
        );
        let new_gen = edit_locale_gen(ans.file("gen").unwrap_or(""), &names, state == "present");
        let names2 = names.clone();
        Ok(Plan::change(planned, async move {
            let script = format!(
                "cat > {ETC_LOCALE_GEN}\nlocale-gen >/dev/null\necho '@@built'\nLC_ALL=C locale -a\n"
            );
            let out = match apply(ctx, &script, Some(new_gen.into_bytes())).await? {
                Ok(o) => o.stdout_str(),
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            let after = out.split("@@built\n").nth(1).unwrap_or("");
            // `changed` is whether the locales' presence moved, as there.
            let now = not_built(&names2, after).is_empty();
            Ok(shaped(ModuleResult::changed(now != present), &names2))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_commented_in_and_out_as_community_general_does() {
        let text = "# de_CH.UTF-8 UTF-8\n#  nl_NL.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n";
        let names = vec!["de_CH.UTF-8".to_string(), "nl_NL.UTF-8".to_string()];
        assert_eq!(
            edit_locale_gen(text, &names, true),
            "de_CH.UTF-8 UTF-8\nnl_NL.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n"
        );
        let en = vec!["en_US.UTF-8".to_string()];
        assert_eq!(
            edit_locale_gen(text, &en, false),
            "# de_CH.UTF-8 UTF-8\n#  nl_NL.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\n"
        );
        assert!(not_built(&en, "C\nen_US.utf8\n").is_empty());
    }
}
