//! Allocation: preallocated network identities (hostname, IPv4, IPv6,
//! gateways) in pools, claimed race-free by one statement, released into a
//! quarantine; and quotas per user and per group, checked in the same
//! transaction as the claim. Pools are filled from a YAML or CSV file
//! ([`parse_pool_file`]) or generated from a CIDR and a hostname pattern
//! ([`generate`]).
//!
//! The claim is `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING id`. On
//! PostgreSQL the subquery takes `FOR UPDATE SKIP LOCKED`, so concurrent
//! claimers pass over each other's rows instead of queueing on them; on
//! SQLite the store's single writer serialises claims. The unique indexes
//! on hostname, addresses and `service_id` back both up.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::Status;
use crate::{execute, fetch_all, fetch_opt, scalar};

/// Kinds of pool: public or private IPv4 (with IPv6), or IPv6 only.
pub const POOL_TYPES: &[&str] = &["public", "private", "v6only"];

/// A network identity claimed from a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Allocation {
    pub id: i64,
    pub pool: String,
    pub pool_type: String,
    pub hostname: String,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub gateway4: Option<String>,
    pub netmask4: Option<String>,
    pub gateway6: Option<String>,
    /// Prefix length of `ipv6`'s network; `None` (stored before pools
    /// carried it) means /64.
    pub prefix6: Option<i64>,
}

/// One address record before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRecord {
    pub hostname: String,
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub gateway4: Option<String>,
    #[serde(default)]
    pub netmask4: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    /// Prefix length of `ipv6`'s network (0–128); none given: /64.
    #[serde(default)]
    pub prefix6: Option<u8>,
}

/// A pool and its addresses, as a file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub pool: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    #[serde(default)]
    pub quarantine_secs: Option<i64>,
    pub addresses: Vec<AddressRecord>,
}

/// Reads a pool file. YAML holds a [`PoolFile`]; CSV has a header row
/// `hostname,ipv4,ipv6,gateway4,netmask4,gateway6[,prefix6]` (columns in any order,
/// empty cells for none) and takes the pool name and type from the caller.
pub fn parse_pool_file(
    name: &str,
    text: &str,
    csv_pool: Option<(&str, &str)>,
) -> Result<PoolFile, PanelError> {
    let file = if name.ends_with(".csv") {
        let (pool, pool_type) = csv_pool.ok_or_else(|| {
            PanelError::invalid("pool", "a CSV pool file needs --pool NAME and --type TYPE")
        })?;
        PoolFile {
            pool: pool.to_string(),
            pool_type: pool_type.to_string(),
            quarantine_secs: None,
            addresses: parse_csv(text)?,
        }
    } else {
        yaml_serde::from_str::<PoolFile>(text)
            .map_err(|e| PanelError::invalid("file", format!("{name}: {e}")))?
    };
    validate_pool(&file)?;
    Ok(file)
}

fn parse_csv(text: &str) -> Result<Vec<AddressRecord>, PanelError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| PanelError::invalid("file", "the CSV file is empty"))?;
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let known = [
        "hostname", "ipv4", "ipv6", "gateway4", "netmask4", "gateway6", "prefix6",
    ];
    if let Some(bad) = cols.iter().find(|c| !known.contains(&c.as_str())) {
        return Err(PanelError::invalid(
            "file",
            format!("unknown CSV column {bad:?}"),
        ));
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != cols.len() {
            return Err(PanelError::invalid(
                "file",
                format!(
                    "line {}: {} cells, the header has {}",
                    n + 1,
                    cells.len(),
                    cols.len()
                ),
            ));
        }
        let get = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .map(|i| cells[i])
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        out.push(AddressRecord {
            hostname: get("hostname").ok_or_else(|| {
                PanelError::invalid("file", format!("line {}: no hostname", n + 1))
            })?,
            ipv4: get("ipv4"),
            ipv6: get("ipv6"),
            gateway4: get("gateway4"),
            netmask4: get("netmask4"),
            gateway6: get("gateway6"),
            prefix6: get("prefix6")
                .map(|v| {
                    v.parse::<u8>().map_err(|_| {
                        PanelError::invalid(
                            "prefix6",
                            format!("line {}: {v:?} is not a prefix length", n + 1),
                        )
                    })
                })
                .transpose()?,
        });
    }
    Ok(out)
}

