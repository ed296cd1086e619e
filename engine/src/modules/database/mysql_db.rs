//! `mysql_db`: MySQL/MariaDB databases exist (with an encoding and
//! collation) or not, with community.mysql's arguments.
//!
//! Query: one batch reads the named databases from
//! `information_schema.SCHEMATA`. Like community.mysql, an existing database
//! is left as it is (its encoding and collation are not altered); missing
//! ones are created, and `absent` drops the ones that exist. The apply batch
//! runs only those statements; check mode stops before it.
//!
//! `dump` runs `mariadb-dump`/`mysqldump` into `target` and `import` feeds
//! `target` to the client (creating the database first when missing), both
//! compressed or not by the file's extension (`.gz`, `.bz2`, `.xz`, `.zst`),
//! with the same temporary option file for credentials. Both always report
//! a change, as community.mysql does. A dump file is created with mode 0600.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::mysql::LOGIN_PARAMS;
use crate::modules::kit::mysql::{run_client, sql_ident, sql_string, Batch, Login};
use crate::modules::kit::state_diff;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct MysqlDb;

/// The `mysqldump` switches `state=dump` takes.
#[derive(Debug, Clone, Default)]
pub struct DumpOpts {
    pub single_transaction: bool,
    pub quick: bool,
    pub ignore_tables: Vec<String>,
    pub hex_blob: bool,
    pub force: bool,
    pub master_data: i64,
    pub skip_lock_tables: bool,
    pub extra: Vec<String>,
}

/// The program that (de)compresses `target`, by its extension.
fn compressor(target: &str) -> Option<&'static str> {
    match target.rsplit_once('.').map(|(_, e)| e) {
        Some("gz") => Some("gzip"),
        Some("bz2") => Some("bzip2"),
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        _ => None,
    }
}

/// The shell fragment (for [`run_client`]) that dumps `names` to
/// `target`, and the command as the result shows it (no credentials).
/// One database is dumped bare, several with `--databases`, `all` with
/// `--all-databases`, as community.mysql does.
pub fn dump_fragment(names: &[String], all: bool, target: &str, o: &DumpOpts) -> (String, String) {
    let mut args: Vec<String> = Vec::new();
    if o.single_transaction {
        args.push("--single-transaction".into());
    }
    if o.quick {
        args.push("--quick".into());
    }
    if o.hex_blob {
        args.push("--hex-blob".into());
    }
    if o.force {
        args.push("--force".into());
    }
    if o.skip_lock_tables {
        args.push("--skip-lock-tables".into());
    }
    if o.master_data > 0 {
        args.push(format!("--master-data={}", o.master_data));
    }
    for t in &o.ignore_tables {
        args.push(format!("--ignore-table={t}"));
    }
    args.extend(o.extra.iter().cloned());
    if all {
        args.push("--all-databases".into());
    } else {
        if names.len() > 1 {
            args.push("--databases".into());
        }
        args.push("--".into());
        args.extend(names.iter().cloned());
    }
    let argv = args.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" ");
    let t = quote(target);
    let find = "dump=$(command -v mariadb-dump || command -v mysqldump) || \
                { echo 'neither mariadb-dump nor mysqldump is installed on the host' >&2; exit 127; }\n";
    let (frag, shown) = match compressor(target) {
        Some(z) => (
            format!(
                "{find}{{ \"$dump\" --defaults-file=\"$f\" {argv}; echo $? > \"$d/rc\"; }} | {z} > {t} || exit 1\n\
                 exit \"$(cat \"$d/rc\")\""
            ),
            format!("mysqldump {argv} | {z} > {t}"),
        ),
        None => (
            format!("{find}\"$dump\" --defaults-file=\"$f\" {argv} > {t}"),
            format!("mysqldump {argv} > {t}"),
        ),
    };
    (frag, shown)
}

/// The shell fragment that feeds `target` to the client (into `db`, or
/// as a whole-server dump), and the command as the result shows it.
pub fn import_fragment(db: Option<&str>, target: &str, force: bool) -> (String, String) {
    let t = quote(target);
    let mut argv = String::new();
    if force {
        argv.push_str(" --force");
    }
    if let Some(db) = db {
        argv.push_str(&format!(" -- {}", quote(db)));
    }
    let check = format!("[ -r {t} ] || {{ echo \"target {target} not found\" >&2; exit 1; }}\n");
    match compressor(target) {
        Some(z) => (
            format!(
                "{check}{{ {z} -dc {t}; echo $? > \"$d/rc\"; }} | \"$cli\" --defaults-file=\"$f\"{argv} || exit $?\n\
                 exit \"$(cat \"$d/rc\")\""
            ),
            format!("{z} -dc {t} | mysql{argv}"),
        ),
        None => (
            format!("{check}\"$cli\" --defaults-file=\"$f\"{argv} < {t}"),
            format!("mysql{argv} < {t}"),
        ),
    }
}

fn string_list(items: &[String]) -> Value {
    Value::from(
        items
            .iter()
            .map(|n| Value::from(n.as_str()))
            .collect::<Vec<_>>(),
    )
}

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

