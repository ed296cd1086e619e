//! `postgresql_user` (community.postgresql): creates, alters or drops a
//! role through `psql` on the target ([`kit::postgres`]).
//!
//! Query: one batch reads the role's `pg_authid` row, the server's
//! `password_encryption`, the role's comment and settings, and whether a
//! wanted `expires` differs. Decide: community.postgresql's `user_add` /
//! `user_alter` / `add_comment` / `user_configuration` on the controller,
//! including its password check (a SCRAM verifier is tested against the
//! password with PBKDF2 and HMAC here, so the password never goes back to
//! the server to be compared). Apply: the statements in one transaction,
//! as that module commits them. `queries` lists them as it does, with
//! `%(password)s`/`%(expires)s` placeholders, so no password reaches the
//! result; check mode lists them without running any.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value as Json;
use sha2_11::Sha256;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::postgres::{
    ident, literal, run_sql, section, sections, Login, SqlFailure, LOGIN_PARAMS,
};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct PostgresqlUser;

static PARAMS: Params = Params {
    module: "postgresql_user",
    sets: &[
        &[
            &["user", "name"],
            &["password"],
            &["state"],
            &["login_db", "db"],
            &["fail_on_user", "fail_on_role"],
            &["role_attr_flags"],
            &["encrypted"],
            &["no_password_changes"],
            &["expires"],
            &["conn_limit"],
            &["session_role"],
            &["comment"],
            &["trust_input"],
            &["configuration"],
            &["reset_unspecified_configuration"],
            &["quote_configuration_values"],
        ],
        LOGIN_PARAMS,
    ],
};

const FLAGS: &[(&str, &str)] = &[
    ("SUPERUSER", "rolsuper"),
    ("CREATEROLE", "rolcreaterole"),
    ("CREATEDB", "rolcreatedb"),
    ("INHERIT", "rolinherit"),
    ("LOGIN", "rolcanlogin"),
    ("REPLICATION", "rolreplication"),
    ("BYPASSRLS", "rolbypassrls"),
];

/// `parse_role_attrs`: comma-separated flags, upper-cased, each once.
fn parse_flags(text: &str) -> Result<Vec<String>, String> {
    let mut flags: Vec<String> = Vec::new();
    for f in text.split(',').filter(|f| !f.is_empty()) {
        let f = f.to_uppercase();
        if !flags.contains(&f) {
            flags.push(f);
        }
    }
    let valid = |f: &str| {
        let base = f
            .strip_prefix("NO")
            .filter(|b| column(b).is_some())
            .unwrap_or(f);
        column(base).is_some()
    };
    let bad: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .filter(|f| !valid(f))
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "Invalid role_attr_flags specified: {}",
            bad.join(" ")
        ));
    }
    Ok(flags)
}

fn column(flag: &str) -> Option<&'static str> {
    FLAGS.iter().find(|(f, _)| *f == flag).map(|(_, c)| *c)
}

/// `need_to_change_role_attr_flags`.
fn flags_differ(flags: &[String], row: &Json) -> bool {
    flags.iter().any(|f| {
        let (name, want) = match f.strip_prefix("NO").filter(|b| column(b).is_some()) {
            Some(b) => (b, false),
            None => (f.as_str(), true),
        };
        column(name)
            .and_then(|c| row.get(c))
            .and_then(Json::as_bool)
            != Some(want)
    })
}

/// Whether `password` is what a `SCRAM-SHA-256$iter:salt$stored:server`
/// verifier was made from (RFC 5802's ServerKey). `None`: not a verifier.
fn scram_matches(verifier: &str, password: &str) -> Option<bool> {
    let re = regex::Regex::new(
        r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$",
    )
    .expect("valid pattern");
    let m = re.captures(verifier)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let iterations: u32 = m[1].parse().ok()?;
    let salt = b64.decode(&m[2]).ok()?;
    let server_key = b64.decode(&m[4]).ok()?;
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&salted).ok()?;
    mac.update(b"Server Key");
    Some(mac.verify_slice(&server_key).is_ok())
}

