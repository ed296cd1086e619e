//! The objects platform admins define once and templates name: credentials
//! (secrets sealed at rest, write-only through every interface), projects,
//! inventories and notification targets. Every function takes the caller
//! and refuses anyone but a platform admin; every change writes its audit
//! row in the same transaction, and audit rows never carry a secret.
//!
//! User-supplied locations (a git URL, an HTTP inventory URL, a webhook
//! URL, paths inside a project) are checked here, when they are saved, so
//! a run never meets one that could be read as an option or leave the
//! project (`check_git_url`, `check_relative`).

use serde::Deserialize;
use serde_json::json;

use super::model::*;
use super::secrets::Sealer;
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::{execute, fetch_all, fetch_opt, scalar};

pub(crate) fn require_admin(who: &Principal) -> Result<(), PanelError> {
    if who.is_admin {
        Ok(())
    } else {
        Err(PanelError::Forbidden(
            "only platform admins manage projects, credentials, inventories and notifications"
                .into(),
        ))
    }
}

pub(crate) fn check_name(name: &str) -> Result<String, PanelError> {
    let n = name.trim();
    if n.is_empty() || n.len() > 100 || n.chars().any(|c| c.is_control()) {
        return Err(PanelError::invalid(
            "name",
            "a name is 1 to 100 printable characters",
        ));
    }
    Ok(n.to_string())
}

/// A unique-constraint violation as a 409 naming the object.
pub(crate) fn unique(what: &str, name: &str) -> impl FnOnce(PanelError) -> PanelError {
    let msg = format!("a {what} named {name:?} exists already");
    move |e| {
        if e.is_unique_violation() {
            PanelError::Conflict(msg)
        } else {
            e
        }
    }
}

