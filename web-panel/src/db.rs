//! The panel's view of the database: the queue's [`Store`] (which owns the
//! write transaction and the migrations) plus a read path, and a small
//! two-backend query layer. Panel SQL is written once in the subset both
//! SQLite and PostgreSQL accept (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`); the few statements that must differ (row locks) pick
//! their text from [`Conn::is_pg`]. Rows decode through `sqlx::FromRow`
//! structs whose fields are `i64`, `bool`, `String` and options of those,
//! which both drivers decode.
//!
//! Ground level of the panel's SQL: it knows only the store below it and
//! the domain's error type; `audit`, `alloc`, `auth`, `lifecycle`,
//! `queue::log`, `services` and the flow all build their statements on it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection};

use crate::store::{BackendKind, Store, StoreError, Tx};

use crate::domain::PanelError;

/// Database handle for the panel. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    store: Store,
    /// SQLite only: readers beside the store's single writer connection, so
    /// page views do not queue behind write transactions.
    reader: Option<SqlitePool>,
    /// Totals of long lists, shared by this node's requests.
    counts: Arc<CountCache>,
}

/// Row counts too costly to take on every request (the total of a list of
/// thousands), kept per query for a few seconds. Each node keeps its own;
/// nothing invalidates an entry, so a cached total may lag the table by up
/// to the caller's time-to-live plus one refresh.
#[derive(Debug, Default)]
pub struct CountCache {
    entries: Mutex<HashMap<String, CachedCount>>,
}

#[derive(Debug, Clone, Copy)]
struct CachedCount {
    value: i64,
    at: Instant,
    /// A refresh is under way; other callers keep the old value meanwhile.
    refreshing: bool,
}

/// What [`CountCache::get`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// Younger than the time-to-live.
    Fresh(i64),
    /// Older: the caller should refresh it (it is now marked as refreshing,
    /// so concurrent callers get `Fresh` of the old value instead).
    Stale(i64),
    Missing,
}

impl CountCache {
    /// Entries kept at most; past that the oldest half is dropped.
    const MAX_ENTRIES: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedCount>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str, ttl: Duration) -> Cached {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(key) else {
            return Cached::Missing;
        };
        let age = e.at.elapsed();
        // A refresh that never came back (its task died) is retried after
        // a while.
        if age < ttl || (e.refreshing && age < ttl * 6) {
            return Cached::Fresh(e.value);
        }
        e.refreshing = true;
        Cached::Stale(e.value)
    }

    /// Stores a count, or with `None` forgets it (the list got short enough
    /// to count on every request again).
    pub fn put(&self, key: String, value: Option<i64>) {
        let mut entries = self.lock();
        let Some(value) = value else {
            entries.remove(&key);
            return;
        };
        if entries.len() >= Self::MAX_ENTRIES && !entries.contains_key(&key) {
            let mut ages: Vec<Instant> = entries.values().map(|e| e.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            entries.retain(|_, e| e.at > cut);
        }
        entries.insert(
            key,
            CachedCount {
                value,
                at: Instant::now(),
                refreshing: false,
            },
        );
    }

    /// Lets the next caller refresh a count whose refresh failed.
    pub fn refresh_failed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.refreshing = false;
        }
    }
}

/// A connection on either backend, borrowed from a transaction or a pool.
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Pg(&'c mut PgConnection),
}

impl Conn<'_> {
    pub fn is_pg(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }
}

/// A pooled connection for reads.
pub enum ReadConn {
    Sqlite(PoolConnection<Sqlite>),
    Pg(PoolConnection<Postgres>),
}

impl ReadConn {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            ReadConn::Sqlite(c) => Conn::Sqlite(c),
            ReadConn::Pg(c) => Conn::Pg(c),
        }
    }
}

