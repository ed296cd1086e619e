//! Upgrades keep the data (issue 18): a database of a released schema,
//! with representative rows in every table, is migrated forward by
//! opening it as the panel does, on SQLite and on a real PostgreSQL, and
//! every value it held is still there.
//!
//! The fixtures under `tests/fixtures/` are a database at schema
//! [`FIXTURE_SCHEMA`] (`schema-0016.sqlite`, and `schema-0016.postgres.sql`,
//! a `pg_dump --column-inserts`), made from `schema-0016-seed.sql` by the
//! ignored test `refresh_schema_fixtures`. At each release a new pair is
//! made for the released schema (docs/reliability.md, "Upgrades").
//!
//! The comparison is generic: every column of every table of the fixture,
//! read as text in a stable order before and after the migration, must
//! be unchanged, except where [`CHANGED_BY_MIGRATIONS`] says a migration
//! rewrites it on purpose. A column or table a migration adds is new data,
//! not compared. Typed reads through the panel's own code (users, jobs,
//! the audit log) check that the migrated rows still decode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_panel::db::Db;
use keel_panel::store::Store;
use sqlx::{Connection as _, Row as _};

/// The schema version (last migration) of the fixtures.
const FIXTURE_SCHEMA: i64 = 16;

/// `(table, column)` pairs that a migration after [`FIXTURE_SCHEMA`]
/// rewrites on purpose; their values are not compared. Empty while no
/// migration changes existing data.
const CHANGED_BY_MIGRATIONS: &[(&str, &str)] = &[];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn sqlite_fixture() -> PathBuf {
    fixtures().join(format!("schema-{FIXTURE_SCHEMA:04}.sqlite"))
}

fn postgres_fixture() -> PathBuf {
    fixtures().join(format!("schema-{FIXTURE_SCHEMA:04}.postgres.sql"))
}

fn seed_sql() -> PathBuf {
    fixtures().join(format!("schema-{FIXTURE_SCHEMA:04}-seed.sql"))
}

/// Every table's rows, each row its columns (name → value as text).
type Contents = BTreeMap<String, Vec<BTreeMap<String, Option<String>>>>;

/// Reads every table but sqlx's own, each column cast to text, rows in the
/// order of all their columns.
async fn contents<DB>(pool: &sqlx::Pool<DB>, tables_sql: &str, columns_sql: &str) -> Contents
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'e> String: sqlx::Encode<'e, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'r> Option<String>: sqlx::Decode<'r, DB>,
{
    let tables: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(tables_sql.to_string()))
        .fetch_all(pool)
        .await
        .unwrap();
    let mut out = Contents::new();
    for t in tables.into_iter().filter(|t| t != "_sqlx_migrations") {
        let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(columns_sql.to_string()))
            .bind(t.clone())
            .fetch_all(pool)
            .await
            .unwrap();
        let select = cols
            .iter()
            .map(|c| format!("CAST(\"{c}\" AS TEXT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let order = (1..=cols.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {select} FROM \"{t}\" ORDER BY {order}"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        let rows = rows
            .iter()
            .map(|r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), r.try_get::<Option<String>, _>(i).unwrap()))
                    .collect()
            })
            .collect();
        out.insert(t, rows);
    }
    out
}

/// Plain tables only: a full-text index (a virtual table and its shadow
/// tables, which hold binary blocks) is derived data, not compared.
const SQLITE_TABLES: &str = "SELECT name FROM pragma_table_list \
     WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name";
const SQLITE_COLUMNS: &str = "SELECT name FROM pragma_table_info($1) ORDER BY cid";
const PG_TABLES: &str =
    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
     AND table_type = 'BASE TABLE' ORDER BY 1";
const PG_COLUMNS: &str = "SELECT column_name::text FROM information_schema.columns \
     WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position";

async fn schema_version_of(store: &Store) -> i64 {
    let sql = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
    match (store.as_sqlite_pool(), store.as_postgres_pool()) {
        (Some(p), _) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        (_, Some(p)) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        _ => unreachable!(),
    }
}

/// What must hold between the fixture as loaded and the migrated database.
fn compare(before: &Contents, after: &Contents) {
    for (table, rows) in before {
        assert!(
            !rows.is_empty(),
            "the fixture's table {table} has no rows: the seed must fill every table"
        );
        let Some(now) = after.get(table) else {
            panic!("migrating forward dropped the table {table}");
        };
        assert_eq!(
            rows.len(),
            now.len(),
            "{table}: {} rows before the migration, {} after",
            rows.len(),
            now.len()
        );
        for (i, (old, new)) in rows.iter().zip(now).enumerate() {
            for (col, v) in old {
                if CHANGED_BY_MIGRATIONS.contains(&(table.as_str(), col.as_str())) {
                    continue;
                }
                let Some(nv) = new.get(col) else {
                    panic!("migrating forward dropped the column {table}.{col}");
                };
                assert_eq!(v, nv, "{table}.{col}, row {i} (in column order)");
            }
        }
    }
}

/// The migrated rows decode through the panel's own types.
async fn typed_reads(url: &str) {
    let db = Db::open(url).await.unwrap();
    let alice = keel_panel::auth::user_by_name(&db, "alice")
        .await
        .unwrap()
        .expect("alice survives the upgrade");
    assert_eq!(alice.email.as_deref(), Some("alice@example.org"));
    let jobs = db
        .store()
        .jobs(&keel_panel::queue::JobFilter::default())
        .await
        .unwrap();
    assert_eq!(jobs.len(), 4, "every job decodes");
    assert!(jobs
        .iter()
        .any(|j| j.state == keel_panel::queue::JobState::Dead && j.attempts == 5));
    let audit = keel_panel::audit::list(
        &db,
        &keel_panel::domain::Principal::system(),
        &keel_panel::audit::AuditFilter::default(),
        keel_panel::domain::Page::default(),
    )
    .await
    .unwrap();
    assert!(audit.items.len() >= 2, "the audit log decodes");
}

