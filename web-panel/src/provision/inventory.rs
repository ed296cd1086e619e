//! The panel's dynamic inventory: every live server as Ansible's
//! dynamic-inventory JSON (`GET /api/v1/inventory`, `?host=NAME`), the
//! seed's central inventory that consumers pull (`keel play -i URL`). The
//! role run of the provisioning flow gets the same data, with the panel's
//! own connection settings added, handed to the engine in memory
//! ([`for_role_run`]).
//!
//! Shape: one group per site, named `site_<name>` with every character
//! outside `[a-z0-9_]` turned into `_`; hosts are allocated hostnames; host
//! vars:
//! - `ansible_host`, `ansible_port`: where sshd answers (the driver's
//!   forwarded endpoint, else the allocated IPv4, else IPv6, port 22);
//!   `ansible_user` (the admin account) and `ansible_become: true`;
//! - `keel_service_id`, `keel_hostname`, `keel_ipv4`, `keel_ipv6`,
//!   `keel_site`, `keel_server_type`, `keel_status`;
//! - `keel_users`: the site's admins and SSH-only members (direct or
//!   through lookup groups; disabled accounts left out), each
//!   `{name, uid, role, ssh_keys}`. **`uid` is `10000 + the panel's user
//!   id`**: user ids are never reused, so the number is stable for the
//!   life of the account and the same on every server;
//! - `keel_vhosts`: `[{name, aliases}]`.
//!
//! Only platform admins may read it (API tokens of admin accounts).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use crate::db::Db;
use crate::domain::{PanelError, Principal};
use crate::fetch_all;
use crate::lifecycle::Status;

/// First UID handed to panel users on servers.
pub const UID_BASE: i64 = 10_000;

/// The stable UID of a panel user on every server.
pub fn uid_of(user_id: i64) -> i64 {
    UID_BASE + user_id
}

/// The inventory group of a site.
pub fn site_group(name: &str) -> String {
    let clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("site_{clean}")
}

#[derive(sqlx::FromRow)]
struct HostRow {
    service_id: i64,
    site_id: i64,
    site_name: String,
    server_type: String,
    status: Status,
    hostname: String,
    ipv4: Option<String>,
    ipv6: Option<String>,
    ssh_endpoint: Option<String>,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    site_id: i64,
    user_id: i64,
    name: String,
    role: String,
    disabled: bool,
}

/// One host of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryHost {
    pub name: String,
    pub group: String,
    pub service_id: i64,
    pub vars: Map<String, Json>,
}

/// Every live server (or one service's), with its host vars.
pub async fn hosts(
    db: &Db,
    admin_user: &str,
    service_id: Option<i64>,
) -> Result<Vec<InventoryHost>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let rows = fetch_all!(
        &mut conn,
        HostRow,
        // Services on their way out are no hosts any more.
        sqlx::AssertSqlSafe(format!(
            "SELECT s.id AS service_id, s.site_id, si.name AS site_name, t.name AS server_type, s.status, \
               a.hostname, a.ipv4, a.ipv6, p.ssh_endpoint \
             FROM services s JOIN sites si ON si.id = s.site_id JOIN server_types t ON t.id = s.server_type_id \
             JOIN pool_addresses a ON a.service_id = s.id \
             LEFT JOIN vm_provisioning p ON p.service_id = s.id \
             WHERE s.status NOT IN ({}) AND ($1 IS NULL OR s.id = $1) ORDER BY s.id",
            Status::sql_list(&Status::all_where(|r| r.leaving))
        )),
        service_id
    )?;
    let members = fetch_all!(
        &mut conn,
        MemberRow,
        "SELECT m.site_id, u.id AS user_id, u.name, m.role, u.disabled FROM site_members m \
           JOIN users u ON u.id = m.user_id \
         UNION SELECT l.site_id, u.id AS user_id, u.name, l.role, u.disabled FROM site_lookup_groups l \
           JOIN user_groups g ON g.name = l.group_name JOIN group_members gm ON gm.group_id = g.id \
           JOIN users u ON u.id = gm.user_id"
    )?;
    let keys = fetch_all!(
        &mut conn,
        (i64, String),
        "SELECT user_id, public_key FROM ssh_keys ORDER BY id"
    )?;
    let vhosts = fetch_all!(
        &mut conn,
        (i64, String, Option<String>),
        "SELECT v.service_id, v.name, d.domain FROM vhosts v \
         LEFT JOIN domain_aliases d ON d.vhost_id = v.id ORDER BY v.name, d.domain"
    )?;

    let mut keys_of: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (uid, key) in keys {
        keys_of.entry(uid).or_default().push(key.trim().to_string());
    }
    // Per site: user id -> (name, best role).
    let mut users_of: BTreeMap<i64, BTreeMap<i64, (String, String)>> = BTreeMap::new();
    for m in members.into_iter().filter(|m| !m.disabled) {
        let entry = users_of
            .entry(m.site_id)
            .or_default()
            .entry(m.user_id)
            .or_insert_with(|| (m.name.clone(), m.role.clone()));
        if m.role == "admin" {
            entry.1 = "admin".to_string();
        }
    }
    let mut vhosts_of: BTreeMap<i64, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (sid, name, alias) in vhosts {
        let aliases = vhosts_of.entry(sid).or_default().entry(name).or_default();
        aliases.extend(alias);
    }

    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (host, port) = endpoint(&r);
        let users: Vec<Json> = users_of
            .get(&r.site_id)
            .into_iter()
            .flatten()
            .map(|(id, (name, role))| {
                json!({
                    "name": name,
                    "uid": uid_of(*id),
                    "role": role,
                    "ssh_keys": keys_of.get(id).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let vh: Vec<Json> = vhosts_of
            .get(&r.service_id)
            .into_iter()
            .flatten()
            .map(|(name, aliases)| json!({"name": name, "aliases": aliases}))
            .collect();
        let vars = json!({
            "ansible_host": host,
            "ansible_port": port,
            "ansible_user": admin_user,
            "ansible_become": true,
            "keel_service_id": r.service_id,
            "keel_hostname": r.hostname,
            "keel_ipv4": r.ipv4,
            "keel_ipv6": r.ipv6,
            "keel_site": r.site_name,
            "keel_server_type": r.server_type,
            "keel_status": r.status,
            "keel_users": users,
            "keel_vhosts": vh,
        });
        let Json::Object(vars) = vars else {
            unreachable!("json! of an object literal is an object")
        };
        out.push(InventoryHost {
            name: r.hostname.clone(),
            group: site_group(&r.site_name),
            service_id: r.service_id,
            vars,
        });
    }
    Ok(out)
}

fn endpoint(r: &HostRow) -> (String, u16) {
    if let Some(addr) = r
        .ssh_endpoint
        .as_deref()
        .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
    {
        return (addr.ip().to_string(), addr.port());
    }
    let host = r
        .ipv4
        .clone()
        .or_else(|| r.ipv6.clone())
        .unwrap_or_else(|| r.hostname.clone());
    (host, 22)
}

/// Ansible's dynamic-inventory JSON for `hosts`: groups with their host
/// lists, `all.children`, and `_meta.hostvars`.
pub fn dynamic_json(hosts: &[InventoryHost]) -> Json {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut hostvars = Map::new();
    for h in hosts {
        groups
            .entry(h.group.clone())
            .or_default()
            .push(h.name.clone());
        hostvars.insert(h.name.clone(), Json::Object(h.vars.clone()));
    }
    let mut out = Map::new();
    out.insert(
        "all".into(),
        json!({"children": groups.keys().collect::<Vec<_>>()}),
    );
    for (g, members) in groups {
        out.insert(g, json!({"hosts": members}));
    }
    out.insert("_meta".into(), json!({"hostvars": hostvars}));
    Json::Object(out)
}

/// `GET /api/v1/inventory`: the whole inventory, or with `host` one host's
/// vars (`{}` for an unknown host, as Ansible expects). Platform admins only.
pub async fn for_consumer(
    db: &Db,
    who: &Principal,
    admin_user: &str,
    host: Option<&str>,
) -> Result<Json, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "the inventory is for platform admins' API tokens".into(),
        ));
    }
    let all = hosts(db, admin_user, None).await?;
    Ok(match host {
        Some(name) => all
            .into_iter()
            .find(|h| h.name == name)
            .map(|h| Json::Object(h.vars))
            .unwrap_or_else(|| json!({})),
        None => dynamic_json(&all),
    })
}

