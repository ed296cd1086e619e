//! Walks every route of the API table (`keel_panel::api::ROUTES`) as each
//! kind of caller (anonymous, an unrelated user, an SSH-only user of the
//! site, the site admin, a platform admin) and checks the answer against
//! the route's declared access, on both backends. Lists are checked for
//! leaks: an outsider and an SSH-only user see none of the site's services.
//! The playbook-run routes (`automation`) are walked too: the SSH-only user
//! is in the group of the world's job template, so `TemplateMember` routes
//! answer them and platform admins, and 404 to everyone else.

mod api_support;

use api_support::{catalog_and_pool, start, Backend, Cred, Panel};
use keel_panel::api::{all_routes, Access};
use keel_panel::domain::Principal;
use keel_panel::services::{sites, unix_groups};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Anonymous,
    Other,
    SshOnly,
    SiteAdmin,
    PlatformAdmin,
}

struct World {
    site: i64,
    service: i64,
    /// The service's provision job (for `/jobs/{id}/...`).
    job: i64,
    owner: Principal,
    ssh: Principal,
    target_token: i64,
    target_key: i64,
    group: i64,
    /// A Unix group of the site with the SSH-only user in it.
    unix_group: i64,
    /// A vhost of the service.
    vhost: i64,
    /// An allowed system package (no server has it picked).
    package: i64,
    /// A snapshot row of the service.
    snapshot: i64,
    /// Playbook runs: a credential, project, inventory, notification
    /// target, a template (group `staff`, which holds the SSH-only user),
    /// its schedule and a queued run.
    credential: i64,
    project: i64,
    inventory: i64,
    target: i64,
    template: i64,
    schedule: i64,
    run: i64,
}

fn body_for(method: &str, path: &str, w: &World) -> Option<Value> {
    if matches!(method, "GET" | "DELETE") {
        return None;
    }
    Some(match path {
        "/auth/login" => json!({"name": "nobody", "password": "wrong-password"}),
        "/me/tokens" => json!({"name": "t", "expires_in_days": 1}),
        "/me/ssh-keys" => {
            json!({"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH x"})
        }
        "/server-types" => {
            json!({"name": format!("t{}", fastrand::u32(..)), "cpus": 1, "ram_mb": 512, "disk_gb": 5, "os_image": "debian"})
        }
        "/sites" => {
            json!({"name": format!("s{}", fastrand::u32(..)), "owner_email": "x@example.org"})
        }
        "/sites/{id}" => json!({"description": "edited"}),
        "/sites/{id}/members" => json!({"user": w.ssh.name, "role": "ssh"}),
        "/services" => json!({"site_id": w.site, "server_type": "small"}),
        "/services/{id}/power" => json!({"action": "start"}),
        "/services/{id}/vhosts" => json!({"name": format!("v{}.example.org", fastrand::u32(..))}),
        "/services/{id}/vhosts/{vhost_id}" => json!({"name": "matrix.example.org"}),
        "/services/{id}/packages" => json!({"packages": ["matrix-pkg"]}),
        "/services/{id}/snapshots/{snapshot_id}/restore" => json!({"confirm": "not-the-hostname"}),
        "/sites/{id}/snapshot-schedule" => json!({"every_secs": 86400, "keep": 3, "enabled": true}),
        // The world's service is a production server: the site admin makes
        // its test server (201), the platform admin is refused a second
        // (409); a clone of a production server is refused (409).
        "/services/{id}/test-server" => json!({}),
        "/services/{id}/clone" => json!({"confirm": "not-the-hostname"}),
        "/admin/packages" => {
            json!({"name": format!("p{}", fastrand::u32(..)), "description": "for the matrix"})
        }
        "/services/{id}/tags" => json!({"tags": ["matrix"]}),
        // No host is configured: the platform admin's move is refused
        // (422, no such host), everyone else's before that.
        "/services/{id}/migrate" => json!({"host": "nowhere"}),
        // The world has no hosts: 404 for the platform admin.
        "/admin/hosts/{name}/state" => json!({"state": "draining"}),
        // Well-formed, so the domain layer answers (the world's server is
        // not ready: 409 for those who may).
        "/services/{id}/vhosts/{vhost_id}/certificate" => {
            json!({"certificate": "not a certificate", "key": "not a key"})
        }
        "/admin/users" => {
            json!({"name": format!("u{}", fastrand::u32(..)), "password": "long-enough"})
        }
        "/admin/users/{id}/password" => json!({"password": "another-long-one"}),
        // Enabling an enabled account: allowed or refused, it changes nothing.
        "/admin/users/{id}/disabled" => json!({"disabled": false}),
        "/admin/pools" => {
            json!({"name": format!("p{}", fastrand::u32(..)), "type": "v6only", "cidr6": format!("2001:db8:{:x}::/64", fastrand::u16(1..)), "hostname_pattern": format!("v{}-{{n}}", fastrand::u32(..)), "count": 2})
        }
        "/sites/{id}/lookup-groups" => json!({"group": "staff", "role": "ssh"}),
        "/sites/{id}/unix-groups" => json!({"name": format!("g{}", fastrand::u32(..))}),
        "/sites/{id}/unix-groups/{group_id}/members" => json!({"user": w.ssh.name}),
        "/admin/groups" => json!({"name": format!("g{}", fastrand::u32(..))}),
        "/admin/groups/{id}/members" => json!({"user": "other"}),
        "/credentials" => {
            json!({"name": format!("c{}", fastrand::u32(..)), "kind": "become_password", "secret": "pw"})
        }
        "/credentials/{id}" => json!({"name": "vault", "kind": "vault_password", "secret": "pw2"}),
        "/projects" => {
            json!({"name": format!("p{}", fastrand::u32(..)), "kind": "directory", "path": "/tmp"})
        }
        "/projects/{id}" => json!({"name": "proj", "kind": "directory", "path": "/tmp"}),
        "/inventories" => json!({"name": format!("i{}", fastrand::u32(..)), "kind": "panel"}),
        "/notification-targets" => {
            json!({"name": format!("n{}", fastrand::u32(..)), "kind": "webhook", "address": "http://127.0.0.1:9/x", "secret": "k"})
        }
        "/templates" => template_body(&format!("t{}", fastrand::u32(..)), w),
        "/templates/{id}" => template_body("tpl", w),
        "/templates/{id}/launch" => json!({"answers": {}}),
        "/schedules" | "/schedules/{id}" => {
            json!({"template_id": w.template, "name": "hourly", "every_secs": 3600})
        }
        "/admin/quotas" => {
            json!({"subject_kind": "group", "subject_id": 999, "max_vms": 1, "max_vcpus": 1, "max_ram_mb": 1, "max_disk_gb": 1})
        }
        _ => json!({}),
    })
}

