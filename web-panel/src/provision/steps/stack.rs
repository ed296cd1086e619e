//! The second half of a stack server type's `configure` run
//! (`services::catalog::Stack`): after the panel's own playbook, the
//! stack's playbook (a file beside the panel's) runs against the one
//! server, with the server in the stack's inventory groups and the stack's
//! secrets as extra variables.
//!
//! Secrets are generated once per server — 32 random letters and digits —
//! and kept in `service_secrets` sealed with the panel's key (the purpose
//! names the server and the variable, so a sealed value moved to another
//! row does not open). They reach the engine in memory only, as the
//! database root password does; a later run (a re-converge) gets the same
//! values, so the stack's services keep working.
//!
//! A **multi-server** stack (`Stack::members`) is one request that makes
//! one server per member, all tied to the first (`services.stack_id`).
//! Each goes through the flow on its own up to its `configure` run of the
//! panel's playbook, which then marks it done (`stack_base_at`) and queues
//! the `stack_configure` job ([`StackConfigureStep`]) instead of making it
//! ready. That job does nothing until every member is done, then runs the
//! stack's playbook once against all of them — each in the stack's groups
//! and its member's, a member with a `jump` reached through that member's
//! sshd (`keel_jump_host`) at its allocated address, never directly —
//! with the secrets of the first member, and makes them all `ready`. If
//! it fails for good, the members waiting for it fail with its reason;
//! retrying one of them runs its configure and then the stack's run again.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::failure::{fail, step_error};
use super::kit::read_state;
use super::role_run::Then;
use crate::automation::secrets::Sealer;
use crate::db::tx_conn;
use crate::domain::PanelError;
use crate::lifecycle::jobs::{FlowJob, StackConfigureJob};
use crate::lifecycle::{Status, Step};
use crate::provision::{hostkey, inventory, FailureReason, ProvisionError, Provisioner};
use crate::queue::worker::record_failure;
use crate::queue::{self, Failure, Job, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::catalog::Stack;
use crate::services::servers::{stack_members, StackMemberRow};
use crate::store::{Store, StoreError};
use crate::{execute, scalar};

/// Letters and digits of a generated secret.
const SECRET_LEN: usize = 32;

/// The stack of service `id`'s server type, if it has one.
pub(super) async fn stack_of(p: &Provisioner, id: i64) -> Result<Option<Stack>, ProvisionError> {
    let mut rc = p.db.read().await?;
    let text = scalar!(
        &mut rc.conn(),
        String,
        "SELECT t.stack FROM services s JOIN server_types t ON t.id = s.server_type_id \
         WHERE s.id = $1",
        id
    )?;
    Ok(text.as_deref().and_then(Stack::of_column))
}

/// The multi-server stack service `id` is a member of: the id of its
/// first member.
pub(super) async fn stack_id_of(p: &Provisioner, id: i64) -> Result<Option<i64>, ProvisionError> {
    let mut rc = p.db.read().await?;
    Ok(scalar!(
        &mut rc.conn(),
        i64,
        "SELECT stack_id FROM services WHERE id = $1 AND stack_id IS NOT NULL",
        id
    )?)
}

/// Member `id` had its own configure run: recorded, and the stack's run
/// queued (it waits for the others by doing nothing until all are done).
pub(super) async fn base_done(
    p: &Provisioner,
    id: i64,
    stack_id: i64,
) -> Result<(), ProvisionError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    execute!(
        &mut tx_conn(&mut tx),
        "UPDATE services SET stack_base_at = $2 WHERE id = $1",
        id,
        now
    )?;
    queue::enqueue(&mut tx, StackConfigureJob { stack_id }.spec(None)).await?;
    tx.commit().await?;
    Ok(())
}

/// `stack_configure`: the stack's playbook against all its servers.
pub struct StackConfigureStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for StackConfigureStep {
    fn policy(&self) -> RetryPolicy {
        super::configure::policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = StackConfigureJob::decode(ctx.payload())?.stack_id;
        configure_stack(&self.0, id, &ctx)
            .await
            .map_err(|e| step_error(&self.0, Step::Configure, e))
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(StackConfigureJob { stack_id }) = StackConfigureJob::decode(&job.payload) {
            let reason = FailureReason::from_detail(Step::Configure, failure.detail);
            if let Ok(members) = members_of(&self.0, stack_id).await {
                for m in members.iter().filter(|m| m.status == Status::Configuring) {
                    fail(&self.0, m.id, &reason).await;
                }
            }
        }
        record_failure(store, job, failure.error).await
    }
}