/// The rows of this file, as every create and update reads them back.
trait Catalogued: serde::Serialize + Sized {
    /// The audit rows' object type; actions are `<KIND>.<verb>`.
    const KIND: &'static str;
    /// The object in a name-clash message.
    const NOUN: &'static str;
    async fn read(conn: &mut Conn<'_>, id: i64) -> Result<Self, PanelError>;
}

impl Catalogued for Credential {
    const KIND: &'static str = "credential";
    const NOUN: &'static str = "credential";
    async fn read(conn: &mut Conn<'_>, id: i64) -> Result<Self, PanelError> {
        credential_on(conn, id).await
    }
}

impl Catalogued for Project {
    const KIND: &'static str = "project";
    const NOUN: &'static str = "project";
    async fn read(conn: &mut Conn<'_>, id: i64) -> Result<Self, PanelError> {
        project_on(conn, id).await
    }
}

impl Catalogued for InventorySource {
    const KIND: &'static str = "inventory";
    const NOUN: &'static str = "inventory";
    async fn read(conn: &mut Conn<'_>, id: i64) -> Result<Self, PanelError> {
        inventory_on(conn, id).await
    }
}

impl Catalogued for NotificationTarget {
    const KIND: &'static str = "notification_target";
    const NOUN: &'static str = "notification target";
    async fn read(conn: &mut Conn<'_>, id: i64) -> Result<Self, PanelError> {
        target_on(conn, id).await
    }
}

/// The id an `INSERT … RETURNING id` of a `T` gave; a clash of its unique
/// name is a 409 naming it.
fn inserted<T: Catalogued, E: Into<PanelError>>(
    r: Result<Option<i64>, E>,
    name: &str,
) -> Result<i64, PanelError> {
    r.map_err(Into::into)
        .map_err(unique(T::NOUN, name))?
        .ok_or_else(|| PanelError::Internal("no id returned".into()))
}

/// A name clash of an `UPDATE` of a `T` as a 409.
fn updated<T: Catalogued, E: Into<PanelError>>(
    r: Result<u64, E>,
    name: &str,
) -> Result<(), PanelError> {
    r.map(|_| ())
        .map_err(Into::into)
        .map_err(unique(T::NOUN, name))
}

/// How every change here ends: the row read back in the change's
/// transaction, its audit row (`before` is the row as it was, for an
/// update), the commit; returns the row as it is now.
async fn written<T: Catalogued>(
    mut tx: crate::store::Tx,
    who: &Principal,
    now: i64,
    verb: &str,
    id: i64,
    before: Option<&T>,
) -> Result<T, PanelError> {
    let after = {
        let mut conn = tx_conn(&mut tx);
        let after = T::read(&mut conn, id).await?;
        let action = format!("{}.{verb}", T::KIND);
        let mut change = Change::new(&action, T::KIND, id);
        if let Some(b) = before {
            change = change.before(b);
        }
        audit::record(&mut conn, now, who, change.after(&after)).await?;
        after
    };
    tx.commit().await?;
    Ok(after)
}

/// A path inside a project: relative, no `..`, nothing an option parser
/// could take for a flag.
pub fn check_relative(field: &str, path: &str) -> Result<String, PanelError> {
    let p = path.trim();
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.starts_with('-')
        || p.contains('\0')
        || std::path::Path::new(p).components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if bad {
        return Err(PanelError::invalid(
            field,
            "a path relative to the project, without `..`",
        ));
    }
    Ok(p.to_string())
}

/// A git URL git may fetch: `https://`, `http://`, `ssh://`, `git://`,
/// `file://`, scp-like `user@host:path`, or an absolute path. Never an
/// option (`-…`) or a remote helper (`ext::…`, `fd::…`).
pub fn check_git_url(url: &str) -> Result<String, PanelError> {
    let u = url.trim();
    let schemes = ["https://", "http://", "ssh://", "git://", "file://"];
    let scp_like = {
        // user@host:path, with no scheme and no helper.
        let (head, _) = u.split_once(':').unwrap_or(("", ""));
        !head.is_empty() && !head.contains('/') && head.contains('@') && !u.contains("::")
    };
    let ok = !u.starts_with('-')
        && !u.contains("::")
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
        && (schemes.iter().any(|s| u.starts_with(s)) || scp_like || u.starts_with('/'));
    if !ok {
        return Err(PanelError::invalid(
            "git_url",
            "a git URL: https://, http://, ssh://, git://, file://, user@host:path or an absolute path",
        ));
    }
    Ok(u.to_string())
}

/// A branch, tag or commit name: no option, no whitespace, no `..`.
pub fn check_git_ref(r: &str) -> Result<String, PanelError> {
    let r = r.trim();
    let ok = !r.is_empty()
        && !r.starts_with('-')
        && !r.contains("..")
        && !r
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if !ok {
        return Err(PanelError::invalid(
            "git_ref",
            "a branch, tag or commit name",
        ));
    }
    Ok(r.to_string())
}

/// An `http://` or `https://` URL.
pub fn check_http_url(field: &str, url: &str) -> Result<String, PanelError> {
    let u = url.trim();
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() > 8
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(PanelError::invalid(field, "an http:// or https:// URL"));
    }
    Ok(u.to_string())
}

// ---------------------------------------------------------------- credentials

/// A new credential. `secret` is the private key (OpenSSH text) or the
/// password; `passphrase` the key's passphrase, if any.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct NewCredential {
    pub name: String,
    pub kind: CredentialKind,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub vault_id: Option<String>,
    pub secret: String,
    #[serde(default)]
    pub passphrase: Option<String>,
}

