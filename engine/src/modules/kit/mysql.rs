//! What `mysql_db` and `mysql_user` share: the `login_*` arguments, SQL
//! quoting, and running a batch of SQL through the `mariadb`/`mysql` client
//! on the target over the task's connection.
//!
//! Nothing secret ever reaches a command line: the script the host runs is
//! fixed text, and everything variable travels on stdin. Stdin carries two
//! lines (base64 client option files: the implicit-admin one, possibly
//! empty, then the login one) followed by the SQL. The script writes the
//! option files into a fresh 0700 directory (umask 077), prefixed with the
//! `config_file` when that exists, and removes the directory on exit. The
//! client runs with `--defaults-file` so our `[client]` section, appended
//! last, wins over `~/.my.cnf` the way community.mysql's explicit login
//! arguments do.
//!
//! A query batch is split into named sections: each starts with a
//! `SELECT '<token> <name>'` marker row, so one client run answers several
//! questions in one round trip.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;

use crate::modules::args::{ModuleArgs, Param};
use crate::modules::{ModuleError, ModuleResult, TaskContext};
use crate::shell::quote;

/// Quotes a value as a SQL string literal: `it's` → `'it\'s'`.
///
/// Backslash escapes are used for every byte the server or the client would
/// otherwise read specially (quote, backslash, NUL, newline, carriage
/// return, Ctrl-Z), so the literal stays on one line. Each batch first
/// clears `NO_BACKSLASH_ESCAPES` from the session's `sql_mode`
/// ([`SESSION_PREAMBLE`]), which makes this form correct whatever the
/// server's configured mode.
pub fn sql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier (database, table, column): `` a`b `` → `` `a``b` ``.
pub fn sql_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// An account name as SQL: `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", sql_string(user), sql_string(host))
}

/// Makes the session's string literals mean what [`sql_string`] wrote,
/// whatever `sql_mode` the server runs with.
pub const SESSION_PREAMBLE: &str =
    "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');\n";

/// Quotes a value for a client option file (`password="..."`).
pub fn option_value(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The connection arguments every community.mysql module takes.
#[derive(Clone, Default)]
pub struct Login {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: i64,
    pub unix_socket: Option<String>,
    pub check_implicit_admin: bool,
    pub config_file: String,
    pub connect_timeout: i64,
}

// The password never reaches Debug output.
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("unix_socket", &self.unix_socket)
            .field("check_implicit_admin", &self.check_implicit_admin)
            .field("config_file", &self.config_file)
            .finish()
    }
}

/// The arguments [`Login::parse`] reads, for a module's
/// [`Params`](crate::modules::args::Params).
pub const LOGIN_PARAMS: &[Param] = &[
    &["login_user"],
    &["login_password"],
    &["login_host"],
    &["login_port"],
    &["login_unix_socket"],
    &["check_implicit_admin"],
    &["config_file"],
    &["connect_timeout"],
    &["client_cert"],
    &["client_key"],
    &["ca_cert"],
    &["check_hostname"],
];

impl Login {
    /// Reads the `login_*` arguments (and the TLS ones we accept but leave
    /// to the option file).
    pub fn parse(a: &mut ModuleArgs<'_>) -> Result<Login, ModuleError> {
        let l = Login {
            user: a.string(&["login_user"])?,
            password: a.string(&["login_password"])?,
            host: a
                .string(&["login_host"])?
                .unwrap_or_else(|| "localhost".into()),
            port: a.int(&["login_port"])?.unwrap_or(3306),
            unix_socket: a.string(&["login_unix_socket"])?,
            check_implicit_admin: a.bool(&["check_implicit_admin"], false)?,
            config_file: a
                .string(&["config_file"])?
                .unwrap_or_else(|| "~/.my.cnf".into()),
            connect_timeout: a.int(&["connect_timeout"])?.unwrap_or(30),
        };
        a.ignore(&["client_cert", "client_key", "ca_cert", "check_hostname"]);
        Ok(l)
    }