async fn members_of(p: &Provisioner, stack_id: i64) -> Result<Vec<StackMemberRow>, PanelError> {
    let mut rc = p.db.read().await?;
    stack_members(&mut rc.conn(), stack_id).await
}

/// `[v6]` for an IPv6 address in `user@host:port`.
fn hop_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

async fn configure_stack(
    p: &Provisioner,
    stack_id: i64,
    ctx: &JobContext,
) -> Result<(), ProvisionError> {
    let Some(stack) = stack_of(p, stack_id).await? else {
        return Ok(());
    };
    let members = members_of(p, stack_id).await?;
    if members.iter().any(|m| m.status.rules().leaving) {
        // Deleting one deletes them all; nothing to configure.
        return Ok(());
    }
    let waiting: Vec<&str> = members
        .iter()
        .filter(|m| {
            !(m.status == Status::Ready || (m.status == Status::Configuring && m.base_at.is_some()))
        })
        .map(|m| m.member.as_str())
        .collect();
    if !waiting.is_empty() {
        tracing::info!(
            stack_id,
            ?waiting,
            "the stack's run waits for its other servers"
        );
        return Ok(());
    }
    let log = crate::queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    let out = run_stack(p, stack_id, &stack, &members, ctx, &log).await;
    if let Err(e) = &out {
        log.message(e.to_string());
    }
    let _ = log.close().await;
    out?;
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    for m in members.iter().filter(|m| m.status == Status::Configuring) {
        super::configure::make_ready(p, &mut tx, now, m.id).await?;
    }
    tx.commit().await?;
    tracing::info!(
        stack_id,
        servers = members.len(),
        "the stack's playbook applied; stack ready"
    );
    Ok(())
}

