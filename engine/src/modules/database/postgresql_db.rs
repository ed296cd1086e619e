//! `postgresql_db` (community.postgresql): creates, updates or drops a
//! database through `psql` on the target ([`kit::postgres`]).
//!
//! Query: one batch reads the database's row (owner, encoding, locales,
//! connection limit, tablespace, comment) and the server version. Decide:
//! community.postgresql's `db_matches`/`db_update` on the controller, which
//! also gives the statements. Apply: one batch runs them, in autocommit as
//! that module does (`CREATE DATABASE` cannot run in a transaction).
//! `executed_commands` lists them with their literals filled in, and is
//! empty in check mode, as there.

use serde_json::Value as Json;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::postgres::{
    ident, literal, run_sql, section, sections, Login, LOGIN_PARAMS,
};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct PostgresqlDb;

static PARAMS: Params = Params {
    module: "postgresql_db",
    sets: &[
        &[
            &["db", "name"],
            &["owner"],
            &["template"],
            &["encoding"],
            &["lc_collate"],
            &["lc_ctype"],
            &["icu_locale"],
            &["locale_provider"],
            &["state"],
            &["target"],
            &["target_opts"],
            &["maintenance_db"],
            &["session_role"],
            &["conn_limit"],
            &["tablespace"],
            &["dump_extra_args"],
            &["trust_input"],
            &["force"],
            &["comment"],
        ],
        LOGIN_PARAMS,
    ],
};

/// The database as `get_db_info` reads it.
#[derive(Debug, Default)]
struct DbInfo {
    owner: String,
    encoding: String,
    encoding_id: i64,
    lc_collate: String,
    lc_ctype: String,
    icu_locale: Option<String>,
    locale_provider: Option<String>,
    conn_limit: i64,
    tablespace: String,
    comment: String,
}

fn db_info(row: &str) -> Option<DbInfo> {
    let v: Json = serde_json::from_str(row).ok()?;
    let s = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
    Some(DbInfo {
        owner: s("owner")?,
        encoding: s("encoding").unwrap_or_default(),
        encoding_id: v.get("encoding_id").and_then(Json::as_i64).unwrap_or(-1),
        lc_collate: s("lc_collate").unwrap_or_default(),
        lc_ctype: s("lc_ctype").unwrap_or_default(),
        icu_locale: s("datlocale").or_else(|| s("daticulocale")),
        locale_provider: s("datlocprovider").map(|p| match p.as_str() {
            "c" => "libc".to_string(),
            "i" => "icu".to_string(),
            other => other.to_string(),
        }),
        conn_limit: v.get("conn_limit").and_then(Json::as_i64).unwrap_or(-1),
        tablespace: s("tablespace").unwrap_or_default(),
        // `comment: ''` resets a comment, so no comment reads as ''.
        comment: s("comment").unwrap_or_default(),
    })
}

/// What the task asks of an existing or new database.
struct Wanted {
    db: String,
    owner: String,
    template: String,
    encoding: String,
    lc_collate: String,
    lc_ctype: String,
    icu_locale: String,
    locale_provider: String,
    conn_limit: String,
    tablespace: String,
    comment: Option<String>,
}

impl Wanted {
    /// `db_update`'s refusals, in its order.
    fn unsupported(&self, cur: &DbInfo, encoding_id: Option<i64>) -> Option<String> {
        if !self.encoding.is_empty() && encoding_id != Some(cur.encoding_id) {
            return Some(format!(
                "Changing database encoding is not supported. Current encoding: {}",
                cur.encoding
            ));
        }
        if !self.lc_collate.is_empty() && self.lc_collate != cur.lc_collate {
            return Some(format!(
                "Changing LC_COLLATE is not supported. Current LC_COLLATE: {}",
                cur.lc_collate
            ));
        }
        // (community.postgresql's messages below lack the space.)
        if !self.lc_ctype.is_empty() && self.lc_ctype != cur.lc_ctype {
            return Some(format!(
                "Changing LC_CTYPE is not supported.Current LC_CTYPE: {}",
                cur.lc_ctype
            ));
        }
        if !self.icu_locale.is_empty() && Some(&self.icu_locale) != cur.icu_locale.as_ref() {
            return Some(format!(
                "Changing ICU_LOCALE is not supported.Current ICU_LOCALE: {}",
                cur.icu_locale.as_deref().unwrap_or("None")
            ));
        }
        if !self.locale_provider.is_empty()
            && Some(&self.locale_provider) != cur.locale_provider.as_ref()
        {
            return Some(format!(
                "Changing LOCALE_PROVIDER is not supported.Current LOCALE_PROVIDER: {}",
                cur.locale_provider.as_deref().unwrap_or("None")
            ));
        }
        None
    }

