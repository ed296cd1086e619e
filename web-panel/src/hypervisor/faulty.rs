//! A [`Driver`] wrapper that makes a share of calls fail, for fault tests of
//! the provisioning flow and the job queue's retries.
//!
//! Half of the injected faults fail *before* the inner driver is called (the
//! hypervisor never saw the request); the other half fail *after* the inner
//! call succeeded, so the operation happened but the caller sees
//! `Unavailable` and retries it. The second kind is what exposes a flow that
//! is not idempotent. The random source is seeded, so a failing run can be
//! replayed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Driver, DriverError, DriverResult, SnapshotInfo, VmExport, VmInfo, VmSpec, VmStats};

/// Runs `call` until it succeeds, as the job queue retries a step: a
/// retryable error (an injected fault) runs it again, up to 60 times; a
/// permanent one panics, naming `what`. For fault tests of the drivers.
pub async fn retry_faults<T, F, Fut>(what: &str, call: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = DriverResult<T>>,
{
    for _ in 0..60 {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("{what}: permanent error {e}"),
        }
    }
    panic!("{what}: still failing after 60 attempts");
}

/// Where an injected fault struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The inner driver was not called.
    Before,
    /// The inner driver succeeded; its result was dropped.
    After,
}

/// Wraps `D` and fails about `fraction` of calls with [`DriverError::Unavailable`].
#[derive(Debug)]
pub struct FaultyDriver<D> {
    inner: D,
    fraction: f64,
    rng: Mutex<fastrand::Rng>,
    injected_before: AtomicU64,
    injected_after: AtomicU64,
}

impl<D: Driver> FaultyDriver<D> {
    /// `fraction` is clamped to `0.0..=1.0`; `seed` makes the sequence of
    /// faults reproducible for a given sequence of calls.
    pub fn new(inner: D, fraction: f64, seed: u64) -> Self {
        FaultyDriver {
            inner,
            fraction: fraction.clamp(0.0, 1.0),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            injected_before: AtomicU64::new(0),
            injected_after: AtomicU64::new(0),
        }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Faults injected so far: (before the call, after a successful call).
    pub fn injected(&self) -> (u64, u64) {
        (
            self.injected_before.load(Ordering::Relaxed),
            self.injected_after.load(Ordering::Relaxed),
        )
    }

    fn draw(&self) -> Option<FaultPoint> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.f64() >= self.fraction {
            return None;
        }
        Some(if rng.bool() {
            FaultPoint::Before
        } else {
            FaultPoint::After
        })
    }

    async fn call<T, F>(&self, op: &str, f: F) -> DriverResult<T>
    where
        F: Future<Output = DriverResult<T>>,
    {
        match self.draw() {
            None => f.await,
            Some(FaultPoint::Before) => {
                self.injected_before.fetch_add(1, Ordering::Relaxed);
                tracing::info!(op, "fault injection: failed before the call");
                Err(DriverError::Unavailable(format!(
                    "injected fault before {op}"
                )))
            }
            Some(FaultPoint::After) => {
                let result = f.await?;
                drop(result);
                self.injected_after.fetch_add(1, Ordering::Relaxed);
                tracing::info!(op, "fault injection: failed after a successful call");
                Err(DriverError::Unavailable(format!(
                    "injected fault after {op}"
                )))
            }
        }
    }
}

