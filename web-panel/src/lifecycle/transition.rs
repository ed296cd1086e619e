//! The one way a service's status changes: a compare-and-set on the
//! status the caller expects, with its `service.status` audit row in the
//! same transaction.
//!
//! Callers (the provision steps, the callback, retry and delete) pass the
//! statuses they may move the service on from, usually straight from the
//! table in `status.rs` (`Status::owned_by(step)`, `Step::failable`). A
//! service that moved on meanwhile is left alone and the caller is told,
//! so a late or repeated step can never undo a newer one.

use super::status::Status;
use crate::audit::{self, Change};
use crate::db::Conn;
use crate::domain::{PanelError, Principal};
use crate::{execute, fetch_opt};

/// Moves service `id` from one of `from` to `to` (with the failure reason
/// `failed` shows), in the caller's transaction, and writes the audit row.
/// Returns false, changing nothing, when the service is missing or in
/// none of `from`.
pub async fn transition(
    conn: &mut Conn<'_>,
    now: i64,
    who: &Principal,
    id: i64,
    from: &[Status],
    to: Status,
    reason: Option<&str>,
) -> Result<bool, PanelError> {
    if from.is_empty() {
        return Ok(false);
    }
    // The row is locked for the rest of the transaction (SQLite has one
    // writer already), so the audit row's "before" is what the UPDATE
    // replaces.
    let lock = if conn.is_pg() { " FOR UPDATE" } else { "" };
    let Some((before, before_reason)) = fetch_opt!(
        conn,
        (Status, Option<String>),
        sqlx::AssertSqlSafe(format!(
            "SELECT status, failure_reason FROM services WHERE id = $1{lock}"
        )),
        id
    )?
    else {
        return Ok(false);
    };
    if !from.contains(&before) {
        return Ok(false);
    }
    let changed = execute!(
        conn,
        sqlx::AssertSqlSafe(format!(
            "UPDATE services SET status = $1, failure_reason = $2, updated_at = $3 \
             WHERE id = $4 AND status IN ({})",
            Status::sql_list(from)
        )),
        to,
        reason,
        now,
        id
    )?;
    if changed != 1 {
        return Ok(false);
    }
    let mut change = Change::new("service.status", "service", id);
    change.before = Some(serde_json::json!({ "status": before, "failure_reason": before_reason }));
    change.after = Some(serde_json::json!({ "status": to, "failure_reason": reason }));
    audit::record(conn, now, who, change).await?;
    Ok(true)
}