/// The caller's statements inside a store transaction.
pub fn tx_conn(tx: &mut Tx) -> Conn<'_> {
    // `as_sqlite` borrows mutably; decide the backend first.
    if tx.as_sqlite().is_some() {
        Conn::Sqlite(tx.as_sqlite().expect("checked above"))
    } else {
        Conn::Pg(tx.as_postgres().expect("a Tx is SQLite or PostgreSQL"))
    }
}

impl Db {
    /// Opens the database named by `url` (migrating it) for the panel.
    pub async fn open(url: &str) -> Result<Db, PanelError> {
        let store = Store::connect(url).await?;
        Db::from_store(store, url).await
    }

    /// Wraps an already-open store; `url` must be the one it was opened with.
    pub async fn from_store(store: Store, url: &str) -> Result<Db, PanelError> {
        let reader = match store.kind() {
            BackendKind::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(StoreError::from)?
                    .busy_timeout(Duration::from_secs(30));
                Some(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .connect_with(opts)
                        .await
                        .map_err(StoreError::from)?,
                )
            }
            BackendKind::Postgres => None,
        };
        Ok(Db {
            store,
            reader,
            counts: Arc::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This node's cache of list totals.
    pub fn counts(&self) -> &CountCache {
        &self.counts
    }

    pub fn now(&self) -> i64 {
        self.store.now()
    }

    pub fn is_pg(&self) -> bool {
        self.store.kind() == BackendKind::Postgres
    }

    /// A write transaction (the queue's, so jobs can be enqueued in it).
    pub async fn begin(&self) -> Result<Tx, PanelError> {
        Ok(self.store.begin().await?)
    }

    /// A connection for reads outside any transaction.
    pub async fn read(&self) -> Result<ReadConn, PanelError> {
        if let Some(pool) = &self.reader {
            return Ok(ReadConn::Sqlite(pool.acquire().await?));
        }
        let pool = self
            .store
            .as_postgres_pool()
            .expect("a store without a SQLite reader is PostgreSQL");
        Ok(ReadConn::Pg(pool.acquire().await?))
    }
}

/// `fetch_all!(conn, RowType, sql, args…)`: every row, decoded.
#[macro_export]
#[doc(hidden)]
macro_rules! fetch_all {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match &mut *$conn {
            $crate::db::Conn::Sqlite(c) => {
                sqlx::query_as::<sqlx::Sqlite, $ty>($sql)$(.bind($arg))*.fetch_all(&mut **c).await
            }
            $crate::db::Conn::Pg(c) => {
                sqlx::query_as::<sqlx::Postgres, $ty>($sql)$(.bind($arg))*.fetch_all(&mut **c).await
            }
        }
    };
}

/// `fetch_opt!(conn, RowType, sql, args…)`: the first row, if any.
#[macro_export]
#[doc(hidden)]
macro_rules! fetch_opt {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match &mut *$conn {
            $crate::db::Conn::Sqlite(c) => {
                sqlx::query_as::<sqlx::Sqlite, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **c).await
            }
            $crate::db::Conn::Pg(c) => {
                sqlx::query_as::<sqlx::Postgres, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **c).await
            }
        }
    };
}

/// `scalar!(conn, T, sql, args…)`: one value from the first row, if any.
#[macro_export]
#[doc(hidden)]
macro_rules! scalar {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match &mut *$conn {
            $crate::db::Conn::Sqlite(c) => {
                sqlx::query_scalar::<sqlx::Sqlite, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **c).await
            }
            $crate::db::Conn::Pg(c) => {
                sqlx::query_scalar::<sqlx::Postgres, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **c).await
            }
        }
    };
}

/// `execute!(conn, sql, args…)`: rows affected.
#[macro_export]
#[doc(hidden)]
macro_rules! execute {
    ($conn:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match &mut *$conn {
            $crate::db::Conn::Sqlite(c) => sqlx::query::<sqlx::Sqlite>($sql)
                $(.bind($arg))*
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()),
            $crate::db::Conn::Pg(c) => sqlx::query::<sqlx::Postgres>($sql)
                $(.bind($arg))*
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()),
        }
    };
}
