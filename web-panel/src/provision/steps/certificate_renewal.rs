//! The `certificate_renewal` job, fired by the queue's cron every
//! `acme.renew_check_secs` (`services::certificates::renewal_schedule`):
//! every ACME certificate that expires within `acme.renew_before_days` of
//! the panel's clock, or whose order failed, is requested again and its
//! server's `certificate` job queued, in one transaction
//! (`services::certificates::request_renewals`). With ACME off it does
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::PanelError;
use crate::lifecycle::jobs::{CertificateRenewalJob, FlowJob};
use crate::provision::Provisioner;
use crate::queue::{JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::certificates;

/// `certificate_renewal`: certificates due for renewal, requested again.
pub struct CertificateRenewalStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for CertificateRenewalStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        CertificateRenewalJob::decode(ctx.payload())?;
        let p = &self.0;
        if !p.acme.enabled() {
            return Ok(());
        }
        let before = Duration::from_secs(u64::from(p.acme.renew_before_days) * 86_400);
        let result: Result<Vec<i64>, PanelError> = async {
            let now = p.db.now();
            let mut tx = p.db.begin().await?;
            let servers = certificates::request_renewals(&mut tx, now, before).await?;
            tx.commit().await?;
            Ok(servers)
        }
        .await;
        match result {
            Ok(servers) => {
                tracing::info!(servers = ?servers, "certificates due for renewal requested");
                Ok(())
            }
            Err(e) => Err(JobError::retryable(e)),
        }
    }
}