    /// The `[client]` section for the login arguments.
    pub fn option_file(&self) -> String {
        let mut s = String::from("\n[client]\n");
        if let Some(u) = &self.user {
            s.push_str(&format!("user={}\n", option_value(u)));
        }
        if let Some(p) = &self.password {
            s.push_str(&format!("password={}\n", option_value(p)));
        }
        self.push_target(&mut s);
        s
    }

    /// The `[client]` section for `check_implicit_admin`: root, no password.
    pub fn implicit_admin_option_file(&self) -> String {
        let mut s = String::from("\n[client]\nuser=root\npassword=\"\"\n");
        self.push_target(&mut s);
        s
    }

    fn push_target(&self, s: &mut String) {
        if let Some(sock) = &self.unix_socket {
            s.push_str(&format!(
                "host=localhost\nsocket={}\nprotocol=socket\n",
                option_value(sock)
            ));
        } else {
            s.push_str(&format!("host={}\n", option_value(&self.host)));
            s.push_str(&format!("port={}\n", self.port));
        }
        // Only the `mysql` client knows this option; `mysqldump` would
        // reject it under `[client]`.
        s.push_str(&format!(
            "[mysql]\nconnect-timeout={}\n",
            self.connect_timeout
        ));
    }

    /// The `config_file` as a shell word (`~/` expands to `$HOME`).
    fn config_word(&self) -> String {
        match self.config_file.strip_prefix("~/") {
            Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
            None => quote(&self.config_file),
        }
    }

    /// Who we tried to log in as, for error messages.
    fn describe(&self) -> String {
        match &self.user {
            Some(u) => format!("login_user '{u}'"),
            None => "the configured login user".into(),
        }
    }
}

/// Why a SQL batch did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("neither the mariadb nor the mysql client is installed on the host")]
    NoClient,
    #[error(
        "unable to connect to database, check login_user and login_password are correct \
         or {config} has the credentials ({who}). Error: {reason}"
    )]
    Connect {
        config: String,
        who: String,
        reason: String,
    },
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Module(#[from] ModuleError),
}

impl SqlError {
    /// The task outcome: a transport problem stays an error (the host is
    /// unreachable), anything the database said is a task failure.
    pub fn into_result(self) -> Result<ModuleResult, ModuleError> {
        match self {
            SqlError::Module(e) => Err(e),
            e => Ok(ModuleResult::failed(e.to_string())),
        }
    }
}

/// The client error codes that mean "could not log in / reach the server".
const CONNECT_ERRORS: &[&str] = &[
    "ERROR 1045",
    "ERROR 1698",
    "ERROR 2002",
    "ERROR 2003",
    "ERROR 2005",
    "ERROR 2006",
    "ERROR 2013",
    "ERROR 1130",
    "ERROR 1044",
];

/// How a batch runs the client: the SQL file on stdin, rows out.
const BATCH_RUN: &str =
    r#""$cli" --defaults-file="$f" --batch --skip-column-names --raw < "$d/batch.sql""#;

/// The fixed script around `run`, a shell fragment that may use `$cli`
/// (the client), `$f` (the option file to log in with) and `$d` (the
/// private temporary directory, which holds `batch.sql`). See the module
/// docs for its stdin.
fn client_script(login: &Login, run: &str) -> String {
    let cfg = login.config_word();
    format!(
        r#"umask 077
cli=$(command -v mariadb || command -v mysql) || {{ echo KEEL-NO-MYSQL-CLIENT >&2; exit 127; }}
d=$(mktemp -d "${{TMPDIR:-/tmp}}/keel-mysql.XXXXXXXX") || exit 1
trap 'rm -rf "$d"' EXIT
trap 'exit 1' HUP INT TERM
IFS= read -r a
IFS= read -r b
cfg={cfg}
: > "$d/login.cnf"
if [ -r "$cfg" ]; then cat -- "$cfg" > "$d/login.cnf"; fi
cp "$d/login.cnf" "$d/admin.cnf"
printf '%s' "$b" | base64 -d >> "$d/login.cnf" || exit 1
cat > "$d/batch.sql"
f="$d/login.cnf"
if [ -n "$a" ]; then
  printf '%s' "$a" | base64 -d >> "$d/admin.cnf" || exit 1
  if "$cli" --defaults-file="$d/admin.cnf" --batch -e 'SELECT 1' </dev/null >/dev/null 2>&1; then
    f="$d/admin.cnf"
  fi
fi
{run}
rc=$?
exit $rc
"#
    )
}