/// What is sealed in `credentials.sealed`.
#[derive(serde::Serialize, Deserialize)]
pub(crate) struct SealedCredential {
    pub secret: String,
    #[serde(default)]
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

pub(crate) fn credential_aad(kind: CredentialKind) -> String {
    format!("credential:{kind}")
}

fn seal_credential(sealer: &Sealer, c: &NewCredential) -> Result<String, PanelError> {
    if c.secret.is_empty() {
        return Err(PanelError::invalid("secret", "the secret is empty"));
    }
    // The transport decides what it can load; here only the shape of a
    // PEM private key is checked, so a pasted public key is caught early.
    let t = c.secret.trim();
    if c.kind == CredentialKind::SshKey
        && !(t.starts_with("-----BEGIN ") && t.contains("PRIVATE KEY-----"))
    {
        return Err(PanelError::invalid(
            "secret",
            "not a private key (-----BEGIN OPENSSH PRIVATE KEY-----)",
        ));
    }
    let text = serde_json::to_string(&SealedCredential {
        secret: c.secret.clone(),
        passphrase: c.passphrase.clone().filter(|p| !p.is_empty()),
    })
    .map_err(|e| PanelError::Internal(e.to_string()))?;
    sealer
        .seal(&credential_aad(c.kind), &text)
        .map_err(|e| PanelError::Internal(e.to_string()))
}

const CREDENTIAL_COLS: &str = "id, name, kind, username, vault_id, created_at, updated_at";

pub async fn create_credential(
    db: &Db,
    sealer: &Sealer,
    who: &Principal,
    c: &NewCredential,
) -> Result<Credential, PanelError> {
    require_admin(who)?;
    let name = check_name(&c.name)?;
    let sealed = seal_credential(sealer, c)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO credentials (name, kind, username, vault_id, sealed, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        name.as_str(),
        c.kind,
        c.username.as_deref().filter(|s| !s.is_empty()),
        c.vault_id.as_deref().filter(|s| !s.is_empty()),
        sealed,
        who.actor_id(),
        now
    );
    let id = inserted::<Credential, _>(id, &name)?;
    written(tx, who, now, "create", id, None::<&Credential>).await
}

/// Replaces a credential's secret (the old one is never shown).
pub async fn replace_secret(
    db: &Db,
    sealer: &Sealer,
    who: &Principal,
    id: i64,
    c: &NewCredential,
) -> Result<Credential, PanelError> {
    require_admin(who)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let old = credential_on(&mut conn, id).await?;
    if old.kind != c.kind {
        return Err(PanelError::invalid("kind", "a credential keeps its kind"));
    }
    let name = check_name(&c.name)?;
    let sealed = seal_credential(sealer, c)?;
    let n = execute!(
        &mut conn,
        "UPDATE credentials SET name = $1, username = $2, vault_id = $3, sealed = $4, updated_at = $5 WHERE id = $6",
        name.as_str(),
        c.username.as_deref().filter(|s| !s.is_empty()),
        c.vault_id.as_deref().filter(|s| !s.is_empty()),
        sealed,
        now,
        id
    );
    updated::<Credential, _>(n, &name)?;
    written(tx, who, now, "replace", id, Some(&old)).await
}

async fn credential_on(conn: &mut Conn<'_>, id: i64) -> Result<Credential, PanelError> {
    fetch_opt!(
        conn,
        Credential,
        sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = $1"
        )),
        id
    )?
    .ok_or(PanelError::NotFound("credential"))
}

pub async fn list_credentials(db: &Db, who: &Principal) -> Result<Vec<Credential>, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        Credential,
        sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials ORDER BY name"
        ))
    )?)
}

pub async fn get_credential(db: &Db, who: &Principal, id: i64) -> Result<Credential, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    credential_on(&mut rc.conn(), id).await
}

pub async fn delete_credential(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    require_admin(who)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let old = credential_on(&mut conn, id).await?;
    let used = scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM template_credentials WHERE credential_id = $1",
        id
    )?
    .unwrap_or(0);
    if used > 0 {
        return Err(PanelError::Conflict(format!(
            "credential {:?} is used by {used} template(s)",
            old.name
        )));
    }
    execute!(&mut conn, "DELETE FROM credentials WHERE id = $1", id)?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("credential.delete", "credential", id).before(&old),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The opened secret of a credential, for a run or a git fetch only.
