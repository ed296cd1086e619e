//! A server's console in the browser (issue #21): who may open one, where
//! it goes and as whom, and the audit rows of each session. The HTTP layer
//! (`api/console.rs`) carries the bytes over a WebSocket and the backends
//! (`provision/console.rs`: a libvirt VM's serial line, or a shell over
//! SSH) carry them to the server; every decision is taken here.
//!
//! Who: the people who may run power actions on the server (its site's
//! admins and platform admins, [`load_managed`]), while it is ready; only
//! platform admins while its site is suspended. The same check runs again
//! while a console is open ([`authorise`] each few seconds), so a console
//! ends when its user's session does, when they lose the right, and when
//! the server leaves `ready`.
//!
//! As whom, over SSH: the caller's own account on the server, the one the
//! `access` role made for them ([`ConsoleTarget::account`]). The panel
//! logs in as its admin account with its own key, trusting only the host
//! key it generated for the server, and runs `sudo -i -u <account>` in a
//! terminal: the person gets exactly the shell their own SSH key would
//! give them (sudo only if their site role grants it), and nobody is given
//! the panel's admin account. Someone with no account there (a platform
//! admin who is not a member, a name the system owns, a disabled account,
//! one the access run has not reached yet) is refused. A serial console is
//! the machine's own login prompt and carries no identity: only those who
//! may power the server off may open it, as with a physical console.
//!
//! Audit: `console.open` when a session starts and `console.close` when it
//! ends (who, which server, the kind, the account, how long and why it
//! ended); never what was typed or shown.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::services::access::{people, unix_name_problem};
use crate::services::servers::load_managed;

/// What carries a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleKind {
    /// The VM's serial line, through its hypervisor.
    Serial,
    /// A terminal over SSH, as the caller's own account.
    Ssh,
}

impl ConsoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Serial => "serial",
            ConsoleKind::Ssh => "ssh",
        }
    }
}

/// A server whose console the caller may open, and how to reach it.
#[derive(Debug, Clone)]
pub struct ConsoleTarget {
    pub service_id: i64,
    pub hostname: String,
    pub vm_name: String,
    /// The host key the panel generated for the server (an OpenSSH line),
    /// the only one an SSH console trusts.
    pub host_key: String,
    /// The driver's forward to the server's sshd, if it has one.
    pub ssh_endpoint: Option<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// The caller's own account on the server, when they have one.
    pub account: Option<String>,
    /// Why they have none (for the refusal's message).
    no_account: &'static str,
}

impl ConsoleTarget {
    /// The account an SSH console runs as; refused when the caller has
    /// none on this server.
    pub fn shell_account(&self) -> Result<&str, PanelError> {
        self.account.as_deref().ok_or_else(|| {
            PanelError::Forbidden(format!(
                "a console over SSH runs as your own account on the server, and you have none: {}",
                self.no_account
            ))
        })
    }

    /// Where the server's sshd is: the driver's forward, else port 22 of
    /// its address.
    pub fn ssh_addr(&self) -> Option<SocketAddr> {
        if let Some(e) = self.ssh_endpoint.as_deref().and_then(|e| e.parse().ok()) {
            return Some(e);
        }
        let ip: IpAddr = self
            .ipv4
            .as_deref()
            .or(self.ipv6.as_deref())
            .and_then(|a| a.parse().ok())?;
        Some(SocketAddr::new(ip, 22))
    }
}

#[derive(sqlx::FromRow)]
struct Reach {
    vm_name: String,
    host_key_public: String,
    ssh_endpoint: Option<String>,
}

