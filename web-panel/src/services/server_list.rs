//! The service list (`GET /api/v1/services`, the Servers pages): one page
//! of the services a principal may manage, newest first, filtered by
//! status, site and hostname. Sits beside `servers.rs`, whose row shape
//! (`servers::SELECT`) it reads.
//!
//! Built to stay fast at 100,000 services (issue 22):
//!
//! - **Keyset pages.** The order is `s.id DESC`, which the primary key and
//!   the `services_site`/`services_status` indexes (migration 0022) walk
//!   directly. A page asked for with `cursor` (the `next` of the page before)
//!   reads `limit + 1` rows below that id, however deep it is. `offset`
//!   still works, as a compatibility path that reads and skips the rows
//!   before the page.
//! - **No exact count per page.** A first page that holds the whole list
//!   is its own count. Otherwise a filter matching at most
//!   [`EXACT_TOTAL_UP_TO`] services is counted on every request by a count
//!   that stops after that many rows. A longer one is counted in full once,
//!   then served from this node's [`CountCache`](crate::db::CountCache) for
//!   [`TOTAL_TTL`] and refreshed in the background, and the page says so
//!   (`total_estimated`).
//! - **Hostname search through an index.** `q` is a substring of the
//!   hostname (`LIKE '%q%'`): a `pg_trgm` GIN index answers it on
//!   PostgreSQL, an FTS5 trigram table (`pool_addresses_hostname`) on
//!   SQLite for three characters or more.
//!
//! Authorisation stays in SQL: a principal who is not a platform admin sees
//! the services of the sites they administer (`sites::ADMIN_SITES`), in the
//! same statement that reads the page and the count.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::db::{Cached, Conn, Db};
use crate::domain::{Page, PanelError, Principal};
use crate::lifecycle::Status;
use crate::services::model::Service;
use crate::services::servers::SELECT;
use crate::services::sites::ADMIN_SITES;

/// Lists matching at most this many services are counted exactly on
/// every request; longer ones get a cached total.
pub const EXACT_TOTAL_UP_TO: i64 = 1000;

/// How long a cached total of a long list is served before it is counted
/// again (in the background, the old value served meanwhile).
pub const TOTAL_TTL: Duration = Duration::from_secs(5);

/// Filters for the service list. Deleted services are left out unless
/// asked for by status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceFilter {
    pub status: Option<String>,
    pub site_id: Option<i64>,
    /// Substring of the hostname.
    pub q: Option<String>,
}

/// One page of the service list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceList {
    pub items: Vec<Service>,
    /// Services matching the filter. Exact when `total_estimated` is false;
    /// otherwise an exact count taken up to a few seconds ago on this node
    /// (lists longer than [`EXACT_TOTAL_UP_TO`]).
    pub total: i64,
    pub total_estimated: bool,
    pub limit: i64,
    /// The offset asked for (0 with a cursor).
    pub offset: i64,
    /// Pass as `cursor` for the page after this one; `null` on the last
    /// page. Opaque: do not build one.
    pub next: Option<String>,
}

/// A bound value of the list's statements, which are assembled from the
/// filters given (a predicate that is not needed is not in the statement,
/// so each shape gets its own plan and uses its index).
#[derive(Debug, Clone)]
enum Arg {
    Int(i64),
    Text(String),
}

/// The filters of one request as SQL: `WHERE` predicates over
/// `services s` and their arguments, numbered from `$1`.
#[derive(Debug, Clone)]
struct Filter {
    predicates: Vec<String>,
    args: Vec<Arg>,
}

impl Filter {
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn build(who: &Principal, status: Option<Status>, filter: &ServiceFilter, pg: bool) -> Filter {
        let mut f = Filter {
            predicates: Vec::new(),
            args: Vec::new(),
        };
        if !who.is_admin {
            let p = f.arg(Arg::Int(who.user_id));
            f.predicates
                .push(format!("s.site_id IN {}", ADMIN_SITES.replace("$2", &p)));
        }
        match status {
            Some(st) => {
                let p = f.arg(Arg::Text(st.as_str().to_string()));
                f.predicates.push(format!("s.status = {p}"));
            }
            None => f
                .predicates
                .push(format!("s.status <> '{}'", Status::Deleted.as_str())),
        }
        if let Some(site) = filter.site_id {
            let p = f.arg(Arg::Int(site));
            f.predicates.push(format!("s.site_id = {p}"));
        }
        if let Some(q) = &filter.q {
            let needle = q.replace(['%', '_'], "");
            let p = f.arg(Arg::Text(format!("%{needle}%")));
            // The matching addresses first, then their services: both
            // planners then start from the index rather than walk every
            // service. FTS5's trigram tokenizer needs three characters to
            // use its index; a shorter needle scans, as LIKE alone would.
            let addresses = if !pg && needle.chars().count() >= 3 {
                format!("id IN (SELECT rowid FROM pool_addresses_hostname WHERE hostname LIKE {p})")
            } else {
                format!("hostname LIKE {p}")
            };
            f.predicates.push(format!(
                "s.id IN (SELECT service_id FROM pool_addresses WHERE {addresses})"
            ));
        }
        f
    }

    fn where_(&self) -> String {
        format!("WHERE {}", self.predicates.join(" AND "))
    }

    /// Counts at most `EXACT_TOTAL_UP_TO + 1` matching rows.
    fn bounded_count_sql(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM services s {} LIMIT {}) c",
            self.where_(),
            EXACT_TOTAL_UP_TO + 1
        )
    }

    fn count_sql(&self) -> String {
        format!("SELECT COUNT(*) FROM services s {}", self.where_())
    }

    /// Names this count in the cache: the statement and its arguments.
    fn cache_key(&self) -> String {
        format!("services {} {:?}", self.where_(), self.args)
    }
}

macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                Arg::Int(i) => q.bind(*i),
                Arg::Text(t) => q.bind(t.clone()),
            };
        }
        q
    }};
}

async fn count(conn: &mut Conn<'_>, sql: String, args: &[Arg]) -> Result<i64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql);
    match conn {
        Conn::Sqlite(c) => {
            bind_args!(sqlx::query_scalar::<sqlx::Sqlite, i64>(sql), args)
                .fetch_one(&mut **c)
                .await
        }
        Conn::Pg(c) => {
            bind_args!(sqlx::query_scalar::<sqlx::Postgres, i64>(sql), args)
                .fetch_one(&mut **c)
                .await
        }
    }
}

async fn rows(conn: &mut Conn<'_>, sql: String, args: &[Arg]) -> Result<Vec<Service>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql);
    match conn {
        Conn::Sqlite(c) => {
            bind_args!(sqlx::query_as::<sqlx::Sqlite, Service>(sql), args)
                .fetch_all(&mut **c)
                .await
        }
        Conn::Pg(c) => {
            bind_args!(sqlx::query_as::<sqlx::Postgres, Service>(sql), args)
                .fetch_all(&mut **c)
                .await
        }
    }
}

/// The total for `f`, and whether it came from the cache: see the module
/// docs.
async fn total(db: &Db, conn: &mut Conn<'_>, f: &Filter) -> Result<(i64, bool), PanelError> {
    let key = f.cache_key();
    match db.counts().get(&key, TOTAL_TTL) {
        Cached::Fresh(n) => return Ok((n, true)),
        Cached::Stale(n) => {
            let (db, f) = (db.clone(), f.clone());
            tokio::spawn(async move {
                let counted = async {
                    let mut rc = db.read().await?;
                    Ok::<_, PanelError>(count(&mut rc.conn(), f.count_sql(), &f.args).await?)
                }
                .await;
                match counted {
                    Ok(n) => db.counts().put(key, (n > EXACT_TOTAL_UP_TO).then_some(n)),
                    Err(e) => {
                        tracing::warn!(error = %e, "refreshing a service list total failed");
                        db.counts().refresh_failed(&key);
                    }
                }
            });
            return Ok((n, true));
        }
        Cached::Missing => {}
    }
    let bounded = count(conn, f.bounded_count_sql(), &f.args).await?;
    if bounded <= EXACT_TOTAL_UP_TO {
        return Ok((bounded, false));
    }
    let n = count(conn, f.count_sql(), &f.args).await?;
    db.counts().put(key, Some(n));
    Ok((n, false))
}

/// One page of the services `who` may manage, by offset (the first page
/// with `Page::default()`).
pub async fn list(
    db: &Db,
    who: &Principal,
    filter: &ServiceFilter,
    page: Page,
) -> Result<ServiceList, PanelError> {
    list_after(db, who, filter, page, None).await
}

/// One page of the services `who` may manage: the page after `cursor`
/// (a `next` of an earlier page) when given, else the page at
/// `page.offset`.
pub async fn list_after(
    db: &Db,
    who: &Principal,
    filter: &ServiceFilter,
    page: Page,
    cursor: Option<&str>,
) -> Result<ServiceList, PanelError> {
    let page = page.checked()?;
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
        .map_err(|_| {
            PanelError::invalid("status", format!("status is one of {:?}", Status::names()))
        })?;
    let below = match cursor {
        None => None,
        Some(_) if page.offset != 0 => {
            return Err(PanelError::invalid(
                "cursor",
                "give either a cursor or an offset, not both",
            ))
        }
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| PanelError::invalid("cursor", "not a cursor this list gave out"))?,
        ),
    };
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let f = Filter::build(who, status, filter, conn.is_pg());

    let mut q = f.clone();
    if let Some(id) = below {
        let p = q.arg(Arg::Int(id));
        q.predicates.push(format!("s.id < {p}"));
    }
    // Limit and offset are checked numbers, written into the statement:
    // with them as parameters PostgreSQL keeps planning the statement anew
    // (its generic plan cannot know the limit), and planning this join
    // costs more than running it.
    // With a hostname search, PostgreSQL's generic plan (it cannot see the
    // pattern) would walk the services in id order and test each hostname;
    // `s.id + 0` hides that order, so it starts from the trigram index and
    // sorts the few it finds.
    let order = if filter.q.is_some() && conn.is_pg() {
        "s.id + 0"
    } else {
        "s.id"
    };
    let mut sql = format!(
        "{SELECT} {} ORDER BY {order} DESC LIMIT {}",
        q.where_(),
        page.limit + 1
    );
    if page.offset > 0 {
        sql.push_str(&format!(" OFFSET {}", page.offset));
    }
    let mut items = rows(&mut conn, sql, &q.args).await?;
    let next = if items.len() as i64 > page.limit {
        items.truncate(page.limit as usize);
        items.last().map(|s| s.id.to_string())
    } else {
        None
    };
    // A first page that holds the whole list is its own count (a search
    // that finds a few servers costs one statement, not two).
    let (total, total_estimated) = if next.is_none() && below.is_none() && page.offset == 0 {
        (items.len() as i64, false)
    } else {
        total(db, &mut conn, &f).await?
    };
    Ok(ServiceList {
        items,
        total,
        total_estimated,
        limit: page.limit,
        offset: page.offset,
        next,
    })
}