fn validate_pool(file: &PoolFile) -> Result<(), PanelError> {
    if !POOL_TYPES.contains(&file.pool_type.as_str()) {
        return Err(PanelError::invalid(
            "type",
            format!("pool type must be one of {POOL_TYPES:?}"),
        ));
    }
    for a in &file.addresses {
        let bad = |field: &str, v: &str| {
            PanelError::invalid(field, format!("{}: {v:?} is not an address", a.hostname))
        };
        for (field, v) in [
            ("ipv4", &a.ipv4),
            ("gateway4", &a.gateway4),
            ("netmask4", &a.netmask4),
        ] {
            if let Some(v) = v {
                v.parse::<Ipv4Addr>().map_err(|_| bad(field, v))?;
            }
        }
        for (field, v) in [("ipv6", &a.ipv6), ("gateway6", &a.gateway6)] {
            if let Some(v) = v {
                v.parse::<Ipv6Addr>().map_err(|_| bad(field, v))?;
            }
        }
        if let Some(p) = a.prefix6 {
            if p > 128 || a.ipv6.is_none() {
                return Err(PanelError::invalid(
                    "prefix6",
                    format!(
                        "{}: prefix6 is an IPv6 address's prefix length, 0 to 128",
                        a.hostname
                    ),
                ));
            }
        }
        if a.hostname.is_empty() || a.hostname.contains(char::is_whitespace) {
            return Err(PanelError::invalid(
                "hostname",
                format!("{:?} is not a hostname", a.hostname),
            ));
        }
        let needs_v4 = file.pool_type != "v6only";
        if needs_v4 && a.ipv4.is_none() {
            return Err(PanelError::invalid(
                "ipv4",
                format!("{}: a {} pool needs IPv4", a.hostname, file.pool_type),
            ));
        }
        if !needs_v4 && a.ipv6.is_none() {
            return Err(PanelError::invalid(
                "ipv6",
                format!("{}: a v6only pool needs IPv6", a.hostname),
            ));
        }
    }
    Ok(())
}

/// Expands a hostname pattern: `{n}` is the number, `{n:05}` the number
/// zero-padded to five digits.
pub fn hostname_for(pattern: &str, n: u64) -> Result<String, PanelError> {
    let start = pattern.find("{n").ok_or_else(|| {
        PanelError::invalid("pattern", "the hostname pattern needs {n} or {n:05}")
    })?;
    let end = start
        + pattern[start..]
            .find('}')
            .ok_or_else(|| PanelError::invalid("pattern", "unclosed { in the hostname pattern"))?;
    let spec = &pattern[start + 2..end];
    let num = match spec.strip_prefix(':') {
        None if spec.is_empty() => n.to_string(),
        Some(w) if w.starts_with('0') && w[1..].parse::<usize>().is_ok() => {
            format!("{n:0width$}", width = w[1..].parse::<usize>().unwrap_or(0))
        }
        _ => {
            return Err(PanelError::invalid(
                "pattern",
                format!("unsupported format {{n{spec}}}"),
            ))
        }
    };
    Ok(format!(
        "{}{}{}",
        &pattern[..start],
        num,
        &pattern[end + 1..]
    ))
}