pub(crate) async fn open_credential(
    conn: &mut Conn<'_>,
    sealer: &Sealer,
    id: i64,
) -> Result<(Credential, SealedCredential), PanelError> {
    let cred = credential_on(conn, id).await?;
    let sealed = scalar!(
        conn,
        String,
        "SELECT sealed FROM credentials WHERE id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("credential"))?;
    let text = sealer
        .open(&credential_aad(cred.kind), &sealed)
        .map_err(|e| PanelError::Internal(format!("credential {:?}: {e}", cred.name)))?;
    let opened: SealedCredential = serde_json::from_str(text.expose())
        .map_err(|_| PanelError::Internal(format!("credential {:?} is malformed", cred.name)))?;
    Ok((cred, opened))
}

// ------------------------------------------------------------------- projects

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewProject {
    pub name: String,
    pub kind: ProjectKind,
    /// `directory`: an absolute path on the panel host.
    #[serde(default)]
    pub path: Option<String>,
    /// `git`: the repository.
    #[serde(default)]
    pub git_url: Option<String>,
    /// `git`: a branch, tag or commit (default: the remote's HEAD).
    #[serde(default)]
    pub git_ref: Option<String>,
    /// `git`: an SSH-key credential to fetch with.
    #[serde(default)]
    pub deploy_key: Option<i64>,
}

struct ProjectFields {
    path: Option<String>,
    git_url: Option<String>,
    git_ref: Option<String>,
    deploy_key: Option<i64>,
}

async fn project_fields(conn: &mut Conn<'_>, p: &NewProject) -> Result<ProjectFields, PanelError> {
    match p.kind {
        ProjectKind::Directory => {
            let path = p.path.as_deref().unwrap_or("").trim().to_string();
            if !path.starts_with('/') || !std::path::Path::new(&path).is_dir() {
                return Err(PanelError::invalid(
                    "path",
                    "an absolute path of a directory on the panel host",
                ));
            }
            Ok(ProjectFields {
                path: Some(path),
                git_url: None,
                git_ref: None,
                deploy_key: None,
            })
        }
        ProjectKind::Git => {
            let url = check_git_url(p.git_url.as_deref().unwrap_or(""))?;
            let r = match p.git_ref.as_deref().filter(|r| !r.trim().is_empty()) {
                Some(r) => Some(check_git_ref(r)?),
                None => None,
            };
            if let Some(k) = p.deploy_key {
                let kind = scalar!(
                    conn,
                    CredentialKind,
                    "SELECT kind FROM credentials WHERE id = $1",
                    k
                )?;
                if kind != Some(CredentialKind::SshKey) {
                    return Err(PanelError::invalid(
                        "deploy_key",
                        "the deploy key must be an SSH-key credential",
                    ));
                }
            }
            Ok(ProjectFields {
                path: None,
                git_url: Some(url),
                git_ref: r,
                deploy_key: p.deploy_key,
            })
        }
    }
}

const PROJECT_COLS: &str =
    "id, name, kind, path, git_url, git_ref, deploy_key, revision, created_at, updated_at";

/// A project as anyone may see it: a password or token in its git URL is
/// hidden (`git::redact`); git itself gets [`project_git_url`].
pub(crate) async fn project_on(conn: &mut Conn<'_>, id: i64) -> Result<Project, PanelError> {
    fetch_opt!(
        conn,
        Project,
        sqlx::AssertSqlSafe(format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1")),
        id
    )?
    .map(shown_project)
    .ok_or(PanelError::NotFound("project"))
}

fn shown_project(mut p: Project) -> Project {
    p.git_url = p.git_url.as_deref().map(super::git::redact);
    p
}

/// A git project's URL as saved, credentials included: for git only.
pub(crate) async fn project_git_url(
    conn: &mut Conn<'_>,
    id: i64,
) -> Result<Option<String>, PanelError> {
    Ok(scalar!(
        conn,
        Option<String>,
        "SELECT git_url FROM projects WHERE id = $1",
        id
    )?
    .flatten())
}

pub async fn create_project(
    db: &Db,
    who: &Principal,
    p: &NewProject,
) -> Result<Project, PanelError> {
    require_admin(who)?;
    let name = check_name(&p.name)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let f = project_fields(&mut conn, p).await?;
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO projects (name, kind, path, git_url, git_ref, deploy_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        name.as_str(),
        p.kind,
        f.path,
        f.git_url,
        f.git_ref,
        f.deploy_key,
        now
    );
    let id = inserted::<Project, _>(id, &name)?;
    written(tx, who, now, "create", id, None::<&Project>).await
}

pub async fn update_project(
    db: &Db,
    who: &Principal,
    id: i64,
    p: &NewProject,
) -> Result<Project, PanelError> {
    require_admin(who)?;
    let name = check_name(&p.name)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let old = project_on(&mut conn, id).await?;
    // A client that sends back the URL as it was shown (its password
    // hidden) keeps the saved one.
    let saved = project_git_url(&mut conn, id).await?;
    let mut p = p.clone();
    if p.git_url.is_some() && p.git_url == old.git_url && saved != old.git_url {
        p.git_url = saved;
    }
    let f = project_fields(&mut conn, &p).await?;
    let n = execute!(
        &mut conn,
        "UPDATE projects SET name = $1, kind = $2, path = $3, git_url = $4, git_ref = $5, deploy_key = $6, \
         updated_at = $7 WHERE id = $8",
        name.as_str(),
        p.kind,
        f.path,
        f.git_url,
        f.git_ref,
        f.deploy_key,
        now,
        id
    );
    updated::<Project, _>(n, &name)?;
    written(tx, who, now, "update", id, Some(&old)).await
}

/// Brings a project up to date now rather than at its next run: a git
/// project is fetched and its ref resolved (the checkout of that commit is
/// made ready and the commit recorded as the project's revision); a
/// directory project is only checked to still exist. Either way its
/// requirements files are installed (`requirements.rs`), and a failed
/// install is the sync's error, with what the installer said.
pub async fn sync_project(
    db: &Db,
    sealer: &Sealer,
    data_dir: &std::path::Path,
    outbound: &crate::outbound::Outbound,
    who: &Principal,
    id: i64,
) -> Result<Project, PanelError> {
    require_admin(who)?;
    let (project, url, deploy_key) = {
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        let project = project_on(&mut conn, id).await?;
        let url = project_git_url(&mut conn, id).await?;
        let key = match project.deploy_key {
            Some(k) => Some(super::secrets::Secret::new(
                open_credential(&mut conn, sealer, k).await?.1.secret,
            )),
            None => None,
        };
        (project, url, key)
    };
    let revision = match project.kind {
        ProjectKind::Directory => {
            let dir = project.path.as_deref().unwrap_or("");
            if !std::path::Path::new(dir).is_dir() {
                return Err(PanelError::Unavailable(format!(
                    "project {:?}: {dir} is not a directory any more",
                    project.name
                )));
            }
            install_requirements(data_dir, &project, None, std::path::Path::new(dir)).await?;
            None
        }
        ProjectKind::Git => {
            let url = url.unwrap_or_default();
            let repo = super::git::Repo {
                outbound,
                project_id: project.id,
                url: &url,
                git_ref: project.git_ref.as_deref(),
                deploy_key: deploy_key.as_ref(),
            };
            let (dir, sha) =
                super::git::checkout(data_dir, &repo, None)
                    .await
                    .map_err(|e| match e {
                        super::git::GitError::Refused(
                            r @ (crate::outbound::OutboundError::Internal { .. }
                            | crate::outbound::OutboundError::NotAllowed { .. }),
                        ) => PanelError::invalid("git_url", r.to_string()),
                        e => PanelError::Unavailable(format!("project {:?}: {e}", project.name)),
                    })?;
            install_requirements(data_dir, &project, Some(&sha), &dir).await?;
            Some(sha)
        }
    };
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    if let Some(sha) = &revision {
        execute!(
            &mut conn,
            "UPDATE projects SET revision = $1 WHERE id = $2",
            sha.as_str(),
            id
        )?;
    }
    written(tx, who, now, "sync", id, Some(&project)).await
}

/// A sync's install of the project's requirements: what the installer
/// said on failure is the error's text.
async fn install_requirements(
    data_dir: &std::path::Path,
    project: &Project,
    revision: Option<&str>,
    root: &std::path::Path,
) -> Result<(), PanelError> {
    super::requirements::install(data_dir, project.id, revision, root, |_| {})
        .await
        .map(|_| ())
        .map_err(|e| {
            PanelError::Unavailable(super::git::redact(&format!(
                "project {:?}: {e}",
                project.name
            )))
        })
}

pub async fn list_projects(db: &Db, who: &Principal) -> Result<Vec<Project>, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        Project,
        sqlx::AssertSqlSafe(format!("SELECT {PROJECT_COLS} FROM projects ORDER BY name"))
    )?
    .into_iter()
    .map(shown_project)
    .collect())
}