    /// `db_update`'s statements for an existing database.
    fn updates(&self, cur: &DbInfo) -> Vec<String> {
        let db = ident(&self.db);
        let mut v = Vec::new();
        if !self.owner.is_empty() && self.owner != cur.owner {
            v.push(format!(
                "ALTER DATABASE {db} OWNER TO {}",
                ident(&self.owner)
            ));
        }
        if !self.conn_limit.is_empty() && self.conn_limit != cur.conn_limit.to_string() {
            v.push(format!(
                "ALTER DATABASE {db} CONNECTION LIMIT {}",
                self.conn_limit
            ));
        }
        if !self.tablespace.is_empty() && self.tablespace != cur.tablespace {
            v.push(format!(
                "ALTER DATABASE {db} SET TABLESPACE {}",
                ident(&self.tablespace)
            ));
        }
        if let Some(c) = self.comment.as_ref().filter(|c| **c != cur.comment) {
            v.push(format!("COMMENT ON DATABASE {db} IS {}", literal(c)));
        }
        v
    }

    /// `db_create`'s statements (ICU options only from PostgreSQL 15 on).
    fn create(&self, version: i64) -> Vec<String> {
        let mut q = vec![format!("CREATE DATABASE {}", ident(&self.db))];
        if !self.owner.is_empty() {
            q.push(format!("OWNER {}", ident(&self.owner)));
        }
        if !self.template.is_empty() {
            q.push(format!("TEMPLATE {}", ident(&self.template)));
        }
        if !self.encoding.is_empty() {
            q.push(format!("ENCODING {}", literal(&self.encoding)));
        }
        if !self.lc_collate.is_empty() {
            q.push(format!("LC_COLLATE {}", literal(&self.lc_collate)));
        }
        if !self.lc_ctype.is_empty() {
            q.push(format!("LC_CTYPE {}", literal(&self.lc_ctype)));
        }
        if version >= 150000 {
            if !self.icu_locale.is_empty() {
                q.push(format!("ICU_LOCALE {}", literal(&self.icu_locale)));
            }
            if !self.locale_provider.is_empty() {
                q.push(format!(
                    "LOCALE_PROVIDER {}",
                    literal(&self.locale_provider)
                ));
            }
        }
        if !self.tablespace.is_empty() {
            q.push(format!("TABLESPACE {}", ident(&self.tablespace)));
        }
        if !self.conn_limit.is_empty() {
            q.push(format!("CONNECTION LIMIT {}", self.conn_limit));
        }
        let mut v = vec![q.join(" ")];
        if let Some(c) = self.comment.as_ref().filter(|c| !c.is_empty()) {
            v.push(format!(
                "COMMENT ON DATABASE {} IS {}",
                ident(&self.db),
                literal(c)
            ));
        }
        v
    }
}

fn shaped(changed: bool, db: &str, commands: &[String]) -> ModuleResult {
    ModuleResult::changed(changed).with("db", db).with(
        "executed_commands",
        minijinja::Value::from(
            commands
                .iter()
                .map(|c| minijinja::Value::from(c.as_str()))
                .collect::<Vec<_>>(),
        ),
    )
}

