//! `postgresql_privs` (community.postgresql): grants or revokes privileges
//! on tables, sequences, functions, procedures, databases, schemas,
//! languages, tablespaces, types, parameters, foreign data wrappers and
//! servers, default privileges, and role memberships (`type: group`),
//! through `psql` on the target ([`kit::postgres`](crate::modules::kit::postgres)).
//!
//! community.postgresql does not reason about ACLs: it runs its
//! `GRANT`/`REVOKE` statement and compares the objects' ACLs (or
//! `pg_auth_members` rows) read before and after, then commits, or rolls
//! back in check mode. Reimplementing PostgreSQL's ACL arithmetic (`ALL`,
//! grant options, `PUBLIC`, defaults) on the controller would be a second
//! source of truth that could disagree with the server, so Keel decides the
//! same way, in a transaction that always rolls back:
//!
//! - query: one batch reads the server version, which of `roles` exist and,
//!   for `ALL_IN_SCHEMA`, the schema's objects;
//! - decide: the statement is built as community.postgresql builds it, then
//!   tried between two ACL reads inside `BEGIN … ROLLBACK` (nothing is kept;
//!   this is what community.postgresql's own check mode does);
//! - apply: the statement again, committed.
//!
//! `queries` lists the statement whether or not it changed anything, as
//! community.postgresql does. Several `privs` keep the order they are
//! written in (community.postgresql's order is a Python set's, which varies
//! between runs).

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::postgres::{
    ident, literal, run_sql, section, sections, Login, SqlFailure, LOGIN_PARAMS,
};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct PostgresqlPrivs;

static PARAMS: Params = Params {
    module: "postgresql_privs",
    sets: &[
        &[
            &["login_db", "db", "database"],
            &["state"],
            &["privs", "priv"],
            &["type"],
            &["objs", "obj"],
            &["schema"],
            &["roles", "role"],
            &["session_role"],
            &["target_roles"],
            &["grant_option", "admin_option"],
            &["fail_on_role"],
            &["trust_input"],
        ],
        LOGIN_PARAMS,
    ],
};

const TYPES: &[&str] = &[
    "table",
    "sequence",
    "function",
    "procedure",
    "database",
    "schema",
    "language",
    "tablespace",
    "group",
    "default_privs",
    "foreign_data_wrapper",
    "foreign_server",
    "type",
    "parameter",
];

const VALID_PRIVS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "CREATE",
    "CONNECT",
    "TEMPORARY",
    "TEMP",
    "EXECUTE",
    "USAGE",
    "ALL",
    "SET",
    "ALTER_SYSTEM",
    "MAINTAIN",
];

/// `VALID_DEFAULT_OBJS`: the privileges each default-privilege object
/// class accepts (`SCHEMAS` only when named, not in `ALL_DEFAULT`).
const DEFAULT_OBJS: &[(&str, &[&str])] = &[
    (
        "TABLES",
        &[
            "ALL",
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
            "MAINTAIN",
        ],
    ),
    ("SEQUENCES", &["ALL", "SELECT", "UPDATE", "USAGE"]),
    ("FUNCTIONS", &["ALL", "EXECUTE"]),
    ("TYPES", &["ALL", "USAGE"]),
    ("SCHEMAS", &["CREATE", "USAGE"]),
];

/// Roles PostgreSQL defines implicitly, with the server version that
/// knows each.
const IMPLICIT_ROLES: &[(&str, i64)] = &[
    ("PUBLIC", 0),
    ("CURRENT_USER", 90500),
    ("SESSION_USER", 90500),
    ("CURRENT_ROLE", 140000),
];

/// A Python `frozenset` of strings as community.postgresql prints one in
/// its messages.
fn py_set(items: &[String]) -> String {
    if items.is_empty() {
        return "frozenset()".into();
    }
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("frozenset({{{}}})", inner.join(", "))
}