/// `user_should_we_change_password`.
fn password_differs(
    row: &Json,
    user: &str,
    password: Option<&str>,
    encrypted: bool,
    server_encryption: &str,
) -> bool {
    let Some(password) = password else {
        return false;
    };
    let current = row.get("rolpassword").and_then(Json::as_str);
    let scram =
        regex::Regex::new(r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")
            .expect("valid pattern");
    if password.is_empty() {
        return current.is_some();
    }
    if scram.is_match(password) {
        return Some(password) != current;
    }
    if let Some(c) = current.filter(|c| scram.is_match(c)) {
        return scram_matches(c, password) != Some(true);
    }
    let md5_hash = password.starts_with("md5") && password.len() == 35;
    if md5_hash || !encrypted {
        return Some(password) != current;
    }
    match server_encryption {
        "md5" => {
            let h = format!(
                "md5{:x}",
                md5::Md5::digest(format!("{password}{user}").as_bytes())
            );
            Some(h.as_str()) != current
        }
        "scram-sha-256" => true,
        _ => false,
    }
}

use md5::Digest as _;

fn strings(v: &[String]) -> minijinja::Value {
    minijinja::Value::from(
        v.iter()
            .map(|s| minijinja::Value::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

#[async_trait::async_trait]
impl Module for PostgresqlUser {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let user = a.req_string(&["user", "name"])?;
        let password = a.string(&["password"])?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        let login_db = a.string(&["login_db", "db"])?.unwrap_or_default();
        let fail_on_user = a.bool(&["fail_on_user", "fail_on_role"], true)?;
        let flags_text = a.string(&["role_attr_flags"])?.unwrap_or_default();
        let encrypted = a.bool(&["encrypted"], true)?;
        let no_password_changes = a.bool(&["no_password_changes"], false)?;
        let expires = a.string(&["expires"])?;
        let conn_limit = a.int(&["conn_limit"])?;
        let session_role = a.string(&["session_role"])?;
        let comment = a.string(&["comment"])?;
        a.ignore(&["trust_input"]);
        let configuration: BTreeMap<String, String> = match a.value(&["configuration"]) {
            None => BTreeMap::new(),
            Some(v) => {
                let mut m = BTreeMap::new();
                for k in v.try_iter().map_err(|e| ModuleError::Args(e.to_string()))? {
                    let val = v
                        .get_item(&k)
                        .map_err(|e| ModuleError::Args(e.to_string()))?;
                    let val = val.as_str().map_or_else(|| val.to_string(), str::to_string);
                    m.insert(k.to_string(), val);
                }
                m
            }
        };
        let reset_unspec = a.bool(&["reset_unspecified_configuration"], false)?;
        let quote_values = a.bool(&["quote_configuration_values"], true)?;
        let login = Login::parse(&mut a)?;
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        let quoted_user = if user.starts_with('"') && user.ends_with('"') && user.len() > 1 {
            user.clone()
        } else if user.starts_with('"') || user.ends_with('"') {
            return fail("The value of the user-field can't contain a double-quote in the end if it doesn't start with one and vice-versa.".into());
        } else {
            ident(&user)
        };
        let mut configuration = configuration;
        if quote_values {
            for (k, v) in configuration.iter_mut() {
                if k.contains('"') || k.contains('\'') {
                    return fail(
                        "The key of a configuration may not contain single or double quotes".into(),
                    );
                }
                *v = v.replace('\'', "''");
            }
        }
        let flags = match parse_flags(&flags_text) {
            Ok(f) => f,
            Err(m) => return fail(m),
        };
        let flags_sql = flags.join(" ");

        let name = literal(&user);
        let mut q = String::new();
        if let Some(r) = &session_role {
            q.push_str(&format!("SET ROLE {};\n", ident(r)));
        }
        q.push_str(&section("role"));
        q.push_str(&format!(
            "SELECT row_to_json(a) FROM pg_authid a WHERE rolname = {name};\n"
        ));
        q.push_str(&section("enc"));
        q.push_str("SELECT current_setting('password_encryption');\n");
        q.push_str(&section("comment"));
        q.push_str(&format!(
            "SELECT to_json(pg_catalog.shobj_description(oid, 'pg_authid')) FROM pg_roles WHERE rolname = {name};\n"
        ));
        q.push_str(&section("config"));
        q.push_str(&format!(
            "SELECT to_json(rolconfig) FROM pg_roles WHERE rolname = {name};\n"
        ));
        if let Some(e) = &expires {
            q.push_str(&section("expires"));
            q.push_str(&format!(
                "SELECT {}::timestamptz IS DISTINCT FROM (SELECT rolvaliduntil FROM pg_authid WHERE rolname = {name});\n",
                literal(e)
            ));
        }
        let out = match run_sql(ctx, &login, &login_db, &q).await? {
            Ok(o) => o,
            Err(e) => return fail(e.message()),
        };
        let s = sections(&out);
        let first = |k: &str| s.get(k).and_then(|v| v.first()).cloned();
        let row: Option<Json> = first("role").and_then(|r| serde_json::from_str(&r).ok());
        let exists = row.is_some() || user == "PUBLIC";

        let mut queries: Vec<String> = Vec::new();
        // (statement as listed, statement as run) pairs.
        let mut run: Vec<String> = Vec::new();
        let mut push = |shown: String, real: String, q: &mut Vec<String>| {
            q.push(shown);
            run.push(real);
        };
        let fill = |stmt: &str| -> String {
            stmt.replace(
                "%(password)s",
                &literal(password.as_deref().unwrap_or_default()),
            )
            .replace(
                "%(expires)s",
                &literal(expires.as_deref().unwrap_or_default()),
            )
        };
        let crypt = if encrypted {
            "ENCRYPTED"
        } else {
            "UNENCRYPTED"
        };
        let mut result = ModuleResult::ok().with("user", user.as_str());

        if state == "absent" {
            if !exists {
                return Ok(Plan::done(result.with("queries", strings(&[]))));
            }
            let drop = format!("DROP USER {quoted_user}");
            let planned = ModuleResult::changed(true)
                .with("user", user.as_str())
                .with("user_removed", true)
                .with("queries", strings(&[]));
            return Ok(Plan::change(planned, async move {
                let r = run_sql(ctx, &login, &login_db, &format!("{drop};\n")).await?;
                let listed = strings(std::slice::from_ref(&drop));
                match r {
                    Ok(_) => Ok(ModuleResult::changed(true)
                        .with("user", user.as_str())
                        .with("user_removed", true)
                        .with("queries", listed)),
                    Err(SqlFailure::Query(e)) if fail_on_user => {
                        Ok(ModuleResult::failed(format!("Unable to remove user: {e}")))
                    }
                    Err(SqlFailure::Query(_)) => Ok(ModuleResult::changed(false)
                        .with("user", user.as_str())
                        .with("user_removed", false)
                        .with("queries", listed)),
                    Err(e) => Ok(ModuleResult::failed(e.message())),
                }
            }));
        }

        let mut changed = false;
        match &row {
            None if user == "PUBLIC" => {
                if password.is_some() {
                    return fail("cannot change the password for PUBLIC user".into());
                }
                if !flags_sql.is_empty() {
                    return fail("cannot change the role_attr_flags for PUBLIC user".into());
                }
            }
            None => {
                let mut parts = vec![format!("CREATE USER {quoted_user}")];
                if password.as_deref().is_some_and(|p| !p.is_empty()) {
                    parts.push(format!("WITH {crypt}"));
                    parts.push("PASSWORD %(password)s".into());
                }
                if expires.is_some() {
                    parts.push("VALID UNTIL %(expires)s".into());
                }
                if let Some(c) = conn_limit {
                    parts.push(format!("CONNECTION LIMIT {c}"));
                }
                parts.push(flags_sql.clone());
                let stmt = parts.join(" ");
                push(stmt.clone(), fill(&stmt), &mut queries);
                changed = true;
            }
            Some(row) => {
                let enc = first("enc").unwrap_or_default();
                if !no_password_changes
                    && (password.is_some()
                        || !flags_sql.is_empty()
                        || expires.is_some()
                        || conn_limit.is_some())
                {
                    let pw = password_differs(row, &user, password.as_deref(), encrypted, &enc);
                    let fl = flags_differ(&flags, row);
                    let ex = first("expires").as_deref() == Some("t");
                    let cl = conn_limit
                        .is_some_and(|c| row.get("rolconnlimit").and_then(Json::as_i64) != Some(c));
                    if pw || fl || ex || cl {
                        let mut parts = vec![format!("ALTER USER {quoted_user}")];
                        if pw {
                            if password.as_deref() != Some("") {
                                parts.push(format!("WITH {crypt}"));
                                parts.push("PASSWORD %(password)s".into());
                            } else {
                                parts.push("WITH PASSWORD NULL".into());
                            }
                            parts.push(flags_sql.clone());
                        } else if !flags_sql.is_empty() {
                            parts.push(format!("WITH {flags_sql}"));
                        }
                        if expires.is_some() {
                            parts.push("VALID UNTIL %(expires)s".into());
                        }
                        if let Some(c) = conn_limit {
                            parts.push(format!("CONNECTION LIMIT {c}"));
                        }
                        let stmt = parts.join(" ");
                        push(stmt.clone(), fill(&stmt), &mut queries);
                        changed = true;
                    }
                } else if no_password_changes && !flags_sql.is_empty() && flags_differ(&flags, row)
                {
                    let stmt = format!("ALTER USER {quoted_user} WITH {flags_sql}");
                    push(stmt.clone(), stmt, &mut queries);
                    changed = true;
                }
            }
        }
        if let Some(c) = &comment {
            let current: String = first("comment")
                .and_then(|j| serde_json::from_str::<Option<String>>(&j).ok().flatten())
                .unwrap_or_default();
            if *c != current {
                let stmt = format!("COMMENT ON ROLE {} IS {}", ident(&user), literal(c));
                push(stmt.clone(), stmt, &mut queries);
                changed = true;
            }
        }
        // `user_configuration`: settings to reset, then to set.
        let current: BTreeMap<String, String> = first("config")
            .and_then(|j| {
                serde_json::from_str::<Option<Vec<String>>>(&j)
                    .ok()
                    .flatten()
            })
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut update = configuration.clone();
        let mut reset = Vec::new();
        for (k, v) in &current {
            if configuration.get(k) == Some(v) {
                update.remove(k);
            } else if !configuration.contains_key(k) && reset_unspec {
                reset.push(k.clone());
            }
        }
        for k in reset {
            let stmt = format!("ALTER ROLE {quoted_user} RESET \"{k}\";");
            push(stmt.clone(), stmt, &mut queries);
            changed = true;
        }
        for (k, v) in update {
            let stmt = if quote_values {
                format!("ALTER ROLE {quoted_user} SET \"{k}\" TO '{v}';")
            } else {
                format!("ALTER ROLE {quoted_user} SET \"{k}\" TO {v};")
            };
            push(stmt.clone(), stmt, &mut queries);
            changed = true;
        }

        result = result.with("queries", strings(&queries));
        result.changed = changed;
        if !changed {
            return Ok(Plan::done(result));
        }
        let planned = result.clone();
        Ok(Plan::change(planned, async move {
            let mut sql = String::from("BEGIN;\n");
            if let Some(r) = &session_role {
                sql.push_str(&format!("SET ROLE {};\n", ident(r)));
            }
            for st in &run {
                sql.push_str(st.trim_end_matches(';'));
                sql.push_str(";\n");
            }
            sql.push_str("COMMIT;\n");
            match run_sql(ctx, &login, &login_db, &sql).await? {
                Ok(_) => Ok(result),
                Err(SqlFailure::Query(e)) if row.is_none() => Ok(ModuleResult::failed(format!(
                    "Unable to add user with given requirement due to : {e}"
                ))),
                Err(e) => Ok(ModuleResult::failed(e.message())),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scram_verifier_is_checked_against_the_password() {
        // Made by PostgreSQL 15 for the password "secret".
        let v = "SCRAM-SHA-256$4096:NSL4BtzGTVc5HsfsWPQFrg==$1KWratAtpYgMgiv8zwUzRLAg+t+1qqPCzaxe8oGJBDw=:YB2FWnM83zh4QUGXM8aIAKhTwzQwdOBzA7j7/KHKmQQ=";
        assert_eq!(scram_matches(v, "secret"), Some(true));
        assert_eq!(scram_matches(v, "other"), Some(false));
        assert_eq!(scram_matches("md5abc", "secret"), None);
    }

    #[test]
    fn flags_are_checked_as_community_postgresql_checks_them() {
        assert_eq!(
            parse_flags("createdb,NOLOGIN").unwrap(),
            ["CREATEDB", "NOLOGIN"]
        );
        assert_eq!(
            parse_flags("CREATEDB,FLY").unwrap_err(),
            "Invalid role_attr_flags specified: FLY"
        );
    }
}
