//! What a tenant is told when a step of the flow fails for good.
//!
//! A step's error keeps libvirt URIs, host paths and tool output: that
//! text stays in the job history (`last_error`, `job_failures`: platform
//! admins only) and in the logs. The service's `failure_reason`, which site
//! admins see (API, SSE, audit), is a [`FailureReason`] instead, chosen from
//! the step and the error's *variant* when the step returns it
//! ([`FailureReason::of`]), and carried to the step's `on_failure` as the
//! job error's detail. No message text is ever read back, so rewording an
//! error cannot change what a tenant sees.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ProvisionError;
use crate::lifecycle::Step;

/// A step-level failure reason, as tenants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FailureReason {
    /// The pools of the service's type have no free address.
    NoFreeAddress,
    /// No hypervisor host has room for the server (or may serve it).
    NoHostCapacity,
    /// Any other failure before the VM runs.
    VmCreate,
    /// The VM never called back, even after its power cycles.
    NoCallback { power_cycles: u32 },
    /// The hypervisor failed while the OS-ready wait power-cycled the VM.
    PowerCycle,
    /// The VM presented another SSH host key than the panel generated.
    HostKeyMismatch,
    /// The role run failed in the named task.
    TaskFailed { task: String },
    /// The VM's SSH server could not be reached for the role run.
    SshUnreachable,
    /// Any other failure of the role run.
    ConfigureRun,
    /// A clone could not start: the production server was not ready.
    CloneSourceNotReady,
    /// Any other failure while a clone copied production's disk.
    CloneFailed,
}

impl FailureReason {
    /// The reason for `error`, returned by `step`. `os_ready_resets` is the
    /// configured number of power cycles before the OS-ready wait gives up.
    pub fn of(step: Step, error: &ProvisionError, os_ready_resets: u32) -> FailureReason {
        match step {
            Step::CreateVm => match error {
                ProvisionError::PoolExhausted { .. } => FailureReason::NoFreeAddress,
                ProvisionError::NoCapacity(_) => FailureReason::NoHostCapacity,
                _ => FailureReason::VmCreate,
            },
            Step::OsReady => match error {
                ProvisionError::NoCallback { .. } => FailureReason::NoCallback {
                    power_cycles: os_ready_resets,
                },
                _ => FailureReason::PowerCycle,
            },
            Step::Clone => match error {
                ProvisionError::PoolExhausted { .. } => FailureReason::NoFreeAddress,
                ProvisionError::SourceNotReady { .. } => FailureReason::CloneSourceNotReady,
                _ => FailureReason::CloneFailed,
            },
            Step::HostKey | Step::Configure | Step::Deprovision => match error {
                ProvisionError::HostKeyMismatch { .. } => FailureReason::HostKeyMismatch,
                ProvisionError::RoleRun {
                    task: Some(task), ..
                } => FailureReason::TaskFailed { task: task.clone() },
                ProvisionError::Ssh(_) => FailureReason::SshUnreachable,
                _ => FailureReason::ConfigureRun,
            },
        }
    }

    /// The reason when `step`'s job died without an error of its own (out
    /// of attempts or past its deadline when claimed, or a panic).
    pub fn fallback(step: Step) -> FailureReason {
        match step {
            Step::CreateVm => FailureReason::VmCreate,
            Step::OsReady => FailureReason::PowerCycle,
            Step::HostKey => FailureReason::HostKeyMismatch,
            Step::Configure | Step::Deprovision => FailureReason::ConfigureRun,
            Step::Clone => FailureReason::CloneFailed,
        }
    }

    /// The step recorded as `failed_step`: a host-key mismatch stops the
    /// configure job before its role run.
    pub fn step(&self) -> Step {
        match self {
            FailureReason::NoFreeAddress
            | FailureReason::NoHostCapacity
            | FailureReason::VmCreate => Step::CreateVm,
            FailureReason::NoCallback { .. } | FailureReason::PowerCycle => Step::OsReady,
            FailureReason::HostKeyMismatch => Step::HostKey,
            FailureReason::TaskFailed { .. }
            | FailureReason::SshUnreachable
            | FailureReason::ConfigureRun => Step::Configure,
            FailureReason::CloneSourceNotReady | FailureReason::CloneFailed => Step::Clone,
        }
    }