/// Builds a pool from CIDRs: the first host of each network is its
/// gateway, the next `count` hosts are the addresses (IPv6 host `n` pairs
/// with IPv4 host `n`), hostnames from `pattern`.
pub fn generate(
    pool: &str,
    pool_type: &str,
    cidr4: Option<Ipv4Net>,
    cidr6: Option<Ipv6Net>,
    pattern: &str,
    count: u64,
) -> Result<PoolFile, PanelError> {
    let mut addresses = Vec::new();
    let mut hosts4 = cidr4.map(|c| c.hosts());
    let gateway4 = hosts4.as_mut().and_then(|h| h.next());
    let gateway6 = cidr6.map(|c| u128::from(c.network()) + 1);
    for n in 1..=count {
        let ipv4 = match hosts4.as_mut() {
            Some(h) => Some(h.next().ok_or_else(|| {
                PanelError::invalid(
                    "cidr4",
                    format!("the IPv4 network has fewer than {count} free hosts"),
                )
            })?),
            None => None,
        };
        let ipv6 = match (cidr6, gateway6) {
            (Some(c), Some(g)) => {
                let a = Ipv6Addr::from(g + u128::from(n));
                if !c.contains(&a) {
                    return Err(PanelError::invalid(
                        "cidr6",
                        "the IPv6 network is too small",
                    ));
                }
                Some(a)
            }
            _ => None,
        };
        addresses.push(AddressRecord {
            hostname: hostname_for(pattern, n)?,
            ipv4: ipv4.map(|a| a.to_string()),
            ipv6: ipv6.map(|a| a.to_string()),
            gateway4: gateway4.map(|a| a.to_string()),
            netmask4: cidr4.map(|c| c.netmask().to_string()),
            gateway6: gateway6.map(|g| Ipv6Addr::from(g).to_string()),
            prefix6: cidr6.map(|c| c.prefix_len()),
        });
    }
    let file = PoolFile {
        pool: pool.to_string(),
        pool_type: pool_type.to_string(),
        quarantine_secs: None,
        addresses,
    };
    validate_pool(&file)?;
    Ok(file)
}

/// Stores a pool (created if new) and its addresses in one transaction.
/// Returns how many addresses were added.
pub async fn import(
    db: &Db,
    who: &Principal,
    file: &PoolFile,
    default_quarantine_secs: i64,
) -> Result<u64, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins manage pools".into(),
        ));
    }
    validate_pool(file)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let quarantine = file.quarantine_secs.unwrap_or(default_quarantine_secs);
    execute!(
        &mut conn,
        "INSERT INTO pools (name, pool_type, quarantine_secs) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        file.pool.as_str(),
        file.pool_type.as_str(),
        quarantine
    )?;
    let (pool_id, existing_type) = fetch_opt!(
        &mut conn,
        (i64, String),
        "SELECT id, pool_type FROM pools WHERE name = $1",
        file.pool.as_str()
    )?
    .ok_or_else(|| PanelError::Internal("pool row vanished".into()))?;
    if existing_type != file.pool_type {
        return Err(PanelError::Conflict(format!(
            "pool {} exists with type {existing_type}",
            file.pool
        )));
    }
    for a in &file.addresses {
        let r = execute!(
            &mut conn,
            "INSERT INTO pool_addresses (pool_id, hostname, ipv4, ipv6, gateway4, netmask4, gateway6, prefix6) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            pool_id,
            a.hostname.as_str(),
            a.ipv4.as_deref(),
            a.ipv6.as_deref(),
            a.gateway4.as_deref(),
            a.netmask4.as_deref(),
            a.gateway6.as_deref(),
            a.prefix6.map(i64::from)
        );
        if let Err(e) = r {
            let e = PanelError::from(e);
            if e.is_unique_violation() {
                return Err(PanelError::Conflict(format!(
                    "{} (or one of its addresses) is already in a pool",
                    a.hostname
                )));
            }
            return Err(e);
        }
    }
    let mut change = Change::new("pool.import", "pool", pool_id);
    change.after = Some(
        serde_json::json!({"pool": file.pool, "type": file.pool_type, "added": file.addresses.len()}),
    );
    audit::record(&mut conn, now, who, change).await?;
    tx.commit().await?;
    Ok(file.addresses.len() as u64)
}

const ALLOCATION_SELECT: &str =
    "SELECT a.id, p.name AS pool, p.pool_type, a.hostname, a.ipv4, a.ipv6, \
     a.gateway4, a.netmask4, a.gateway6, a.prefix6 FROM pool_addresses a JOIN pools p ON p.id = a.pool_id";

