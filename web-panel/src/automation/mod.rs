//! Playbook runs for admins (AWX/Semaphore-like), built on the panel's
//! queue and the engine as a library: projects, credentials, inventories,
//! job templates with surveys and RBAC, schedules, runs and notifications.
//!
//! Layout, bottom up (a file imports only files above it in this list):
//! - `secrets.rs`: AES-256-GCM sealing under `<data_dir>/automation.key`,
//!   and `Secret`, an opened value without a `Debug` that shows it;
//! - `survey.rs`: typed survey questions and the validation of answers;
//! - `model.rs`: the enums (TEXT columns parsed at the boundary) and rows;
//! - `jobs.rs`: the job kinds (`template_run`, `schedule_fire`, `notify`)
//!   and their payloads;
//! - `git.rs`: a git project's mirror, fetch and per-commit checkout;
//! - `requirements.rs`: a project's `requirements.yml` roles and
//!   collections, installed by the engine's galaxy installer per revision;
//! - `catalog.rs`: credentials, projects, inventories, notification
//!   targets (platform admins only; URLs and paths checked when saved);
//! - `templates.rs`: job templates, who may launch them, launching;
//! - `runs.rs`: the run history, relaunch and cancel;
//! - `schedules.rs`: schedules, their next fire times, the
//!   `queue::cron::ScheduleSource` over them and the `schedule_fire` job;
//! - `run_job.rs`: the `template_run` job (checkout, inventory,
//!   credentials, the engine, the recap);
//! - `notify.rs`: the `notify` job: e-mail over SMTP and signed webhooks;
//! - `builtin.rs`: the templates Keel seeds, disabled.
//!
//! Every domain function takes the caller and decides authorisation itself
//! (platform admins manage everything; members of a template's groups may
//! see, launch, relaunch and cancel its runs) and writes its audit row in
//! the same transaction as the change.

pub mod builtin;
pub mod catalog;
pub mod git;
pub mod jobs;
pub mod model;
pub mod notify;
pub mod requirements;
pub mod run_job;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod survey;
pub mod templates;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::db::Db;
use crate::domain::PanelError;
use crate::provision::inventory::{dynamic_json, hosts};
use crate::provision::Provisioner;
use crate::queue::{JobError, Registry};
use jobs::AutomationKind;
use model::InventorySource;
use secrets::{Sealer, SecretError};

/// Why a run (or a notification) could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    #[error(transparent)]
    Panel(#[from] PanelError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error("project requirements: {0}")]
    Requirements(#[from] requirements::RequirementsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The inventory does not load: no retry will help.
    #[error("inventory: {0}")]
    Inventory(String),
    /// A location the panel does not connect to (`outbound`, the SSRF
    /// guard): no retry will help.
    #[error("refused: {0}")]
    Refused(#[from] crate::outbound::OutboundError),
    /// An HTTP inventory could not be fetched: try again.
    #[error("inventory: {0}")]
    InventoryFetch(String),
    /// The playbook or its variables do not load: no retry will help.
    #[error("playbook: {0}")]
    Playbook(String),
    /// A notification could not be delivered: try again.
    #[error("delivery: {0}")]
    Delivery(String),
    /// The run was cancelled and is recorded so.
    #[error("cancelled")]
    Cancelled,
    /// The job's lease was lost or the worker is stopping: the next owner
    /// of the job runs it again.
    #[error("stopped before the run finished: the job's lease was lost or the worker is stopping")]
    Stopped,
}

impl AutomationError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AutomationError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn into_job_error(self) -> JobError {
        match &self {
            AutomationError::Cancelled => JobError::Cancelled,
            AutomationError::Git(git::GitError::Failed {
                action: "rev-parse",
                ..
            })
            | AutomationError::Git(git::GitError::Refused(
                crate::outbound::OutboundError::Internal { .. }
                | crate::outbound::OutboundError::NotAllowed { .. },
            ))
            | AutomationError::Refused(
                crate::outbound::OutboundError::Internal { .. }
                | crate::outbound::OutboundError::NotAllowed { .. },
            )
            | AutomationError::Inventory(_)
            | AutomationError::Playbook(_)
            | AutomationError::Secret(_) => JobError::permanent(self),
            AutomationError::Panel(PanelError::NotFound(_) | PanelError::Invalid { .. }) => {
                JobError::permanent(self)
            }
            AutomationError::Requirements(e) if !e.is_retryable() => JobError::permanent(self),
            _ => JobError::retryable(self),
        }
    }
}

impl From<crate::store::StoreError> for AutomationError {
    fn from(e: crate::store::StoreError) -> Self {
        AutomationError::Panel(PanelError::Store(e))
    }
}

/// What the automation jobs share: the database, the data directory (key
/// file, project checkouts, run directories), the sealer, and the
/// provisioner for the panel's own inventory and SSH key.
pub struct Automation {
    pub db: Db,
    pub data_dir: PathBuf,
    pub sealer: Sealer,
    pub provisioner: Arc<Provisioner>,
}

impl Automation {
    pub fn new(p: Arc<Provisioner>) -> Result<Automation, AutomationError> {
        Ok(Automation {
            db: p.db.clone(),
            data_dir: p.data_dir.clone(),
            sealer: Sealer::for_data_dir(&p.data_dir)?,
            provisioner: p,
        })
    }

    /// The panel's ready servers matching the inventory's filters (site,
    /// server type, tag: each one given must match), with the
    /// panel's key and each VM's own known_hosts, as dynamic-inventory JSON.
    async fn panel_inventory(&self, src: &InventorySource) -> Result<Value, AutomationError> {
        let p = &self.provisioner;
        let mut list = hosts(&self.db, &p.config.admin_user, None).await?;
        let var = |h: &crate::provision::inventory::InventoryHost, k: &str| {
            h.vars.get(k).and_then(|v| v.as_str()).map(String::from)
        };
        list.retain(|h| {
            var(h, "keel_status").as_deref() == Some("ready")
                && src
                    .filter_site
                    .as_ref()
                    .is_none_or(|s| var(h, "keel_site").as_ref() == Some(s))
                && src
                    .filter_server_type
                    .as_ref()
                    .is_none_or(|t| var(h, "keel_server_type").as_ref() == Some(t))
                && src.filter_tag.as_ref().is_none_or(|t| {
                    h.vars
                        .get("keel_tags")
                        .and_then(Value::as_array)
                        .is_some_and(|tags| tags.iter().any(|x| x.as_str() == Some(t)))
                })
        });
        let key = p.key.as_ref().map(|k| k.private_path.display().to_string());
        for h in &mut list {
            if let Some(k) = &key {
                h.vars.insert(
                    "ansible_ssh_private_key_file".into(),
                    Value::from(k.clone()),
                );
            }
            let vm = p.vm_name(h.service_id);
            h.vars.insert(
                "keel_known_hosts".into(),
                Value::from(p.known_hosts_path(&vm).display().to_string()),
            );
        }
        Ok(dynamic_json(&list))
    }
}

/// Registers a handler for every job kind of `automation/`, by an
/// exhaustive match.
pub fn register(registry: &mut Registry, a: Arc<Automation>) {
    for kind in AutomationKind::ALL {
        let k = kind.as_str();
        let a = a.clone();
        match kind {
            AutomationKind::TemplateRun => registry.register(k, run_job::TemplateRunStep(a)),
            AutomationKind::ScheduleFire => registry.register(k, schedules::ScheduleFireStep(a)),
            AutomationKind::Notify => registry.register(k, notify::NotifyStep(a)),
        };
    }
}
