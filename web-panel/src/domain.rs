//! The words every part of the domain layer shares: who acts
//! ([`Principal`]), how a request fails ([`PanelError`]), and which page of
//! a list it asks for ([`Page`], [`Paged`]). It sits just above the store
//! and below everything that takes a `Principal`: the query layer (`db`),
//! `audit`, `alloc`, `auth`, `lifecycle`, `services` and the flow, so none of
//! those has to import the domain functions of `services` to name them.

use serde::Deserialize;

use crate::store::StoreError;

/// Errors from the domain layer. The HTTP layer maps each variant to one
/// status code; `Database`/`Store`/`Internal` are never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid user name or password")]
    BadCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PoolExhausted(String),
    #[error("{0}")]
    QuotaExceeded(String),
    /// No hypervisor host may take the server (full, draining, down, or
    /// not serving its site or type); the message says why for each.
    #[error("{0}")]
    NoCapacity(String),
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    /// A service the panel depends on (the LDAP directory) cannot be read
    /// now; trying later may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PanelError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        PanelError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Whether the underlying database error is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        let e = match self {
            PanelError::Database(e) | PanelError::Store(StoreError::Database(e)) => e,
            _ => return false,
        };
        matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
    }
}

/// Checks a display name (a site's, an SSH key's): trimmed, 1 to `max`
/// characters, starting with a letter or digit, then letters, digits,
/// spaces and `. _ - @ + ( ) :`. No control characters, no markup, nothing
/// that breaks a layout. Returns the trimmed name, or a 422 naming
/// `field`.
pub fn check_name<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, PanelError> {
    let name = value.trim();
    let count = name.chars().count();
    if count == 0 {
        return Err(PanelError::invalid(field, "a name is required"));
    }
    if count > max {
        return Err(PanelError::invalid(
            field,
            format!("a name has at most {max} characters; this one has {count}"),
        ));
    }
    let first_ok = name.chars().next().is_some_and(char::is_alphanumeric);
    let bad = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || " ._-@+():".contains(*c)));
    match (first_ok, bad) {
        (_, Some(c)) => Err(PanelError::invalid(
            field,
            format!(
                "{c:?} is not allowed in a name: use letters, digits, spaces and . _ - @ + ( ) :"
            ),
        )),
        (false, None) => Err(PanelError::invalid(
            field,
            "a name starts with a letter or a digit",
        )),
        (true, None) => Ok(name),
    }
}

/// Who is acting. Built by the HTTP layer from a token, a session or the
/// SSO header; the CLI uses [`Principal::system`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
}

impl Principal {
    /// The command line acting as a platform admin.
    pub fn system() -> Principal {
        Principal {
            user_id: 0,
            name: "system".to_string(),
            is_admin: true,
        }
    }

    /// `Some(user_id)` for audit rows; the system actor has none.
    pub fn actor_id(&self) -> Option<i64> {
        (self.user_id != 0).then_some(self.user_id)
    }
}

/// Paging for list endpoints: `?limit=&offset=`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Page {
    #[serde(default = "Page::default_limit")]
    pub limit: i64,
    #[serde(default)]
    pub offset: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: Page::default_limit(),
            offset: 0,
        }
    }
}

impl Page {
    pub const MAX_LIMIT: i64 = 500;

    fn default_limit() -> i64 {
        50
    }

    /// Checks the bounds: 1..=500 rows from a non-negative offset.
    pub fn checked(self) -> Result<Page, PanelError> {
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            return Err(PanelError::invalid(
                "limit",
                "limit must be between 1 and 500",
            ));
        }
        if self.offset < 0 {
            return Err(PanelError::invalid("offset", "offset must not be negative"));
        }
        Ok(self)
    }
}

/// One page of a list, with the total count for the filter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[cfg(test)]
mod name_tests {
    use super::*;

    fn refused(v: &str) -> String {
        match check_name("name", v, 100) {
            Err(PanelError::Invalid { field, message }) => {
                assert_eq!(field, "name");
                message
            }
            other => panic!("{v:?} gave {other:?}"),
        }
    }

    #[test]
    fn names_are_bounded_and_plain() {
        assert_eq!(check_name("name", "  Main Site ", 63).unwrap(), "Main Site");
        assert_eq!(
            check_name("name", "ann@laptop (work)", 100).unwrap(),
            "ann@laptop (work)"
        );
        assert_eq!(
            check_name("name", "physics-web.2", 63).unwrap(),
            "physics-web.2"
        );
        assert!(refused(&"x".repeat(100_000)).contains("at most 100 characters"));
        assert!(refused("<script>alert(1)</script>").contains("'<' is not allowed"));
        assert!(refused("   ").contains("required"));
        assert!(refused("-dash").contains("starts with a letter or a digit"));
        assert!(refused("tab\there").contains("not allowed"));
    }
}
