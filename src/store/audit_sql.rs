//! What the SQL stores share for the audit trail: the listing's statement, its rows.

use super::sql::from_millis;
use super::{ActorKind, EventQuery, KeyEvent, KeyEventKind, KeyId, StoreError, StoreErrorKind};

/// A value a listing binds, in order.
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// The listing's statement: `select` (the event columns `FROM hapnd_key_events`) with the
/// query's filters, newest first. `param(n)` spells the n-th placeholder. One statement per
/// shape, so each walks its index (`(tenant, seq)`, `(key_id, seq)` or the primary key).
pub(crate) fn events_statement(
    select: &str,
    query: &EventQuery,
    param: fn(usize) -> String,
) -> (String, Vec<Bind>) {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    if let Some(tenant) = &query.tenant {
        binds.push(Bind::Text(tenant.clone()));
        conditions.push(format!("tenant = {}", param(binds.len())));
    }
    if let Some(key) = &query.key {
        binds.push(Bind::Text(key.as_str().to_owned()));
        conditions.push(format!("key_id = {}", param(binds.len())));
    }
    if let Some(before) = query.before {
        binds.push(Bind::Int(before));
        conditions.push(format!("seq < {}", param(binds.len())));
    }
    let mut sql = select.to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    binds.push(Bind::Int(i64::from(query.limit.min(EventQuery::MAX_LIMIT))));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", param(binds.len())));
    (sql, binds)
}

/// One event row as read.
pub(crate) struct RawEvent {
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) tenant: String,
    pub(crate) key_id: String,
    pub(crate) event: String,
    pub(crate) actor_kind: String,
    pub(crate) actor: String,
    pub(crate) client: Option<String>,
    pub(crate) replacement_id: Option<String>,
    pub(crate) expires_at: Option<i64>,
    pub(crate) detail: Option<String>,
}

impl RawEvent {
    pub(crate) fn into_event(self) -> Result<KeyEvent, StoreError> {
        let corrupt = |what: &str| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!("audit event {} has an invalid {what}", self.seq),
            )
        };
        let kind = KeyEventKind::parse(&self.event).ok_or_else(|| corrupt("event"))?;
        let actor_kind = ActorKind::parse(&self.actor_kind).ok_or_else(|| corrupt("actor"))?;
        Ok(KeyEvent {
            seq: self.seq,
            at: from_millis(self.at),
            tenant: self.tenant,
            key_id: KeyId::new(self.key_id),
            kind,
            actor_kind,
            actor: self.actor,
            client: self.client,
            replacement: self.replacement_id.map(KeyId::new),
            expires_at: self.expires_at.map(from_millis),
            detail: self.detail,
        })
    }
}

/// Reads the eleven event columns, in the order the listings name them.
macro_rules! raw_event {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        (|| -> Result<$crate::store::audit_sql::RawEvent, sqlx::Error> {
            Ok($crate::store::audit_sql::RawEvent {
                seq: row.try_get(0)?,
                at: row.try_get(1)?,
                tenant: row.try_get(2)?,
                key_id: row.try_get(3)?,
                event: row.try_get(4)?,
                actor_kind: row.try_get(5)?,
                actor: row.try_get(6)?,
                client: row.try_get(7)?,
                replacement_id: row.try_get(8)?,
                expires_at: row.try_get(9)?,
                detail: row.try_get(10)?,
            })
        })()
    }};
}
pub(crate) use raw_event;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_filter_adds_its_condition_and_the_limit_is_capped() {
        let mut query = EventQuery::tenant("acme", 5000);
        query.key = Some(KeyId::new("key_a"));
        query.before = Some(10);
        let (sql, binds) = events_statement("SELECT x FROM e", &query, |n| format!("${n}"));
        assert_eq!(
            sql,
            "SELECT x FROM e WHERE tenant = $1 AND key_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
        );
        assert!(matches!(binds.last(), Some(Bind::Int(1000))));
        let (sql, _) = events_statement("S", &EventQuery::all(1), |n| format!("?{n}"));
        assert_eq!(sql, "S ORDER BY seq DESC LIMIT ?1");
    }
}