/// Comma-separated words, upper-cased, each once, in the order written.
fn upper_set(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in text.split(',') {
        let p = p.to_uppercase();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The SQL that reads the state a statement on `objs` of `kind` changes,
/// one JSON text per row (so a NULL ACL is a line too), in the order
/// community.postgresql reads it. `objs` are names (for functions, the
/// part before the signature); `None` means every object of the kind in
/// the schema (`ALL_IN_SCHEMA`).
fn status_sql(kind: &str, schema: Option<&str>, objs: Option<&[String]>) -> String {
    let names = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| literal(s)).collect();
        format!("ARRAY[{}]::text[]", items.join(","))
    };
    let acl = |col: &str, from: &str, filter: String, order: &str| {
        format!("SELECT to_json(coalesce({col}::text, '')) FROM {from} WHERE {filter} ORDER BY {order};\n")
    };
    let in_schema = |col: &str| match schema {
        Some(s) => format!("n.nspname = {} AND {col}", literal(s)),
        None => col.to_string(),
    };
    let named = |col: &str| match objs {
        Some(v) => format!("{col} = ANY ({})", names(v)),
        None => "true".to_string(),
    };
    match kind {
        "table" | "sequence" => {
            let kinds = if kind == "table" {
                "('r','p','v','m','f')"
            } else {
                "('S')"
            };
            acl(
                "c.relacl",
                "pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
                in_schema(&format!("c.relkind IN {kinds} AND {}", named("c.relname"))),
                "c.relname",
            )
        }
        "function" | "procedure" => {
            let filter = match objs {
                Some(_) => named("p.proname"),
                None => format!(
                    "p.prokind = '{}'",
                    if kind == "function" { "f" } else { "p" }
                ),
            };
            acl(
                "p.proacl",
                "pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace",
                in_schema(&filter),
                "p.proname, p.proargtypes",
            )
        }
        "type" => acl(
            "t.typacl",
            "pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace",
            in_schema(&named("t.typname")),
            "t.typname",
        ),
        "schema" => acl(
            "nspacl",
            "pg_catalog.pg_namespace",
            named("nspname"),
            "nspname",
        ),
        "language" => acl(
            "lanacl",
            "pg_catalog.pg_language",
            named("lanname"),
            "lanname",
        ),
        "tablespace" => acl(
            "spcacl",
            "pg_catalog.pg_tablespace",
            named("spcname"),
            "spcname",
        ),
        "database" => acl(
            "datacl",
            "pg_catalog.pg_database",
            named("datname"),
            "datname",
        ),
        "foreign_data_wrapper" => acl(
            "fdwacl",
            "pg_catalog.pg_foreign_data_wrapper",
            named("fdwname"),
            "fdwname",
        ),
        "foreign_server" => acl(
            "srvacl",
            "pg_catalog.pg_foreign_server",
            named("srvname"),
            "srvname",
        ),
        "parameter" => acl(
            "paracl",
            "pg_catalog.pg_parameter_acl",
            named("parname"),
            "parname",
        ),
        "default_privs" => format!(
            "SELECT to_json(coalesce(a.defaclacl::text, '')) FROM pg_catalog.pg_default_acl a \
             JOIN pg_catalog.pg_namespace n ON a.defaclnamespace = n.oid WHERE {};\n",
            match schema {
                Some(s) => format!("n.nspname = {}", literal(s)),
                None => "true".into(),
            }
        ),
        // `group`: the memberships of the named roles.
        _ => format!(
            "SELECT row_to_json(m) FROM (SELECT am.roleid, am.grantor, am.member, am.admin_option \
             FROM pg_catalog.pg_auth_members am JOIN pg_catalog.pg_roles r ON r.oid = am.roleid \
             WHERE {} ORDER BY am.roleid, am.grantor, am.member) m;\n",
            named("r.rolname")
        ),
    }
}

/// The statement community.postgresql's `QueryBuilder` makes (its lines
/// joined by newlines, each ending in `;`).
struct Statement<'s> {
    state: &'s str,
    kind: &'s str,
    grant_option: Option<bool>,
    /// The roles, quoted.
    for_whom: String,
    /// `target_roles`, quoted (default privileges only).
    as_who: Option<String>,
    /// ` IN SCHEMA "s"` or nothing.
    in_schema: String,
    /// What is granted: `SELECT ON table "public"."t"`, a privilege list
    /// for default privileges, or the quoted groups.
    set_what: String,
    /// Default privileges' object classes.
    objs: &'s [String],
}

