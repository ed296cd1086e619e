//! `keel-panel admin backup` and `admin restore`: the panel's state in one
//! archive, taken while the panel runs, and put back into an empty place.
//!
//! A backup is an uncompressed tar, written 0600 under a temporary name and
//! renamed into place only when complete:
//!
//! - `keel-backup.json` first: the format, the backend, the schema version
//!   (the last migration applied), the panel's version, and each other
//!   entry's size and SHA-256, checked again on restore;
//! - `database/panel.sqlite`: a `VACUUM INTO` copy, which SQLite makes
//!   inside one read transaction, so it is the database as of one commit
//!   while writers carry on (WAL mode); or `database/panel.pgdump`: a
//!   `pg_dump --format=custom`, one repeatable-read snapshot;
//! - `data/…`: the data directory's secrets, without which the database is
//!   of little use: `automation.key` (every sealed credential, webhook key
//!   and pending database password opens only with it), `ssh/` (the panel's
//!   key, which every VM trusts), `acme/` (ACME account keys),
//!   `git_known_hosts` (the git servers' host keys the operator vouched
//!   for) and `known_hosts.d/` (rewritable from the database, but cheap to
//!   keep).
//!
//! Not in it: `vms/` (the hypervisor's disks and seeds, backed up with the
//! VMs), `projects/` (git mirrors and installed requirements, fetched again
//! at the next sync) and `runs/` (a run's scratch space).
//!
//! A restore refuses anything but an empty target: the data directory must
//! be missing or empty, the SQLite file must not exist, and the PostgreSQL
//! database must hold no table, sequence or view. The database is put back
//! first (SQLite: into a side file renamed when its integrity check passes;
//! PostgreSQL: `pg_restore --single-transaction`), then the files (0600 in
//! 0700 directories), then the schema is migrated forward by opening the
//! store, so a backup of an older release restores into a newer one.
//!
//! Sits beside `db`: it imports only `config` and `store`.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;

use crate::config::Config;
use crate::store::{Store, StoreError};

/// The archive layout this code writes and reads.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "keel-backup.json";
const SQLITE_ENTRY: &str = "database/panel.sqlite";
const PG_ENTRY: &str = "database/panel.pgdump";
/// What of the data directory a backup carries: files, or whole folders.
const DATA_FILES: &[&str] = &["automation.key", "git_known_hosts"];
const DATA_DIRS: &[&str] = &["ssh", "acme", "known_hosts.d"];

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("opening the restored database: {0}")]
    Store(#[from] StoreError),
    #[error("the database URL is neither sqlite: nor postgres://")]
    UnsupportedUrl,
    #[error("{0} already exists; a backup never overwrites a file")]
    OutputExists(PathBuf),
    #[error("no SQLite database at {0}")]
    NoDatabase(PathBuf),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{0} not found: install PostgreSQL's client programs (Debian: postgresql-client) or put them on PATH")]
    ToolMissing(&'static str),
    #[error("not a Keel backup: {0}")]
    NotABackup(String),
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    #[error("this backup is of a {backup} panel but the configured database is {configured}; restore it into a {backup} database")]
    BackendMismatch {
        backup: &'static str,
        configured: &'static str,
    },
    #[error("the backup's schema version {backup} is newer than this keel-panel knows ({known}); restore it with the release that made it")]
    NewerSchema { backup: i64, known: i64 },
    #[error("restore needs an empty target: {0}")]
    NotEmpty(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// Which database a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of_url(url: &str) -> Result<Backend, BackupError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(BackupError::UnsupportedUrl)
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The newest migration this build knows for the backend.
    fn known_schema(self) -> i64 {
        let m = match self {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        m.iter().map(|m| m.version).max().unwrap_or(0)
    }
}

/// One entry of the archive after the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `keel-backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backend: Backend,
    /// The last migration applied to the database when it was copied.
    pub schema_version: i64,
    pub panel_version: String,
    pub created_at_ms: i64,
    pub entries: Vec<Entry>,
}

/// Takes a backup of the panel `config` names into `out`, which must not
/// exist. The panel may be running.
pub async fn backup(config: &Config, out: &Path) -> Result<Manifest, BackupError> {
    if out.exists() {
        return Err(BackupError::OutputExists(out.to_path_buf()));
    }
    let url = config.database_url();
    let backend = Backend::of_url(&url)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Staging beside the output: same file system, 0700, removed on drop.
    let staging = tempfile::Builder::new()
        .prefix(".keel-backup-")
        .tempdir_in(&parent)
        .map_err(io(format!(
            "creating a staging directory in {}",
            parent.display()
        )))?;
    let (db_entry, db_file, schema_version) = match backend {
        Backend::Sqlite => {
            let file = staging.path().join("panel.sqlite");
            let schema = sqlite_snapshot(&url, &file).await?;
            (SQLITE_ENTRY, file, schema)
        }
        Backend::Postgres => {
            let file = staging.path().join("panel.pgdump");
            let schema = pg_schema_version(&url).await?;
            pg_dump(&url, &file)?;
            (PG_ENTRY, file, schema)
        }
    };
    let mut entries = vec![entry_of(db_entry, &db_file)?];
    let mut sources = vec![db_file];
    for (name, path) in data_files(&config.data_dir)? {
        entries.push(entry_of(&name, &path)?);
        sources.push(path);
    }
    let manifest = Manifest {
        format: FORMAT,
        backend,
        schema_version,
        panel_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        entries,
    };
    let partial = staging.path().join("archive.tar");
    write_archive(&partial, &manifest, &sources)?;
    // A hard link fails if `out` appeared meanwhile: never overwrite.
    std::fs::hard_link(&partial, out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::OutputExists(out.to_path_buf())
        } else {
            io(format!("writing {}", out.display()))(e)
        }
    })?;
    Ok(manifest)
}