/// Whether `who` may open the console of service `id` now, and where it
/// goes. Outsiders are told the server does not exist (404), SSH-only
/// members are refused (403), a server that is not ready is a conflict.
pub async fn authorise(
    db: &Db,
    who: &Principal,
    id: i64,
    admin_user: &str,
) -> Result<ConsoleTarget, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let service = load_managed(&mut conn, who, id).await?;
    let site_state = crate::scalar!(
        &mut conn,
        String,
        "SELECT state FROM sites WHERE id = $1",
        service.site_id
    )?;
    if site_state.as_deref() == Some("suspended") && !who.is_admin {
        return Err(PanelError::Conflict(
            "the site is suspended; its servers' consoles stay closed until a platform admin unsuspends it".into(),
        ));
    }
    if !service.status.rules().powerable {
        return Err(PanelError::Conflict(format!(
            "a console needs a ready server; this one is {}",
            service.status
        )));
    }
    let reach = crate::fetch_opt!(
        &mut conn,
        Reach,
        "SELECT vm_name, host_key_public, ssh_endpoint FROM vm_provisioning WHERE service_id = $1",
        id
    )?
    .ok_or_else(|| PanelError::Conflict("the server has no VM record".into()))?;
    let person = people(&mut conn, Some(service.site_id))
        .await?
        .remove(&service.site_id)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.user_id == who.user_id);
    let (account, no_account) = match person {
        None => (None, "you are not a member of the server's site"),
        Some(p) if p.disabled => (None, "your panel account is disabled"),
        Some(p) => match unix_name_problem(&p.name, admin_user) {
            Some(problem) => (None, problem),
            None if p.uid.is_none() => (
                None,
                "the server's access run has not created your account yet",
            ),
            None => (Some(p.name), ""),
        },
    };
    Ok(ConsoleTarget {
        service_id: id,
        hostname: service.hostname.unwrap_or_default(),
        vm_name: reach.vm_name,
        host_key: reach.host_key_public,
        ssh_endpoint: reach.ssh_endpoint,
        ipv4: service.ipv4,
        ipv6: service.ipv6,
        account,
        no_account,
    })
}

/// Writes `console.open`; returns when it was opened (the database's
/// clock, for the close row's duration).
pub async fn opened(
    db: &Db,
    who: &Principal,
    target: &ConsoleTarget,
    kind: ConsoleKind,
) -> Result<i64, PanelError> {
    let now = db.now();
    let account = match kind {
        ConsoleKind::Ssh => target.account.clone(),
        ConsoleKind::Serial => None,
    };
    let mut tx = db.begin().await?;
    audit::record(
        &mut tx_conn(&mut tx),
        now,
        who,
        Change::new("console.open", "service", target.service_id)
            .after(&json!({ "kind": kind, "account": account })),
    )
    .await?;
    tx.commit().await?;
    Ok(now)
}

/// Why a console ended, as its `console.close` row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The browser closed it (the page was left, the tab closed).
    Client,
    /// The server's side ended (the shell exited, the VM stopped).
    Server,
    /// The user's session or token ended (logout, expiry, revocation).
    SessionEnded,
    /// The user may no longer open it (removed from the site, the site
    /// suspended), or the server left `ready`.
    NoLongerAllowed,
    /// The panel is shutting down.
    Shutdown,
}

/// Writes `console.close` with how long the console was open.
pub async fn closed(
    db: &Db,
    who: &Principal,
    service_id: i64,
    kind: ConsoleKind,
    opened_at: i64,
    reason: CloseReason,
) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    audit::record(
        &mut tx_conn(&mut tx),
        now,
        who,
        Change::new("console.close", "service", service_id).after(&json!({
            "kind": kind,
            "duration_secs": now.saturating_sub(opened_at).max(0),
            "reason": reason,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Option<&str>, v4: Option<&str>, v6: Option<&str>) -> ConsoleTarget {
        ConsoleTarget {
            service_id: 1,
            hostname: "h".into(),
            vm_name: "vm".into(),
            host_key: "ssh-ed25519 AAAA".into(),
            ssh_endpoint: endpoint.map(str::to_string),
            ipv4: v4.map(str::to_string),
            ipv6: v6.map(str::to_string),
            account: None,
            no_account: "you are not a member of the server's site",
        }
    }

    #[test]
    fn sshd_is_the_drivers_forward_else_port_22_of_the_address() {
        let t = target(Some("127.0.0.1:22123"), Some("10.1.2.3"), None);
        assert_eq!(t.ssh_addr(), Some("127.0.0.1:22123".parse().unwrap()));
        let t = target(None, Some("10.1.2.3"), Some("fd00::3"));
        assert_eq!(t.ssh_addr(), Some("10.1.2.3:22".parse().unwrap()));
        let t = target(None, None, Some("fd00::3"));
        assert_eq!(t.ssh_addr(), Some("[fd00::3]:22".parse().unwrap()));
        assert_eq!(target(None, None, None).ssh_addr(), None);
    }

    #[test]
    fn no_account_no_shell_and_the_refusal_says_why() {
        let t = target(None, Some("10.1.2.3"), None);
        let e = t.shell_account().unwrap_err();
        assert!(
            matches!(&e, PanelError::Forbidden(m) if m.contains("not a member")),
            "{e}"
        );
        let t = ConsoleTarget {
            account: Some("ann".into()),
            ..t
        };
        assert_eq!(t.shell_account().unwrap(), "ann");
    }
}
