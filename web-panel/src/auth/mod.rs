//! Accounts and authentication: local users with argon2id password hashes
//! (hashed on the blocking pool, never on the async runtime), login
//! throttling per account and per source address, API tokens and browser
//! sessions (both stored only as SHA-256 hashes of random 32-byte secrets),
//! and users created on the fly for the trusted SSO header. The HTTP layer
//! turns a request into a [`Principal`] through these functions.

use std::net::IpAddr;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit::{self, Change};
use crate::config::AuthConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{Page, Paged, PanelError, Principal};
use crate::services::model::User;
use crate::{execute, fetch_all, fetch_opt, scalar};

/// Password hashing with the configured argon2id cost.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// A hash of nothing, verified when the user does not exist so that a
    /// failed login takes as long either way.
    dummy: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .finish()
    }
}

impl Passwords {
    pub fn new(cfg: &AuthConfig) -> Result<Passwords, PanelError> {
        let params = Params::new(cfg.argon2_memory_kib, cfg.argon2_iterations, 1, None)
            .map_err(|e| PanelError::Internal(format!("argon2 parameters: {e}")))?;
        let dummy = hash_blocking(&params, "not a password")?;
        Ok(Passwords { params, dummy })
    }

    /// Hashes on the blocking pool: argon2 is deliberately slow.
    pub async fn hash(&self, password: String) -> Result<String, PanelError> {
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .map_err(|e| PanelError::Internal(format!("hashing task: {e}")))?
    }

    /// Checks `password` against a stored PHC string (or the dummy hash).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, PanelError> {
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).ok()?;
            Some(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|e| PanelError::Internal(format!("hashing task: {e}")))?;
        Ok(real && ok.unwrap_or(false))
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, PanelError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash: PasswordHash = argon
        .hash_password(password.as_bytes())
        .map_err(|e| PanelError::Internal(format!("hashing a password: {e}")))?;
    Ok(hash.to_string())
}

/// A random 32-byte secret, hex-encoded.
pub fn random_secret() -> String {
    let mut buf = [0u8; 32];
    getrandom::getrandom(&mut buf).expect("the OS random source");
    hex::encode(buf)
}

/// What the database keeps of a token or session secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn validate_user_name(name: &str) -> Result<(), PanelError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(PanelError::invalid(
            "name",
            "user names are 1-64 characters: lower-case letters, digits, '.', '_', '-', '@', starting with a letter or digit",
        ))
    }
}

fn validate_password(password: &str) -> Result<(), PanelError> {
    if password.chars().count() < 8 {
        return Err(PanelError::invalid(
            "password",
            "passwords need at least 8 characters",
        ));
    }
    Ok(())
}

const USER_COLS: &str = "id, name, email, is_admin, disabled, created_at";

#[derive(sqlx::FromRow)]
struct Credentials {
    id: i64,
    name: String,
    is_admin: bool,
    disabled: bool,
    password_hash: Option<String>,
}

