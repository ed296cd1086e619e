//! A server's vhosts: what Apache on it serves, for which names. Site
//! admins create, change and delete them here; every change queues, in its
//! own transaction, the server's `vhosts` job (`provision/steps/vhosts.rs`),
//! whose role run (`roles/mwsvhosts`) writes the Apache sites, enables
//! them, removes the deleted ones and reloads Apache when something
//! changed. A server that is not ready yet gets its vhosts when
//! `configure` makes it ready ([`queue_if_any`]). A change to a ready
//! server's aliases also queues, in the same transaction, its `dns` job
//! (`provision/steps/dns.rs`) when DNS publishing is configured, since
//! every alias is a CNAME to the server ([`queue_dns`]).
//!
//! Names (a vhost's name and its aliases) are host names
//! ([`hostname_problem`]), lower-cased, and belong to one site: a name that
//! a server of another site already uses is refused (409) without saying
//! which site has it. Within a site, one server serves a name once, and an
//! alias is the alias of one vhost. Document roots are absolute paths under
//! `/var/www/` or `/srv/` ([`path_problem`]); a proxy's backend is an
//! `http(s)://` URL. The checks and the write run in one transaction (on
//! PostgreSQL under a lock of `vhosts`), so two sites cannot claim the same
//! name at once.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use crate::audit::{self, Change};
use crate::config::DnsConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{CertificateJob, DnsJob, VhostsJob};
use crate::lifecycle::Status;
use crate::queue;
use crate::services::model::{CertSource, CertState, CertificateView, Vhost, VhostKind};
use crate::services::sites::require_admin;
use crate::store::Tx;
use crate::{execute, fetch_all, fetch_opt, scalar};

/// The body of `POST /services/{id}/vhosts` and `PUT …/vhosts/{vhost_id}`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VhostBody {
    /// The name Apache answers to (`ServerName`), a host name.
    pub name: String,
    /// More host names for the same site (`ServerAlias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `static` (default), `php`, `wsgi` or `proxy`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Absolute, under `/var/www/` or `/srv/`; default `/var/www/NAME`.
    #[serde(default)]
    pub document_root: Option<String>,
    /// `wsgi`: the WSGI script (default `DOCUMENT_ROOT/app.wsgi`);
    /// `proxy`: the backend's `http://` or `https://` URL (required).
    #[serde(default)]
    pub target: Option<String>,
}

/// A vhost as checked, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    name: String,
    aliases: Vec<String>,
    kind: VhostKind,
    document_root: String,
    target: Option<String>,
}

