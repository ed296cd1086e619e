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
//!   through lookup groups), each `{name, uid, role, ssh_keys, groups}`:
//!   `role` is `admin` (sudo) or `ssh`, `uid` the person's one UID
//!   (`unix_ids`: LDAP's `uidNumber` or allocated once by the panel, the
//!   same on every server), `groups` the site's Unix groups they are in.
//!   Disabled accounts, people without a UID yet (an `access` job allocates
//!   it before its run) and names a Unix account cannot have are left out;
//! - `keel_groups`: the site's Unix groups, `{name, gid, members}`;
//! - `keel_access_blocked`: true while the site is suspended (nobody the
//!   panel manages may log in);
//! - `keel_vhosts`: `[{name, aliases, kind, document_root, target, tls}]`
//!   (`services::vhosts`; `kind` is `static`, `php`, `wsgi` or `proxy`;
//!   `tls`: a certificate was installed, so Apache serves it on 443 too);
//! - `keel_packages`: the Debian packages the site's admins picked from the
//!   allowed list (`services::packages`), by name;
//! - `keel_tags`: the server's tags, sorted (`services::tags`).
//!
//! Only platform admins may read it (API tokens of admin accounts).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use crate::config::AccessConfig;
use crate::db::Db;
use crate::domain::{PanelError, Principal};
use crate::fetch_all;
use crate::lifecycle::Status;
use crate::services::access::{self, unix_name_problem};

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
    site_state: String,
    server_type: String,
    status: Status,
    hostname: String,
    ipv4: Option<String>,
    ipv6: Option<String>,
    ssh_endpoint: Option<String>,
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
            "SELECT s.id AS service_id, s.site_id, si.name AS site_name, si.state AS site_state, t.name AS server_type, s.status, \
               a.hostname, a.ipv4, a.ipv6, p.ssh_endpoint \
             FROM services s JOIN sites si ON si.id = s.site_id JOIN server_types t ON t.id = s.server_type_id \
             JOIN pool_addresses a ON a.service_id = s.id \
             LEFT JOIN vm_provisioning p ON p.service_id = s.id \
             WHERE s.status NOT IN ({}) AND ($1 IS NULL OR s.id = $1) ORDER BY s.id",
            Status::sql_list(&Status::all_where(|r| r.leaving))
        )),
        service_id
    )?;
    let people = access::people(&mut conn, None).await?;
    let groups = access::unix_groups(&mut conn, None).await?;
    let keys = fetch_all!(
        &mut conn,
        (i64, String),
        "SELECT user_id, public_key FROM ssh_keys ORDER BY id"
    )?;
    let vhosts_of = crate::services::vhosts::by_service(&mut conn, service_id).await?;
    let mut packages_of = crate::services::packages::by_service(&mut conn, service_id).await?;
    let mut tags_of = crate::services::tags::by_service(&mut conn, service_id).await?;
    let mut keys_of: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (uid, key) in keys {
        keys_of.entry(uid).or_default().push(key.trim().to_string());
    }

    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (host, port) = endpoint(&r);
        let site_groups = groups
            .get(&r.site_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let users: Vec<Json> = people
            .get(&r.site_id)
            .into_iter()
            .flatten()
            .filter(|p| !p.disabled && unix_name_problem(&p.name, admin_user).is_none())
            .filter_map(|p| {
                Some(json!({
                    "name": p.name,
                    "uid": p.uid?,
                    "role": p.role.as_str(),
                    "ssh_keys": keys_of.get(&p.user_id).cloned().unwrap_or_default(),
                    "groups": site_groups
                        .iter()
                        .filter(|g| g.members.contains(&p.name))
                        .map(|g| g.name.as_str())
                        .collect::<Vec<_>>(),
                }))
            })
            .collect();
        // Members who get no account are no members on the host either.
        let names: Vec<&str> = users.iter().filter_map(|u| u["name"].as_str()).collect();
        let unix_groups: Vec<Json> = site_groups
            .iter()
            .map(|g| {
                let members: Vec<&String> = g
                    .members
                    .iter()
                    .filter(|m| names.contains(&m.as_str()))
                    .collect();
                json!({"name": g.name, "gid": g.gid, "members": members})
            })
            .collect();
        let vh: Vec<Json> = vhosts_of
            .get(&r.service_id)
            .into_iter()
            .flatten()
            .map(|v| {
                json!({
                    "name": v.name,
                    "aliases": v.aliases,
                    "kind": v.kind.as_str(),
                    "document_root": v.document_root,
                    "target": v.target,
                    "tls": v.tls(),
                })
            })
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
            "keel_groups": unix_groups,
            "keel_access_blocked": r.site_state == "suspended",
            "keel_vhosts": vh,
            "keel_packages": packages_of.remove(&r.service_id).unwrap_or_default(),
            "keel_tags": tags_of.remove(&r.service_id).unwrap_or_default(),
        });
        let Json::Object(mut vars) = vars else {
            unreachable!("json! of an object literal is an object")
        };
        vars.values_mut().for_each(data_only);
        out.push(InventoryHost {
            name: r.hostname.clone(),
            group: site_group(&r.site_name),
            service_id: r.service_id,
            vars,
        });
    }
    Ok(out)
}