#[async_trait]
impl<D: Driver> Driver for FaultyDriver<D> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn create(&self, spec: &VmSpec) -> DriverResult<VmInfo> {
        self.call("create", self.inner.create(spec)).await
    }
    async fn start(&self, name: &str) -> DriverResult<()> {
        self.call("start", self.inner.start(name)).await
    }
    async fn shutdown(&self, name: &str) -> DriverResult<()> {
        self.call("shutdown", self.inner.shutdown(name)).await
    }
    async fn power_off(&self, name: &str) -> DriverResult<()> {
        self.call("power_off", self.inner.power_off(name)).await
    }
    async fn reset(&self, name: &str) -> DriverResult<()> {
        self.call("reset", self.inner.reset(name)).await
    }
    async fn status(&self, name: &str) -> DriverResult<VmInfo> {
        self.call("status", self.inner.status(name)).await
    }
    async fn delete(&self, name: &str) -> DriverResult<()> {
        self.call("delete", self.inner.delete(name)).await
    }
    async fn list(&self) -> DriverResult<Vec<VmInfo>> {
        self.call("list", self.inner.list()).await
    }
    async fn snapshot_create(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        self.call(
            "snapshot_create",
            self.inner.snapshot_create(name, snapshot),
        )
        .await
    }
    async fn snapshot_list(&self, name: &str) -> DriverResult<Vec<SnapshotInfo>> {
        self.call("snapshot_list", self.inner.snapshot_list(name))
            .await
    }
    async fn snapshot_revert(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        self.call(
            "snapshot_revert",
            self.inner.snapshot_revert(name, snapshot),
        )
        .await
    }
    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        self.call(
            "snapshot_delete",
            self.inner.snapshot_delete(name, snapshot),
        )
        .await
    }
    async fn clone_vm(&self, source: &str, spec: &VmSpec) -> DriverResult<VmInfo> {
        self.call("clone_vm", self.inner.clone_vm(source, spec))
            .await
    }
    async fn serial_console(&self, name: &str) -> DriverResult<Option<super::Console>> {
        self.call("serial_console", self.inner.serial_console(name))
            .await
    }
    async fn stats(&self, name: &str) -> DriverResult<VmStats> {
        self.call("stats", self.inner.stats(name)).await
    }
    async fn export_vm(&self, name: &str) -> DriverResult<VmExport> {
        self.call("export_vm", self.inner.export_vm(name)).await
    }
    async fn import_vm(&self, name: &str, from: &VmExport) -> DriverResult<VmInfo> {
        self.call("import_vm", self.inner.import_vm(name, from))
            .await
    }
    fn live_migration_uri(&self) -> Option<String> {
        self.inner.live_migration_uri()
    }
    fn files_dir(&self, name: &str) -> Option<std::path::PathBuf> {
        self.inner.files_dir(name)
    }
    async fn migrate_live(&self, name: &str, target_uri: &str) -> DriverResult<()> {
        self.call("migrate_live", self.inner.migrate_live(name, target_uri))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the calls that reached it; every call succeeds.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Counting {
        fn hit(&self) -> DriverResult<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[async_trait]
    impl Driver for Counting {
        fn kind(&self) -> &'static str {
            "counting"
        }
        async fn create(&self, _: &VmSpec) -> DriverResult<VmInfo> {
            unimplemented!()
        }
        async fn start(&self, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn shutdown(&self, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn power_off(&self, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn reset(&self, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn status(&self, name: &str) -> DriverResult<VmInfo> {
            Err(DriverError::NotFound(name.into()))
        }
        async fn delete(&self, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn list(&self) -> DriverResult<Vec<VmInfo>> {
            Ok(vec![])
        }
        async fn snapshot_create(&self, _: &str, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn snapshot_list(&self, _: &str) -> DriverResult<Vec<SnapshotInfo>> {
            Ok(vec![])
        }
        async fn snapshot_revert(&self, _: &str, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn snapshot_delete(&self, _: &str, _: &str) -> DriverResult<()> {
            self.hit()
        }
        async fn clone_vm(&self, _: &str, _: &VmSpec) -> DriverResult<VmInfo> {
            unimplemented!()
        }
    }

    async fn run(fraction: f64, seed: u64, calls: usize) -> (Vec<bool>, usize, (u64, u64)) {
        let d = FaultyDriver::new(Counting::default(), fraction, seed);
        let mut ok = Vec::new();
        for _ in 0..calls {
            ok.push(d.start("vm").await.is_ok());
        }
        (ok, d.inner().0.load(Ordering::SeqCst), d.injected())
    }

    #[tokio::test]
    async fn faults_split_before_and_after_and_replay_by_seed() {
        let (ok, reached, (before, after)) = run(0.5, 42, 400).await;
        let failed = ok.iter().filter(|o| !**o).count() as u64;
        assert_eq!(failed, before + after);
        assert!(
            (120..=280).contains(&failed),
            "{failed} of 400 failed at 0.5"
        );
        assert!(before > 40 && after > 40, "before={before} after={after}");
        // Calls failed "after" did reach the inner driver.
        assert_eq!(reached as u64, 400 - before);
        assert_eq!(run(0.5, 42, 400).await.0, ok, "same seed, same faults");
        assert_ne!(run(0.5, 43, 400).await.0, ok);
    }

    #[tokio::test]
    async fn fraction_bounds() {
        let (ok, reached, injected) = run(0.0, 1, 50).await;
        assert!(ok.iter().all(|o| *o) && reached == 50 && injected == (0, 0));
        let (ok, _, (before, after)) = run(1.0, 1, 50).await;
        assert!(ok.iter().all(|o| !*o) && before + after == 50);
        // Errors from the inner driver pass through untouched.
        let d = FaultyDriver::new(Counting::default(), 0.0, 1);
        assert!(matches!(d.status("x").await, Err(DriverError::NotFound(_))));
    }
}