#[async_trait::async_trait]
impl Module for PostgresqlDb {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let text = |a: &mut ModuleArgs<'_>, n: &'static str| -> Result<String, ModuleError> {
            Ok(a.string(&[n])?.unwrap_or_default())
        };
        let db = a.req_string(&["db", "name"])?;
        let want = Wanted {
            db: db.clone(),
            owner: text(&mut a, "owner")?,
            template: text(&mut a, "template")?,
            encoding: text(&mut a, "encoding")?,
            lc_collate: text(&mut a, "lc_collate")?,
            lc_ctype: text(&mut a, "lc_ctype")?,
            icu_locale: text(&mut a, "icu_locale")?,
            locale_provider: text(&mut a, "locale_provider")?,
            conn_limit: text(&mut a, "conn_limit")?,
            tablespace: text(&mut a, "tablespace")?,
            comment: a.string(&["comment"])?,
        };
        let state = a
            .choice(
                &["state"],
                &["absent", "dump", "present", "rename", "restore"],
                Some("present"),
            )?
            .unwrap_or_default();
        let maintenance_db = a
            .string(&["maintenance_db"])?
            .unwrap_or_else(|| "postgres".into());
        let session_role = a.string(&["session_role"])?;
        let force = a.bool(&["force"], false)?;
        a.ignore(&["trust_input", "target", "target_opts", "dump_extra_args"]);
        let login = Login::parse(&mut a)?;
        a.finish()?;
        if matches!(state.as_str(), "dump" | "restore" | "rename") {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "state={state} is not supported by Keel's native postgresql_db (present and absent are)"
            ))));
        }

        let mut q = String::new();
        if let Some(r) = &session_role {
            q.push_str(&format!("SET ROLE {};\n", ident(r)));
        }
        q.push_str(&section("ver"));
        q.push_str("SELECT current_setting('server_version_num');\n");
        q.push_str(&section("info"));
        q.push_str(&format!(
            "SELECT row_to_json(t) FROM (SELECT r.rolname AS owner, \
             pg_encoding_to_char(d.encoding) AS encoding, d.encoding AS encoding_id, \
             d.datcollate AS lc_collate, d.datctype AS lc_ctype, \
             to_jsonb(d)->>'datlocale' AS datlocale, to_jsonb(d)->>'daticulocale' AS daticulocale, \
             to_jsonb(d)->>'datlocprovider' AS datlocprovider, \
             d.datconnlimit AS conn_limit, s.spcname AS tablespace, \
             pg_catalog.shobj_description(d.oid, 'pg_database') AS comment \
             FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
             JOIN pg_tablespace s ON s.oid = d.dattablespace WHERE d.datname = {}) t;\n",
            literal(&db)
        ));
        if !want.encoding.is_empty() {
            q.push_str(&section("enc"));
            q.push_str(&format!(
                "SELECT pg_char_to_encoding({});\n",
                literal(&want.encoding)
            ));
        }
        let out = match run_sql(ctx, &login, &maintenance_db, &q).await? {
            Ok(o) => o,
            Err(e) => return Ok(Plan::done(ModuleResult::failed(e.message()))),
        };
        let s = sections(&out);
        let version: i64 = s
            .get("ver")
            .and_then(|v| v.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let cur = s
            .get("info")
            .and_then(|v| v.first())
            .and_then(|r| db_info(r));
        let encoding_id = s
            .get("enc")
            .and_then(|v| v.first())
            .and_then(|v| v.parse().ok());

        let (changed, statements, refusal) = match (state.as_str(), &cur) {
            ("absent", None) => (false, vec![], None),
            ("absent", Some(_)) => {
                let mut drop = format!("DROP DATABASE {}", ident(&db));
                let mut pre = Vec::new();
                if force {
                    if version >= 130000 {
                        drop.push_str(" WITH (FORCE)");
                    } else {
                        pre.push(format!(
                            "UPDATE pg_database SET datallowconn = false WHERE datname={lit}; \
                             SELECT pg_terminate_backend(pg_stat_activity.pid) FROM pg_stat_activity \
                             WHERE pg_stat_activity.datname={lit} AND pid <> pg_backend_pid()",
                            lit = literal(&db)
                        ));
                    }
                }
                (true, [pre, vec![drop]].concat(), None)
            }
            (_, None) => (true, want.create(version), None),
            (_, Some(c)) => match want.unsupported(c, encoding_id) {
                // `db_matches` says "changed" where `db_update` refuses.
                Some(msg) => (true, vec![], Some(msg)),
                None => {
                    let u = want.updates(c);
                    (!u.is_empty(), u, None)
                }
            },
        };
        let planned = shaped(changed, &db, &[]);
        if !changed {
            return Ok(Plan::done(planned));
        }
        Ok(Plan::change(planned, async move {
            if let Some(msg) = refusal {
                return Ok(ModuleResult::failed(msg));
            }
            // The `pre` statements of a forced drop are not among
            // community.postgresql's `executed_commands`.
            let shown: Vec<String> = statements
                .iter()
                .filter(|s| !s.starts_with("UPDATE pg_database"))
                .cloned()
                .collect();
            let mut sql = String::new();
            if let Some(r) = &session_role {
                sql.push_str(&format!("SET ROLE {};\n", ident(r)));
            }
            for st in &statements {
                sql.push_str(st);
                sql.push_str(";\n");
            }
            match run_sql(ctx, &login, &maintenance_db, &sql).await? {
                Ok(_) => Ok(shaped(true, &db, &shown)),
                Err(e) => Ok(ModuleResult::failed(e.message())),
            }
        }))
    }
}
