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
use crate::provision::HostDrivers;

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
    /// Each hypervisor host's driver, for the console page (a libvirt
    /// VM's serial line); empty where this process has none, and then
    /// consoles go over SSH.
    pub drivers: HostDrivers,
    /// Ends the open consoles when the panel shuts down.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Result<AppState, PanelError> {
        let passwords = Passwords::new(&config.auth)?;
        Ok(AppState {
            db,
            passwords,
            metrics: Arc::new(Metrics::default()),
            outbound: Outbound::new(&config.outbound),
            drivers: HostDrivers::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            config: Arc::new(config),
        })
    }

    /// The same state with each hypervisor host's driver (the console's
    /// serial lines).
    pub fn with_drivers(mut self, drivers: HostDrivers) -> AppState {
        self.drivers = drivers;
        self
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
