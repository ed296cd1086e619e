//! `mysql_user`: a MySQL/MariaDB account, its password and its privileges,
//! with community.mysql's arguments.
//!
//! Query: one batch lists the hosts the user exists on (and the server
//! version); a second batch, only when some target account exists, reads
//! `SHOW CREATE USER` and `SHOW GRANTS` for each. The wanted state is compared
//! on the controller: the password as a `mysql_native_password` hash
//! (computed here, so the plaintext never leaves the controller), the
//! privileges as normalised sets per object. The apply batch holds only the
//! statements for what differs; check mode stops before it.
//!
//! MariaDB's root uses `unix_socket` auth by default. Setting a password
//! keeps every passwordless method the account already has (`unix_socket`,
//! `named_pipe`): the account becomes `IDENTIFIED VIA mysql_native_password
//! USING '<hash>' OR unix_socket`, so OS root still logs in through the
//! socket (`check_implicit_admin`) while the password works over TCP and for
//! other OS users. Password-based methods (`ed25519`, ...) are replaced.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::value::ValueKind;
use sha1::{Digest, Sha1};

use crate::modules::args::{scalar_string, ModuleArgs, Params};
use crate::modules::kit::mysql::LOGIN_PARAMS;
use crate::modules::kit::mysql::{account, sql_ident, sql_string, Batch, Flavor, Login};
use crate::modules::kit::state_diff;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct MysqlUser;

/// `mysql_native_password`'s stored form of `password`:
/// `*` + hex(SHA1(SHA1(password))), upper case; empty for an empty password.
pub fn native_password_hash(password: &str) -> String {
    if password.is_empty() {
        return String::new();
    }
    let inner = Sha1::digest(password.as_bytes());
    let outer = Sha1::digest(inner);
    format!("*{}", hex::encode_upper(outer))
}

/// One way an account may authenticate (`mysql_native_password` with its
/// hash, `unix_socket`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMethod {
    pub plugin: String,
    pub auth: Option<String>,
}

/// Plugins that need no password: kept when a password is set.
const PASSWORDLESS: &[&str] = &["unix_socket", "named_pipe", "auth_socket"];

/// Reads the authentication methods out of a `SHOW CREATE USER` line.
pub fn parse_auth(create_user: &str) -> Vec<AuthMethod> {
    let Some(at) = find_outside_quotes(create_user, " IDENTIFIED ") else {
        return Vec::new();
    };
    let mut p = Cursor::new(&create_user[at + " IDENTIFIED ".len()..]);
    let mut out = Vec::new();
    // `VIA a USING 'x' OR b USING 'y'`: only the first method says `VIA`.
    let mut first = true;
    loop {
        let via = first && (p.keyword("VIA ") || p.keyword("WITH "));
        if first && !via && p.keyword("BY PASSWORD ") {
            let Some(h) = p.string() else { break };
            out.push(AuthMethod {
                plugin: "mysql_native_password".into(),
                auth: Some(h),
            });
        } else if via || !first {
            let Some(plugin) = p.word() else { break };
            let auth = if p.keyword(" USING ") || p.keyword(" AS ") {
                p.string()
            } else {
                None
            };
            out.push(AuthMethod { plugin, auth });
        } else {
            break;
        }
        if !p.keyword(" OR ") {
            break;
        }
        first = false;
    }
    out
}