/// Claims one free address of a pool of `pool_type` for `service_id`, in
/// the caller's transaction. `None` when the pools of that type are empty.
pub async fn claim(
    conn: &mut Conn<'_>,
    pool_type: &str,
    service_id: i64,
    now: i64,
) -> Result<Option<Allocation>, PanelError> {
    let sql = if conn.is_pg() {
        "UPDATE pool_addresses SET state = 'allocated', service_id = $1, allocated_at = $2 \
         WHERE id = (SELECT id FROM pool_addresses WHERE state = 'free' AND free_after <= $2 \
           AND pool_id IN (SELECT id FROM pools WHERE pool_type = $3) \
           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
    } else {
        "UPDATE pool_addresses SET state = 'allocated', service_id = $1, allocated_at = $2 \
         WHERE id = (SELECT id FROM pool_addresses WHERE state = 'free' AND free_after <= $2 \
           AND pool_id IN (SELECT id FROM pools WHERE pool_type = $3) \
           ORDER BY id LIMIT 1) RETURNING id"
    };
    let Some(id) = scalar!(conn, i64, sql, service_id, now, pool_type)? else {
        return Ok(None);
    };
    Ok(fetch_opt!(
        conn,
        Allocation,
        sqlx::AssertSqlSafe(format!("{ALLOCATION_SELECT} WHERE a.id = $1")),
        id
    )?)
}

/// The allocation of a service, if it has one.
pub async fn allocation_of(
    conn: &mut Conn<'_>,
    service_id: i64,
) -> Result<Option<Allocation>, PanelError> {
    Ok(fetch_opt!(
        conn,
        Allocation,
        sqlx::AssertSqlSafe(format!("{ALLOCATION_SELECT} WHERE a.service_id = $1")),
        service_id
    )?)
}

/// Gives a service's address back; it is claimable again after its pool's
/// quarantine, so a hostname is not reused while DNS caches still point
/// at the old server.
pub async fn release(conn: &mut Conn<'_>, service_id: i64, now: i64) -> Result<u64, PanelError> {
    Ok(execute!(
        conn,
        "UPDATE pool_addresses SET state = 'free', service_id = NULL, allocated_at = NULL, \
         free_after = $2 + 1000 * (SELECT quarantine_secs FROM pools WHERE pools.id = pool_addresses.pool_id) \
         WHERE service_id = $1",
        service_id,
        now
    )?)
}

/// Use of one pool, for the admin pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PoolUse {
    pub id: i64,
    pub name: String,
    pub pool_type: String,
    pub quarantine_secs: i64,
    pub total: i64,
    pub free: i64,
    pub quarantined: i64,
    pub allocated: i64,
}

pub async fn pool_use(db: &Db) -> Result<Vec<PoolUse>, PanelError> {
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        PoolUse,
        "SELECT p.id, p.name, p.pool_type, p.quarantine_secs, COUNT(a.id) AS total, \
           CAST(COALESCE(SUM(CASE WHEN a.state = 'free' AND a.free_after <= $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS free, \
           CAST(COALESCE(SUM(CASE WHEN a.state = 'free' AND a.free_after > $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS quarantined, \
           CAST(COALESCE(SUM(CASE WHEN a.state = 'allocated' THEN 1 ELSE 0 END), 0) AS BIGINT) AS allocated \
         FROM pools p LEFT JOIN pool_addresses a ON a.pool_id = p.id GROUP BY p.id, p.name, p.pool_type, p.quarantine_secs ORDER BY p.name",
        db.now()
    )?)
}

/// One address of a pool, as the pool's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PoolEntry {
    pub id: i64,
    pub hostname: String,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// `allocated`, `quarantined` (free, but not before `free_after`) or
    /// `free`.
    pub state: String,
    pub service_id: Option<i64>,
    pub free_after: i64,
}

/// A pool's addresses (at most `limit`, in id order). Platform admins only.
pub async fn pool_entries(
    db: &Db,
    who: &Principal,
    pool_id: i64,
    limit: i64,
) -> Result<(PoolUse, Vec<PoolEntry>), PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins manage pools".into(),
        ));
    }
    let pool = pool_use(db)
        .await?
        .into_iter()
        .find(|p| p.id == pool_id)
        .ok_or(PanelError::NotFound("pool"))?;
    let mut rc = db.read().await?;
    let entries = fetch_all!(
        &mut rc.conn(),
        PoolEntry,
        "SELECT id, hostname, ipv4, ipv6, \
           CASE WHEN state = 'allocated' THEN 'allocated' WHEN free_after > $2 THEN 'quarantined' ELSE 'free' END AS state, \
           service_id, free_after FROM pool_addresses WHERE pool_id = $1 ORDER BY id LIMIT $3",
        pool_id,
        db.now(),
        limit.clamp(1, 10_000)
    )?;
    Ok((pool, entries))
}