/// The data directory's files a backup carries, as (archive name, path),
/// in a stable order. Missing ones are skipped: a panel that never ran a
/// playbook has no `automation.key`.
fn data_files(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, BackupError> {
    let mut out = Vec::new();
    for f in DATA_FILES {
        let p = data_dir.join(f);
        if p.is_file() {
            out.push((format!("data/{f}"), p));
        }
    }
    for d in DATA_DIRS {
        let dir = data_dir.join(d);
        if !dir.is_dir() {
            continue;
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for n in names {
            out.push((format!("data/{d}/{n}"), dir.join(&n)));
        }
    }
    Ok(out)
}

fn entry_of(name: &str, path: &Path) -> Result<Entry, BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut h).map_err(io(format!("reading {}", path.display())))?;
    Ok(Entry {
        path: name.to_string(),
        bytes,
        sha256: hex::encode(h.finalize()),
    })
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn write_archive(path: &Path, manifest: &Manifest, sources: &[PathBuf]) -> Result<(), BackupError> {
    let ctx = || format!("writing {}", path.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(ctx()))?;
    let mut tar = tar::Builder::new(file);
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    let mut h = tar_header(json.len() as u64);
    tar.append_data(&mut h, MANIFEST, json.as_slice())
        .map_err(io(ctx()))?;
    for (entry, src) in manifest.entries.iter().zip(sources) {
        let f = std::fs::File::open(src).map_err(io(format!("reading {}", src.display())))?;
        // The size recorded in the manifest: a file that changed size since
        // would make a torn entry, so it is refused.
        let len = f
            .metadata()
            .map_err(io(format!("reading {}", src.display())))?
            .len();
        if len != entry.bytes {
            return Err(BackupError::Damaged(format!(
                "{} changed while the backup was taken; try again",
                src.display()
            )));
        }
        let mut h = tar_header(len);
        tar.append_data(&mut h, &entry.path, f).map_err(io(ctx()))?;
    }
    let file = tar.into_inner().map_err(io(ctx()))?;
    file.sync_all().map_err(io(ctx()))?;
    Ok(())
}

fn sqlite_options(url: &str) -> Result<sqlx::sqlite::SqliteConnectOptions, BackupError> {
    Ok(sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .busy_timeout(std::time::Duration::from_secs(30)))
}

/// `VACUUM INTO` the file `to`: one read transaction, so a consistent copy
/// while the panel keeps writing. Returns the copy's schema version.
async fn sqlite_snapshot(url: &str, to: &Path) -> Result<i64, BackupError> {
    let opts = sqlite_options(url)?;
    let db_path = opts.get_filename().to_path_buf();
    if !db_path.is_file() {
        return Err(BackupError::NoDatabase(db_path));
    }
    let mut conn = sqlx::SqliteConnection::connect_with(&opts.create_if_missing(false)).await?;
    let target = to
        .to_str()
        .ok_or_else(|| BackupError::NotABackup(format!("{} is not valid UTF-8", to.display())))?;
    // VACUUM INTO takes its target as an expression: a bound parameter.
    sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut copy = sqlx::SqliteConnection::connect_with(
        &sqlite_options(&format!("sqlite://{target}"))?.create_if_missing(false),
    )
    .await?;
    let v = sqlite_schema_version(&mut copy).await?;
    copy.close().await?;
    Ok(v)
}

async fn sqlite_schema_version(conn: &mut sqlx::SqliteConnection) -> Result<i64, BackupError> {
    let has: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if has == 0 {
        return Ok(0);
    }
    Ok(sqlx::query_scalar::<_, Option<i64>>(
        "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&mut *conn)
    .await?
    .unwrap_or(0))
}

async fn pg_schema_version(url: &str) -> Result<i64, BackupError> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let has: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    let v = if has {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&mut conn)
        .await?
        .unwrap_or(0)
    } else {
        0
    };
    conn.close().await?;
    Ok(v)
}