/// A tiny reader over SQL text as the server prints it.
struct Cursor<'a> {
    s: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.s.len() >= kw.len() && self.s[..kw.len()].eq_ignore_ascii_case(kw) {
            self.s = &self.s[kw.len()..];
            true
        } else {
            false
        }
    }

    /// A `'...'` literal (backslash escapes and doubled quotes undone).
    fn string(&mut self) -> Option<String> {
        let rest = self.s.strip_prefix('\'')?;
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    let (_, n) = chars.next()?;
                    out.push(match n {
                        'n' => '\n',
                        'r' => '\r',
                        '0' => '\0',
                        'Z' => '\x1a',
                        o => o,
                    });
                }
                '\'' => {
                    if rest[i + 1..].starts_with('\'') {
                        chars.next();
                        out.push('\'');
                    } else {
                        self.s = &rest[i + 1..];
                        return Some(out);
                    }
                }
                c => out.push(c),
            }
        }
        None
    }

    /// A backtick identifier (doubled backticks undone).
    fn ident(&mut self) -> Option<String> {
        let rest = self.s.strip_prefix('`')?;
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if rest[i + 1..].starts_with('`') {
                    chars.next();
                    out.push('`');
                } else {
                    self.s = &rest[i + 1..];
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    }

    /// A plugin name: bare, `'quoted'` or `` `quoted` ``.
    fn word(&mut self) -> Option<String> {
        if self.s.starts_with('\'') {
            return self.string();
        }
        if self.s.starts_with('`') {
            return self.ident();
        }
        let end = self
            .s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let w = self.s[..end].to_string();
        self.s = &self.s[end..];
        Some(w)
    }

    /// `*`, a backtick identifier, or a bare name, as one part of `db.table`.
    fn object_part(&mut self) -> Option<String> {
        if let Some(r) = self.s.strip_prefix('*') {
            self.s = r;
            return Some("*".into());
        }
        if self.s.starts_with('`') {
            return self.ident();
        }
        let end = self.s.find(['.', ' ']).unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let w = self.s[..end].to_string();
        self.s = &self.s[end..];
        Some(w)
    }
}

/// The byte offset of `needle` outside `'...'` and `` `...` `` quoting.
fn find_outside_quotes(s: &str, needle: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut q: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match q {
            Some(open) => {
                if c == b'\\' && open == b'\'' {
                    i += 1;
                } else if c == open {
                    q = None;
                }
            }
            None => {
                if c == b'\'' || c == b'`' {
                    q = Some(c);
                } else if s[i..].starts_with(needle) {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// What privileges apply to: `db.table`, `db.*`, `*.*`, or a routine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PrivObject {
    /// `""`, `"FUNCTION"` or `"PROCEDURE"`.
    pub kind: String,
    pub db: String,
    pub table: String,
}

impl PrivObject {
    /// Parses `db.table` (`*` wildcards, optional backticks, optional
    /// `FUNCTION `/`PROCEDURE ` prefix).
    pub fn parse(s: &str) -> Option<PrivObject> {
        let s = s.trim();
        let mut kind = String::new();
        let mut rest = s;
        for k in ["FUNCTION ", "PROCEDURE ", "TABLE "] {
            if s.len() > k.len() && s[..k.len()].eq_ignore_ascii_case(k) {
                if k != "TABLE " {
                    kind = k.trim().to_string();
                }
                rest = s[k.len()..].trim_start();
            }
        }
        if !rest.contains('`') {
            let (db, table) = rest.rsplit_once('.')?;
            return Some(PrivObject {
                kind,
                db: db.to_string(),
                table: table.to_string(),
            });
        }
        let mut c = Cursor::new(rest);
        let db = c.object_part()?;
        if !c.keyword(".") {
            return None;
        }
        let table = c.object_part()?;
        c.s.trim()
            .is_empty()
            .then_some(PrivObject { kind, db, table })
    }

    /// The object as SQL: `` `db`.* ``.
    pub fn sql(&self) -> String {
        let part = |p: &str| {
            if p == "*" {
                "*".to_string()
            } else {
                sql_ident(p)
            }
        };
        let obj = format!("{}.{}", part(&self.db), part(&self.table));
        if self.kind.is_empty() {
            obj
        } else {
            format!("{} {obj}", self.kind)
        }
    }

    /// The object as a user writes it: `db.*`.
    pub fn display(&self) -> String {
        let obj = format!("{}.{}", self.db, self.table);
        if self.kind.is_empty() {
            obj
        } else {
            format!("{} {obj}", self.kind)
        }
    }
}

/// Privileges per object. `GRANT` in a set stands for `WITH GRANT OPTION`;
/// `USAGE` (no privilege) is never stored.
pub type Privileges = BTreeMap<PrivObject, BTreeSet<String>>;

/// Why a `priv` argument could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("invalid privileges string: '{0}' (want db.table:PRIV1,PRIV2)")]
    Shape(String),
    #[error("invalid privilege '{0}'")]
    Name(String),
}

/// Splits on commas outside parentheses (`SELECT (a, b), INSERT`).
fn split_privs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// One privilege in normal form: `SELECT`, `ALL PRIVILEGES`, `GRANT`,
/// `SELECT (a, b)`; `None` for `USAGE`.
pub fn normalize_priv(p: &str) -> Result<Option<String>, PrivError> {
    let (name, cols) = match p.split_once('(') {
        Some((n, c)) => (n, Some(c.trim_end().strip_suffix(')').unwrap_or(c))),
        None => (p, None),
    };
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    let name = name.to_ascii_uppercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
        return Err(PrivError::Name(p.to_string()));
    }
    let name = match name.as_str() {
        "ALL" => "ALL PRIVILEGES".to_string(),
        "USAGE" => return Ok(None),
        "GRANT OPTION" => "GRANT".to_string(),
        _ => name,
    };
    match cols {
        None => Ok(Some(name)),
        Some(cols) => {
            let mut cols: Vec<String> = cols
                .split(',')
                .map(|c| {
                    let c = c.trim();
                    c.strip_prefix('`')
                        .and_then(|c| c.strip_suffix('`'))
                        .map(|c| c.replace("``", "`"))
                        .unwrap_or_else(|| c.to_string())
                })
                .filter(|c| !c.is_empty())
                .collect();
            cols.sort();
            Ok(Some(format!("{name} ({})", cols.join(", "))))
        }
    }
}

fn add_privs(map: &mut Privileges, obj: PrivObject, privs: &str) -> Result<(), PrivError> {
    let set = map.entry(obj).or_default();
    for p in split_privs(privs) {
        if let Some(n) = normalize_priv(&p)? {
            set.insert(n);
        }
    }
    Ok(())
}

/// Parses the string form: `db.table:PRIV1,PRIV2/db2.*:ALL,GRANT`.
pub fn parse_priv_string(s: &str) -> Result<Privileges, PrivError> {
    let mut map = Privileges::new();
    for item in s.split('/').map(str::trim).filter(|i| !i.is_empty()) {
        let (obj, privs) = item
            .rsplit_once(':')
            .ok_or_else(|| PrivError::Shape(item.to_string()))?;
        let obj = PrivObject::parse(obj).ok_or_else(|| PrivError::Shape(item.to_string()))?;
        add_privs(&mut map, obj, privs)?;
    }
    Ok(map)
}

/// Parses `SHOW GRANTS` lines into privileges (proxy and role grants are
/// not privileges on objects and are left out).
pub fn parse_grants<'a>(lines: impl IntoIterator<Item = &'a str>) -> Privileges {
    let mut map = Privileges::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("GRANT ") else {
            continue;
        };
        if rest.starts_with("PROXY ON ") {
            continue;
        }
        let Some(on) = find_outside_quotes(rest, " ON ") else {
            continue;
        };
        let privs = &rest[..on];
        let after = &rest[on + 4..];
        let Some(to) = find_outside_quotes(after, " TO ") else {
            continue;
        };
        let Some(obj) = PrivObject::parse(&after[..to]) else {
            continue;
        };
        if add_privs(&mut map, obj.clone(), privs).is_err() {
            continue;
        }
        let tail = &after[to..];
        if find_outside_quotes(tail, " WITH GRANT OPTION").is_some() {
            map.entry(obj).or_default().insert("GRANT".into());
        }
    }
    map.retain(|_, v| !v.is_empty());
    map
}

