//! `keel-panel demo`: the data a first-time visitor needs to click
//! "Create server" on a fresh machine: an admin account with a new random
//! password, a site, a server type on the Debian base image, and an address
//! pool for VMs on QEMU user-mode networking.
//!
//! Every VM on user-mode networking has a private network of its own, so
//! the demo pool can hand out addresses from one /24 to every VM: the guest
//! is configured with its allocated address, and the pool's gateway (the
//! first host of the network) is where QEMU answers for the host. The
//! panel's callback URL therefore names the gateway; QEMU forwards it to the
//! panel on 127.0.0.1.
//!
//! Seeding is idempotent: a second run keeps the site, type and pool and only
//! sets a new admin password.

use ipnet::Ipv4Net;

use crate::alloc;
use crate::auth::{self, Passwords};
use crate::db::Db;
use crate::domain::{Page, PanelError, Principal};
use crate::services::catalog::{self, NewServerType};
use crate::services::sites::{self, NewSite};

/// The demo network: every VM's user-mode network is this one.
pub const DEMO_CIDR: &str = "10.77.0.0/24";
/// The gateway of [`DEMO_CIDR`]; QEMU maps it to the host's 127.0.0.1.
pub const DEMO_GATEWAY: &str = "10.77.0.1";
pub const DEMO_ADMIN: &str = "admin";
pub const DEMO_SITE: &str = "demo";
pub const DEMO_SERVER_TYPE: &str = "small";
pub const DEMO_POOL: &str = "demo";

/// What `demo` prints for the person at the keyboard.
#[derive(Debug, Clone)]
pub struct DemoCredentials {
    pub user: String,
    pub password: String,
}

/// Creates (or refreshes) the demo data; see the module docs.
pub async fn seed(
    db: &Db,
    passwords: &Passwords,
    image: &str,
) -> Result<DemoCredentials, PanelError> {
    let system = Principal::system();
    let password = auth::random_secret();
    match auth::user_by_name(db, DEMO_ADMIN).await? {
        Some(user) => {
            auth::set_password(db, passwords, &system, user.id, password.clone()).await?;
        }
        None => {
            auth::create_user(
                db,
                passwords,
                &system,
                DEMO_ADMIN,
                None,
                Some(password.clone()),
                true,
            )
            .await?;
        }
    }

    let existing = sites::list(
        db,
        &system,
        Page {
            limit: Page::MAX_LIMIT,
            offset: 0,
        },
    )
    .await?;
    if !existing.items.iter().any(|s| s.name == DEMO_SITE) {
        sites::create(
            db,
            &system,
            &NewSite {
                name: DEMO_SITE.to_string(),
                description: "Servers made by the demo".to_string(),
                owner_email: "demo@keel.test".to_string(),
            },
        )
        .await?;
    }

    if !catalog::list(db)
        .await?
        .iter()
        .any(|t| t.name == DEMO_SERVER_TYPE)
    {
        catalog::create(
            db,
            &system,
            &NewServerType {
                name: DEMO_SERVER_TYPE.to_string(),
                cpus: 1,
                ram_mb: 1024,
                disk_gb: 4,
                os_image: image.to_string(),
                roles: vec!["common".to_string(), "mwscommon".to_string()],
                stack: None,
            },
        )
        .await?;
    }

    let pools = alloc::pool_use(db).await?;
    if !pools.iter().any(|p| p.name == DEMO_POOL) {
        let cidr: Ipv4Net = DEMO_CIDR.parse().expect("the demo network is a valid CIDR");
        let file = alloc::generate(
            DEMO_POOL,
            "public",
            Some(cidr),
            None,
            "demo-{n:03}.keel.test",
            20,
        )?;
        alloc::import(db, &system, &file, 60).await?;
    }

    Ok(DemoCredentials {
        user: DEMO_ADMIN.to_string(),
        password,
    })
}