impl Statement<'_> {
    fn build(&self) -> String {
        let mut q: Vec<String> = Vec::new();
        let prefix = match &self.as_who {
            Some(w) => format!("ALTER DEFAULT PRIVILEGES FOR ROLE {w}{}", self.in_schema),
            None => format!("ALTER DEFAULT PRIVILEGES{}", self.in_schema),
        };
        if self.state == "present" {
            if self.kind == "default_privs" {
                for o in self.objs {
                    q.push(format!(
                        "{prefix} REVOKE ALL ON {o} FROM {};",
                        self.for_whom
                    ));
                }
                for o in self.objs {
                    q.push(format!(
                        "{prefix} GRANT {} ON {o} TO {}",
                        self.set_what, self.for_whom
                    ));
                    self.add_grant_option(&mut q);
                }
            } else {
                q.push(format!("GRANT {} TO {}", self.set_what, self.for_whom));
                self.add_grant_option(&mut q);
            }
        } else if self.kind == "default_privs" {
            for o in ["TABLES", "FUNCTIONS", "SEQUENCES", "TYPES"] {
                q.push(format!(
                    "{prefix} REVOKE ALL ON {o} FROM {};",
                    self.for_whom
                ));
            }
        } else {
            q.push(format!("REVOKE {} FROM {};", self.set_what, self.for_whom));
        }
        q.join("\n")
    }

    fn add_grant_option(&self, q: &mut Vec<String>) {
        let last = q.last_mut().expect("a statement to extend");
        match self.grant_option {
            Some(true) if self.kind == "group" => last.push_str(" WITH ADMIN OPTION;"),
            Some(true) => last.push_str(" WITH GRANT OPTION;"),
            Some(false) => {
                last.push(';');
                if self.kind == "group" {
                    q.push(format!(
                        "REVOKE ADMIN OPTION FOR {} FROM {};",
                        self.set_what, self.for_whom
                    ));
                } else if self.kind != "default_privs" {
                    q.push(format!(
                        "REVOKE GRANT OPTION FOR {} FROM {};",
                        self.set_what, self.for_whom
                    ));
                }
            }
            None => last.push(';'),
        }
    }
}