/// Runs `run` (see [`client_script`]) with `sql` as `$d/batch.sql`; the
/// client's stdout on success. `secrets` are blanked out of error text.
pub async fn run_client(
    ctx: &TaskContext<'_>,
    login: &Login,
    run: &str,
    sql: &[u8],
    secrets: &[&str],
) -> Result<String, SqlError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let admin = if login.check_implicit_admin {
        b64.encode(login.implicit_admin_option_file())
    } else {
        String::new()
    };
    let mut stdin = format!("{admin}\n{}\n", b64.encode(login.option_file())).into_bytes();
    stdin.extend_from_slice(sql);
    let out = ctx.run(client_script(login, run), Some(stdin)).await?;
    let stderr = out.stderr_str();
    if out.rc == 0 {
        return Ok(out.stdout_str());
    }
    if stderr.contains("KEEL-NO-MYSQL-CLIENT") {
        return Err(SqlError::NoClient);
    }
    let mut reason = stderr.trim().to_string();
    if reason.is_empty() {
        reason = format!("rc={}: {}", out.rc, out.stdout_str().trim());
    }
    let mut all_secrets: Vec<&str> = secrets.to_vec();
    if let Some(p) = &login.password {
        all_secrets.push(p);
    }
    let reason = redact(&reason, &all_secrets);
    if CONNECT_ERRORS.iter().any(|c| reason.starts_with(c)) {
        return Err(SqlError::Connect {
            config: login.config_file.clone(),
            who: login.describe(),
            reason,
        });
    }
    Err(SqlError::Query(reason))
}

/// The rows each section of a batch printed, by section name.
#[derive(Debug, Default)]
pub struct Sections {
    sections: HashMap<String, Vec<Vec<String>>>,
}

impl Sections {
    /// Splits client output on `<token> <name>` marker lines.
    pub fn parse(token: &str, stdout: &str) -> Sections {
        let mut sections: HashMap<String, Vec<Vec<String>>> = HashMap::new();
        let mut current: Option<String> = None;
        let prefix = format!("{token} ");
        for line in stdout.lines() {
            if let Some(name) = line.strip_prefix(&prefix) {
                current = Some(name.to_string());
                sections.entry(name.to_string()).or_default();
                continue;
            }
            if let Some(name) = &current {
                sections
                    .get_mut(name)
                    .expect("section exists")
                    .push(line.split('\t').map(str::to_string).collect());
            }
        }
        Sections { sections }
    }

    /// A section's rows (none when it printed nothing or never ran).
    pub fn rows(&self, name: &str) -> &[Vec<String>] {
        self.sections.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first column of a section's first row.
    pub fn scalar(&self, name: &str) -> Option<&str> {
        self.rows(name)
            .first()
            .and_then(|r| r.first())
            .map(String::as_str)
    }
}

/// A batch of SQL statements under construction.
pub struct Batch {
    token: String,
    sql: String,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            token: format!("@@KEEL-{:016x}@@", rand::random::<u64>()),
            sql: SESSION_PREAMBLE.to_string(),
        }
    }

    /// Starts a named section: the rows that follow belong to it.
    pub fn section(&mut self, name: &str) -> &mut Self {
        let marker = format!("{} {name}", self.token);
        self.sql
            .push_str(&format!("SELECT {};\n", sql_string(&marker)));
        self
    }

    /// Adds one statement (without its `;`).
    pub fn stmt(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the batch (one round trip). `secrets` are blanked out of any
    /// error text, since a syntax error quotes the statement it choked on.
    pub async fn run(
        &self,
        ctx: &TaskContext<'_>,
        login: &Login,
        secrets: &[&str],
    ) -> Result<Sections, SqlError> {
        let out = run_client(ctx, login, BATCH_RUN, self.sql.as_bytes(), secrets).await?;
        Ok(Sections::parse(&self.token, &out))
    }
}