pub async fn get_project(db: &Db, who: &Principal, id: i64) -> Result<Project, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    project_on(&mut rc.conn(), id).await
}

pub async fn delete_project(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    require_admin(who)?;
    delete_unused(
        db,
        who,
        "project",
        "projects",
        id,
        &["SELECT COUNT(*) FROM job_templates WHERE project_id = $1"],
    )
    .await
}

/// Deletes a row no template uses, with its audit row.
async fn delete_unused(
    db: &Db,
    who: &Principal,
    what: &'static str,
    table: &str,
    id: i64,
    uses: &[&str],
) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let name = scalar!(
        &mut conn,
        String,
        sqlx::AssertSqlSafe(format!("SELECT name FROM {table} WHERE id = $1")),
        id
    )?
    .ok_or(PanelError::NotFound(what))?;
    for q in uses {
        let n = scalar!(&mut conn, i64, sqlx::AssertSqlSafe(q.to_string()), id)?.unwrap_or(0);
        if n > 0 {
            return Err(PanelError::Conflict(format!(
                "{what} {name:?} is used by {n} template(s)"
            )));
        }
    }
    execute!(
        &mut conn,
        sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE id = $1")),
        id
    )?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new(&format!("{what}.delete"), what, id).before(&json!({ "name": name })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------- inventories

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewInventory {
    pub name: String,
    pub kind: InventoryKind,
    /// `project_file`: the project and the path inside it.
    #[serde(default)]
    pub project_id: Option<i64>,
    #[serde(default)]
    pub path: Option<String>,
    /// `http`: the URL of a dynamic-inventory JSON document.
    #[serde(default)]
    pub url: Option<String>,
    /// `panel`: only servers of this site / server type / carrying this
    /// tag (all that are given must match).
    #[serde(default)]
    pub filter_site: Option<String>,
    #[serde(default)]
    pub filter_server_type: Option<String>,
    #[serde(default)]
    pub filter_tag: Option<String>,
}

const INVENTORY_COLS: &str =
    "id, name, kind, project_id, path, url, filter_site, filter_server_type, filter_tag, created_at";

pub(crate) async fn inventory_on(
    conn: &mut Conn<'_>,
    id: i64,
) -> Result<InventorySource, PanelError> {
    fetch_opt!(
        conn,
        InventorySource,
        sqlx::AssertSqlSafe(format!(
            "SELECT {INVENTORY_COLS} FROM inventories WHERE id = $1"
        )),
        id
    )?
    .ok_or(PanelError::NotFound("inventory"))
}

pub async fn create_inventory(
    db: &Db,
    who: &Principal,
    i: &NewInventory,
) -> Result<InventorySource, PanelError> {
    require_admin(who)?;
    let name = check_name(&i.name)?;
    let blank = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let tag = match blank(&i.filter_tag) {
        Some(t) if i.kind == InventoryKind::Panel => Some(
            crate::services::tags::check_tag(&t)
                .map_err(|m| PanelError::invalid("filter_tag", m))?,
        ),
        _ => None,
    };
    let (project_id, path, url, site, stype) = match i.kind {
        InventoryKind::Panel => (
            None,
            None,
            None,
            blank(&i.filter_site),
            blank(&i.filter_server_type),
        ),
        InventoryKind::ProjectFile => {
            let p = i.project_id.ok_or_else(|| {
                PanelError::invalid("project_id", "a project file needs its project")
            })?;
            let path = check_relative("path", i.path.as_deref().unwrap_or(""))?;
            (Some(p), Some(path), None, None, None)
        }
        InventoryKind::Http => (
            None,
            None,
            Some(check_http_url("url", i.url.as_deref().unwrap_or(""))?),
            None,
            None,
        ),
    };
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    if let Some(p) = project_id {
        project_on(&mut conn, p)
            .await
            .map_err(|_| PanelError::invalid("project_id", "no such project"))?;
    }
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO inventories (name, kind, project_id, path, url, filter_site, filter_server_type, filter_tag, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        name.as_str(),
        i.kind,
        project_id,
        path,
        url,
        site,
        stype,
        tag,
        now
    );
    let id = inserted::<InventorySource, _>(id, &name)?;
    written(tx, who, now, "create", id, None::<&InventorySource>).await
}

pub async fn list_inventories(
    db: &Db,
    who: &Principal,
) -> Result<Vec<InventorySource>, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        InventorySource,
        sqlx::AssertSqlSafe(format!(
            "SELECT {INVENTORY_COLS} FROM inventories ORDER BY name"
        ))
    )?)
}

