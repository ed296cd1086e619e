//! The service statuses and flow steps as enums, and the one table that
//! says what each status means: which step owns it, and which requests it
//! accepts. Both enums are parsed where they leave the database (sqlx
//! `Decode`) and where they enter it (`Encode`), as TEXT on SQLite and
//! PostgreSQL alike; an unknown value is an [`UnknownValue`] error, never a
//! silent default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a service is in its life. `failed` keeps a reason and can be
/// retried; `deleted` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Requested,
    Allocating,
    CreatingVm,
    InstallingOs,
    Configuring,
    Ready,
    Failed,
    Deleting,
    Deleted,
}

/// A step of the flow: the job that owns a status (moves the service on
/// from it), and what `vm_provisioning.failed_step` records when the step
/// failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The `provision` job: address, seed, VM create and start.
    CreateVm,
    /// The `vm_os_ready` job: the wait for the VM's callback, power cycles.
    OsReady,
    /// The host-key check at the start of the `configure` job.
    HostKey,
    /// The role run of the `configure` job.
    Configure,
    /// The `deprovision` job: VM delete, address release.
    Deprovision,
    /// The `clone` job: a test server's disk replaced by a copy of its
    /// production server's, booted with the test server's identity. It
    /// moves the test server through `creating_vm` as `provision` does.
    Clone,
}

/// What one status means. Built only by [`Status::rules`], so every status
/// states every rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The step whose job moves the service on from this status; `None`
    /// for a status that rests until someone asks for something.
    pub owner: Option<Step>,
    /// A delete was asked for: no new work starts, and deleting again is
    /// refused.
    pub leaving: bool,
    /// The VM's first-boot callback is accepted (it may arrive while the
    /// provision step is still between `start` and its commit).
    pub awaits_callback: bool,
    /// A retry may start the flow again.
    pub retryable: bool,
    /// Power actions are allowed.
    pub powerable: bool,
    /// One more role run may be asked for.
    pub convergeable: bool,
}

impl Rules {
    const REST: Rules = Rules {
        owner: None,
        leaving: false,
        awaits_callback: false,
        retryable: false,
        powerable: false,
        convergeable: false,
    };

    const fn owned(step: Step) -> Rules {
        Rules {
            owner: Some(step),
            ..Rules::REST
        }
    }
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Requested,
        Status::Allocating,
        Status::CreatingVm,
        Status::InstallingOs,
        Status::Configuring,
        Status::Ready,
        Status::Failed,
        Status::Deleting,
        Status::Deleted,
    ];

    /// The table: what each status means for the flow and for requests.
    pub const fn rules(self) -> Rules {
        match self {
            Status::Requested | Status::Allocating => Rules::owned(Step::CreateVm),
            Status::CreatingVm => Rules {
                awaits_callback: true,
                ..Rules::owned(Step::CreateVm)
            },
            Status::InstallingOs => Rules {
                awaits_callback: true,
                ..Rules::owned(Step::OsReady)
            },
            Status::Configuring => Rules {
                convergeable: true,
                ..Rules::owned(Step::Configure)
            },
            Status::Ready => Rules {
                powerable: true,
                convergeable: true,
                ..Rules::REST
            },
            Status::Failed => Rules {
                retryable: true,
                ..Rules::REST
            },
            Status::Deleting => Rules {
                leaving: true,
                ..Rules::owned(Step::Deprovision)
            },
            Status::Deleted => Rules {
                leaving: true,
                ..Rules::REST
            },
        }
    }

    /// The step that owns this status, if any.
    pub const fn owner(self) -> Option<Step> {
        self.rules().owner
    }

    /// The statuses matching `keep`, in lifecycle order.
    pub fn all_where(keep: impl Fn(Rules) -> bool) -> Vec<Status> {
        Status::ALL
            .into_iter()
            .filter(|s| keep(s.rules()))
            .collect()
    }

    /// The statuses `step` owns.
    pub fn owned_by(step: Step) -> Vec<Status> {
        Status::all_where(|r| r.owner == Some(step))
    }

    /// The database and JSON spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Allocating => "allocating",
            Status::CreatingVm => "creating_vm",
            Status::InstallingOs => "installing_os",
            Status::Configuring => "configuring",
            Status::Ready => "ready",
            Status::Failed => "failed",
            Status::Deleting => "deleting",
            Status::Deleted => "deleted",
        }
    }

    /// Every spelling, in lifecycle order (for messages and the UI filter).
    pub fn names() -> Vec<&'static str> {
        Status::ALL.into_iter().map(Status::as_str).collect()
    }

    /// `'a', 'b'`: an SQL list of statuses, for an `IN (…)`. The values
    /// come from the enum, never from input.
    pub fn sql_list(statuses: &[Status]) -> String {
        statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::CreateVm,
        Step::OsReady,
        Step::HostKey,
        Step::Configure,
        Step::Deprovision,
        Step::Clone,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Step::CreateVm => "create_vm",
            Step::OsReady => "os_ready",
            Step::HostKey => "host_key",
            Step::Configure => "configure",
            Step::Deprovision => "deprovision",
            Step::Clone => "clone",
        }
    }

    /// Whether a permanent failure of this step deletes the VM (and then
    /// releases the address): steps before the OS is up do; a VM whose
    /// configuration failed is kept for inspection.
    pub const fn deletes_vm_on_failure(self) -> bool {
        match self {
            Step::CreateVm | Step::OsReady | Step::Clone => true,
            Step::HostKey | Step::Configure | Step::Deprovision => false,
        }
    }

    /// Whether this step's permanent failure may still mark a service in
    /// `status` failed. `called_back`: the VM's callback is recorded, which
    /// takes the service away from the OS-ready wait.
    pub const fn may_fail(self, status: Status, called_back: bool) -> bool {
        let r = status.rules();
        match self {
            // A clone holds its test server in the statuses `provision` owns.
            Step::CreateVm | Step::Clone => matches!(r.owner, Some(Step::CreateVm)),
            Step::OsReady => matches!(r.owner, Some(Step::OsReady)) && !called_back,
            // The role run also fails a ready server it re-converges; only
            // a service already failed or going away is left alone.
            Step::HostKey | Step::Configure => !r.leaving && !r.retryable,
            // A failed delete is for admins; the status stays `deleting`.
            Step::Deprovision => false,
        }
    }

    /// The statuses a failure of this step may leave with `failed`.
    pub fn failable(self, called_back: bool) -> Vec<Status> {
        Status::ALL
            .into_iter()
            .filter(|s| self.may_fail(*s, called_back))
            .collect()
    }
}