fn template_body(name: &str, w: &World) -> Value {
    json!({"name": name, "project_id": w.project, "playbook": "site.yml", "inventory_id": w.inventory,
           "credentials": [w.credential], "groups": [w.group]})
}

fn concrete(path: &str, w: &World) -> String {
    let automation = [
        ("/credentials/", w.credential),
        ("/projects/", w.project),
        ("/inventories/", w.inventory),
        ("/notification-targets/", w.target),
        ("/templates/", w.template),
        ("/schedules/", w.schedule),
        ("/runs/", w.run),
    ];
    let id = if let Some((_, id)) = automation.iter().find(|(p, _)| path.starts_with(p)) {
        *id
    } else if path.starts_with("/sites/") {
        w.site
    } else if path.starts_with("/services/") {
        w.service
    } else if path.starts_with("/jobs/") {
        w.job
    } else if path.starts_with("/me/tokens/") {
        w.target_token
    } else if path.starts_with("/me/ssh-keys/") {
        w.target_key
    } else if path.starts_with("/admin/groups/") {
        w.group
    } else {
        w.owner.user_id
    };
    format!(
        "/api/v1{}",
        path.replace("{id}", &id.to_string())
            .replace("{user_id}", &w.ssh.user_id.to_string())
            .replace("{group_id}", &w.unix_group.to_string())
            .replace("{vhost_id}", &w.vhost.to_string())
            .replace("{package_id}", &w.package.to_string())
            .replace("{snapshot_id}", &w.snapshot.to_string())
            .replace("{name}", "staff")
    )
}

fn check(access: Access, role: Role, method: &str, path: &str, status: StatusCode, body: &Value) {
    let what = format!("{role:?} {method} {path} -> {status} {body}");
    assert!(!status.is_server_error(), "{what}");
    let denied = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    match (access, role) {
        (Access::Public, _) => {}
        (_, Role::Anonymous) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
        (Access::User, _) => assert!(!denied, "{what}"),
        (Access::SiteAdmin, Role::Other) => assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "outsiders must not learn the object exists: {what}"
        ),
        (Access::SiteAdmin, Role::SshOnly) => assert_eq!(status, StatusCode::FORBIDDEN, "{what}"),
        (Access::SiteAdmin, _) => assert!(!denied && status != StatusCode::NOT_FOUND, "{what}"),
        (Access::PlatformAdmin, Role::PlatformAdmin) => assert!(!denied, "{what}"),
        (Access::PlatformAdmin, _) => assert_eq!(status, StatusCode::FORBIDDEN, "{what}"),
        // The world's job belongs to the site admin who created the server.
        (Access::JobOwner, Role::SiteAdmin | Role::PlatformAdmin) => {
            assert!(!denied, "{what}")
        }
        (Access::JobOwner, _) => assert_eq!(status, StatusCode::FORBIDDEN, "{what}"),
        (Access::TemplateMember, Role::SshOnly | Role::PlatformAdmin) => {
            assert!(!denied && status != StatusCode::NOT_FOUND, "{what}")
        }
        (Access::TemplateMember, _) => assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "non-members must not learn the template exists: {what}"
        ),
    }
}