/// A PostgreSQL URL split for the client programs: the URL without its
/// password (for `--dbname`, visible in `ps`) and the password (for
/// `PGPASSWORD`, which is not).
fn pg_conn_args(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, password)) => (
            format!("{}{}{}", &url[..scheme_end], user, &rest[at..]),
            Some(percent_decode(password)),
        ),
        None => (url.to_string(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A PostgreSQL client program: on `PATH`, else the newest under
/// `/usr/lib/postgresql/*/bin` (Debian installs them there).
fn pg_tool(name: &'static str) -> Result<PathBuf, BackupError> {
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .ok_or(BackupError::ToolMissing(name))
}

fn run_pg_tool(
    name: &'static str,
    url: &str,
    args: &[&std::ffi::OsStr],
) -> Result<(), BackupError> {
    let (dbname, password) = pg_conn_args(url);
    let mut cmd = Command::new(pg_tool(name)?);
    cmd.args(args)
        .arg(format!("--dbname={dbname}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().map_err(io(format!("running {name}")))?;
    if !out.status.success() {
        return Err(BackupError::Tool {
            tool: name,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// `pg_dump` in its custom format: one snapshot of the whole database,
/// taken without blocking the panel's writers.
fn pg_dump(url: &str, to: &Path) -> Result<(), BackupError> {
    run_pg_tool(
        "pg_dump",
        url,
        &[
            "--format=custom".as_ref(),
            "--no-owner".as_ref(),
            "--no-privileges".as_ref(),
            "--file".as_ref(),
            to.as_os_str(),
        ],
    )
}

/// What a restore put back.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the files went.
    pub data_dir: PathBuf,
}

/// Restores the archive `from` into the data directory and database that
/// `config` names, both of which must be empty.
pub async fn restore(config: &Config, from: &Path) -> Result<Restored, BackupError> {
    let url = config.database_url();
    let configured = Backend::of_url(&url)?;
    let file = std::fs::File::open(from).map_err(io(format!("opening {}", from.display())))?;
    let mut tar = tar::Archive::new(file);
    let mut entries = tar
        .entries()
        .map_err(io(format!("reading {}", from.display())))?;
    let manifest: Manifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| BackupError::NotABackup("the archive is empty".into()))?
            .map_err(io(format!("reading {}", from.display())))?;
        let path = first
            .path()
            .map_err(io("reading an entry's name"))?
            .into_owned();
        if path != Path::new(MANIFEST) {
            return Err(BackupError::NotABackup(format!(
                "its first entry is {} instead of {MANIFEST}",
                path.display()
            )));
        }
        let mut text = Vec::new();
        first
            .read_to_end(&mut text)
            .map_err(io(format!("reading {}", from.display())))?;
        serde_json::from_slice(&text)
            .map_err(|e| BackupError::NotABackup(format!("{MANIFEST}: {e}")))?
    };
    if manifest.format != FORMAT {
        return Err(BackupError::NotABackup(format!(
            "archive format {} (this keel-panel reads {FORMAT})",
            manifest.format
        )));
    }
    if manifest.backend != configured {
        return Err(BackupError::BackendMismatch {
            backup: manifest.backend.name(),
            configured: configured.name(),
        });
    }
    let known = configured.known_schema();
    if manifest.schema_version > known {
        return Err(BackupError::NewerSchema {
            backup: manifest.schema_version,
            known,
        });
    }
    let data_dir = config.data_dir.clone();
    check_empty_dir(&data_dir)?;
    let sqlite_path = match configured {
        Backend::Sqlite => {
            let p = sqlite_options(&url)?.get_filename().to_path_buf();
            for p in [p.clone(), side_file(&p, "-wal"), side_file(&p, "-journal")] {
                if p.exists() {
                    return Err(BackupError::NotEmpty(format!(
                        "the database file {} exists",
                        p.display()
                    )));
                }
            }
            Some(p)
        }
        Backend::Postgres => {
            check_empty_pg(&url).await?;
            None
        }
    };
    // Everything is read into a staging directory first and checked against
    // the manifest; only a complete, intact archive touches the target.
    let staging = tempfile::Builder::new()
        .prefix("keel-restore-")
        .tempdir()
        .map_err(io("creating a staging directory"))?;
    let mut seen = Vec::new();
    for e in entries {
        let mut e = e.map_err(io(format!("reading {}", from.display())))?;
        let name = e
            .path()
            .map_err(io("reading an entry's name"))?
            .into_owned();
        let name = name
            .to_str()
            .ok_or_else(|| BackupError::Damaged("an entry's name is not UTF-8".into()))?
            .to_string();
        let Some(want) = manifest.entries.iter().find(|m| m.path == name) else {
            return Err(BackupError::Damaged(format!(
                "{name} is not in the manifest"
            )));
        };
        if !safe_relative(&name) || seen.contains(&name) {
            return Err(BackupError::Damaged(format!("unexpected entry {name}")));
        }
        let dest = staging.path().join(&name);
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(io(format!("writing {}", dest.display())))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = e.read(&mut buf).map_err(io(format!("reading {name}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(io(format!("writing {}", dest.display())))?;
            bytes += n as u64;
        }
        if bytes != want.bytes || hex::encode(h.finalize()) != want.sha256 {
            return Err(BackupError::Damaged(format!(
                "{name} does not match its checksum"
            )));
        }
        seen.push(name);
    }
    if let Some(missing) = manifest.entries.iter().find(|m| !seen.contains(&m.path)) {
        return Err(BackupError::Damaged(format!(
            "{} is missing (truncated archive?)",
            missing.path
        )));
    }
    match sqlite_path {
        Some(db) => {
            let src = staging.path().join(SQLITE_ENTRY);
            if !src.is_file() {
                return Err(BackupError::Damaged(format!("{SQLITE_ENTRY} is missing")));
            }
            restore_sqlite(&src, &db).await?;
        }
        None => {
            let src = staging.path().join(PG_ENTRY);
            if !src.is_file() {
                return Err(BackupError::Damaged(format!("{PG_ENTRY} is missing")));
            }
            run_pg_tool(
                "pg_restore",
                &url,
                &[
                    "--no-owner".as_ref(),
                    "--no-privileges".as_ref(),
                    "--exit-on-error".as_ref(),
                    "--single-transaction".as_ref(),
                    src.as_os_str(),
                ],
            )?;
        }
    }
    restore_files(&staging.path().join("data"), &data_dir)?;
    // Migrate forward: a backup of an older release gets this one's schema.
    let store = Store::connect(&url).await?;
    drop(store);
    Ok(Restored { manifest, data_dir })
}

fn side_file(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A relative path of plain names (no `..`, no root, no `.`).
fn safe_relative(name: &str) -> bool {
    let p = Path::new(name);
    p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components().count() >= 2
        && (name.starts_with("database/") || name.starts_with("data/"))
}

fn check_empty_dir(dir: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => match it.next() {
            None => Ok(()),
            Some(e) => {
                let first = e
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(BackupError::NotEmpty(format!(
                    "the data directory {} is not empty (it holds {first}); restore into a new, empty directory (--data-dir)",
                    dir.display()
                )))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("reading {}", dir.display()))(e)),
    }
}

async fn check_empty_pg(url: &str) -> Result<(), BackupError> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let objects: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f') \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' \
         ORDER BY 1 LIMIT 3",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    if objects.is_empty() {
        Ok(())
    } else {
        Err(BackupError::NotEmpty(format!(
            "the PostgreSQL database is not empty (it has {}); create a new, empty database and restore into it",
            objects.join(", ")
        )))
    }
}

async fn restore_sqlite(src: &Path, db: &Path) -> Result<(), BackupError> {
    if let Some(d) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(d)?;
    }
    let side = side_file(db, ".restoring");
    std::fs::copy(src, &side).map_err(io(format!("writing {}", side.display())))?;
    std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("writing {}", side.display())))?;
    let side_url = format!("sqlite://{}", side.display());
    let mut conn =
        sqlx::SqliteConnection::connect_with(&sqlite_options(&side_url)?.create_if_missing(false))
            .await?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    if check != "ok" {
        let _ = std::fs::remove_file(&side);
        return Err(BackupError::Damaged(format!(
            "the database fails SQLite's integrity check: {check}"
        )));
    }
    std::fs::rename(&side, db).map_err(io(format!("writing {}", db.display())))?;
    Ok(())
}

fn create_private_dir(d: &Path) -> Result<(), BackupError> {
    let existed = d.exists();
    std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    if !existed {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("creating {}", d.display())))?;
    }
    Ok(())
}