/// Marks every string in `v` that the engine (or Ansible) would template
/// as data: `{"__ansible_unsafe": "…"}`, the form ansible-core's inventory
/// JSON reads as an `!unsafe` string and the engine too. The host vars are
/// what people typed (key comments, vhost names, package names), and an
/// SSH key's comment of `{{ lookup('pipe', …) }}` must not run a command on
/// the panel's machine when a role reads it. Strings without a template
/// delimiter stay plain: they are never templated anyway, and the JSON
/// keeps its shape for other readers.
fn data_only(v: &mut Json) {
    match v {
        Json::String(s) if keel::template::is_template(s) => {
            *v = json!({ "__ansible_unsafe": std::mem::take(s) });
        }
        Json::Array(items) => items.iter_mut().for_each(data_only),
        Json::Object(m) => m.values_mut().for_each(data_only),
        _ => {}
    }
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
/// People who have no UID yet get theirs first (from `access`), so every
/// person with a role is in `keel_users`.
pub async fn for_consumer(
    db: &Db,
    who: &Principal,
    access: &AccessConfig,
    admin_user: &str,
    host: Option<&str>,
) -> Result<Json, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "the inventory is for platform admins' API tokens".into(),
        ));
    }
    access::ensure_unix_ids(db, access, None).await?;
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
/// `groups`: more groups the host is in for this run (a stack's).
pub fn for_role_run(
    host: &InventoryHost,
    private_key: &str,
    known_hosts: &str,
    groups: &[String],
) -> Json {
    let mut host = host.clone();
    host.vars
        .insert("keel_known_hosts".into(), json!(known_hosts));
    for_hosts_run(&[(host, groups.to_vec())], private_key)
}

/// The inventory of a run against several of the panel's servers (a
/// multi-server stack's): each host with its own vars (its
/// `keel_known_hosts`, a `keel_jump_host` where it has one) and the
/// panel's key, in its site group and in the extra groups beside it.
pub fn for_hosts_run(hosts: &[(InventoryHost, Vec<String>)], private_key: &str) -> Json {
    let plain: Vec<InventoryHost> = hosts
        .iter()
        .map(|(h, _)| {
            let mut h = h.clone();
            h.vars
                .insert("ansible_ssh_private_key_file".into(), json!(private_key));
            h
        })
        .collect();
    let mut out = dynamic_json(&plain);
    if let Json::Object(map) = &mut out {
        for (host, groups) in hosts {
            for g in groups {
                if *g == host.group {
                    continue;
                }
                let fresh = !map.contains_key(g);
                let entry = map.entry(g.clone()).or_insert_with(|| json!({"hosts": []}));
                if let Some(Json::Array(list)) = entry.get_mut("hosts") {
                    if !list.iter().any(|n| n == &json!(host.name)) {
                        list.push(json!(host.name));
                    }
                }
                if fresh {
                    if let Some(Json::Array(children)) =
                        map.get_mut("all").and_then(|a| a.get_mut("children"))
                    {
                        children.push(json!(g));
                    }
                }
            }
        }
    }
    out
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
        let data = for_role_run(
            &host,
            "/data/ssh/id_ed25519",
            "/data/known_hosts.d/keel-7",
            &["weblab".to_string()],
        );
        let inv = keel::inventory::Inventory::from_json(data).unwrap();
        assert_eq!(inv.group_hosts("site_main"), ["vm7.example"]);
        assert_eq!(inv.group_hosts("weblab"), ["vm7.example"]);
        let mut groups = inv.group_names("vm7.example");
        groups.sort();
        assert_eq!(groups, ["site_main", "weblab"]);
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
}