/// The pool types that have at least one pool, in [`POOL_TYPES`] order:
/// the create-server form offers only these.
pub async fn pool_types_in_use(db: &Db) -> Result<Vec<String>, PanelError> {
    let mut rc = db.read().await?;
    let present = fetch_all!(
        &mut rc.conn(),
        (String,),
        "SELECT DISTINCT pool_type FROM pools"
    )?;
    Ok(POOL_TYPES
        .iter()
        .filter(|t| present.iter().any(|(p,)| p == *t))
        .map(|t| t.to_string())
        .collect())
}

/// What a server takes from a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Resources {
    pub vms: i64,
    pub vcpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
}

/// A limit on a user or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Quota {
    /// `user` or `group`.
    pub subject_kind: String,
    pub subject_id: i64,
    pub max_vms: i64,
    pub max_vcpus: i64,
    pub max_ram_mb: i64,
    pub max_disk_gb: i64,
}

/// Sets (or replaces) a quota. Platform admins only.
pub async fn set_quota(db: &Db, who: &Principal, q: &Quota) -> Result<(), PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins set quotas".into(),
        ));
    }
    if !["user", "group"].contains(&q.subject_kind.as_str()) {
        return Err(PanelError::invalid(
            "subject_kind",
            "subject_kind is user or group",
        ));
    }
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    execute!(
        &mut conn,
        "INSERT INTO quotas (subject_kind, subject_id, max_vms, max_vcpus, max_ram_mb, max_disk_gb) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subject_kind, subject_id) DO UPDATE SET \
         max_vms = $3, max_vcpus = $4, max_ram_mb = $5, max_disk_gb = $6",
        q.subject_kind.as_str(),
        q.subject_id,
        q.max_vms,
        q.max_vcpus,
        q.max_ram_mb,
        q.max_disk_gb
    )?;
    let mut change = Change::new("quota.set", "quota", q.subject_id);
    change.after = serde_json::to_value(q).ok();
    audit::record(&mut conn, db.now(), who, change).await?;
    tx.commit().await?;
    Ok(())
}

/// Checks, in the caller's transaction, that `user_id` may take `want` more
/// under every quota on them and their groups. On PostgreSQL the user and
/// group rows are locked first, so two creates cannot both fit the last slot.
pub async fn check_quota(
    conn: &mut Conn<'_>,
    user_id: i64,
    want: Resources,
) -> Result<(), PanelError> {
    let quotas = fetch_all!(
        conn,
        Quota,
        "SELECT subject_kind, subject_id, max_vms, max_vcpus, max_ram_mb, max_disk_gb FROM quotas \
         WHERE (subject_kind = 'user' AND subject_id = $1) \
            OR (subject_kind = 'group' AND subject_id IN (SELECT group_id FROM group_members WHERE user_id = $1)) \
         ORDER BY subject_kind DESC, subject_id",
        user_id
    )?;
    if quotas.is_empty() {
        return Ok(());
    }
    if conn.is_pg() {
        execute!(
            conn,
            "SELECT id FROM users WHERE id = $1 FOR UPDATE",
            user_id
        )?;
        for q in quotas.iter().filter(|q| q.subject_kind == "group") {
            execute!(
                conn,
                "SELECT id FROM user_groups WHERE id = $1 FOR UPDATE",
                q.subject_id
            )?;
        }
    }
    for q in &quotas {
        let used = quota_used(conn, q).await?;
        let over = [
            ("servers", used.vms, want.vms, q.max_vms),
            ("vCPUs", used.vcpus, want.vcpus, q.max_vcpus),
            ("MB of RAM", used.ram_mb, want.ram_mb, q.max_ram_mb),
            ("GB of disk", used.disk_gb, want.disk_gb, q.max_disk_gb),
        ]
        .into_iter()
        .find(|(_, used, want, max)| used + want > *max);
        if let Some((what, used, want, max)) = over {
            return Err(PanelError::QuotaExceeded(format!(
                "{} quota exceeded: {used} {what} in use, {want} more asked, {max} allowed",
                q.subject_kind
            )));
        }
    }
    Ok(())
}