/// A status or step name the lifecycle does not know (a corrupt row, or a
/// database written by a newer panel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl FromStr for Status {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Status, UnknownValue> {
        Status::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "service status",
                value: s.to_string(),
            })
    }
}

impl FromStr for Step {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Step, UnknownValue> {
        Step::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "flow step",
                value: s.to_string(),
            })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TEXT on both backends: encoded as its spelling, decoded through
/// `FromStr`, so an unknown value fails the row with [`UnknownValue`].
macro_rules! text_column {
    ($ty:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
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

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
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

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$ty>()?)
            }
        }
    };
}

text_column!(Status);
text_column!(Step);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_unknown_ones_are_errors() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>(), Ok(s));
        }
        let e = "paused".parse::<Status>().unwrap_err();
        assert_eq!(e.to_string(), "unknown service status \"paused\"");
        assert!("Ready".parse::<Status>().is_err());
    }

    #[test]
    fn each_transitional_status_has_one_owner_and_resting_ones_none() {
        assert_eq!(
            Status::owned_by(Step::CreateVm),
            [Status::Requested, Status::Allocating, Status::CreatingVm]
        );
        assert_eq!(Status::owned_by(Step::OsReady), [Status::InstallingOs]);
        assert_eq!(Status::owned_by(Step::Configure), [Status::Configuring]);
        assert_eq!(Status::owned_by(Step::Deprovision), [Status::Deleting]);
        assert!(Status::owned_by(Step::HostKey).is_empty());
        for s in [Status::Ready, Status::Failed, Status::Deleted] {
            assert_eq!(s.owner(), None, "{s}");
        }
    }

    #[test]
    fn late_failures_leave_moved_on_services_alone() {
        // The OS-ready wait loses to a callback that already arrived.
        assert!(Step::OsReady.may_fail(Status::InstallingOs, false));
        assert!(!Step::OsReady.may_fail(Status::InstallingOs, true));
        assert!(!Step::OsReady.may_fail(Status::Configuring, false));
        // The provision step only fails what it has not handed on.
        assert!(!Step::CreateVm.may_fail(Status::InstallingOs, false));
        // A clone fails its test server only once it has taken it over.
        assert!(Step::Clone.may_fail(Status::CreatingVm, false));
        assert!(!Step::Clone.may_fail(Status::Ready, false));
        assert!(!Step::Clone.may_fail(Status::InstallingOs, false));
        // A role run fails a ready server, never a deleted or failed one.
        assert!(Step::Configure.may_fail(Status::Ready, true));
        for s in [Status::Failed, Status::Deleting, Status::Deleted] {
            assert!(!Step::Configure.may_fail(s, true), "{s}");
            assert!(!Step::HostKey.may_fail(s, true), "{s}");
        }
    }
}