/// Creates a local account. Platform admins only (the CLI acts as one).
pub async fn create_user(
    db: &Db,
    passwords: &Passwords,
    who: &Principal,
    name: &str,
    email: Option<&str>,
    password: Option<String>,
    is_admin: bool,
) -> Result<User, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins create users".into(),
        ));
    }
    validate_user_name(name)?;
    let hash = match password {
        Some(p) => {
            validate_password(&p)?;
            Some(passwords.hash(p).await?)
        }
        None => None,
    };
    let mut tx = db.begin().await?;
    let user = insert_user(
        &mut tx_conn(&mut tx),
        db.now(),
        who,
        name,
        email,
        hash,
        is_admin,
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

async fn insert_user(
    conn: &mut Conn<'_>,
    now: i64,
    who: &Principal,
    name: &str,
    email: Option<&str>,
    hash: Option<String>,
    is_admin: bool,
) -> Result<User, PanelError> {
    let user = fetch_opt!(
        conn,
        User,
        "INSERT INTO users (name, email, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO NOTHING RETURNING id, name, email, is_admin, disabled, created_at",
        name,
        email,
        hash,
        is_admin,
        now
    )?
    .ok_or_else(|| PanelError::Conflict(format!("user {name:?} already exists")))?;
    audit::record(
        conn,
        now,
        who,
        Change::new("user.create", "user", user.id).after(&user),
    )
    .await?;
    Ok(user)
}

/// Sets a user's password (an admin resetting it, or the CLI).
pub async fn set_password(
    db: &Db,
    passwords: &Passwords,
    who: &Principal,
    user_id: i64,
    password: String,
) -> Result<(), PanelError> {
    if !who.is_admin && who.user_id != user_id {
        return Err(PanelError::Forbidden(
            "only platform admins reset other users' passwords".into(),
        ));
    }
    validate_password(&password)?;
    let hash = passwords.hash(password).await?;
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let n = execute!(
        &mut conn,
        "UPDATE users SET password_hash = $1 WHERE id = $2",
        hash,
        user_id
    )?;
    if n == 0 {
        return Err(PanelError::NotFound("user"));
    }
    // A new password ends every session of the account.
    execute!(
        &mut conn,
        "DELETE FROM sessions WHERE user_id = $1",
        user_id
    )?;
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("user.password_reset", "user", user_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Disables or enables an account. Platform admins only, never their own.
/// A disabled account cannot log in, its sessions end, its tokens stop
/// working, and the servers it could log in to get an `access` run that
/// removes it.
pub async fn set_disabled(
    db: &Db,
    who: &Principal,
    user_id: i64,
    disabled: bool,
) -> Result<User, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins disable users".into(),
        ));
    }
    if who.user_id == user_id && disabled {
        return Err(PanelError::Conflict(
            "you cannot disable your own account".into(),
        ));
    }
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = fetch_opt!(
        &mut conn,
        User,
        sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE id = $1")),
        user_id
    )?
    .ok_or(PanelError::NotFound("user"))?;
    execute!(
        &mut conn,
        "UPDATE users SET disabled = $1 WHERE id = $2",
        disabled,
        user_id
    )?;
    if disabled {
        execute!(
            &mut conn,
            "DELETE FROM sessions WHERE user_id = $1",
            user_id
        )?;
    }
    let after = User {
        disabled,
        ..before.clone()
    };
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new(action, "user", user_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    crate::services::access::sync_user(&mut tx, who, user_id).await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn user_by_name(db: &Db, name: &str) -> Result<Option<User>, PanelError> {
    let mut rc = db.read().await?;
    Ok(fetch_opt!(
        &mut rc.conn(),
        User,
        sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE name = $1")),
        name
    )?)
}

pub async fn list_users(db: &Db, who: &Principal, page: Page) -> Result<Paged<User>, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins list users".into(),
        ));
    }
    let page = page.checked()?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let total = scalar!(&mut conn, i64, "SELECT COUNT(*) FROM users")?.unwrap_or(0);
    let items = fetch_all!(
        &mut conn,
        User,
        sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users ORDER BY id LIMIT $1 OFFSET $2"
        )),
        page.limit,
        page.offset
    )?;
    Ok(Paged {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    })
}