/// Why `name` is no host name the panel serves, if it is not one: labels
/// of letters, digits and inner hyphens (1 to 63 characters), at least two
/// labels, 253 characters at most, the last label not all digits (so no IP
/// address). Expects lower case.
pub fn hostname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a host name is needed".into());
    }
    if name.len() > 253 {
        return Some("is longer than 253 characters".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Some("needs a domain (at least two labels, as in www.example.org)".into());
    }
    for label in &labels {
        if label.is_empty() {
            return Some("has an empty label (two dots, or a dot at an end)".into());
        }
        if label.len() > 63 {
            return Some(format!("label {label:?} is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Some(format!(
                "label {label:?} may only have letters, digits and hyphens"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!(
                "label {label:?} may not start or end with a hyphen"
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("is an IP address, not a host name".into());
    }
    None
}

/// Why `path` is no document root (or WSGI script) the panel writes, if it
/// is not one: absolute, under `/var/www/` or `/srv/`, plain characters,
/// no `.` or `..` step.
pub fn path_problem(path: &str) -> Option<String> {
    let Some(below) = path
        .strip_prefix("/var/www/")
        .or_else(|| path.strip_prefix("/srv/"))
    else {
        return Some("must be an absolute path under /var/www/ or /srv/".into());
    };
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
    {
        return Some("may only have letters, digits, '/', '.', '_' and '-'".into());
    }
    let steps: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if steps
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Some("may not have empty, '.' or '..' steps".into());
    }
    if below.trim_matches('/').is_empty() {
        return Some("must name a directory below /var/www/ or /srv/".into());
    }
    None
}

/// Why `url` is no proxy backend, if it is not one.
fn backend_problem(url: &str) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("is not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Some("must be an http:// or https:// URL with a host".into());
    }
    // The URL goes into Apache's configuration as one word.
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Some("may not have spaces, quotes or backslashes".into());
    }
    None
}

fn check(body: &VhostBody) -> Result<Checked, PanelError> {
    let name = body.name.trim().to_ascii_lowercase();
    if let Some(p) = hostname_problem(&name) {
        return Err(PanelError::invalid("name", format!("{name:?} {p}")));
    }
    let mut aliases: Vec<String> = Vec::new();
    for a in &body.aliases {
        let a = a.trim().to_ascii_lowercase();
        if a.is_empty() {
            continue;
        }
        if let Some(p) = hostname_problem(&a) {
            return Err(PanelError::invalid("aliases", format!("{a:?} {p}")));
        }
        if a == name || aliases.contains(&a) {
            return Err(PanelError::invalid(
                "aliases",
                format!("{a:?} is named twice"),
            ));
        }
        aliases.push(a);
    }
    aliases.sort();
    let kind = match body.kind.as_deref().map(str::trim) {
        None | Some("") => VhostKind::Static,
        Some(k) => VhostKind::parse(k).ok_or_else(|| {
            let names: Vec<&str> = VhostKind::ALL.iter().map(|k| k.as_str()).collect();
            PanelError::invalid("kind", format!("kind is one of {names:?}"))
        })?,
    };
    let document_root = match body.document_root.as_deref().map(str::trim) {
        None | Some("") => format!("/var/www/{name}"),
        Some(r) => r.trim_end_matches('/').to_string(),
    };
    if let Some(p) = path_problem(&document_root) {
        return Err(PanelError::invalid(
            "document_root",
            format!("{document_root:?} {p}"),
        ));
    }
    let target = body
        .target
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let target = match kind {
        VhostKind::Static | VhostKind::Php => {
            if target.is_some() {
                return Err(PanelError::invalid(
                    "target",
                    format!("a {} vhost has no target", kind.as_str()),
                ));
            }
            None
        }
        VhostKind::Wsgi => {
            let script = target
                .map(str::to_string)
                .unwrap_or_else(|| format!("{document_root}/app.wsgi"));
            if let Some(p) = path_problem(&script) {
                return Err(PanelError::invalid("target", format!("{script:?} {p}")));
            }
            Some(script)
        }
        VhostKind::Proxy => {
            let url = target.ok_or_else(|| {
                PanelError::invalid("target", "a proxy vhost needs its backend's URL")
            })?;
            if let Some(p) = backend_problem(url) {
                return Err(PanelError::invalid("target", format!("{url:?} {p}")));
            }
            Some(url.to_string())
        }
    };
    Ok(Checked {
        name,
        aliases,
        kind,
        document_root,
        target,
    })
}

#[derive(sqlx::FromRow)]
struct VhostRow {
    id: i64,
    service_id: i64,
    name: String,
    kind: String,
    document_root: String,
    target: Option<String>,
}

/// Every vhost of one service (`Some`) or of every service, by service,
/// each with its aliases, in name order.
pub async fn by_service(
    conn: &mut Conn<'_>,
    service_id: Option<i64>,
) -> Result<BTreeMap<i64, Vec<Vhost>>, PanelError> {
    let rows = fetch_all!(
        conn,
        VhostRow,
        "SELECT id, service_id, name, kind, document_root, target FROM vhosts \
         WHERE ($1 IS NULL OR service_id = $1) ORDER BY service_id, name",
        service_id
    )?;
    let aliases = fetch_all!(
        conn,
        (i64, String),
        "SELECT d.vhost_id, d.domain FROM domain_aliases d JOIN vhosts v ON v.id = d.vhost_id \
         WHERE ($1 IS NULL OR v.service_id = $1) ORDER BY d.domain",
        service_id
    )?;
    let mut aliases_of: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (vhost, domain) in aliases {
        aliases_of.entry(vhost).or_default().push(domain);
    }
    let mut certificate_of: BTreeMap<i64, CertificateView> =
        certificates_by_vhost(conn, service_id)
            .await?
            .into_iter()
            .collect();
    let mut out: BTreeMap<i64, Vec<Vhost>> = BTreeMap::new();
    for r in rows {
        let kind = VhostKind::parse(&r.kind).ok_or_else(|| {
            PanelError::Internal(format!("vhost {} has an unknown kind {:?}", r.id, r.kind))
        })?;
        out.entry(r.service_id).or_default().push(Vhost {
            id: r.id,
            service_id: r.service_id,
            aliases: aliases_of.remove(&r.id).unwrap_or_default(),
            kind,
            // Rows from before 0008 have no root: the default one.
            document_root: if r.document_root.is_empty() {
                format!("/var/www/{}", r.name)
            } else {
                r.document_root
            },
            certificate: certificate_of.remove(&r.id),
            name: r.name,
            target: r.target,
        });
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct CertRow {
    vhost_id: i64,
    source: String,
    state: String,
    names: String,
    issuer: String,
    serial: String,
    not_before: Option<i64>,
    not_after: Option<i64>,
    installed_at: Option<i64>,
    error: Option<String>,
    updated_at: i64,
}

impl CertRow {
    fn view(self) -> Result<(i64, CertificateView), PanelError> {
        let bad = |what: &str, v: &str| {
            PanelError::Internal(format!(
                "certificate of vhost {}: unknown {what} {v:?}",
                self.vhost_id
            ))
        };
        let source = CertSource::parse(&self.source).ok_or_else(|| bad("source", &self.source))?;
        let state = CertState::parse(&self.state).ok_or_else(|| bad("state", &self.state))?;
        Ok((
            self.vhost_id,
            CertificateView {
                source,
                state,
                names: serde_json::from_str(&self.names).unwrap_or_default(),
                issuer: self.issuer,
                serial: self.serial,
                not_before: self.not_before,
                not_after: self.not_after,
                installed_at: self.installed_at,
                error: self.error,
                updated_at: self.updated_at,
            },
        ))
    }
}

/// The certificates (`services::certificates`) of one service's vhosts
/// (`Some`) or of every service's, by vhost id.
pub async fn certificates_by_vhost(
    conn: &mut Conn<'_>,
    service_id: Option<i64>,
) -> Result<Vec<(i64, CertificateView)>, PanelError> {
    fetch_all!(
        conn,
        CertRow,
        "SELECT vhost_id, source, state, names, issuer, serial, not_before, not_after, \
         installed_at, error, updated_at FROM certificates \
         WHERE ($1 IS NULL OR service_id = $1) ORDER BY vhost_id",
        service_id
    )?
    .into_iter()
    .map(CertRow::view)
    .collect()
}

/// One service's vhosts.
pub async fn of_service(conn: &mut Conn<'_>, service_id: i64) -> Result<Vec<Vhost>, PanelError> {
    Ok(by_service(conn, Some(service_id))
        .await?
        .remove(&service_id)
        .unwrap_or_default())
}

/// What the checks need of the server whose vhosts change.
#[derive(sqlx::FromRow)]
pub(crate) struct ManagedServer {
    pub id: i64,
    pub site_id: i64,
    pub status: Status,
}

type Server = ManagedServer;

/// The server `id`, if `who` may manage it: its site's admins and platform
/// admins may; SSH-only users are refused; anyone else is told it does
/// not exist (as `servers::load_managed` answers).
async fn managed(conn: &mut Conn<'_>, who: &Principal, id: i64) -> Result<Server, PanelError> {
    let server = fetch_opt!(
        conn,
        Server,
        "SELECT id, site_id, status FROM services WHERE id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("server"))?;
    match require_admin(conn, who, server.site_id).await {
        Ok(()) => Ok(server),
        Err(PanelError::NotFound(_)) => Err(PanelError::NotFound("server")),
        Err(PanelError::Forbidden(_)) => Err(PanelError::Forbidden(
            "SSH-only users cannot manage this server in the panel".into(),
        )),
        Err(e) => Err(e),
    }
}

/// The server `service_id` and its vhost `vhost_id`, if `who` may manage
/// the server (as [`managed`]; a vhost of another server is not found).
pub(crate) async fn managed_vhost(
    conn: &mut Conn<'_>,
    who: &Principal,
    service_id: i64,
    vhost_id: i64,
) -> Result<(ManagedServer, Vhost), PanelError> {
    let server = managed(conn, who, service_id).await?;
    let vhost = load_vhost(conn, service_id, vhost_id).await?;
    Ok((server, vhost))
}

/// The vhosts of a server its site admins manage.
pub async fn list(db: &Db, who: &Principal, service_id: i64) -> Result<Vec<Vhost>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    managed(&mut conn, who, service_id).await?;
    of_service(&mut conn, service_id).await
}

/// Queues the server's `vhosts` job when its status lets a run happen
/// (`ready`, or `configuring`, whose job then waits); `configure` queues
/// one for the others when they become ready.
async fn queue_run(tx: &mut Tx, who: &Principal, service: &Server) -> Result<(), PanelError> {
    if matches!(service.status, Status::Ready | Status::Configuring) {
        let spec = VhostsJob {
            service_id: service.id,
        }
        .spec(who.actor_id());
        queue::enqueue(tx, spec).await?;
    }
    Ok(())
}

/// Queues a `vhosts` job for a server that has vhosts: `configure` calls
/// it in the transaction that makes the server ready.
pub async fn queue_if_any(tx: &mut Tx, service_id: i64) -> Result<(), PanelError> {
    let mut conn = tx_conn(tx);
    let any = scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM vhosts WHERE service_id = $1",
        service_id
    )?
    .unwrap_or(0);
    if any > 0 {
        queue::enqueue(tx, VhostsJob { service_id }.spec(None)).await?;
    }
    Ok(())
}

/// Queues the server's `dns` job when its aliases changed (`before` and
/// `after` are the aliases of the vhost that changed), DNS publishing is
/// configured and the server is ready: its CNAMEs follow its aliases.
/// Servers that are not ready publish everything when `configure` makes
/// them ready, and removal after a delete empties what was published.
/// The job is coalesced per server and reads the aliases when it starts.
pub async fn queue_dns(
    tx: &mut Tx,
    dns: &DnsConfig,
    service_id: i64,
    status: Status,
    before: &[String],
    after: &[String],
) -> Result<(), PanelError> {
    if dns.enabled() && status == Status::Ready && before != after {
        queue::enqueue(tx, DnsJob { service_id }.spec(None)).await?;
    }
    Ok(())
}

/// Refuses changes to a server on its way out.
fn check_live(service: &Server) -> Result<(), PanelError> {
    if service.status.rules().leaving {
        return Err(PanelError::Conflict(format!(
            "the server is {}; its vhosts can no longer change",
            service.status
        )));
    }
    Ok(())
}

/// Refuses a name another site uses, a name this server already serves
/// (other than through vhost `except`), and an alias that is another
/// vhost's alias. Names of deleted servers are free again.
async fn check_names(
    conn: &mut Conn<'_>,
    service: &Server,
    except: Option<i64>,
    v: &Checked,
) -> Result<(), PanelError> {
    if conn.is_pg() {
        // Two sites claiming one name at once: the second waits here and
        // then sees the first's row.
        execute!(conn, "LOCK TABLE vhosts IN SHARE ROW EXCLUSIVE MODE")?;
    }
    let except = except.unwrap_or(0);
    let names = std::iter::once(&v.name).chain(v.aliases.iter());
    for (i, name) in names.enumerate() {
        let field = if i == 0 { "name" } else { "aliases" };
        let users = fetch_all!(
            conn,
            (i64, i64, String, bool),
            "SELECT s.site_id, s.id, v.name, FALSE FROM vhosts v JOIN services s ON s.id = v.service_id \
               WHERE v.name = $1 AND v.id <> $2 AND s.status <> 'deleted' \
             UNION ALL \
             SELECT s.site_id, s.id, v.name, TRUE FROM domain_aliases d JOIN vhosts v ON v.id = d.vhost_id \
               JOIN services s ON s.id = v.service_id \
               WHERE d.domain = $1 AND v.id <> $2 AND s.status <> 'deleted'",
            name,
            except
        )?;
        for (site, server, vhost, as_alias) in users {
            if site != service.site_id {
                return Err(PanelError::Conflict(format!(
                    "{name} ({field}) is already used by another site"
                )));
            }
            if server == service.id {
                return Err(PanelError::Conflict(format!(
                    "{name} ({field}) is already served on this server by vhost {vhost}"
                )));
            }
            if as_alias && i > 0 {
                return Err(PanelError::Conflict(format!(
                    "{name} is already an alias of vhost {vhost} on another server of this site"
                )));
            }
        }
        if i > 0 {
            // An alias row left by a deleted server would trip the UNIQUE
            // constraint: the name is free, so the row goes.
            execute!(
                conn,
                "DELETE FROM domain_aliases WHERE domain = $1 AND vhost_id IN \
                 (SELECT v.id FROM vhosts v JOIN services s ON s.id = v.service_id WHERE s.status = 'deleted')",
                name
            )?;
        }
    }
    Ok(())
}

async fn write_aliases(
    conn: &mut Conn<'_>,
    vhost_id: i64,
    aliases: &[String],
) -> Result<(), PanelError> {
    execute!(
        conn,
        "DELETE FROM domain_aliases WHERE vhost_id = $1",
        vhost_id
    )?;
    for a in aliases {
        execute!(
            conn,
            "INSERT INTO domain_aliases (vhost_id, domain) VALUES ($1, $2)",
            vhost_id,
            a
        )?;
    }
    Ok(())
}

async fn load_vhost(
    conn: &mut Conn<'_>,
    service_id: i64,
    vhost_id: i64,
) -> Result<Vhost, PanelError> {
    of_service(conn, service_id)
        .await?
        .into_iter()
        .find(|v| v.id == vhost_id)
        .ok_or(PanelError::NotFound("vhost"))
}

/// Adds a vhost to a server and queues the run that applies it.
pub async fn create(
    db: &Db,
    dns: &DnsConfig,
    who: &Principal,
    service_id: i64,
    body: &VhostBody,
) -> Result<Vhost, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = managed(&mut conn, who, service_id).await?;
    check_live(&service)?;
    let v = check(body)?;
    check_names(&mut conn, &service, None, &v).await?;
    let id = fetch_opt!(
        &mut conn,
        (i64,),
        "INSERT INTO vhosts (service_id, name, kind, document_root, target, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        service_id,
        &v.name,
        v.kind.as_str(),
        &v.document_root,
        &v.target,
        now
    )?
    .ok_or_else(|| PanelError::Internal("INSERT … RETURNING gave no row".into()))?
    .0;
    write_aliases(&mut conn, id, &v.aliases).await?;
    let vhost = load_vhost(&mut conn, service_id, id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("vhost.create", "vhost", id).after(&vhost),
    )
    .await?;
    queue_run(&mut tx, who, &service).await?;
    queue_dns(
        &mut tx,
        dns,
        service_id,
        service.status,
        &[],
        &vhost.aliases,
    )
    .await?;
    tx.commit().await?;
    Ok(vhost)
}

/// Replaces a vhost's name, aliases, kind, root and target, and queues
/// the run that applies it.
pub async fn update(
    db: &Db,
    dns: &DnsConfig,
    who: &Principal,
    service_id: i64,
    vhost_id: i64,
    body: &VhostBody,
) -> Result<Vhost, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = managed(&mut conn, who, service_id).await?;
    let before = load_vhost(&mut conn, service_id, vhost_id).await?;
    check_live(&service)?;
    let v = check(body)?;
    check_names(&mut conn, &service, Some(vhost_id), &v).await?;
    execute!(
        &mut conn,
        "UPDATE vhosts SET name = $1, kind = $2, document_root = $3, target = $4 WHERE id = $5",
        &v.name,
        v.kind.as_str(),
        &v.document_root,
        &v.target,
        vhost_id
    )?;
    write_aliases(&mut conn, vhost_id, &v.aliases).await?;
    let after = load_vhost(&mut conn, service_id, vhost_id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("vhost.update", "vhost", vhost_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    queue_run(&mut tx, who, &service).await?;
    queue_dns(
        &mut tx,
        dns,
        service_id,
        service.status,
        &before.aliases,
        &after.aliases,
    )
    .await?;
    // An ACME certificate follows the vhost's names: a new order for them.
    let acme = after
        .certificate
        .as_ref()
        .is_some_and(|c| c.source == CertSource::Acme);
    if acme && before.names() != after.names() && service.status == Status::Ready {
        let mut conn = tx_conn(&mut tx);
        execute!(
            &mut conn,
            "UPDATE certificates SET state = 'requested', pending_key = NULL, updated_at = $1 \
             WHERE vhost_id = $2",
            now,
            vhost_id
        )?;
        queue::enqueue(&mut tx, CertificateJob { service_id }.spec(who.actor_id())).await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// Deletes a vhost; the next run removes it from Apache (its files stay).
pub async fn delete(
    db: &Db,
    dns: &DnsConfig,
    who: &Principal,
    service_id: i64,
    vhost_id: i64,
) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = managed(&mut conn, who, service_id).await?;
    let before = load_vhost(&mut conn, service_id, vhost_id).await?;
    check_live(&service)?;
    execute!(
        &mut conn,
        "DELETE FROM domain_aliases WHERE vhost_id = $1",
        vhost_id
    )?;
    // Its certificate goes with it (its files stay on the server).
    execute!(
        &mut conn,
        "DELETE FROM certificates WHERE vhost_id = $1",
        vhost_id
    )?;
    execute!(&mut conn, "DELETE FROM vhosts WHERE id = $1", vhost_id)?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("vhost.delete", "vhost", vhost_id).before(&before),
    )
    .await?;
    queue_run(&mut tx, who, &service).await?;
    queue_dns(
        &mut tx,
        dns,
        service_id,
        service.status,
        &before.aliases,
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Asks for one more run of a ready server's vhosts (after a change made
/// by hand on the server, say); returns the job's id.
pub async fn apply(db: &Db, who: &Principal, service_id: i64) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = managed(&mut conn, who, service_id).await?;
    if service.status != Status::Ready {
        return Err(PanelError::Conflict(format!(
            "vhosts are applied to ready servers; this one is {}",
            service.status
        )));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.vhosts_apply", "service", service_id)
            .after(&json!({ "requested": true })),
    )
    .await?;
    let job = queue::enqueue(&mut tx, VhostsJob { service_id }.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(job.job_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_checked() {
        for ok in [
            "www.example.org",
            "a.b",
            "x-1.example.co.uk",
            "1.example.org",
        ] {
            assert_eq!(hostname_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "www..example.org",
            ".example.org",
            "example.org.",
            "-a.example.org",
            "a-.example.org",
            "a_b.example.org",
            "*.example.org",
            "10.0.0.1",
            "www.Example.org",
            "a b.example.org",
        ] {
            assert!(hostname_problem(bad).is_some(), "{bad:?} passed");
        }
        let long = format!("{}.org", "a".repeat(64));
        assert!(hostname_problem(&long).unwrap().contains("63"));
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(path_problem("/var/www/site"), None);
        assert_eq!(path_problem("/srv/web/app.wsgi"), None);
        assert_eq!(path_problem("/srv/blog"), None);
        for bad in [
            "var/www/x",
            "/etc/apache2",
            "/var/www/",
            "/srv/",
            "/var/www/../etc",
            "/var/www/a//b",
            "/var/www/a b",
            "/var/www/\"x",
        ] {
            assert!(path_problem(bad).is_some(), "{bad:?} passed");
        }
    }

    #[test]
    fn bodies_become_vhosts_with_defaults() {
        let v = check(&VhostBody {
            name: " WWW.Example.org ".into(),
            aliases: vec!["b.example.org".into(), "A.example.org".into(), "".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.name, "www.example.org");
        assert_eq!(v.aliases, ["a.example.org", "b.example.org"]);
        assert_eq!(v.kind, VhostKind::Static);
        assert_eq!(v.document_root, "/var/www/www.example.org");
        assert_eq!(v.target, None);

        let w = check(&VhostBody {
            name: "app.example.org".into(),
            kind: Some("wsgi".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            w.target.as_deref(),
            Some("/var/www/app.example.org/app.wsgi")
        );

        let field = |b: VhostBody| match check(&b) {
            Err(PanelError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let base = || VhostBody {
            name: "www.example.org".into(),
            ..Default::default()
        };
        assert_eq!(
            field(VhostBody {
                kind: Some("proxy".into()),
                ..base()
            }),
            "target"
        );
        assert_eq!(
            field(VhostBody {
                kind: Some("proxy".into()),
                target: Some("ftp://x.example.org/".into()),
                ..base()
            }),
            "target"
        );
        assert_eq!(
            field(VhostBody {
                kind: Some("cgi".into()),
                ..base()
            }),
            "kind"
        );
        assert_eq!(
            field(VhostBody {
                aliases: vec!["www.example.org".into()],
                ..base()
            }),
            "aliases"
        );
        assert_eq!(
            field(VhostBody {
                document_root: Some("/etc".into()),
                ..base()
            }),
            "document_root"
        );
        let p = check(&VhostBody {
            kind: Some("proxy".into()),
            target: Some("http://127.0.0.1:8080/".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(p.target.as_deref(), Some("http://127.0.0.1:8080/"));
    }
}
