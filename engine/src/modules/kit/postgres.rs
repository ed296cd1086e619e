//! What the `postgresql_*` modules share: community.postgresql's login
//! arguments, SQL quoting, and running SQL through `psql` on the target
//! over the task's connection (no psycopg, no driver on the controller).
//!
//! Nothing secret reaches a command line: the password travels on stdin
//! (its first line, base64) before the SQL, and the script exports it as
//! `PGPASSWORD` for `psql` alone. The other login arguments become libpq's
//! `PG*` variables, so `psql` connects as psycopg would with the same
//! keywords.
//!
//! A batch answers several questions in one round trip: each starts with a
//! `SELECT '@@S <name>'` row ([`section`]) and reads its rows as JSON
//! (`-A -t` prints one row per line, and JSON keeps newlines escaped).

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;

use crate::modules::args::{ModuleArgs, Param};
use crate::modules::{ModuleError, TaskContext};
use crate::shell::quote;

/// The connection arguments every community.postgresql module takes.
#[derive(Clone, Default)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub host: String,
    pub unix_socket: String,
    pub port: i64,
    pub ssl_mode: String,
    pub ca_cert: Option<String>,
    pub ssl_cert: Option<String>,
    pub ssl_key: Option<String>,
}

// The password never reaches Debug output.
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"********")
            .field("host", &self.host)
            .field("unix_socket", &self.unix_socket)
            .field("port", &self.port)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

/// The arguments [`Login::parse`] reads, for a module's
/// [`Params`](crate::modules::args::Params).
pub const LOGIN_PARAMS: &[Param] = &[
    &["login_user", "login"],
    &["login_password"],
    &["login_host", "host"],
    &["login_unix_socket", "unix_socket"],
    &["login_port", "port"],
    &["ssl_mode"],
    &["ca_cert", "ssl_rootcert"],
    &["ssl_cert"],
    &["ssl_key"],
    &["connect_params"],
];

impl Login {
    pub fn parse(a: &mut ModuleArgs<'_>) -> Result<Login, ModuleError> {
        let login = Login {
            user: a
                .string(&["login_user", "login"])?
                .unwrap_or_else(|| "postgres".into()),
            password: a.string(&["login_password"])?.unwrap_or_default(),
            host: a.string(&["login_host", "host"])?.unwrap_or_default(),
            unix_socket: a
                .string(&["login_unix_socket", "unix_socket"])?
                .unwrap_or_default(),
            port: a.int(&["login_port", "port"])?.unwrap_or(5432),
            ssl_mode: a
                .choice(
                    &["ssl_mode"],
                    &[
                        "allow",
                        "disable",
                        "prefer",
                        "require",
                        "verify-ca",
                        "verify-full",
                    ],
                    Some("prefer"),
                )?
                .unwrap_or_default(),
            ca_cert: a.string(&["ca_cert", "ssl_rootcert"])?,
            ssl_cert: a.string(&["ssl_cert"])?,
            ssl_key: a.string(&["ssl_key"])?,
        };
        if a.value(&["connect_params"]).is_some() {
            return Err(ModuleError::Args(
                "connect_params is not supported by Keel's native PostgreSQL modules".into(),
            ));
        }
        Ok(login)
    }

    /// libpq's variables for this login and database (non-secret values
    /// only; the password goes on stdin).
    fn env(&self, db: &str) -> String {
        let mut vars: Vec<(&str, String)> = vec![
            ("PGUSER", self.user.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGSSLMODE", self.ssl_mode.clone()),
        ];
        // community.postgresql: the socket directory counts only when no
        // host, or `localhost`, is given.
        let host =
            if (self.host.is_empty() || self.host == "localhost") && !self.unix_socket.is_empty() {
                self.unix_socket.clone()
            } else {
                self.host.clone()
            };
        if !host.is_empty() {
            vars.push(("PGHOST", host));
        }
        if !db.is_empty() {
            vars.push(("PGDATABASE", db.to_string()));
        }
        for (k, v) in [
            ("PGSSLROOTCERT", &self.ca_cert),
            ("PGSSLCERT", &self.ssl_cert),
            ("PGSSLKEY", &self.ssl_key),
        ] {
            if let Some(v) = v {
                vars.push((k, v.clone()));
            }
        }
        vars.iter()
            .map(|(k, v)| format!("{k}={}; export {k}\n", quote(v)))
            .collect()
    }
}

/// A SQL string literal as psycopg writes one: `'it''s'`, or `E'a\\b'`
/// when there is a backslash.
pub fn literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A quoted identifier: `"a""b"`.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The marker row that starts section `name` of a query batch.
pub fn section(name: &str) -> String {
    format!("SELECT '@@S {name}';\n")
}

/// Rows of each section of a batch's output, by name.
pub fn sections(out: &str) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@S ") {
            cur = name.to_string();
            m.entry(cur.clone()).or_default();
        } else if !line.is_empty() {
            m.entry(cur.clone()).or_default().push(line.to_string());
        }
    }
    m
}