/// Checks a user name and password, with throttling: after
/// `login_max_failures` failures the account and the source address are
/// both blocked for `login_block_secs`, whichever was attacked.
///
/// Each attempt is charged to both keys *before* the password is checked,
/// in one transaction whose upserts queue on the rows (PostgreSQL's row
/// locks, SQLite's one writer), so however many attempts arrive at once,
/// from however many nodes, no more than `login_max_failures` per key and
/// window reach the password hash. A successful login clears the
/// account's count and gives the address its attempt back.
pub async fn login(
    db: &Db,
    cfg: &AuthConfig,
    passwords: &Passwords,
    name: &str,
    password: String,
    source: IpAddr,
) -> Result<Principal, PanelError> {
    let now = db.now();
    let keys = [format!("user:{name}"), format!("ip:{source}")];
    let throttled = |until: i64| PanelError::Throttled {
        retry_after_secs: (until - now + 999) / 1000,
    };
    // A cheap read first, so a flood against a blocked key costs no writes.
    {
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        for key in &keys {
            let until = scalar!(
                &mut conn,
                i64,
                "SELECT blocked_until FROM login_throttle WHERE key = $1",
                key.as_str()
            )?
            .unwrap_or(0);
            if until > now {
                return Err(throttled(until));
            }
        }
    }
    let block_ms = cfg.login_block_secs * 1000;
    let mut charged = [0i64; 2];
    {
        let mut tx = db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        for (i, key) in keys.iter().enumerate() {
            // Attempts older than a block window no longer count; a blocked
            // key is left as it is.
            let row = fetch_opt!(
                &mut conn,
                ThrottleRow,
                "INSERT INTO login_throttle (key, failures, blocked_until, updated_at) VALUES ($1, 1, 0, $2) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN login_throttle.blocked_until > $2 THEN login_throttle.failures \
                     WHEN login_throttle.updated_at < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
                   updated_at = CASE WHEN login_throttle.blocked_until > $2 THEN login_throttle.updated_at ELSE $2 END \
                 RETURNING failures, blocked_until",
                key.as_str(),
                now,
                now - block_ms
            )?
            .ok_or_else(|| PanelError::Internal("login_throttle upsert returned nothing".into()))?;
            if row.blocked_until > now {
                return Err(throttled(row.blocked_until));
            }
            if row.failures > cfg.login_max_failures {
                // Concurrent attempts used up the window before this one.
                execute!(
                    &mut conn,
                    "UPDATE login_throttle SET failures = 0, blocked_until = $2 WHERE key = $1",
                    key.as_str(),
                    now + block_ms
                )?;
                tx.commit().await?;
                return Err(throttled(now + block_ms));
            }
            charged[i] = row.failures;
        }
        tx.commit().await?;
    }
    let creds = {
        let mut rc = db.read().await?;
        fetch_opt!(
            &mut rc.conn(),
            Credentials,
            "SELECT id, name, is_admin, disabled, password_hash FROM users WHERE name = $1",
            name
        )?
    };
    let hash = creds.as_ref().and_then(|c| c.password_hash.clone());
    let ok = passwords.verify(password, hash).await?;
    match creds {
        Some(c) if ok && !c.disabled => {
            let mut tx = db.begin().await?;
            let mut conn = tx_conn(&mut tx);
            execute!(
                &mut conn,
                "DELETE FROM login_throttle WHERE key = $1",
                keys[0].as_str()
            )?;
            execute!(
                &mut conn,
                "UPDATE login_throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END \
                 WHERE key = $1",
                keys[1].as_str()
            )?;
            tx.commit().await?;
            Ok(Principal {
                user_id: c.id,
                name: c.name,
                is_admin: c.is_admin,
            })
        }
        _ => {
            // The attempt is already counted; the one that reached the
            // limit starts the block.
            let mut tx = db.begin().await?;
            let mut conn = tx_conn(&mut tx);
            for (key, n) in keys.iter().zip(charged) {
                if n >= cfg.login_max_failures {
                    execute!(
                        &mut conn,
                        "UPDATE login_throttle SET failures = 0, blocked_until = $2 WHERE key = $1",
                        key.as_str(),
                        now + block_ms
                    )?;
                }
            }
            tx.commit().await?;
            Err(PanelError::BadCredentials)
        }
    }
}

#[derive(sqlx::FromRow)]
struct ThrottleRow {
    failures: i64,
    blocked_until: i64,
}

/// An API token as listed (the secret itself is shown only once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
}

/// Creates a token for `who`, valid for `days`. Returns the row and the
/// secret, which is not stored and cannot be shown again.
pub async fn create_token(
    db: &Db,
    cfg: &AuthConfig,
    who: &Principal,
    name: &str,
    days: i64,
) -> Result<(ApiToken, String), PanelError> {
    if !(1..=cfg.token_max_days).contains(&days) {
        return Err(PanelError::invalid(
            "expires_in_days",
            format!("tokens last 1 to {} days", cfg.token_max_days),
        ));
    }
    let name = crate::domain::check_name("name", name, 100)?;
    let secret = format!("keel_{}", random_secret());
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let token = fetch_opt!(
        &mut conn,
        ApiToken,
        "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, user_id, name, created_at, expires_at, last_used_at",
        who.user_id,
        name,
        secret_hash(&secret),
        now,
        now + days * 86_400_000
    )?
    .ok_or_else(|| PanelError::Internal("token insert returned nothing".into()))?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("token.create", "api_token", token.id).after(&token),
    )
    .await?;
    tx.commit().await?;
    Ok((token, secret))
}

pub async fn list_tokens(db: &Db, who: &Principal) -> Result<Vec<ApiToken>, PanelError> {
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        ApiToken,
        "SELECT id, user_id, name, created_at, expires_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY id",
        who.user_id
    )?)
}

