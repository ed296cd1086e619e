//! `getent`: reads a name-service database (`passwd`, `group`, `hosts`...)
//! on the host and returns it as the fact `getent_<database>`. One query,
//! never a change, so check mode runs it too.

use indexmap::IndexMap;
use minijinja::Value;

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;
use crate::vars::VarMap;

pub struct Getent;

/// The arguments `getent` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "getent",
    sets: &[&[
        &["database"],
        &["key"],
        &["service"],
        &["split"],
        &["fail_key"],
    ]],
};

/// Databases whose records are colon-separated (the rest split on
/// whitespace unless `split` says otherwise).
const COLON: [&str; 4] = ["passwd", "shadow", "group", "gshadow"];

#[async_trait::async_trait]
impl Module for Getent {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let database = a.req_string(&["database"])?;
        let key = a.string(&["key"])?;
        let service = a.string(&["service"])?;
        let split = a.string(&["split"])?;
        let fail_key = a.bool(&["fail_key"], true)?;
        a.finish()?;

        let mut cmd = format!("getent {}", quote(&database));
        if let Some(k) = &key {
            cmd.push(' ');
            cmd.push_str(&quote(k));
        }
        if let Some(s) = &service {
            cmd.push_str(&format!(" -s {}", quote(s)));
        }
        let script = format!(
            "command -v getent >/dev/null 2>&1 || {{ echo 'Failed to find required executable \"getent\"' >&2; exit 127; }}\n{cmd}\n"
        );
        let out = ctx.run(script, None).await?;
        let split = split.or_else(|| COLON.contains(&database.as_str()).then(|| ":".into()));
        let fact = format!("getent_{database}");
        let msg = match out.rc {
            0 => {
                let table = records(&out.stdout_str(), split.as_deref());
                return Ok(Plan::done(with_fact(ModuleResult::ok(), &fact, table)));
            }
            1 => "Missing arguments, or database unknown.",
            2 => {
                let msg = "One or more supplied key could not be found in the database.";
                if !fail_key {
                    let mut table = IndexMap::new();
                    table.insert(key.unwrap_or_default(), Value::from(()));
                    let res = ModuleResult::ok().with_msg(msg);
                    return Ok(Plan::done(with_fact(res, &fact, table)));
                }
                msg
            }
            3 => "Enumeration not supported on this database.",
            127 => return Ok(Plan::done(ModuleResult::failed(out.stderr_str().trim()))),
            _ => "Unexpected failure!",
        };
        Ok(Plan::done(ModuleResult::failed(msg)))
    }
}

/// The records as ansible-core's `getent` shapes them: the first field is
/// the key, the rest a list; a key seen again holds a list of those lists.
fn records(out: &str, split: Option<&str>) -> IndexMap<String, Value> {
    let mut table: IndexMap<String, Vec<Vec<String>>> = IndexMap::new();
    for line in out.lines() {
        let fields: Vec<String> = match split {
            Some(s) if !s.is_empty() => line.split(s).map(str::to_string).collect(),
            _ => line.split_whitespace().map(str::to_string).collect(),
        };
        let Some((first, rest)) = fields.split_first() else {
            continue;
        };
        table.entry(first.clone()).or_default().push(rest.to_vec());
    }
    table
        .into_iter()
        .map(|(k, mut v)| {
            let value = if v.len() == 1 {
                Value::from(v.remove(0))
            } else {
                Value::from(v)
            };
            (k, value)
        })
        .collect()
}

/// Returns `table` as the fact `name`.
fn with_fact(mut res: ModuleResult, name: &str, table: IndexMap<String, Value>) -> ModuleResult {
    let table = dict(table);
    let mut facts = VarMap::new();
    facts.insert(name.to_string(), table);
    res.facts = Some(facts);
    res
}

#[cfg(test)]
mod tests {
    use super::records;

    #[test]
    fn records_key_on_the_first_field_and_collect_repeats() {
        let t = records("root:x:0:0:root:/root:/bin/sh\n", Some(":"));
        assert_eq!(t["root"].len(), Some(6));
        let t = records(
            "127.0.0.1 localhost\n127.0.0.1 other a\n::1 localhost\n",
            None,
        );
        assert_eq!(t["127.0.0.1"].len(), Some(2));
        let second = t["127.0.0.1"].get_item_by_index(1).unwrap();
        assert_eq!(second.len(), Some(2));
    }
}