pub async fn get_inventory(
    db: &Db,
    who: &Principal,
    id: i64,
) -> Result<InventorySource, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    inventory_on(&mut rc.conn(), id).await
}

pub async fn delete_inventory(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    require_admin(who)?;
    delete_unused(
        db,
        who,
        "inventory",
        "inventories",
        id,
        &["SELECT COUNT(*) FROM job_templates WHERE inventory_id = $1"],
    )
    .await
}

// ------------------------------------------------------ notification targets

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewTarget {
    pub name: String,
    pub kind: TargetKind,
    /// E-mail: the recipient. Webhook: the URL the JSON is POSTed to.
    pub address: String,
    /// E-mail: `host:port` of the SMTP server (default `localhost:25`).
    #[serde(default)]
    pub smtp_server: Option<String>,
    /// E-mail: the sender address (default `keel@localhost`).
    #[serde(default)]
    pub sender: Option<String>,
    /// Webhook: the HMAC-SHA256 key the receiver checks signatures with.
    #[serde(default)]
    pub secret: Option<String>,
    /// E-mail: how the connection is secured (default `none`).
    #[serde(default = "plain_smtp")]
    pub smtp_tls: SmtpTls,
    /// E-mail: a CA certificate (PEM) to trust for the server, beyond the
    /// system's.
    #[serde(default)]
    pub smtp_ca: Option<String>,
}

