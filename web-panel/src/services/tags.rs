//! Server tags: labels a site admin puts on a server (`web`, `db`,
//! `eu-west`...), for people and for playbooks. They are shown on the
//! server's page, given to every playbook as the host variable `keel_tags`
//! (`provision::inventory`), and a panel inventory may select the servers
//! carrying one (`automation`: `inventories.filter_tag`), so a job template
//! can run on every server tagged `web`.
//!
//! Setting a server's tags replaces them all, in one transaction with its
//! audit row; nothing is queued, since a tag changes nothing on the server
//! itself. A tag is 1 to 40 characters of `[a-z0-9_.-]`, starting with a
//! letter or digit: the same text in an inventory filter, a URL and a
//! variable, so no case folding or quoting can make two tags look alike.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::services::servers::load_managed;
use crate::{execute, fetch_all};

/// Tags one server may carry at most.
pub const MAX_TAGS: usize = 32;

/// The body of `PUT /services/{id}/tags`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    /// Every tag the server carries from now on (replacing the old ones).
    pub tags: Vec<String>,
}

/// Why `tag` is no tag, or the tag as stored.
pub fn check_tag(tag: &str) -> Result<String, String> {
    let t = tag.trim();
    let ok_first = t
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = t
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if t.is_empty() || t.len() > 40 || !ok_first || !ok_rest {
        return Err(format!(
            "{t:?} is not a tag: 1 to 40 characters of a-z, 0-9, '_', '-' and '.', starting with a letter or digit"
        ));
    }
    Ok(t.to_string())
}

/// The tags of every server (or of `service_id` only), sorted.
pub async fn by_service(
    conn: &mut Conn<'_>,
    service_id: Option<i64>,
) -> Result<BTreeMap<i64, Vec<String>>, PanelError> {
    let rows = fetch_all!(
        conn,
        (i64, String),
        "SELECT service_id, tag FROM server_tags WHERE ($1 IS NULL OR service_id = $1) \
         ORDER BY service_id, tag",
        service_id
    )?;
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (id, tag) in rows {
        out.entry(id).or_default().push(tag);
    }
    Ok(out)
}

/// One server's tags, sorted.
pub async fn of_service(conn: &mut Conn<'_>, id: i64) -> Result<Vec<String>, PanelError> {
    Ok(by_service(conn, Some(id))
        .await?
        .remove(&id)
        .unwrap_or_default())
}

/// A server's tags (site admins and platform admins).
pub async fn list(db: &Db, who: &Principal, id: i64) -> Result<Vec<String>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    load_managed(&mut conn, who, id).await?;
    of_service(&mut conn, id).await
}

/// Replaces a server's tags (site admins and platform admins); duplicates
/// are kept once. Returns the tags now set, sorted.
pub async fn set(
    db: &Db,
    who: &Principal,
    id: i64,
    body: &TagsBody,
) -> Result<Vec<String>, PanelError> {
    let mut tags = Vec::with_capacity(body.tags.len());
    for t in &body.tags {
        tags.push(check_tag(t).map_err(|m| PanelError::invalid("tags", m))?);
    }
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(PanelError::invalid(
            "tags",
            format!("a server carries at most {MAX_TAGS} tags"),
        ));
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    load_managed(&mut conn, who, id).await?;
    let before = of_service(&mut conn, id).await?;
    execute!(
        &mut conn,
        "DELETE FROM server_tags WHERE service_id = $1",
        id
    )?;
    for t in &tags {
        execute!(
            &mut conn,
            "INSERT INTO server_tags (service_id, tag) VALUES ($1, $2)",
            id,
            t.as_str()
        )?;
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.tags", "service", id)
            .before(&serde_json::json!({ "tags": before }))
            .after(&serde_json::json!({ "tags": tags })),
    )
    .await?;
    tx.commit().await?;
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::check_tag;

    #[test]
    fn tags_are_plain_lowercase_words() {
        assert_eq!(check_tag(" web ").as_deref(), Ok("web"));
        assert_eq!(check_tag("eu-west.1_b").as_deref(), Ok("eu-west.1_b"));
        for bad in ["", "Web", "-web", "a b", "x;y", &"a".repeat(41)] {
            assert!(check_tag(bad).is_err(), "{bad:?} accepted");
        }
    }
}
