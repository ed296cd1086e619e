//! What every handler can reach: the database, the configuration, the
//! password hasher and the request metrics ([`AppState`]). Below the
//! handlers (`api`, `ui`) and the middleware that hand it around.

use std::sync::Arc;

use crate::auth::Passwords;
use crate::config::Config;
use crate::db::Db;
use crate::domain::PanelError;
use crate::metrics::Metrics;
use crate::outbound::Outbound;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "keel_session";

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub passwords: Passwords,
    pub metrics: Arc<Metrics>,
    /// Where connections to user-supplied locations may go.
    pub outbound: Outbound,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Result<AppState, PanelError> {
        let passwords = Passwords::new(&config.auth)?;
        Ok(AppState {
            db,
            passwords,
            metrics: Arc::new(Metrics::default()),
            outbound: Outbound::new(&config.outbound),
            config: Arc::new(config),
        })
    }

    /// A `Set-Cookie` value for a session secret (empty to clear it).
    pub fn session_cookie(&self, secret: &str) -> String {
        let secure = if self.config.secure_cookies() {
            "; Secure"
        } else {
            ""
        };
        let max_age = if secret.is_empty() {
            0
        } else {
            self.config.auth.session_ttl_secs
        };
        format!(
            "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        )
    }
}