fn plain_smtp() -> SmtpTls {
    SmtpTls::None
}

pub(crate) fn webhook_aad(id_name: &str) -> String {
    format!("webhook:{id_name}")
}

const TARGET_COLS: &str =
    "id, name, kind, address, smtp_server, sender, smtp_tls, smtp_ca, created_at";

pub async fn create_target(
    db: &Db,
    sealer: &Sealer,
    who: &Principal,
    t: &NewTarget,
) -> Result<NotificationTarget, PanelError> {
    require_admin(who)?;
    let name = check_name(&t.name)?;
    let (address, smtp, sender, sealed, tls, ca) = match t.kind {
        TargetKind::Email => {
            let a = t.address.trim();
            if !a.contains('@') || a.parse::<lettre::Address>().is_err() {
                return Err(PanelError::invalid("address", "an e-mail address"));
            }
            let smtp = t
                .smtp_server
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("localhost:25")
                .to_string();
            super::notify::split_server(&smtp)
                .ok_or_else(|| PanelError::invalid("smtp_server", "host:port"))?;
            let sender = t
                .sender
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("keel@localhost")
                .to_string();
            if sender.parse::<lettre::Address>().is_err() {
                return Err(PanelError::invalid("sender", "an e-mail address"));
            }
            let ca = t
                .smtp_ca
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from);
            if let Some(pem) = &ca {
                // At least one certificate, and nothing that fails to parse.
                use rustls_pki_types::pem::PemObject;
                let certs: Result<Vec<_>, _> =
                    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
                if !certs.is_ok_and(|c| !c.is_empty()) {
                    return Err(PanelError::invalid(
                        "smtp_ca",
                        "not a PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ));
                }
            }
            (
                a.to_string(),
                Some(smtp),
                Some(sender),
                None,
                t.smtp_tls,
                ca,
            )
        }
        TargetKind::Webhook => {
            let url = check_http_url("address", &t.address)?;
            let secret = t
                .secret
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| PanelError::invalid("secret", "a webhook needs an HMAC key"))?;
            let sealed = sealer
                .seal(&webhook_aad(&name), secret)
                .map_err(|e| PanelError::Internal(e.to_string()))?;
            (url, None, None, Some(sealed), SmtpTls::None, None)
        }
    };
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO notification_targets (name, kind, address, smtp_server, sender, sealed, created_at, \
         smtp_tls, smtp_ca) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        name.as_str(),
        t.kind,
        address,
        smtp,
        sender,
        sealed,
        now,
        tls,
        ca
    );
    let id = inserted::<NotificationTarget, _>(id, &name)?;
    written(tx, who, now, "create", id, None::<&NotificationTarget>).await
}

pub(crate) async fn target_on(
    conn: &mut Conn<'_>,
    id: i64,
) -> Result<NotificationTarget, PanelError> {
    fetch_opt!(
        conn,
        NotificationTarget,
        sqlx::AssertSqlSafe(format!(
            "SELECT {TARGET_COLS} FROM notification_targets WHERE id = $1"
        )),
        id
    )?
    .ok_or(PanelError::NotFound("notification target"))
}

pub async fn list_targets(db: &Db, who: &Principal) -> Result<Vec<NotificationTarget>, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        NotificationTarget,
        sqlx::AssertSqlSafe(format!(
            "SELECT {TARGET_COLS} FROM notification_targets ORDER BY name"
        ))
    )?)
}

pub async fn delete_target(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    require_admin(who)?;
    delete_unused(
        db,
        who,
        "notification_target",
        "notification_targets",
        id,
        &[],
    )
    .await
}