#[tokio::test]
async fn upgrade_from_schema_0016_keeps_data_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("panel.db");
    std::fs::copy(sqlite_fixture(), &file).unwrap();
    let url = format!("sqlite://{}", file.display());
    let before = {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let v: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            v, FIXTURE_SCHEMA,
            "the fixture is at schema {FIXTURE_SCHEMA}"
        );
        let c = contents(&pool, SQLITE_TABLES, SQLITE_COLUMNS).await;
        pool.close().await;
        c
    };
    let store = Store::connect(&url)
        .await
        .expect("migrations apply to the fixture");
    let version = schema_version_of(&store).await;
    let after = contents(
        store.as_sqlite_pool().unwrap(),
        SQLITE_TABLES,
        SQLITE_COLUMNS,
    )
    .await;
    eprintln!(
        "SQLite: schema {FIXTURE_SCHEMA} -> {version}, {} tables, {} rows compared",
        before.len(),
        before.values().map(Vec::len).sum::<usize>()
    );
    compare(&before, &after);
    drop(store);
    typed_reads(&url).await;
}

#[tokio::test]
async fn upgrade_from_schema_0016_keeps_data_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    let dump = std::fs::read_to_string(postgres_fixture()).unwrap();
    let before = {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut conn)
            .await
            .expect("the PostgreSQL fixture loads");
        conn.close().await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let v: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            v, FIXTURE_SCHEMA,
            "the fixture is at schema {FIXTURE_SCHEMA}"
        );
        let c = contents(&pool, PG_TABLES, PG_COLUMNS).await;
        pool.close().await;
        c
    };
    let store = Store::connect(&url)
        .await
        .expect("migrations apply to the fixture");
    let version = schema_version_of(&store).await;
    let after = contents(store.as_postgres_pool().unwrap(), PG_TABLES, PG_COLUMNS).await;
    eprintln!(
        "PostgreSQL: schema {FIXTURE_SCHEMA} -> {version}, {} tables, {} rows compared",
        before.len(),
        before.values().map(Vec::len).sum::<usize>()
    );
    compare(&before, &after);
    drop(store);
    typed_reads(&url).await;
}

/// The two fixtures hold the same tables with the same number of rows.
#[tokio::test]
async fn fixtures_agree_on_tables_and_rows() {
    let sqlite = {
        let url = format!("sqlite://{}?mode=ro", sqlite_fixture().display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        contents(&pool, SQLITE_TABLES, SQLITE_COLUMNS).await
    };
    let dump = std::fs::read_to_string(postgres_fixture()).unwrap();
    for (table, rows) in &sqlite {
        let inserts = dump
            .lines()
            .filter(|l| l.starts_with(&format!("INSERT INTO public.{table} ")))
            .count();
        assert_eq!(inserts, rows.len(), "{table}: rows in the two fixtures");
    }
}

/// The migrations up to [`FIXTURE_SCHEMA`] only, copied out of the tree.
async fn migrator_upto(backend: &str, dir: &Path) -> sqlx::migrate::Migrator {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        let v: i64 = name.split('_').next().unwrap().parse().unwrap();
        if v <= FIXTURE_SCHEMA {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(dir.to_path_buf())
        .await
        .unwrap()
}

/// Remakes both fixtures from the seed: run at a release, with
/// `cargo nextest run -p keel-panel --test schema_upgrade --run-ignored only`
/// after raising [`FIXTURE_SCHEMA`] and writing the new seed.
#[tokio::test]
#[ignore = "writes the fixtures; run by hand at a release"]
async fn refresh_schema_fixtures() {
    let seed = std::fs::read_to_string(seed_sql()).unwrap();
    // SQLite: migrate, seed, VACUUM INTO the fixture.
    let tmp = tempfile::tempdir().unwrap();
    let mig = tmp.path().join("sqlite");
    std::fs::create_dir(&mig).unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        tmp.path().join("fixture.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    migrator_upto("sqlite", &mig)
        .await
        .run(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(seed.clone()))
        .execute(&pool)
        .await
        .unwrap();
    let out = sqlite_fixture();
    let _ = std::fs::remove_file(&out);
    sqlx::query("VACUUM INTO $1")
        .bind(out.display().to_string())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // PostgreSQL: migrate, seed, pg_dump as INSERTs.
    let server = keel_panel::testsupport::PgServer::shared();
    let url = server.fresh_database().await;
    let mig = tmp.path().join("postgres");
    std::fs::create_dir(&mig).unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    migrator_upto("postgres", &mig)
        .await
        .run(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(seed))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let pg_dump = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pg_dump")))
        .filter(|p| p.exists())
        .max()
        .expect("pg_dump");
    let dump = std::process::Command::new(pg_dump)
        .args([
            "--format=plain",
            "--column-inserts",
            "--no-owner",
            "--no-privileges",
            "--no-comments",
            &format!("--dbname={url}"),
        ])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    // psql meta-commands (`\restrict`, newer pg_dump) are not SQL.
    let text: String = String::from_utf8(dump.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(postgres_fixture(), text).unwrap();
}