/// Renders privileges the way the string form writes them, for diffs.
pub fn render_privs(p: &Privileges) -> String {
    let mut items: Vec<String> = p
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(o, v)| {
            format!(
                "{}:{}",
                o.display(),
                v.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    if items.is_empty() {
        items.push("*.*:USAGE".into());
    }
    items.join("/")
}

/// A privilege as SQL (column lists quoted).
fn priv_sql(p: &str) -> String {
    match p.split_once(" (") {
        Some((name, cols)) => {
            let cols = cols.trim_end_matches(')');
            let cols: Vec<String> = cols.split(", ").map(sql_ident).collect();
            format!("{name} ({})", cols.join(", "))
        }
        None => p.to_string(),
    }
}

/// The GRANT/REVOKE statements that take `acct` from `current` to `want`.
/// With `append`, nothing is revoked; with `subtract`, `want` lists what to
/// revoke instead.
pub fn privilege_statements(
    acct: &str,
    current: &Privileges,
    want: &Privileges,
    append: bool,
    subtract: bool,
) -> Vec<String> {
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    let mut objects: BTreeSet<&PrivObject> = want.keys().collect();
    if !append && !subtract {
        objects.extend(current.keys());
    }
    for obj in objects {
        let cur = current.get(obj).unwrap_or(&empty);
        let w = want.get(obj).unwrap_or(&empty);
        let (revoke, grant): (BTreeSet<&String>, BTreeSet<&String>) = if subtract {
            (cur.intersection(w).collect(), BTreeSet::new())
        } else {
            let has_all = cur.contains("ALL PRIVILEGES");
            let grant = w
                .difference(cur)
                .filter(|p| !(append && has_all && p.as_str() != "GRANT"))
                .collect();
            let revoke = if append {
                BTreeSet::new()
            } else {
                cur.difference(w).collect()
            };
            (revoke, grant)
        };
        let sql_obj = obj.sql();
        let plain = |s: &BTreeSet<&String>| -> Vec<String> {
            s.iter()
                .filter(|p| p.as_str() != "GRANT")
                .map(|p| priv_sql(p))
                .collect()
        };
        let r = plain(&revoke);
        if !r.is_empty() {
            out.push(format!("REVOKE {} ON {sql_obj} FROM {acct}", r.join(", ")));
        }
        if revoke.iter().any(|p| p.as_str() == "GRANT") {
            out.push(format!("REVOKE GRANT OPTION ON {sql_obj} FROM {acct}"));
        }
        let g = plain(&grant);
        let with_grant = grant.iter().any(|p| p.as_str() == "GRANT");
        if !g.is_empty() || with_grant {
            let list = if g.is_empty() {
                "USAGE".to_string()
            } else {
                g.join(", ")
            };
            let suffix = if with_grant { " WITH GRANT OPTION" } else { "" };
            out.push(format!("GRANT {list} ON {sql_obj} TO {acct}{suffix}"));
        }
    }
    out
}

/// The `IDENTIFIED ...` clause setting a native password hash, keeping the
/// account's passwordless methods on MariaDB.
fn identified_clause(flavor: Flavor, hash: &str, keep: &[AuthMethod]) -> String {
    match flavor {
        Flavor::MariaDb => {
            let mut s = format!(
                "IDENTIFIED VIA mysql_native_password USING {}",
                sql_string(hash)
            );
            for m in keep
                .iter()
                .filter(|m| PASSWORDLESS.contains(&m.plugin.as_str()))
            {
                s.push_str(&format!(" OR {}", m.plugin));
            }
            s
        }
        Flavor::MySql => format!(
            "IDENTIFIED WITH mysql_native_password AS {}",
            sql_string(hash)
        ),
    }
}

/// The `IDENTIFIED ...` clause recreating `methods` (for `on_new_username`).
fn copy_clause(flavor: Flavor, methods: &[AuthMethod]) -> Option<String> {
    if methods.is_empty() {
        return None;
    }
    let parts: Vec<String> = methods
        .iter()
        .map(|m| match (&m.auth, flavor) {
            (Some(a), Flavor::MariaDb) => format!("{} USING {}", m.plugin, sql_string(a)),
            (Some(a), Flavor::MySql) => format!("{} AS {}", m.plugin, sql_string(a)),
            (None, _) => m.plugin.clone(),
        })
        .collect();
    Some(match flavor {
        Flavor::MariaDb => format!("IDENTIFIED VIA {}", parts.join(" OR ")),
        Flavor::MySql => format!("IDENTIFIED WITH {}", parts[0]),
    })
}

/// The stored native hash of an account, if it has one.
fn stored_hash(methods: &[AuthMethod]) -> Option<&str> {
    methods
        .iter()
        .find(|m| m.plugin == "mysql_native_password")
        .and_then(|m| m.auth.as_deref())
}

fn plugins(methods: &[AuthMethod]) -> String {
    if methods.is_empty() {
        return "(no password)".into();
    }
    methods
        .iter()
        .map(|m| m.plugin.as_str())
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Reads `priv` in either form: a string, or a dict of object to privileges.
fn priv_arg(a: &mut ModuleArgs<'_>) -> Result<Option<Privileges>, ModuleError> {
    let Some(v) = a.value(&["priv"]) else {
        return Ok(None);
    };
    let bad = |e: PrivError| ModuleError::Args(e.to_string());
    match v.kind() {
        ValueKind::String => parse_priv_string(v.as_str().unwrap_or_default())
            .map(Some)
            .map_err(bad),
        ValueKind::Map => {
            let mut map = Privileges::new();
            for key in v.try_iter().map_err(|e| ModuleError::Args(e.to_string()))? {
                let k = key.as_str().unwrap_or_default().to_string();
                let val = v
                    .get_item(&key)
                    .map_err(|e| ModuleError::Args(e.to_string()))?;
                let privs = match val.kind() {
                    ValueKind::Seq => val
                        .try_iter()
                        .map_err(|e| ModuleError::Args(e.to_string()))?
                        .filter_map(|x| scalar_string(&x))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => scalar_string(&val).unwrap_or_default(),
                };
                let obj = PrivObject::parse(&k)
                    .ok_or_else(|| bad(PrivError::Shape(format!("{k}:{privs}"))))?;
                add_privs(&mut map, obj, &privs).map_err(bad)?;
            }
            Ok(Some(map))
        }
        k => Err(ModuleError::Args(format!(
            "argument 'priv' of module mysql_user must be a string or a dict, got {k}"
        ))),
    }
}

/// One account the task manages, as found on the server.
struct Found {
    host: String,
    auth: Vec<AuthMethod>,
    grants: Privileges,
}

/// The arguments `mysql_user` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "mysql_user",
    sets: &[
        &[
            &["name", "user"],
            &["priv"],
            &["host"],
            &["password"],
            &["encrypted"],
            &["update_password"],
            &["append_privs"],
            &["subtract_privs"],
            &["state"],
            &["host_all"],
            &["sql_log_bin"],
            &["column_case_sensitive"],
            &["force_context"],
        ],
        LOGIN_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for MysqlUser {
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
        let user = a.req_string(&["name", "user"])?;
        let host = a.string(&["host"])?.unwrap_or_else(|| "localhost".into());
        let password = a.string(&["password"])?;
        let encrypted = a.bool(&["encrypted"], false)?;
        let update_password = a
            .choice(
                &["update_password"],
                &["always", "on_create", "on_new_username"],
                Some("always"),
            )?
            .unwrap();
        let want_privs = priv_arg(&mut a)?;
        let append = a.bool(&["append_privs"], false)?;
        let subtract = a.bool(&["subtract_privs"], false)?;
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap();
        let host_all = a.bool(&["host_all"], false)?;
        let sql_log_bin = a.bool(&["sql_log_bin"], true)?;
        a.ignore(&["column_case_sensitive", "force_context"]);
        a.finish()?;
        if append && subtract {
            return Ok(Plan::done(ModuleResult::failed(
                "append_privs and subtract_privs are mutually exclusive",
            )));
        }
        let hash = match &password {
            Some(p) if encrypted => {
                let ok = p.is_empty()
                    || (p.len() == 41
                        && p.starts_with('*')
                        && p[1..].bytes().all(|b| b.is_ascii_hexdigit()));
                if !ok {
                    return Ok(Plan::done(ModuleResult::failed(
                        "encrypted password is not a mysql_native_password hash (*<40 hex digits>)",
                    )));
                }
                Some(p.to_ascii_uppercase())
            }
            Some(p) => Some(native_password_hash(p)),
            None => None,
        };
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(p) = &password {
            secrets.push(p);
        }
        if let Some(h) = &hash {
            secrets.push(h);
        }

        // Query 1: the server and the hosts the user exists on.
        let mut q = Batch::new();
        q.section("version").stmt("SELECT VERSION()");
        q.section("hosts").stmt(&format!(
            "SELECT Host FROM mysql.user WHERE User = {}",
            sql_string(&user)
        ));
        let ans = match q.run(ctx, &login, &secrets).await {
            Ok(a) => a,
            Err(e) => return e.into_result().map(Plan::done),
        };
        let flavor = Flavor::from_version(ans.scalar("version").unwrap_or(""));
        let all_hosts: Vec<String> = ans
            .rows("hosts")
            .iter()
            .filter_map(|r| r.first().cloned())
            .collect();
        let targets: Vec<String> = if host_all {
            all_hosts.clone()
        } else {
            vec![host.clone()]
        };
        if host_all && all_hosts.is_empty() && state == "present" {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "host_all cannot be used when creating users: '{user}' does not exist"
            ))));
        }
        let existing: Vec<&String> = targets.iter().filter(|h| all_hosts.contains(h)).collect();
        // For on_new_username, an account of the same name elsewhere lends
        // its authentication to a new one.
        let donor = (update_password == "on_new_username" && existing.len() < targets.len())
            .then(|| all_hosts.first())
            .flatten();

        // Query 2: how the existing accounts authenticate and what they hold.
        let mut look: Vec<&String> = existing.clone();
        if let Some(d) = donor {
            if !look.contains(&d) {
                look.push(d);
            }
        }
        let mut found: Vec<Found> = Vec::new();
        if !look.is_empty() {
            let mut q = Batch::new();
            for (i, h) in look.iter().enumerate() {
                let acct = account(&user, h);
                q.section(&format!("cu{i}"))
                    .stmt(&format!("SHOW CREATE USER {acct}"));
                q.section(&format!("gr{i}"))
                    .stmt(&format!("SHOW GRANTS FOR {acct}"));
            }
            let ans = match q.run(ctx, &login, &secrets).await {
                Ok(a) => a,
                Err(e) => return e.into_result().map(Plan::done),
            };
            for (i, h) in look.iter().enumerate() {
                let cu = ans.scalar(&format!("cu{i}")).unwrap_or("");
                let grants = ans.rows(&format!("gr{i}"));
                found.push(Found {
                    host: (*h).clone(),
                    auth: parse_auth(cu),
                    grants: parse_grants(
                        grants.iter().filter_map(|r| r.first()).map(String::as_str),
                    ),
                });
            }
        }
        let donor_auth =
            donor.and_then(|d| found.iter().find(|f| &f.host == d).map(|f| f.auth.clone()));

        let mut stmts: Vec<String> = Vec::new();
        let mut diffs = Vec::new();
        let mut msgs: Vec<&str> = Vec::new();
        let mut password_changed = false;
        for h in &targets {
            let acct = account(&user, h);
            let label = format!("'{user}'@'{h}'");
            let cur = found.iter().find(|f| &f.host == h && existing.contains(&h));
            if state == "absent" {
                if let Some(cur) = cur {
                    stmts.push(format!("DROP USER {acct}"));
                    msgs.push("User deleted");
                    diffs.push(state_diff(
                        &label,
                        &[
                            ("state", "present".into()),
                            ("auth", plugins(&cur.auth)),
                            ("priv", render_privs(&cur.grants)),
                        ],
                        &[("state", "absent".into())],
                    ));
                }
                continue;
            }
            match cur {
                None => {
                    let clause = match (&donor_auth, &hash) {
                        (Some(d), _) => copy_clause(flavor, d),
                        (None, Some(hs)) => Some(identified_clause(flavor, hs, &[])),
                        (None, None) => None,
                    };
                    let mut s = format!("CREATE USER {acct}");
                    if let Some(c) = &clause {
                        s.push(' ');
                        s.push_str(c);
                    }
                    stmts.push(s);
                    let empty = Privileges::new();
                    let want = want_privs.clone().unwrap_or_default();
                    if !subtract {
                        stmts.extend(privilege_statements(&acct, &empty, &want, false, false));
                    }
                    password_changed = password_changed || clause.is_some();
                    msgs.push("User added");
                    diffs.push(state_diff(
                        &label,
                        &[("state", "absent".into())],
                        &[
                            ("state", "present".into()),
                            (
                                "auth",
                                if clause.is_some() {
                                    "mysql_native_password".into()
                                } else {
                                    "(no password)".into()
                                },
                            ),
                            ("priv", render_privs(&want)),
                        ],
                    ));
                }
                Some(cur) => {
                    let mut before = vec![
                        ("state", "present".to_string()),
                        ("auth", plugins(&cur.auth)),
                    ];
                    let mut after = before.clone();
                    if let (Some(hs), "always") = (&hash, update_password.as_str()) {
                        // An account with no method at all has the empty
                        // password, which is how the server shows `''`.
                        let stored =
                            stored_hash(&cur.auth).or_else(|| cur.auth.is_empty().then_some(""));
                        if stored != Some(hs.as_str()) {
                            stmts.push(format!(
                                "ALTER USER {acct} {}",
                                identified_clause(flavor, hs, &cur.auth)
                            ));
                            password_changed = true;
                            msgs.push("Password updated");
                            before.push(("password", "********".into()));
                            after[1].1 = {
                                let mut m = vec![AuthMethod {
                                    plugin: "mysql_native_password".into(),
                                    auth: None,
                                }];
                                if flavor == Flavor::MariaDb {
                                    m.extend(
                                        cur.auth
                                            .iter()
                                            .filter(|x| PASSWORDLESS.contains(&x.plugin.as_str()))
                                            .cloned(),
                                    );
                                }
                                plugins(&m)
                            };
                            after.push(("password", "******** (changed)".into()));
                        }
                    }
                    if let Some(want) = &want_privs {
                        let p = privilege_statements(&acct, &cur.grants, want, append, subtract);
                        if !p.is_empty() {
                            stmts.extend(p);
                            msgs.push("Privileges updated");
                            before.push(("priv", render_privs(&cur.grants)));
                            after.push((
                                "priv",
                                render_privs(&expected(&cur.grants, want, append, subtract)),
                            ));
                        }
                    }
                    if before != after {
                        diffs.push(state_diff(&label, &before, &after));
                    }
                }
            }
        }

        let changed = !stmts.is_empty();
        let mut res = ModuleResult::changed(changed).with("user", user.as_str());
        msgs.dedup();
        res.msg = Some(if msgs.is_empty() {
            if state == "absent" {
                "User doesn't exist".to_string()
            } else {
                "User unchanged".to_string()
            }
        } else {
            msgs.join(", ")
        });
        res = res.with("password_changed", password_changed);
        if ctx.diff {
            res.diff = diffs;
        }
        if !changed {
            return Ok(Plan::done(res));
        }
        let owned_secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        Ok(Plan::change(res.clone(), async move {
            let secrets: Vec<&str> = owned_secrets.iter().map(String::as_str).collect();
            let mut apply = Batch::new();
            if !sql_log_bin {
                apply.stmt("SET SQL_LOG_BIN = 0");
            }
            for s in &stmts {
                apply.stmt(s);
            }
            if let Err(e) = apply.run(ctx, &login, &secrets).await {
                return e.into_result();
            }
            Ok(res)
        }))
    }
}