    /// The reason as a job error's detail.
    pub fn to_detail(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The reason a step attached to the error that killed its job, or the
    /// step's fallback.
    pub fn from_detail(step: Step, detail: Option<&serde_json::Value>) -> FailureReason {
        detail
            .and_then(|d| FailureReason::deserialize(d).ok())
            .unwrap_or_else(|| FailureReason::fallback(step))
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::NoFreeAddress => f.write_str("no free address is left in the pool"),
            FailureReason::NoHostCapacity => {
                f.write_str("no hypervisor host has room for the server")
            }
            FailureReason::VmCreate => f.write_str("the hypervisor could not create the VM"),
            FailureReason::NoCallback { power_cycles } => write!(
                f,
                "the VM did not call back after {power_cycles} power cycle(s)"
            ),
            FailureReason::PowerCycle => f.write_str("the hypervisor could not power-cycle the VM"),
            FailureReason::HostKeyMismatch => f.write_str("host key mismatch"),
            FailureReason::TaskFailed { task } => {
                write!(f, "the configuration run failed: {task}")
            }
            FailureReason::SshUnreachable => f.write_str(
                "the configuration run failed: the VM's SSH server could not be reached",
            ),
            FailureReason::ConfigureRun => f.write_str("the configuration run failed"),
            FailureReason::CloneSourceNotReady => {
                f.write_str("the clone did not start: the production server is not ready")
            }
            FailureReason::CloneFailed => f.write_str("the clone of the production server failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::DriverError;

    fn tenant_sees(step: Step, e: &ProvisionError) -> String {
        // Through the job error's detail, as the worker hands it over.
        let detail = FailureReason::of(step, e, 2).to_detail();
        FailureReason::from_detail(step, Some(&detail)).to_string()
    }

    /// The tenant's reason follows the variant only: the same variant with
    /// any wording gives the same reason, and text that looks like another
    /// variant's message does not borrow its reason.
    #[test]
    fn rewording_an_error_never_changes_what_the_tenant_sees() {
        let cases: Vec<(Step, Vec<ProvisionError>, &str)> = vec![
            (
                Step::CreateVm,
                vec![
                    ProvisionError::PoolExhausted {
                        pool_type: "public".into(),
                    },
                    ProvisionError::PoolExhausted {
                        pool_type: "role run failed: task failed: \"x\"".into(),
                    },
                ],
                "no free address is left in the pool",
            ),
            (
                Step::CreateVm,
                vec![
                    ProvisionError::Missing("no free address left in the public pools".into()),
                    ProvisionError::Driver(DriverError::Permanent("no free address left".into())),
                ],
                "the hypervisor could not create the VM",
            ),
            (
                Step::OsReady,
                vec![
                    ProvisionError::NoCallback {
                        timeout_secs: 300,
                        resets: 2,
                    },
                    ProvisionError::NoCallback {
                        timeout_secs: 1,
                        resets: 9,
                    },
                ],
                "the VM did not call back after 2 power cycle(s)",
            ),
            (
                Step::OsReady,
                vec![ProvisionError::Missing(
                    "the VM did not call back within 300 s, 2 power cycle(s) included".into(),
                )],
                "the hypervisor could not power-cycle the VM",
            ),
            (
                Step::Configure,
                vec![
                    ProvisionError::RoleRun {
                        task: Some("install nginx".into()),
                        detail: "exit code 2".into(),
                    },
                    ProvisionError::RoleRun {
                        task: Some("install nginx".into()),
                        detail: "ssh: connection refused".into(),
                    },
                ],
                "the configuration run failed: install nginx",
            ),
            (
                Step::Configure,
                vec![
                    ProvisionError::Ssh("connection refused".into()),
                    ProvisionError::Ssh("role run failed: task failed: \"x\"".into()),
                ],
                "the configuration run failed: the VM's SSH server could not be reached",
            ),
            (
                Step::Configure,
                vec![
                    ProvisionError::RoleRun {
                        task: None,
                        detail: "task failed: \"install nginx\"".into(),
                    },
                    ProvisionError::Playbook("ssh: not a playbook".into()),
                    ProvisionError::Missing("host key mismatch".into()),
                ],
                "the configuration run failed",
            ),
            (
                Step::Configure,
                vec![ProvisionError::HostKeyMismatch {
                    expected: "SHA256:a".into(),
                    seen: "SHA256:b".into(),
                }],
                "host key mismatch",
            ),
        ];
        for (step, errors, want) in cases {
            for e in errors {
                assert_eq!(tenant_sees(step, &e), want, "{step} {e}");
            }
        }
    }

    #[test]
    fn a_host_key_mismatch_is_recorded_as_its_own_step() {
        let e = ProvisionError::HostKeyMismatch {
            expected: "a".into(),
            seen: "b".into(),
        };
        assert_eq!(
            FailureReason::of(Step::Configure, &e, 2).step(),
            Step::HostKey
        );
        let e = ProvisionError::Ssh("refused".into());
        assert_eq!(
            FailureReason::of(Step::Configure, &e, 2).step(),
            Step::Configure
        );
    }

    /// A job that died without an error of its own (out of attempts when
    /// claimed) gets the step's general reason, as a detail that does not
    /// decode does.
    #[test]
    fn deaths_without_a_detail_get_the_steps_general_reason() {
        assert_eq!(
            FailureReason::from_detail(Step::CreateVm, None).to_string(),
            "the hypervisor could not create the VM"
        );
        let junk = serde_json::json!({ "reason": "meteor" });
        assert_eq!(
            FailureReason::from_detail(Step::OsReady, Some(&junk)).to_string(),
            "the hypervisor could not power-cycle the VM"
        );
        assert_eq!(
            FailureReason::from_detail(Step::Configure, None).to_string(),
            "the configuration run failed"
        );
    }
}
