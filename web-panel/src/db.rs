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

use std::str::FromStr;
use std::time::Duration;

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
        Ok(Db { store, reader })
    }

    pub fn store(&self) -> &Store {
        &self.store
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