async fn setup(p: &Panel) -> (World, Vec<(Role, Cred)>) {
    catalog_and_pool(p, 50).await;
    let (owner, owner_t) = p.user("owner", false).await;
    let (ssh, ssh_t) = p.user("sshuser", false).await;
    let (_, other_t) = p.user("other", false).await;
    let (_, admin_t) = p.user("root", true).await;
    let owner_c = Cred::Bearer(owner_t);
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &owner_c,
            Some(json!({"name": "main", "owner_email": "o@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    sites::set_member(p.db(), &Principal::system(), site, "sshuser", "ssh")
        .await
        .unwrap();
    let created = p
        .call(
            "POST",
            "/api/v1/services",
            &owner_c,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await
        .json;
    let service = created["service"]["id"].as_i64().unwrap();
    let job = created["job_id"].as_i64().unwrap();
    let target_token = p
        .call(
            "POST",
            "/api/v1/me/tokens",
            &owner_c,
            Some(json!({"name": "victim", "expires_in_days": 1})),
        )
        .await
        .json["token"]["id"]
        .as_i64()
        .unwrap();
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMEvD+GiLH7VSNJzFbNAz7thBVW0Wl6E5uKiwnz2Ij+U owner";
    let target_key = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &owner_c,
            Some(json!({"public_key": key})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let group = keel_panel::services::groups::create(p.db(), &Principal::system(), "staff")
        .await
        .unwrap()
        .id;
    sites::set_lookup_group(p.db(), &Principal::system(), site, "staff", "ssh")
        .await
        .unwrap();
    let unix_group = unix_group_with_ssh_user(p, site).await;
    keel_panel::services::groups::add_member(p.db(), &Principal::system(), group, "sshuser")
        .await
        .unwrap();
    let auto = automation_world(p, group).await;
    let vhost = keel_panel::services::vhosts::create(
        p.db(),
        &p.state.config.dns,
        &Principal::system(),
        service,
        &keel_panel::services::vhosts::VhostBody {
            name: "www.matrix.example.org".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .id;
    let system = Principal::system();
    let new_package = |name: &str| keel_panel::services::packages::NewAllowedPackage {
        name: name.into(),
        description: "for the matrix".into(),
    };
    keel_panel::services::packages::allow(p.db(), &system, &new_package("matrix-pkg"))
        .await
        .unwrap();
    let package =
        keel_panel::services::packages::allow(p.db(), &system, &new_package("matrix-gone"))
            .await
            .unwrap()
            .id;
    let snapshot = {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        let id = keel_panel::scalar!(
            &mut conn,
            i64,
            "INSERT INTO snapshots (service_id, name, origin, created_at) VALUES ($1, 'keel-j1', 'manual', 0) RETURNING id",
            service
        )
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        id
    };
    let world = World {
        credential: auto[0],
        project: auto[1],
        inventory: auto[2],
        target: auto[3],
        template: auto[4],
        schedule: auto[5],
        run: auto[6],
        unix_group,
        vhost,
        package,
        snapshot,
        group,
        site,
        service,
        job,
        owner,
        ssh,
        target_token,
        target_key,
    };
    let roles = vec![
        (Role::Anonymous, Cred::Anonymous),
        (Role::Other, Cred::Bearer(other_t)),
        (Role::SshOnly, Cred::Bearer(ssh_t)),
        (Role::SiteAdmin, owner_c),
        (Role::PlatformAdmin, Cred::Bearer(admin_t)),
    ];
    (world, roles)
}

/// A credential, project, inventory, target, template (launchable by
/// `group`), schedule and queued run, made through the library.
async fn automation_world(p: &Panel, group: i64) -> [i64; 7] {
    use keel_panel::automation::{catalog, schedules, templates};
    let system = Principal::system();
    let sealer =
        keel_panel::automation::secrets::Sealer::for_data_dir(&p.state.config.data_dir).unwrap();
    let cred: catalog::NewCredential =
        serde_json::from_value(json!({"name": "vault", "kind": "vault_password", "secret": "pw"}))
            .unwrap();
    let cred = catalog::create_credential(p.db(), &sealer, &system, &cred)
        .await
        .unwrap()
        .id;
    let proj = serde_json::from_value(json!({"name": "proj", "kind": "directory", "path": "/tmp"}))
        .unwrap();
    let proj = catalog::create_project(p.db(), &system, &proj)
        .await
        .unwrap()
        .id;
    let inv = serde_json::from_value(json!({"name": "servers", "kind": "panel"})).unwrap();
    let inv = catalog::create_inventory(p.db(), &system, &inv)
        .await
        .unwrap()
        .id;
    let target = serde_json::from_value(
        json!({"name": "hook", "kind": "webhook", "address": "http://127.0.0.1:9/x", "secret": "k"}),
    )
    .unwrap();
    let target = catalog::create_target(p.db(), &sealer, &system, &target)
        .await
        .unwrap()
        .id;
    let tpl = serde_json::from_value(
        json!({"name": "tpl", "project_id": proj, "playbook": "site.yml",
        "inventory_id": inv, "credentials": [cred], "groups": [group]}),
    )
    .unwrap();
    let tpl = templates::create(p.db(), &system, &tpl).await.unwrap().id;
    let sched =
        serde_json::from_value(json!({"template_id": tpl, "name": "hourly", "every_secs": 3600}))
            .unwrap();
    let sched = schedules::create(p.db(), &system, &sched)
        .await
        .unwrap()
        .schedule
        .id;
    let run = templates::launch(p.db(), &system, tpl, &Default::default())
        .await
        .unwrap()
        .id;
    [cred, proj, inv, target, tpl, sched, run]
}

/// A Unix group of the site holding the SSH-only user.
async fn unix_group_with_ssh_user(p: &Panel, site: i64) -> i64 {
    let system = Principal::system();
    let g = unix_groups::create(
        p.db(),
        &p.state.config.access,
        "keeladmin",
        &system,
        site,
        &format!("ug{}", fastrand::u32(..)),
    )
    .await
    .unwrap();
    unix_groups::add_member(p.db(), &system, site, g.id, "sshuser")
        .await
        .unwrap();
    g.id
}

async fn every_route_for_every_role(b: Backend) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let p = start(b, move |c| {
        c.auth.login_max_failures = 1000;
        c.data_dir = data_dir;
    })
    .await;
    let (mut w, roles) = setup(&p).await;

    // Lists leak nothing to outsiders or SSH-only users.
    for (role, cred) in &roles[1..] {
        let services = p.call("GET", "/api/v1/services", cred, None).await;
        let sites = p.call("GET", "/api/v1/sites", cred, None).await;
        let expect = if matches!(role, Role::SiteAdmin | Role::PlatformAdmin) {
            1
        } else {
            0
        };
        assert_eq!(
            services.json["total"], expect,
            "{role:?} services {}",
            services.json
        );
        assert_eq!(sites.json["total"], expect, "{role:?} sites {}", sites.json);
    }

    let mut checked = 0;
    for (method, path, access, _) in all_routes() {
        for (role, cred) in &roles {
            let url = concrete(path, &w);
            let r = p.call(method, &url, cred, body_for(method, path, &w)).await;
            check(*access, *role, method, path, r.status, &r.json);
            checked += 1;
            // Undo what a route may have changed that later checks rely on.
            let system = Principal::system();
            sites::set_member(p.db(), &system, w.site, "sshuser", "ssh")
                .await
                .unwrap();
            sites::set_lookup_group(p.db(), &system, w.site, "staff", "ssh")
                .await
                .unwrap();
            let groups = unix_groups::list(p.db(), &system, w.site).await.unwrap();
            match groups.iter().find(|g| g.id == w.unix_group) {
                Some(g) if g.members.iter().any(|m| m == "sshuser") => {}
                Some(_) => {
                    unix_groups::add_member(p.db(), &system, w.site, w.unix_group, "sshuser")
                        .await
                        .unwrap()
                }
                None => w.unix_group = unix_group_with_ssh_user(&p, w.site).await,
            }
            let vhosts = keel_panel::services::vhosts::list(p.db(), &system, w.service)
                .await
                .unwrap();
            if !vhosts.iter().any(|v| v.id == w.vhost) {
                let body = keel_panel::services::vhosts::VhostBody {
                    name: "www.matrix.example.org".into(),
                    ..Default::default()
                };
                if let Ok(v) = keel_panel::services::vhosts::create(
                    p.db(),
                    &p.state.config.dns,
                    &system,
                    w.service,
                    &body,
                )
                .await
                {
                    w.vhost = v.id;
                }
            }
            let site = sites::get(p.db(), &system, w.site).await.unwrap();
            if site.site.state != "active" {
                sites::set_suspended(p.db(), &system, w.site, false)
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(checked, all_routes().count() * roles.len());
}
both_backends!(matrix, every_route_for_every_role);