/// Blanks every (non-empty) secret out of `text`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        t = t.replace(s, "********");
        // The escaped form is what a quoted statement would show.
        let esc = sql_string(s);
        let esc = &esc[1..esc.len() - 1];
        if esc != *s {
            t = t.replace(esc, "********");
        }
    }
    t
}

/// The server flavour, from `SELECT VERSION()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    pub fn from_version(v: &str) -> Flavor {
        if v.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_string_escapes_every_special_byte() {
        let cases = [
            ("plain", "'plain'"),
            ("it's", r"'it\'s'"),
            (r"back\slash", r"'back\\slash'"),
            ("two\nlines\r", r"'two\nlines\r'"),
            ("nul\0ctrlz\x1a", r"'nul\0ctrlz\Z'"),
            (r"\'; DROP DATABASE x; --", r"'\\\'; DROP DATABASE x; --'"),
            ("", "''"),
            ("ünï\"cödé`", "'ünï\"cödé`'"),
        ];
        for (input, want) in cases {
            assert_eq!(sql_string(input), want, "input {input:?}");
        }
    }

    #[test]
    fn identifiers_double_backticks() {
        assert_eq!(sql_ident("app"), "`app`");
        assert_eq!(sql_ident("a`b"), "`a``b`");
        assert_eq!(sql_ident("x`; DROP"), "`x``; DROP`");
        assert_eq!(account("o'k", "%"), r"'o\'k'@'%'");
    }

    #[test]
    fn option_values_are_quoted() {
        assert_eq!(option_value(r#"p"a\ss"#), r#""p\"a\\ss""#);
        assert_eq!(option_value("a#b c"), "\"a#b c\"");
    }

    #[test]
    fn sections_split_on_markers() {
        let out = "T one\na\tb\nc\td\nT empty\nT two\nx\n";
        let s = Sections::parse("T", out);
        assert_eq!(s.rows("one").len(), 2);
        assert_eq!(s.rows("one")[1], vec!["c", "d"]);
        assert!(s.rows("empty").is_empty());
        assert_eq!(s.scalar("two"), Some("x"));
        assert!(s.rows("missing").is_empty());
    }

    #[test]
    fn secrets_travel_on_stdin_never_in_the_script() {
        let l = Login {
            user: Some("dbowner".into()),
            password: Some("hunter2".into()),
            config_file: "~/.my.cnf".into(),
            check_implicit_admin: true,
            host: "db.example".into(),
            port: 3306,
            ..Default::default()
        };
        let script = client_script(&l, BATCH_RUN);
        for secret in ["hunter2", "dbowner", "db.example"] {
            assert!(!script.contains(secret), "{secret} in the script");
        }
        assert!(script.contains("cfg=\"$HOME\"/.my.cnf"));
        let opts = l.option_file();
        assert!(
            opts.contains("user=\"dbowner\"\npassword=\"hunter2\"\n"),
            "{opts}"
        );
        assert!(opts.contains("host=\"db.example\"\nport=3306\n"), "{opts}");
        assert!(!l.implicit_admin_option_file().contains("hunter2"));
    }

    #[test]
    fn login_debug_hides_the_password() {
        let l = Login {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{l:?}").contains("hunter2"));
        assert!(!redact("near 'hunter2' at line 1", &["hunter2"]).contains("hunter2"));
    }
}
