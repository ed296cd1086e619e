//! `mysql_db`: MySQL/MariaDB databases exist (with an encoding and
//! collation) or not, with community.mysql's arguments.
//!
//! Query: one batch reads the named databases from
//! `information_schema.SCHEMATA`. Like community.mysql, an existing database
//! is left as it is (its encoding and collation are not altered); missing
//! ones are created, and `absent` drops the ones that exist. The apply batch
//! runs only those statements; check mode stops before it. `dump` and
//! `import` are not implemented yet and fail with a message saying so.

use minijinja::Value;

use super::mysql_common::{sql_ident, sql_string, Batch, Login};
use crate::modules::args::ModuleArgs;
use crate::modules::system::hostio::state_diff;
use crate::modules::{Args, Module, ModuleError, ModuleResult, TaskContext};

pub struct MysqlDb;

/// The `CREATE DATABASE` statement for `name`.
pub fn create_statement(name: &str, encoding: &str, collation: &str) -> String {
    let mut s = format!("CREATE DATABASE {}", sql_ident(name));
    if !encoding.is_empty() {
        s.push_str(&format!(" CHARACTER SET {}", sql_string(encoding)));
    }
    if !collation.is_empty() {
        s.push_str(&format!(" COLLATE {}", sql_string(collation)));
    }
    s
}

#[async_trait::async_trait]
impl Module for MysqlDb {
    async fn run(&self, args: &Args, ctx: &TaskContext<'_>) -> Result<ModuleResult, ModuleError> {
        let mut a = ModuleArgs::new("mysql_db", args);
        let login = Login::parse(&mut a)?;
        let names = a.list(&["name", "db"])?.unwrap_or_default();
        if names.is_empty() {
            return Err(a.missing("name"));
        }
        let state = a
            .choice(
                &["state"],
                &["present", "absent", "dump", "import"],
                Some("present"),
            )?
            .unwrap();
        let encoding = a.string(&["encoding"])?.unwrap_or_default();
        let collation = a.string(&["collation"])?.unwrap_or_default();
        a.ignore(&[
            "target",
            "single_transaction",
            "quick",
            "ignore_tables",
            "hex_blob",
            "force",
            "master_data",
            "skip_lock_tables",
            "dump_extra_args",
            "use_shell",
            "unsafe_login_password",
            "restrict_config_file",
            "config_overrides_defaults",
            "chdir",
            "pipefail",
            "sql_log_bin",
        ]);
        a.finish()?;
        if state == "dump" || state == "import" {
            return Ok(ModuleResult::failed(format!(
                "mysql_db state={state} is not supported by Keel yet"
            )));
        }

        let mut q = Batch::new();
        let list = names
            .iter()
            .map(|n| sql_string(n))
            .collect::<Vec<_>>()
            .join(", ");
        q.section("dbs").stmt(&format!(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({list})"
        ));
        let ans = match q.run(ctx, &login, &[]).await {
            Ok(a) => a,
            Err(e) => return e.into_result(),
        };
        // information_schema may compare names without regard to case;
        // database names are case-sensitive here, so match exactly.
        let existing: Vec<&Vec<String>> = ans
            .rows("dbs")
            .iter()
            .filter(|r| names.contains(&r[0]))
            .collect();
        let find = |n: &str| existing.iter().find(|r| r[0] == n);

        let mut stmts = Vec::new();
        let mut diffs = Vec::new();
        for n in &names {
            let cur = find(n);
            let before = match cur {
                Some(r) => vec![
                    ("state", "present".to_string()),
                    ("encoding", r.get(1).cloned().unwrap_or_default()),
                    ("collation", r.get(2).cloned().unwrap_or_default()),
                ],
                None => vec![("state", "absent".to_string())],
            };
            match (state.as_str(), cur) {
                ("present", None) => {
                    stmts.push(create_statement(n, &encoding, &collation));
                    let mut after = vec![("state", "present".to_string())];
                    if !encoding.is_empty() {
                        after.push(("encoding", encoding.clone()));
                    }
                    if !collation.is_empty() {
                        after.push(("collation", collation.clone()));
                    }
                    diffs.push(state_diff(n, &before, &after));
                }
                ("absent", Some(_)) => {
                    stmts.push(format!("DROP DATABASE {}", sql_ident(n)));
                    diffs.push(state_diff(n, &before, &[("state", "absent".into())]));
                }
                _ => {}
            }
        }

        let changed = !stmts.is_empty();
        let mut res = ModuleResult::changed(changed)
            .with("db", names.join(" "))
            .with(
                "db_list",
                Value::from(
                    names
                        .iter()
                        .map(|n| Value::from(n.as_str()))
                        .collect::<Vec<_>>(),
                ),
            );
        if ctx.diff {
            res.diff = diffs;
        }
        let executed = if changed && !ctx.check_mode {
            let mut apply = Batch::new();
            for s in &stmts {
                apply.stmt(s);
            }
            if let Err(e) = apply.run(ctx, &login, &[]).await {
                return e.into_result();
            }
            stmts
        } else {
            Vec::new()
        };
        Ok(res.with(
            "executed_commands",
            Value::from(executed.into_iter().map(Value::from).collect::<Vec<_>>()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_quotes_name_encoding_and_collation() {
        assert_eq!(create_statement("app", "", ""), "CREATE DATABASE `app`");
        assert_eq!(
            create_statement("we`ird", "utf8mb4", "utf8mb4_bin"),
            "CREATE DATABASE `we``ird` CHARACTER SET 'utf8mb4' COLLATE 'utf8mb4_bin'"
        );
    }
}