/// The inventory of the role run of one host, as dynamic-inventory JSON
/// the engine reads in memory (`keel::inventory::Inventory::from_json`):
/// the consumer's vars plus the panel's key and the VM's own known_hosts
/// file.
pub fn for_role_run(host: &InventoryHost, private_key: &str, known_hosts: &str) -> Json {
    let mut host = host.clone();
    host.vars
        .insert("ansible_ssh_private_key_file".into(), json!(private_key));
    host.vars
        .insert("keel_known_hosts".into(), json!(known_hosts));
    dynamic_json(std::slice::from_ref(&host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_groups_are_valid_group_names() {
        assert_eq!(site_group("Main Site-2"), "site_main_site_2");
        assert_eq!(site_group("2fast"), "site_2fast");
    }

    /// What the engine makes of the role run's inventory: the host in its
    /// site group with the consumer's vars and the panel's connection vars.
    #[test]
    fn role_run_inventory_reads_in_the_engine() {
        let mut vars = Map::new();
        vars.insert("ansible_host".into(), json!("10.0.0.7"));
        vars.insert("ansible_port".into(), json!(22));
        vars.insert("keel_users".into(), json!([{"name": "ann", "uid": 10_001}]));
        let host = InventoryHost {
            name: "vm7.example".into(),
            group: site_group("Main"),
            service_id: 7,
            vars,
        };
        let data = for_role_run(&host, "/data/ssh/id_ed25519", "/data/known_hosts.d/keel-7");
        let inv = keel::inventory::Inventory::from_json(data).unwrap();
        assert_eq!(inv.group_hosts("site_main"), ["vm7.example"]);
        assert_eq!(inv.group_names("vm7.example"), ["site_main"]);
        let got = inv.host_vars("vm7.example");
        let text = |k: &str| got.get(k).map(|v| v.to_string());
        assert_eq!(text("ansible_host").as_deref(), Some("10.0.0.7"));
        assert_eq!(got.get("ansible_port").and_then(|v| v.as_i64()), Some(22));
        assert_eq!(
            text("ansible_ssh_private_key_file").as_deref(),
            Some("/data/ssh/id_ed25519")
        );
        assert_eq!(
            text("keel_known_hosts").as_deref(),
            Some("/data/known_hosts.d/keel-7")
        );
        let users = got.get("keel_users").unwrap();
        let ann = users.get_item_by_index(0).unwrap();
        assert_eq!(ann.get_attr("uid").unwrap().as_i64(), Some(10_001));
    }

    #[test]
    fn uids_are_offset_user_ids() {
        assert_eq!(uid_of(1), 10_001);
        assert_eq!(uid_of(42), 10_042);
    }
}
