//! The rows and words of `automation/`: the kinds and statuses as enums
//! parsed once at the database boundary (TEXT on both backends), and the
//! row types the domain functions return and the API serialises. Secrets
//! never appear in a row type: `credentials.sealed` and
//! `notification_targets.sealed` are read only by the run and the
//! notifier, through their own queries. Above `secrets.rs` and `survey.rs`.

use serde::{Deserialize, Serialize};

/// A value stored in the database as its spelling.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?} in the database")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

/// Declares a TEXT-column enum: spelling, parsing, serde and sqlx.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownValue { what: $what, value: s.to_string() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'static str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut DB::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'static str as sqlx::Encode<'q, DB>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

text_enum!(
    /// What a credential holds.
    CredentialKind, "credential kind" {
        /// An OpenSSH private key, with an optional passphrase.
        SshKey => "ssh_key",
        BecomePassword => "become_password",
        VaultPassword => "vault_password",
    }
);

text_enum!(
    /// Where a project's playbooks come from.
    ProjectKind, "project kind" {
        /// A directory on the panel host.
        Directory => "directory",
        /// A git repository the panel clones and updates.
        Git => "git",
    }
);

text_enum!(
    /// Where an inventory's hosts come from.
    InventoryKind, "inventory kind" {
        /// The panel's own servers, filtered by site and server type.
        Panel => "panel",
        /// An inventory file (or directory) inside the template's project.
        ProjectFile => "project_file",
        /// A dynamic-inventory JSON document fetched over HTTP(S).
        Http => "http",
    }
);

text_enum!(
    /// Where a run is.
    RunStatus, "run status" {
        Queued => "queued",
        Running => "running",
        Successful => "successful",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Successful | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

text_enum!(
    /// Who or what started a run.
    LaunchedBy, "launcher" {
        User => "user",
        Schedule => "schedule",
        Relaunch => "relaunch",
        System => "system",
    }
);

text_enum!(
    /// What a schedule does with fires missed while no node ran.
    MissedPolicy, "missed-fire policy" {
        /// Drop them; only on-time fires run.
        Skip => "skip",
        /// Run once for all of them, as soon as a node is up.
        RunOnce => "run_once",
    }
);

text_enum!(
    /// How an e-mail target's SMTP connection is secured.
    SmtpTls, "SMTP security" {
        /// Plain SMTP (a local relay).
        None => "none",
        /// STARTTLS, required: nothing is sent before the upgrade.
        Starttls => "starttls",
        /// TLS from the first byte (SMTPS, port 465).
        Tls => "tls",
    }
);

text_enum!(
    /// How a notification is delivered.
    TargetKind, "notification kind" {
        Email => "email",
        Webhook => "webhook",
    }
);

/// A credential as anyone may see it: never its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Credential {
    pub id: i64,
    pub name: String,
    pub kind: CredentialKind,
    pub username: Option<String>,
    pub vault_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub kind: ProjectKind,
    pub path: Option<String>,
    pub git_url: Option<String>,
    pub git_ref: Option<String>,
    /// The credential (an SSH key) git uses to fetch.
    pub deploy_key: Option<i64>,
    /// The commit the last update resolved.
    pub revision: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct InventorySource {
    pub id: i64,
    pub name: String,
    pub kind: InventoryKind,
    pub project_id: Option<i64>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub filter_site: Option<String>,
    pub filter_server_type: Option<String>,
    /// `panel`: only servers carrying this tag (`services::tags`).
    pub filter_tag: Option<String>,
    pub created_at: i64,
}

/// A job template's row (without its lists).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub project_id: i64,
    pub playbook: String,
    pub inventory_id: i64,
    pub limit_hosts: Option<String>,
    pub tags: Option<String>,
    pub skip_tags: Option<String>,
    pub extra_vars: String,
    pub check_mode: bool,
    pub diff_mode: bool,
    pub forks: i64,
    pub verbosity: i64,
    pub survey: String,
    pub enabled: bool,
    pub builtin: Option<String>,
    pub dead_after_secs: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A job template with its credentials, groups and survey.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobTemplate {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub project_id: i64,
    pub playbook: String,
    pub inventory_id: i64,
    pub limit: Option<String>,
    pub tags: Option<String>,
    pub skip_tags: Option<String>,
    /// YAML text: a mapping of variables.
    pub extra_vars: String,
    pub check: bool,
    pub diff: bool,
    pub forks: i64,
    pub verbosity: i64,
    #[schema(value_type = Vec<Object>)]
    pub survey: Vec<crate::automation::survey::Question>,
    pub enabled: bool,
    /// Set on the templates Keel seeds.
    pub builtin: Option<String>,
    /// A host its runs cannot reach becomes a dead node (one `dead_nodes`
    /// notification) once it has been unreachable this long; 0: at the
    /// first unreachable run.
    pub dead_after_secs: i64,
    pub credentials: Vec<i64>,
    /// Members of these groups may launch it; platform admins always may.
    pub groups: Vec<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduleRow {
    pub id: i64,
    pub template_id: i64,
    pub name: String,
    pub cron: Option<String>,
    pub every_secs: Option<i64>,
    pub time_zone: String,
    pub missed: MissedPolicy,
    pub enabled: bool,
    pub extra_vars: String,
    pub created_at: i64,
}

/// A schedule with its next fire times.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: ScheduleRow,
    /// The next fire times (Unix milliseconds), empty while disabled.
    pub next_fires: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub template_id: i64,
    pub template_name: String,
    /// The queue job that runs it (its log is the run's live output).
    pub job_id: Option<i64>,
    pub status: RunStatus,
    pub revision: Option<String>,
    pub launched_by: LaunchedBy,
    pub launched_user: Option<i64>,
    pub launched_user_name: Option<String>,
    pub schedule_id: Option<i64>,
    pub relaunch_of: Option<i64>,
    pub limit_hosts: Option<String>,
    pub recap: Option<String>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One host's counts in a run (the PLAY RECAP line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunHost {
    pub host: String,
    pub ok: i64,
    pub changed: i64,
    pub failed: i64,
    pub unreachable: i64,
    pub skipped: i64,
    pub rescued: i64,
    pub ignored: i64,
}

/// A run with its hosts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub hosts: Vec<RunHost>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NotificationTarget {
    pub id: i64,
    pub name: String,
    pub kind: TargetKind,
    pub address: String,
    pub smtp_server: Option<String>,
    pub sender: Option<String>,
    pub smtp_tls: SmtpTls,
    /// An extra CA certificate (PEM) trusted for the SMTP server.
    pub smtp_ca: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TemplateNotification {
    pub target_id: i64,
    pub on_success: bool,
    pub on_failure: bool,
    pub on_drift: bool,
}