fn strings(v: &[String]) -> minijinja::Value {
    minijinja::Value::from(
        v.iter()
            .map(|s| minijinja::Value::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

fn warnings(w: &[String]) -> minijinja::Value {
    strings(w)
}

#[async_trait::async_trait]
impl Module for PostgresqlPrivs {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let login_db = a.req_string(&["login_db", "db", "database"])?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        let privs_text = a.string(&["privs", "priv"])?;
        let kind = a
            .choice(&["type"], TYPES, Some("table"))?
            .unwrap_or_default();
        let objs_text = a.string(&["objs", "obj"])?;
        let schema_arg = a.string(&["schema"])?;
        let roles_text = a.req_string(&["roles", "role"])?;
        let session_role = a.string(&["session_role"])?;
        let target_roles = a.string(&["target_roles"])?;
        let grant_option = a.opt_bool(&["grant_option", "admin_option"])?;
        let fail_on_role = a.bool(&["fail_on_role"], true)?;
        a.ignore(&["trust_input"]);
        let login = Login::parse(&mut a)?;
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        // The checks community.postgresql makes before it connects, in its
        // order.
        let schema: Option<String> = if [
            "table",
            "sequence",
            "function",
            "procedure",
            "type",
            "default_privs",
        ]
        .contains(&kind.as_str())
        {
            if objs_text.as_deref() == Some("schemas")
                || schema_arg.as_deref() == Some("not-specified")
            {
                None
            } else {
                Some(
                    schema_arg
                        .filter(|s| !s.is_empty())
                        .unwrap_or("public".into()),
                )
            }
        } else if schema_arg.as_deref().is_some_and(|s| !s.is_empty()) {
            return fail(format!(
                "Argument \"schema\" is not allowed for type \"{kind}\"."
            ));
        } else {
            None
        };
        let all_in_schema = objs_text.as_deref() == Some("ALL_IN_SCHEMA");
        if all_in_schema && !["table", "sequence", "function", "procedure"].contains(&kind.as_str())
        {
            return fail(format!(
                "Argument \"objs\": ALL_IN_SCHEMA can be used only for type: table, sequence, \
                 function or procedure, {kind} was passed."
            ));
        }
        let objs_text = match objs_text.filter(|o| !o.is_empty()) {
            Some(o) => o,
            None if kind == "database" => login_db.clone(),
            None => {
                return fail(format!(
                    "Argument \"objs\" is required for type \"{kind}\"."
                ))
            }
        };
        let privs_text = privs_text.filter(|p| !p.is_empty());
        if kind == "group" && privs_text.is_some() {
            return fail("Argument \"privs\" is not allowed for type \"group\".".into());
        }
        if kind != "group" && privs_text.is_none() {
            return fail(format!(
                "Argument \"privs\" is required for type \"{kind}\"."
            ));
        }
        let privs: Vec<String> = privs_text.as_deref().map(upper_set).unwrap_or_default();
        let bad: Vec<String> = privs
            .iter()
            .filter(|p| !VALID_PRIVS.contains(&p.as_str()))
            .cloned()
            .collect();
        if !bad.is_empty() {
            return fail(format!("Invalid privileges specified: {}", py_set(&bad)));
        }

        // Objects named outright (everything but ALL_IN_SCHEMA, which the
        // query lists).
        let mut objs: Vec<String> = Vec::new();
        if kind == "default_privs" {
            objs = if objs_text == "ALL_DEFAULT" {
                ["TABLES", "SEQUENCES", "FUNCTIONS", "TYPES"]
                    .map(String::from)
                    .to_vec()
            } else {
                upper_set(&objs_text)
            };
            let unknown: Vec<String> = objs
                .iter()
                .filter(|o| !DEFAULT_OBJS.iter().any(|(k, _)| k == o))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return fail(format!(
                    "Invalid Object set specified: {}",
                    py_set(&unknown)
                ));
            }
            let fits: Vec<String> = objs
                .iter()
                .filter(|o| {
                    DEFAULT_OBJS
                        .iter()
                        .find(|(k, _)| k == o)
                        .is_some_and(|(_, ok)| privs.iter().all(|p| ok.contains(&p.as_str())))
                })
                .cloned()
                .collect();
            if fits.len() != objs.len() {
                return fail(format!(
                    "Invalid priv specified. Valid object for priv: {}. Objects: {}",
                    py_set(&fits),
                    py_set(&objs)
                ));
            }
        } else if !all_in_schema {
            objs = objs_text.split(',').map(str::to_string).collect();
            if kind == "function" || kind == "procedure" {
                for o in objs.iter_mut() {
                    *o = o.replace(':', ",");
                }
            }
        }
        let role_names: Vec<String> = roles_text.split(',').map(str::to_string).collect();

        // 1. Query: the version, which roles exist, ALL_IN_SCHEMA's objects.
        let mut q = String::new();
        if let Some(r) = &session_role {
            q.push_str(&format!("SET ROLE {};\n", ident(r)));
        }
        q.push_str(&section("version"));
        q.push_str("SELECT current_setting('server_version_num');\n");
        q.push_str(&section("roles"));
        let listed: Vec<String> = role_names.iter().map(|r| literal(r)).collect();
        q.push_str(&format!(
            "SELECT to_json(rolname) FROM pg_catalog.pg_roles WHERE rolname = ANY (ARRAY[{}]::text[]);\n",
            listed.join(",")
        ));
        if all_in_schema {
            let s = schema.clone().unwrap_or_default();
            q.push_str(&section("schema"));
            q.push_str(&format!(
                "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = {};\n",
                literal(&s)
            ));
            q.push_str(&section("objs"));
            q.push_str(&match kind.as_str() {
                "table" | "sequence" => format!(
                    "SELECT to_json(c.relname) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
                     ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relkind IN {};\n",
                    literal(&s),
                    if kind == "table" { "('r','v','m','p','f')" } else { "('S')" }
                ),
                _ => format!(
                    "SELECT to_json(p.proname || '(' || oidvectortypes(p.proargtypes) || ')') \
                     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = {} AND p.prokind = '{}';\n",
                    literal(&s),
                    if kind == "function" { "f" } else { "p" }
                ),
            });
        }
        let out = match run_sql(ctx, &login, &login_db, &q).await? {
            Ok(o) => o,
            Err(SqlFailure::Query(e)) if session_role.is_some() => {
                return fail(format!(
                    "Could not switch to role {}: {e}",
                    session_role.as_deref().unwrap_or_default()
                ))
            }
            Err(e) => return fail(e.message()),
        };
        let s = sections(&out);
        let rows = |k: &str| -> Vec<String> {
            s.get(k)
                .map(|v| {
                    v.iter()
                        .filter_map(|l| serde_json::from_str::<String>(l).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let version: i64 = s
            .get("version")
            .and_then(|v| v.first())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if kind == "procedure" && version < 110000 {
            return fail("PostgreSQL version must be >= 11 for type=procedure. Exit".into());
        }
        if kind == "parameter" && version < 150000 {
            return fail("PostgreSQL version must be >= 15 for type=parameter. Exit".into());
        }
        let in_schema_objs = if all_in_schema {
            if s.get("schema")
                .and_then(|v| v.first())
                .is_none_or(|c| c.trim() == "0")
            {
                return fail(format!(
                    "Schema \"{}\" does not exist.",
                    schema.as_deref().unwrap_or_default()
                ));
            }
            rows("objs")
        } else {
            Vec::new()
        };
        let existing = rows("roles");
        let implicit = |r: &str| {
            IMPLICIT_ROLES
                .iter()
                .any(|(name, min)| r.to_uppercase() == *name && version >= *min)
        };
        let mut roles: Vec<String> = Vec::new();
        let mut warns: Vec<String> = Vec::new();
        for r in &role_names {
            if implicit(r) {
                // Implicit roles work unquoted in upper case, all of them.
                roles.push(r.to_uppercase());
            } else if existing.contains(r) {
                roles.push(ident(r));
            } else if fail_on_role {
                return fail(format!("Role '{r}' does not exist"));
            } else {
                warns.push(format!("Role '{r}' does not exist, pass it"));
            }
        }
        let with_warnings = |mut r: ModuleResult, w: &[String]| {
            if !w.is_empty() {
                r.data.insert("warnings".into(), warnings(w));
            }
            r
        };
        if roles.is_empty() {
            warns.push("No valid roles provided, nothing to do".into());
            return Ok(Plan::done(with_warnings(
                ModuleResult::ok().with("queries", strings(&[])),
                &warns,
            )));
        }
        if target_roles.is_some() && kind != "default_privs" {
            warns.push(
                "\"target_roles\" will be ignored Argument \"type: default_privs\" is required \
                 for usage of \"target_roles\"."
                    .into(),
            );
        }
        let listed_objs = if all_in_schema {
            &in_schema_objs
        } else {
            &objs
        };
        if listed_objs.is_empty() {
            return Ok(Plan::done(with_warnings(
                ModuleResult::ok().with("queries", strings(&[])),
                &warns,
            )));
        }

        // 2. Decide: the statement as community.postgresql writes it.
        let quoted_schema = schema.as_deref().map(ident);
        let qs = quoted_schema.clone().unwrap_or_else(|| "None".into());
        let obj_ids: Vec<String> = match kind.as_str() {
            "function" | "procedure" => {
                let mut v = Vec::new();
                for o in &objs {
                    match o.split_once('(') {
                        Some((f, args)) => v.push(format!("{qs}.{}({args}", ident(f))),
                        None => {
                            return fail(format!(
                                "Illegal function / procedure signature: \"{o}\"."
                            ))
                        }
                    }
                }
                v
            }
            "table" | "sequence" | "type" => {
                objs.iter().map(|o| format!("{qs}.{}", ident(o))).collect()
            }
            _ => objs.iter().map(|o| ident(o)).collect(),
        };
        let priv_list = privs.join(",");
        let set_what = match kind.as_str() {
            "group" => obj_ids.join(","),
            "default_privs" => priv_list.clone(),
            _ if all_in_schema => {
                let what = match kind.as_str() {
                    "table" => "ALL TABLES IN SCHEMA",
                    "sequence" => "ALL SEQUENCES IN SCHEMA",
                    "function" => "ALL FUNCTIONS IN SCHEMA",
                    _ => "ALL PROCEDURES IN SCHEMA",
                };
                format!("{} ON {what} {qs}", priv_list.replace('_', " "))
            }
            _ => format!(
                "{} ON {} {}",
                priv_list.replace('_', " "),
                kind.replace('_', " "),
                obj_ids.join(",")
            ),
        };
        let target: Option<Vec<String>> = target_roles
            .as_deref()
            .map(|t| t.split(',').map(str::to_string).collect());
        let stmt = Statement {
            state: &state,
            kind: &kind,
            grant_option,
            for_whom: roles.join(","),
            as_who: target
                .as_ref()
                .map(|t| t.iter().map(|r| ident(r)).collect::<Vec<_>>().join(",")),
            in_schema: quoted_schema
                .as_deref()
                .map(|s| format!(" IN SCHEMA {s}"))
                .unwrap_or_default(),
            set_what,
            objs: &objs,
        }
        .build();

        // The ACLs before and after, around the statement, rolled back.
        let status_names: Option<Vec<String>> = match kind.as_str() {
            "default_privs" => None,
            "function" | "procedure" if all_in_schema => None,
            _ if all_in_schema => Some(in_schema_objs.clone()),
            "function" | "procedure" => Some(
                objs.iter()
                    .map(|o| o.split('(').next().unwrap_or_default().to_string())
                    .collect(),
            ),
            _ => Some(objs.clone()),
        };
        let status = status_sql(&kind, schema.as_deref(), status_names.as_deref());
        let role_prefix = session_role
            .as_deref()
            .map(|r| format!("SET ROLE {};\n", ident(r)))
            .unwrap_or_default();
        let trial = format!(
            "BEGIN;\n{role_prefix}{}{status}{stmt}\n{}{status}ROLLBACK;\n",
            section("before"),
            section("after"),
        );
        let out = match run_sql(ctx, &login, &login_db, &trial).await? {
            Ok(o) => o,
            Err(SqlFailure::Query(e)) => {
                return fail(format!("Cannot execute SQL '{stmt}': {e}"));
            }
            Err(e) => return fail(e.message()),
        };
        let s = sections(&out);
        let sorted = |k: &str| {
            let mut v = s.get(k).cloned().unwrap_or_default();
            v.sort();
            v
        };
        let queries = strings(std::slice::from_ref(&stmt));
        if sorted("before") == sorted("after") {
            return Ok(Plan::done(with_warnings(
                ModuleResult::ok().with("queries", queries),
                &warns,
            )));
        }
        let result = with_warnings(ModuleResult::changed(true).with("queries", queries), &warns);

        // 3. Apply: the same statement, committed.
        Ok(Plan::change(result.clone(), async move {
            let sql = format!("BEGIN;\n{role_prefix}{stmt}\nCOMMIT;\n");
            match run_sql(ctx, &login, &login_db, &sql).await? {
                Ok(_) => Ok(result),
                Err(SqlFailure::Query(e)) => Ok(ModuleResult::failed(format!(
                    "Cannot execute SQL '{stmt}': {e}"
                ))),
                Err(e) => Ok(ModuleResult::failed(e.message())),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(state: &str, kind: &str, grant_option: Option<bool>, set_what: &str) -> String {
        Statement {
            state,
            kind,
            grant_option,
            for_whom: "\"r\"".into(),
            as_who: None,
            in_schema: String::new(),
            set_what: set_what.into(),
            objs: &[],
        }
        .build()
    }

    #[test]
    fn statements_are_written_as_community_postgresql_writes_them() {
        let what = "SELECT ON table \"public\".\"t\"";
        assert_eq!(
            statement("present", "table", None, what),
            "GRANT SELECT ON table \"public\".\"t\" TO \"r\";"
        );
        assert_eq!(
            statement("present", "table", Some(true), what),
            "GRANT SELECT ON table \"public\".\"t\" TO \"r\" WITH GRANT OPTION;"
        );
        assert_eq!(
            statement("present", "table", Some(false), what),
            "GRANT SELECT ON table \"public\".\"t\" TO \"r\";\n\
             REVOKE GRANT OPTION FOR SELECT ON table \"public\".\"t\" FROM \"r\";"
        );
        assert_eq!(
            statement("absent", "table", Some(true), what),
            "REVOKE SELECT ON table \"public\".\"t\" FROM \"r\";"
        );
        assert_eq!(
            statement("present", "group", Some(true), "\"g\""),
            "GRANT \"g\" TO \"r\" WITH ADMIN OPTION;"
        );
        let objs = ["TABLES".to_string()];
        let d = Statement {
            state: "present",
            kind: "default_privs",
            grant_option: None,
            for_whom: "\"r\"".into(),
            as_who: Some("\"owner\"".into()),
            in_schema: " IN SCHEMA \"public\"".into(),
            set_what: "SELECT".into(),
            objs: &objs,
        };
        assert_eq!(
            d.build(),
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"owner\" IN SCHEMA \"public\" REVOKE ALL ON TABLES FROM \"r\";\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE \"owner\" IN SCHEMA \"public\" GRANT SELECT ON TABLES TO \"r\";"
        );
    }

    #[test]
    fn python_sets_print_as_in_its_messages() {
        assert_eq!(py_set(&["FLY".into()]), "frozenset({'FLY'})");
        assert_eq!(upper_set("select,Insert,SELECT"), ["SELECT", "INSERT"]);
    }
}