/// What the servers under quota `q` take now (deleted ones take nothing).
async fn quota_used(conn: &mut Conn<'_>, q: &Quota) -> Result<Resources, PanelError> {
    let sql = if q.subject_kind == "user" {
        "SELECT COUNT(*) AS vms, CAST(COALESCE(SUM(cpus), 0) AS BIGINT) AS vcpus, \
         CAST(COALESCE(SUM(ram_mb), 0) AS BIGINT) AS ram_mb, CAST(COALESCE(SUM(disk_gb), 0) AS BIGINT) AS disk_gb \
         FROM services WHERE created_by = $1 AND status <> $2"
    } else {
        "SELECT COUNT(*) AS vms, CAST(COALESCE(SUM(cpus), 0) AS BIGINT) AS vcpus, \
         CAST(COALESCE(SUM(ram_mb), 0) AS BIGINT) AS ram_mb, CAST(COALESCE(SUM(disk_gb), 0) AS BIGINT) AS disk_gb \
         FROM services WHERE status <> $2 \
           AND created_by IN (SELECT user_id FROM group_members WHERE group_id = $1)"
    };
    Ok(
        fetch_opt!(conn, Resources, sql, q.subject_id, Status::Deleted)?.unwrap_or(Resources {
            vms: 0,
            vcpus: 0,
            ram_mb: 0,
            disk_gb: 0,
        }),
    )
}

/// A quota with the name of whom it limits and what is in use under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUse {
    #[serde(flatten)]
    pub quota: Quota,
    /// The user's or the group's name.
    pub subject_name: String,
    pub used: Resources,
}

const QUOTA_COLS: &str =
    "q.subject_kind, q.subject_id, q.max_vms, q.max_vcpus, q.max_ram_mb, q.max_disk_gb";

async fn with_use(conn: &mut Conn<'_>, quotas: Vec<Quota>) -> Result<Vec<QuotaUse>, PanelError> {
    let mut out = Vec::with_capacity(quotas.len());
    for q in quotas {
        let sql = if q.subject_kind == "user" {
            "SELECT name FROM users WHERE id = $1"
        } else {
            "SELECT name FROM user_groups WHERE id = $1"
        };
        let subject_name = scalar!(conn, String, sql, q.subject_id)?.unwrap_or_default();
        let used = quota_used(conn, &q).await?;
        out.push(QuotaUse {
            quota: q,
            subject_name,
            used,
        });
    }
    Ok(out)
}

/// The quotas that limit `user_id` (their own and their groups'), with
/// their use: for that user and platform admins.
pub async fn quotas_of(
    db: &Db,
    who: &Principal,
    user_id: i64,
) -> Result<Vec<QuotaUse>, PanelError> {
    if !who.is_admin && who.user_id != user_id {
        return Err(PanelError::Forbidden(
            "only platform admins see other users' quotas".into(),
        ));
    }
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let quotas = fetch_all!(
        &mut conn,
        Quota,
        sqlx::AssertSqlSafe(format!(
            "SELECT {QUOTA_COLS} FROM quotas q \
             WHERE (q.subject_kind = 'user' AND q.subject_id = $1) \
                OR (q.subject_kind = 'group' AND q.subject_id IN (SELECT group_id FROM group_members WHERE user_id = $1)) \
             ORDER BY q.subject_kind DESC, q.subject_id"
        )),
        user_id
    )?;
    with_use(&mut conn, quotas).await
}