/// Revokes one of `who`'s tokens (admins may revoke anyone's).
pub async fn revoke_token(db: &Db, who: &Principal, token_id: i64) -> Result<(), PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let n = execute!(
        &mut conn,
        "DELETE FROM api_tokens WHERE id = $1 AND (user_id = $2 OR $3)",
        token_id,
        who.user_id,
        who.is_admin
    )?;
    if n == 0 {
        return Err(PanelError::NotFound("token"));
    }
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("token.revoke", "api_token", token_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    id: i64,
    name: String,
    is_admin: bool,
}

/// The user behind a bearer token, if it is known, unexpired and the
/// account is enabled.
pub async fn authenticate_token(db: &Db, secret: &str) -> Result<Option<Principal>, PanelError> {
    let mut rc = db.read().await?;
    let row = fetch_opt!(
        &mut rc.conn(),
        PrincipalRow,
        "SELECT u.id, u.name, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.expires_at > $2 AND NOT u.disabled",
        secret_hash(secret),
        db.now()
    )?;
    Ok(row.map(|r| Principal {
        user_id: r.id,
        name: r.name,
        is_admin: r.is_admin,
    }))
}

/// A new browser session: the cookie secret and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub secret: String,
    pub csrf: String,
}

pub async fn create_session(
    db: &Db,
    cfg: &AuthConfig,
    user_id: i64,
) -> Result<NewSession, PanelError> {
    let secret = random_secret();
    let csrf = random_secret();
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    // Expired rows of anyone go when a session starts, keeping the table small.
    execute!(
        &mut conn,
        "DELETE FROM sessions WHERE expires_at <= $1",
        now
    )?;
    execute!(
        &mut conn,
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        secret_hash(&secret),
        user_id,
        csrf.as_str(),
        now,
        now + cfg.session_ttl_secs * 1000
    )?;
    tx.commit().await?;
    Ok(NewSession { secret, csrf })
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    name: String,
    is_admin: bool,
    csrf_token: String,
}

/// The user and CSRF token of a live session.
pub async fn session(db: &Db, secret: &str) -> Result<Option<(Principal, String)>, PanelError> {
    let mut rc = db.read().await?;
    let row = fetch_opt!(
        &mut rc.conn(),
        SessionRow,
        "SELECT u.id, u.name, u.is_admin, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 AND NOT u.disabled",
        secret_hash(secret),
        db.now()
    )?;
    Ok(row.map(|r| {
        (
            Principal {
                user_id: r.id,
                name: r.name,
                is_admin: r.is_admin,
            },
            r.csrf_token,
        )
    }))
}

/// Logout: the session row goes, so the cookie is worthless even if kept.
pub async fn end_session(db: &Db, secret: &str) -> Result<(), PanelError> {
    let mut tx = db.begin().await?;
    execute!(
        &mut tx_conn(&mut tx),
        "DELETE FROM sessions WHERE token_hash = $1",
        secret_hash(secret)
    )?;
    tx.commit().await?;
    Ok(())
}

/// The user named by a trusted SSO header, created on first sight.
pub async fn sso_user(db: &Db, name: &str) -> Result<Principal, PanelError> {
    validate_user_name(name)?;
    if let Some(u) = user_by_name(db, name).await? {
        if u.disabled {
            return Err(PanelError::Forbidden("this account is disabled".into()));
        }
        return Ok(Principal {
            user_id: u.id,
            name: u.name,
            is_admin: u.is_admin,
        });
    }
    let mut tx = db.begin().await?;
    let sso = Principal {
        user_id: 0,
        name: "sso".to_string(),
        is_admin: true,
    };
    let created = insert_user(
        &mut tx_conn(&mut tx),
        db.now(),
        &sso,
        name,
        None,
        None,
        false,
    )
    .await;
    match created {
        Ok(u) => {
            tx.commit().await?;
            Ok(Principal {
                user_id: u.id,
                name: u.name,
                is_admin: u.is_admin,
            })
        }
        // Two first requests raced; the other one created the account.
        Err(PanelError::Conflict(_)) => {
            tx.rollback().await?;
            let u = user_by_name(db, name)
                .await?
                .ok_or(PanelError::NotFound("user"))?;
            Ok(Principal {
                user_id: u.id,
                name: u.name,
                is_admin: u.is_admin,
            })
        }
        Err(e) => Err(e),
    }
}