/// The inventory of the stack's run and the run itself.
async fn run_stack(
    p: &Provisioner,
    stack_id: i64,
    stack: &Stack,
    members: &[StackMemberRow],
    ctx: &JobContext,
    log: &crate::queue::log::JobLog,
) -> Result<(), ProvisionError> {
    let admin = &p.config.admin_user;
    // Each member as the inventory lists it, its host key, and how it is
    // reached: directly (its sshd checked as a configure run does), or
    // through its jump member at its allocated address.
    let mut hosts = Vec::new();
    let mut keys: Vec<(String, u16, String)> = Vec::new();
    for m in members {
        let (_, Some(row)) = read_state(&p.db, m.id).await? else {
            return Err(ProvisionError::Missing(format!(
                "server {} of the stack has no provisioning record",
                m.id
            )));
        };
        let spec = stack.members.iter().find(|s| s.name == m.member);
        let jump = spec.and_then(|s| s.jump.clone());
        let host = match jump {
            None => super::role_run::check_reachable(p, m.id, &row, log).await?,
            Some(_) => inventory::hosts(&p.db, admin, Some(m.id))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ProvisionError::Missing("the service has no address".into()))?,
        };
        hosts.push((m, host, jump, row.host_key_public));
    }
    let addr_of = |h: &inventory::InventoryHost| {
        let host = h
            .vars
            .get("ansible_host")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let port = h
            .vars
            .get("ansible_port")
            .and_then(|v| v.as_u64())
            .unwrap_or(22);
        (host.to_string(), u16::try_from(port).unwrap_or(22))
    };
    let known = p.known_hosts_path(&format!("stack-{stack_id}"));
    let known_text = known.display().to_string();
    let mut entries = Vec::new();
    for i in 0..hosts.len() {
        let (m, host, jump, key) = &hosts[i];
        let mut host = host.clone();
        if let Some(via) = jump {
            let Some((_, gate, _, _)) = hosts.iter().find(|(o, ..)| &o.member == via) else {
                return Err(ProvisionError::Missing(format!(
                    "member {} jumps through {via}, which the stack does not have",
                    m.member
                )));
            };
            let (gate_host, gate_port) = addr_of(gate);
            let own = host
                .vars
                .get("keel_ipv4")
                .or_else(|| host.vars.get("keel_ipv6"))
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    ProvisionError::Missing(format!("member {} has no address", m.member))
                })?
                .to_string();
            host.vars.insert("ansible_host".into(), json!(own));
            host.vars.insert("ansible_port".into(), json!(22));
            host.vars.insert(
                "keel_jump_host".into(),
                json!(format!("{admin}@{}:{gate_port}", hop_host(&gate_host))),
            );
            log.message(format!(
                "{} ({}) is reached through {} ({via})",
                host.name, m.member, gate.name
            ));
        }
        let (h, port) = addr_of(&host);
        keys.push((h, port, key.clone()));
        host.vars
            .insert("keel_known_hosts".into(), json!(known_text));
        for (k, v) in &stack.vars {
            host.vars.entry(k.clone()).or_insert_with(|| v.clone());
        }
        entries.push((host, stack.groups_of(&m.member)));
    }
    let lines: Vec<(&str, u16, &str)> = keys
        .iter()
        .map(|(h, port, k)| (h.as_str(), *port, k.as_str()))
        .collect();
    hostkey::write_known_hosts_lines(&known, &lines)?;
    let then = then_run(p, stack_id, stack).await?;
    log.message(format!(
        "running the stack's playbook {} against {} servers: {}",
        then.playbook.display(),
        entries.len(),
        entries
            .iter()
            .map(|(h, _)| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let inventory =
        inventory::for_hosts_run(&entries, &p.panel_key()?.private_path.display().to_string());
    let opts = keel::executor::RunOptions {
        forks: entries.len(),
        extra_vars: then.extra_vars,
        ..Default::default()
    };
    super::role_run::execute(inventory, then.playbook, opts, ctx, log).await?;
    Ok(())
}

/// What the stack's run needs: its playbook beside the panel's, its
/// groups, and its secrets (made now for a server that has none yet).
pub(super) async fn then_run(
    p: &Provisioner,
    id: i64,
    stack: &Stack,
) -> Result<Then, ProvisionError> {
    let dir = p
        .config
        .playbook
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let playbook = dir.join(&stack.playbook);
    if !playbook.is_file() {
        return Err(ProvisionError::Playbook(format!(
            "the stack's playbook {} does not exist",
            playbook.display()
        )));
    }
    let mut extra = keel::vars::VarMap::new();
    for name in &stack.secrets {
        let value = secret(p, id, name).await?;
        extra.insert(name.clone(), keel::vars::unsafe_string(&value));
    }
    Ok(Then {
        playbook,
        extra_vars: extra,
        groups: stack.groups.clone(),
        host_vars: stack.vars.clone().into_iter().collect(),
    })
}

/// The purpose a secret is sealed for.
fn purpose(id: i64, name: &str) -> String {
    format!("service-secret:{id}:{name}")
}

/// Secret `name` of service `id`: the stored one, or a new one stored
/// first. Two runs racing keep the first one stored.
async fn secret(p: &Provisioner, id: i64, name: &str) -> Result<String, ProvisionError> {
    let sealer = Sealer::for_data_dir(&p.data_dir)
        .map_err(|e| ProvisionError::Playbook(format!("the panel's key: {e}")))?;
    let aad = purpose(id, name);
    let stored = {
        let mut rc = p.db.read().await?;
        scalar!(
            &mut rc.conn(),
            String,
            "SELECT sealed FROM service_secrets WHERE service_id = $1 AND name = $2",
            id,
            name
        )?
    };
    let sealed = match stored {
        Some(s) => s,
        None => {
            let fresh = generate()?;
            let sealed = sealer
                .seal(&aad, &fresh)
                .map_err(|e| ProvisionError::Playbook(format!("sealing {name}: {e}")))?;
            let mut tx = p.db.begin().await?;
            let mut conn = tx_conn(&mut tx);
            execute!(
                &mut conn,
                "INSERT INTO service_secrets (service_id, name, sealed) VALUES ($1, $2, $3) \
                 ON CONFLICT (service_id, name) DO NOTHING",
                id,
                name,
                sealed.as_str()
            )?;
            let kept = scalar!(
                &mut conn,
                String,
                "SELECT sealed FROM service_secrets WHERE service_id = $1 AND name = $2",
                id,
                name
            )?
            .unwrap_or(sealed);
            tx.commit().await?;
            kept
        }
    };
    sealer
        .open(&aad, &sealed)
        .map(|s| s.expose().to_string())
        .map_err(|e| ProvisionError::Playbook(format!("opening {name}: {e}")))
}

/// 32 random letters and digits.
fn generate() -> Result<String, ProvisionError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(SECRET_LEN);
    let mut buf = [0u8; 64];
    while out.len() < SECRET_LEN {
        getrandom::getrandom(&mut buf)
            .map_err(|e| ProvisionError::Playbook(format!("random: {e}")))?;
        // 62 × 4 = 248: bytes from 248 up are dropped, so every character
        // is equally likely.
        for b in buf {
            if out.len() < SECRET_LEN && b < 248 {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_32_letters_and_digits_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