/// How a batch failed: no connection, or a statement the server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlFailure {
    /// libpq's message, as community.postgresql words it.
    Connect(String),
    /// The server's error (`ERROR:  ` and psql's position prefix removed).
    Query(String),
}

impl SqlFailure {
    /// community.postgresql's message for it (`Database query failed: …`
    /// for a query, unless the module words its own).
    pub fn message(&self) -> String {
        match self {
            SqlFailure::Connect(m) => format!("unable to connect to database: {m}"),
            SqlFailure::Query(m) => format!("Database query failed: {m}"),
        }
    }

    pub fn text(&self) -> &str {
        match self {
            SqlFailure::Connect(m) | SqlFailure::Query(m) => m,
        }
    }
}

/// Runs `sql` with `psql` on the host, connected to `db` (empty: libpq's
/// default), stopping at the first error. Statements run in autocommit, as
/// community.postgresql's `postgresql_db` runs them; a module that wants
/// all or nothing wraps its batch in `BEGIN`/`COMMIT`.
pub async fn run_sql(
    ctx: &TaskContext<'_>,
    login: &Login,
    db: &str,
    sql: &str,
) -> Result<Result<String, SqlFailure>, ModuleError> {
    let script = format!(
        "IFS= read -r pw\n\
         if [ -n \"$pw\" ]; then PGPASSWORD=$(printf '%s' \"$pw\" | base64 -d); export PGPASSWORD; fi\n\
         {env}PGCONNECT_TIMEOUT=10; export PGCONNECT_TIMEOUT\n\
         command -v psql >/dev/null 2>&1 || {{ echo 'psql: error: psql (the PostgreSQL client) is not installed on the host' >&2; exit 2; }}\n\
         exec psql -X -q -A -t -v ON_ERROR_STOP=1 -P pager=off\n",
        env = login.env(db)
    );
    let mut stdin = base64::engine::general_purpose::STANDARD
        .encode(login.password.as_bytes())
        .into_bytes();
    stdin.push(b'\n');
    stdin.extend_from_slice(sql.as_bytes());
    let out = ctx.run(script, Some(stdin)).await?;
    if out.rc == 0 {
        return Ok(Ok(out.stdout_str()));
    }
    let err = out.stderr_str();
    let first = err.trim();
    if out.rc == 2 || first.starts_with("psql: error:") {
        let m = first.strip_prefix("psql: error: ").unwrap_or(first);
        return Ok(Err(SqlFailure::Connect(format!("{m}\n"))));
    }
    Ok(Err(SqlFailure::Query(server_error(first))))
}

/// The server's message out of psql's stderr: `psql:<stdin>:3: ERROR:  x`
/// → `x` (psycopg's text ends with a newline, so this does too).
fn server_error(err: &str) -> String {
    let re = regex::Regex::new(r"(?m)^(?:psql:[^:]*:\d+: )?(?:ERROR|FATAL):  (.*)$")
        .expect("valid pattern");
    // psycopg's text goes on with the DETAIL/HINT lines psql prints after.
    match re.captures(err) {
        Some(m) => {
            let rest = err[m.get(0).map_or(err.len(), |a| a.end())..].trim_end();
            format!("{}{rest}\n", &m[1])
        }
        None => format!("{err}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_sections() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let s = sections("@@S a\n1\n2\n@@S b\n@@S c\n{\"x\":1}\n");
        assert_eq!(s["a"], ["1", "2"]);
        assert!(s["b"].is_empty());
        assert_eq!(s["c"], ["{\"x\":1}"]);
        assert_eq!(
            server_error("psql:<stdin>:2: ERROR:  role \"x\" does not exist"),
            "role \"x\" does not exist\n"
        );
        assert_eq!(
            server_error("ERROR:  cannot drop\nDETAIL:  owner of table t\n"),
            "cannot drop\nDETAIL:  owner of table t\n"
        );
    }
}