/// Every quota with its use. Platform admins only.
pub async fn all_quotas(db: &Db, who: &Principal) -> Result<Vec<QuotaUse>, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins list quotas".into(),
        ));
    }
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let quotas = fetch_all!(
        &mut conn,
        Quota,
        sqlx::AssertSqlSafe(format!(
            "SELECT {QUOTA_COLS} FROM quotas q ORDER BY q.subject_kind DESC, q.subject_id"
        ))
    )?;
    with_use(&mut conn, quotas).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_patterns() {
        assert_eq!(
            hostname_for("mws-{n:05}.example.org", 42).unwrap(),
            "mws-00042.example.org"
        );
        assert_eq!(hostname_for("h{n}", 7).unwrap(), "h7");
        assert!(hostname_for("no-number", 1).is_err());
        assert!(hostname_for("h{n:x}", 1).is_err());
    }

    #[test]
    fn generate_from_cidrs() {
        let p = generate(
            "pub",
            "public",
            Some("192.0.2.0/29".parse().unwrap()),
            Some("2001:db8::/64".parse().unwrap()),
            "mws-{n:05}.example.org",
            5,
        )
        .unwrap();
        assert_eq!(p.addresses.len(), 5);
        let first = &p.addresses[0];
        assert_eq!(first.hostname, "mws-00001.example.org");
        assert_eq!(first.ipv4.as_deref(), Some("192.0.2.2"));
        assert_eq!(first.gateway4.as_deref(), Some("192.0.2.1"));
        assert_eq!(first.netmask4.as_deref(), Some("255.255.255.248"));
        assert_eq!(first.ipv6.as_deref(), Some("2001:db8::2"));
        assert_eq!(first.gateway6.as_deref(), Some("2001:db8::1"));
        assert_eq!(first.prefix6, Some(64));
        // The IPv6 prefix is the network's, whatever its length.
        let p = generate(
            "v6",
            "v6only",
            None,
            Some("fd00:233:81::/112".parse().unwrap()),
            "h{n}",
            2,
        )
        .unwrap();
        assert_eq!(p.addresses[1].ipv6.as_deref(), Some("fd00:233:81::3"));
        assert_eq!(p.addresses[1].prefix6, Some(112));
        // A /29 has 6 hosts: one gateway and five addresses; a sixth does not fit.
        assert!(generate(
            "pub",
            "public",
            Some("192.0.2.0/29".parse().unwrap()),
            None,
            "h{n}",
            6
        )
        .is_err());
    }

    #[test]
    fn csv_and_yaml_files() {
        let csv = "hostname,ipv4,ipv6\nh1.example.org,192.0.2.10,2001:db8::10\nh2.example.org,192.0.2.11,\n";
        let p = parse_pool_file("pool.csv", csv, Some(("a", "public"))).unwrap();
        assert_eq!(p.addresses.len(), 2);
        assert_eq!(p.addresses[1].ipv6, None);
        let bad = "hostname,ipv4\nh1,300.0.0.1\n";
        let err = parse_pool_file("pool.csv", bad, Some(("a", "public"))).unwrap_err();
        assert!(err.to_string().contains("300.0.0.1"), "{err}");
        let yaml = "pool: v6\ntype: v6only\naddresses:\n  - hostname: h1\n    ipv6: 2001:db8::5\n";
        let p = parse_pool_file("pool.yaml", yaml, None).unwrap();
        assert_eq!(p.pool_type, "v6only");
        let missing = "pool: v4\ntype: public\naddresses:\n  - hostname: h1\n";
        assert!(parse_pool_file("pool.yaml", missing, None).is_err());
        let csv = "hostname,ipv4,ipv6,prefix6\nh1,192.0.2.10,fd00::10,112\n";
        let p = parse_pool_file("pool.csv", csv, Some(("a", "public"))).unwrap();
        assert_eq!(p.addresses[0].prefix6, Some(112));
        for bad in [
            "hostname,ipv4,ipv6,prefix6\nh1,192.0.2.10,fd00::10,129\n",
            "hostname,ipv4,ipv6,prefix6\nh1,192.0.2.10,fd00::10,x\n",
            "hostname,ipv4,prefix6\nh1,192.0.2.10,64\n",
        ] {
            let err = parse_pool_file("pool.csv", bad, Some(("a", "public"))).unwrap_err();
            assert!(err.to_string().contains("prefix"), "{bad}: {err}");
        }
    }
}