/// Moves the staged `data/` tree into the data directory: 0700 folders,
/// 0600 files.
fn restore_files(staged: &Path, data_dir: &Path) -> Result<(), BackupError> {
    create_private_dir(data_dir)?;
    if !staged.is_dir() {
        return Ok(());
    }
    let mut stack = vec![staged.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))? {
            let e = e.map_err(io(format!("reading {}", dir.display())))?;
            let rel = e
                .path()
                .strip_prefix(staged)
                .expect("under the staging tree")
                .to_path_buf();
            let dest = data_dir.join(&rel);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                create_private_dir(&dest)?;
                stack.push(e.path());
            } else {
                std::fs::copy(e.path(), &dest)
                    .map_err(io(format!("writing {}", dest.display())))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(format!("writing {}", dest.display())))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_password_goes_to_the_environment_not_the_url() {
        let (url, pw) =
            pg_conn_args("postgres://keel:s%40cret:x@db.example:5432/panel?sslmode=require");
        assert_eq!(url, "postgres://keel@db.example:5432/panel?sslmode=require");
        assert_eq!(pw.as_deref(), Some("s@cret:x"));
        let (url, pw) = pg_conn_args("postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(url, "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(pw, None);
        let (url, pw) = pg_conn_args("postgresql:///panel?host=/run/postgresql");
        assert_eq!(url, "postgresql:///panel?host=/run/postgresql");
        assert_eq!(pw, None);
    }

    #[test]
    fn archive_names_outside_the_two_trees_are_refused() {
        assert!(safe_relative("data/ssh/id_ed25519"));
        assert!(safe_relative("database/panel.sqlite"));
        assert!(!safe_relative("data/../etc/passwd"));
        assert!(!safe_relative("/data/x"));
        assert!(!safe_relative("etc/passwd"));
        assert!(!safe_relative("data"));
    }
}
