//! The panel's store: one trait, two sqlx backends (SQLite embedded,
//! PostgreSQL for several nodes). The backend is chosen once, at startup, from
//! the database URL; everything above this module talks to [`Store`].
//!
//! Layout, bottom up: `backend.rs` holds the [`StoreBackend`] trait, the
//! [`Store`] handle, [`Tx`] and [`StoreError`]; `shared.rs` the SQL and row
//! mapping both backends share; `sqlite.rs` and `postgres.rs` the two
//! implementations; `mod.rs` only [`Store::connect`], which picks one. Each
//! backend owns its migrations under `web-panel/migrations/<backend>/`.

mod backend;
pub mod postgres;
mod shared;
pub mod sqlite;

use std::sync::Arc;

use crate::clock::SystemClock;

pub(crate) use backend::is_unique_violation;
pub use backend::{
    BackendKind, ClaimRequest, LeaseStatus, Store, StoreBackend, StoreError, Tx, TxInner,
};

impl Store {
    /// Opens the database named by `url` and runs its backend's migrations.
    /// `sqlite:` (or `sqlite://`) URLs give the embedded store; `postgres://`
    /// or `postgresql://` the shared one.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend: Arc<dyn StoreBackend> = if url.starts_with("sqlite:") {
            Arc::new(sqlite::SqliteStore::open(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(postgres::PgStore::open(url).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        Ok(Store {
            backend,
            clock: Arc::new(SystemClock),
        })
    }
}

/// Drops the password from a URL for error messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}