/// The arguments `mysql_db` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "mysql_db",
    sets: &[
        &[
            &["name", "db"],
            &["state"],
            &["encoding"],
            &["collation"],
            &["target"],
            &["single_transaction"],
            &["quick"],
            &["ignore_tables"],
            &["hex_blob"],
            &["force"],
            &["master_data"],
            &["skip_lock_tables"],
            &["dump_extra_args"],
            &["use_shell"],
            &["unsafe_login_password"],
            &["restrict_config_file"],
            &["config_overrides_defaults"],
            &["chdir"],
            &["pipefail"],
            &["sql_log_bin"],
        ],
        LOGIN_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for MysqlDb {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
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
        let target = a.string(&["target"])?;
        let opts = DumpOpts {
            single_transaction: a.bool(&["single_transaction"], false)?,
            quick: a.bool(&["quick"], true)?,
            ignore_tables: a.list(&["ignore_tables"])?.unwrap_or_default(),
            hex_blob: a.bool(&["hex_blob"], false)?,
            force: a.bool(&["force"], false)?,
            master_data: a.int(&["master_data"])?.unwrap_or(0),
            skip_lock_tables: a.bool(&["skip_lock_tables"], false)?,
            extra: match a.string(&["dump_extra_args"])? {
                Some(x) => shell_words::split(&x).map_err(|e| {
                    ModuleError::Args(format!("dump_extra_args: {e} (module mysql_db)"))
                })?,
                None => Vec::new(),
            },
        };
        a.ignore(&[
            "use_shell",
            "unsafe_login_password",
            "restrict_config_file",
            "config_overrides_defaults",
            "chdir",
            "pipefail",
            "sql_log_bin",
        ]);
        a.finish()?;
        let all = names.len() == 1 && names[0] == "all";
        if state == "dump" || state == "import" {
            let Some(target) = target else {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "with state={state}, target is required"
                ))));
            };
            if state == "import" && names.len() > 1 {
                return Ok(Plan::done(ModuleResult::failed(
                    "with state=import, name must be one database or 'all'",
                )));
            }
            let res = ModuleResult::changed(true)
                .with("db", names.join(" "))
                .with("db_list", string_list(&names));
            let planned = res.clone().with("executed_commands", string_list(&[]));
            return Ok(Plan::change(planned, async move {
                let mut executed = Vec::new();
                let (fragment, shown) = if state == "dump" {
                    dump_fragment(&names, all, &target, &opts)
                } else {
                    if !all {
                        // Importing creates the database first when missing.
                        let mut b = Batch::new();
                        b.stmt(
                            &create_statement(&names[0], &encoding, &collation).replacen(
                                "CREATE DATABASE ",
                                "CREATE DATABASE IF NOT EXISTS ",
                                1,
                            ),
                        );
                        if let Err(e) = b.run(ctx, &login, &[]).await {
                            return e.into_result();
                        }
                    }
                    import_fragment((!all).then(|| names[0].as_str()), &target, opts.force)
                };
                if let Err(e) = run_client(ctx, &login, &fragment, b"", &[]).await {
                    return e.into_result();
                }
                executed.push(shown);
                Ok(res.with("executed_commands", string_list(&executed)))
            }));
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
            Err(e) => return e.into_result().map(Plan::done),
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
        let report = |res: ModuleResult, executed: Vec<String>| {
            res.with(
                "executed_commands",
                Value::from(executed.into_iter().map(Value::from).collect::<Vec<_>>()),
            )
        };
        if !changed {
            return Ok(Plan::done(report(res, Vec::new())));
        }
        Ok(Plan::change(report(res.clone(), Vec::new()), async move {
            let mut apply = Batch::new();
            for s in &stmts {
                apply.stmt(s);
            }
            if let Err(e) = apply.run(ctx, &login, &[]).await {
                return e.into_result();
            }
            Ok(report(res, stmts))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_and_import_commands_follow_the_target() {
        let names = vec!["a".to_string(), "b c".to_string()];
        let o = DumpOpts {
            quick: true,
            ignore_tables: vec!["a.t1".into()],
            extra: vec!["--routines".into()],
            ..Default::default()
        };
        let (frag, shown) = dump_fragment(&names, false, "/srv/x.sql.gz", &o);
        assert_eq!(
            shown,
            "mysqldump --quick --ignore-table=a.t1 --routines --databases -- a 'b c' \
             | gzip > /srv/x.sql.gz"
        );
        assert!(frag.contains("--defaults-file=\"$f\""), "{frag}");
        let (_, shown) = dump_fragment(&names[..1], false, "/srv/x.sql", &o);
        assert!(shown.ends_with("--routines -- a > /srv/x.sql"), "{shown}");
        let (_, shown) = dump_fragment(&[], true, "/srv/all.sql", &DumpOpts::default());
        assert_eq!(shown, "mysqldump --all-databases > /srv/all.sql");
        let (frag, shown) = import_fragment(Some("we'ird"), "/srv/x.sql.xz", true);
        assert_eq!(
            shown,
            "xz -dc /srv/x.sql.xz | mysql --force -- 'we'\\''ird'"
        );
        assert!(frag.starts_with("[ -r /srv/x.sql.xz ]"), "{frag}");
    }

    #[test]
    fn create_quotes_name_encoding_and_collation() {
        assert_eq!(create_statement("app", "", ""), "CREATE DATABASE `app`");
        assert_eq!(
            create_statement("we`ird", "utf8mb4", "utf8mb4_bin"),
            "CREATE DATABASE `we``ird` CHARACTER SET 'utf8mb4' COLLATE 'utf8mb4_bin'"
        );
    }
}
