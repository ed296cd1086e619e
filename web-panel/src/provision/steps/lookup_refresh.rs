//! The `lookup_refresh` job: a site's lookup groups (or every site's, from
//! the daily cron) read from the LDAP directory and mirrored into the store
//! by `services::lookup::refresh`, which queues `access` jobs for the sites
//! whose people changed. A directory that cannot be read removes no one: the
//! job fails and retries with the default policy, and the error stays on
//! the groups for the site page. With LDAP off it does nothing.

use std::sync::Arc;

use crate::lifecycle::jobs::{FlowJob, LookupRefreshJob};
use crate::provision::Provisioner;
use crate::queue::{JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::lookup::{self, RefreshError};

/// `lookup_refresh`: the directory's groups and members, mirrored.
pub struct LookupRefreshStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for LookupRefreshStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = LookupRefreshJob::decode(ctx.payload())?;
        match lookup::refresh(&self.0.db, &self.0.ldap, job.site_id).await {
            Ok(report) => {
                tracing::info!(
                    groups = report.groups.len(),
                    changed = ?report.changed_groups,
                    people = ?report.changed_people,
                    access_jobs = report.access_jobs,
                    "lookup groups refreshed"
                );
                Ok(())
            }
            Err(RefreshError::Directory(e)) if e.is_permanent() => Err(JobError::permanent(e)),
            Err(e) => Err(JobError::retryable(e)),
        }
    }
}