/// The privileges an account ends up with (for the diff's after side).
fn expected(current: &Privileges, want: &Privileges, append: bool, subtract: bool) -> Privileges {
    let mut out = if append || subtract {
        current.clone()
    } else {
        Privileges::new()
    };
    for (o, w) in want {
        let e = out.entry(o.clone()).or_default();
        if subtract {
            e.retain(|p| !w.contains(p));
        } else {
            e.extend(w.iter().cloned());
        }
    }
    out.retain(|_, v| !v.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(db: &str, table: &str) -> PrivObject {
        PrivObject {
            kind: String::new(),
            db: db.into(),
            table: table.into(),
        }
    }

    #[test]
    fn native_hash_matches_the_server() {
        // SELECT PASSWORD('secret') on MariaDB 10.11.
        assert_eq!(
            native_password_hash("secret"),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
        assert_eq!(native_password_hash(""), "");
    }

    #[test]
    fn auth_methods_are_read_from_show_create_user() {
        type Methods<'a> = &'a [(&'a str, Option<&'a str>)];
        let cases: &[(&str, Methods)] = &[
            (
                "CREATE USER `root`@`localhost` IDENTIFIED VIA mysql_native_password USING 'invalid' OR unix_socket",
                &[("mysql_native_password", Some("invalid")), ("unix_socket", None)],
            ),
            (
                "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*14E65567ABDB5135D0CFD9A70B3032C179A49EE7'",
                &[("mysql_native_password", Some("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"))],
            ),
            ("CREATE USER `nopw`@`localhost`", &[]),
            (
                "CREATE USER `x`@`h` IDENTIFIED WITH 'mysql_native_password' AS '*AB' REQUIRE NONE PASSWORD EXPIRE DEFAULT",
                &[("mysql_native_password", Some("*AB"))],
            ),
            (
                "CREATE USER `o'd IDENTIFIED `@`h` IDENTIFIED VIA unix_socket",
                &[("unix_socket", None)],
            ),
        ];
        for (line, want) in cases {
            let got = parse_auth(line);
            let got: Vec<(&str, Option<&str>)> = got
                .iter()
                .map(|m| (m.plugin.as_str(), m.auth.as_deref()))
                .collect();
            assert_eq!(&got, want, "{line}");
        }
    }

    #[test]
    fn priv_strings_normalise() {
        let p =
            parse_priv_string("appdb.*:all/shop.orders:select, insert ,UPDATE/*.*:usage").unwrap();
        assert_eq!(
            p[&obj("appdb", "*")],
            BTreeSet::from(["ALL PRIVILEGES".to_string()])
        );
        assert_eq!(
            p[&obj("shop", "orders")],
            BTreeSet::from(["INSERT".into(), "SELECT".into(), "UPDATE".into()])
        );
        assert!(p[&obj("*", "*")].is_empty());
        let c = parse_priv_string("db.t:SELECT (b,a),GRANT").unwrap();
        assert_eq!(
            c[&obj("db", "t")],
            BTreeSet::from(["GRANT".into(), "SELECT (a, b)".into()])
        );
        assert!(parse_priv_string("nocolon").is_err());
        assert!(parse_priv_string("db.*:SELECT; DROP").is_err());
    }

    #[test]
    fn show_grants_normalise_to_the_same_sets() {
        let lines = [
            "GRANT USAGE ON *.* TO `app`@`localhost` IDENTIFIED BY PASSWORD '*14E6'",
            "GRANT ALL PRIVILEGES ON `appdb`.* TO `app`@`localhost`",
            "GRANT SELECT, INSERT, UPDATE ON `shop`.`orders` TO `app`@`localhost` WITH GRANT OPTION",
            "GRANT SELECT (`b`, `a`) ON `db`.`t` TO `app`@`localhost`",
            "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
            "GRANT `somerole` TO `app`@`localhost`",
            "GRANT SELECT ON `we.ird`.* TO `app`@`localhost`",
        ];
        let g = parse_grants(lines);
        let want = parse_priv_string(
            "appdb.*:ALL/shop.orders:SELECT,INSERT,UPDATE,GRANT/db.t:SELECT (a,b)/`we.ird`.*:SELECT",
        )
        .unwrap();
        assert_eq!(g, want);
        assert!(!g.contains_key(&obj("*", "*")), "USAGE is no privilege");
    }

    #[test]
    fn statements_move_from_current_to_wanted() {
        let acct = "'app'@'localhost'";
        let cur = parse_priv_string("appdb.*:ALL/old.*:SELECT/*.*:RELOAD").unwrap();
        let want = parse_priv_string("appdb.*:SELECT,INSERT,GRANT/new.t:SELECT (c)").unwrap();
        let s = privilege_statements(acct, &cur, &want, false, false);
        assert_eq!(
            s,
            vec![
                "REVOKE RELOAD ON *.* FROM 'app'@'localhost'",
                "REVOKE ALL PRIVILEGES ON `appdb`.* FROM 'app'@'localhost'",
                "GRANT INSERT, SELECT ON `appdb`.* TO 'app'@'localhost' WITH GRANT OPTION",
                "GRANT SELECT (`c`) ON `new`.`t` TO 'app'@'localhost'",
                "REVOKE SELECT ON `old`.* FROM 'app'@'localhost'",
            ]
        );
        // Appending never revokes, and ALL already covers SELECT.
        let s = privilege_statements(acct, &cur, &want, true, false);
        assert_eq!(
            s,
            vec![
                "GRANT USAGE ON `appdb`.* TO 'app'@'localhost' WITH GRANT OPTION",
                "GRANT SELECT (`c`) ON `new`.`t` TO 'app'@'localhost'",
            ]
        );
        // Converged: nothing to do.
        assert!(privilege_statements(acct, &want, &want, false, false).is_empty());
        // Subtracting revokes only what is held.
        let s = privilege_statements(
            acct,
            &cur,
            &parse_priv_string("old.*:SELECT,INSERT").unwrap(),
            false,
            true,
        );
        assert_eq!(s, vec!["REVOKE SELECT ON `old`.* FROM 'app'@'localhost'"]);
    }

    #[test]
    fn setting_a_password_keeps_socket_auth_on_mariadb() {
        let root = parse_auth(
            "CREATE USER `root`@`localhost` IDENTIFIED VIA mysql_native_password USING 'invalid' OR unix_socket",
        );
        assert_eq!(
            identified_clause(Flavor::MariaDb, "*AB", &root),
            "IDENTIFIED VIA mysql_native_password USING '*AB' OR unix_socket"
        );
        assert_eq!(
            identified_clause(Flavor::MySql, "*AB", &root),
            "IDENTIFIED WITH mysql_native_password AS '*AB'"
        );
    }
}
