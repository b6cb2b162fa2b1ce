//! The API Keys page's views: askama templates (`cli/templates/`) and what they show.

use std::time::SystemTime;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use hapnd_auth::{KeyEvent, KeyRecord};

use crate::time::rfc3339;

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    pub(super) error: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct MessagePage<'a> {
    pub(super) title: &'a str,
    pub(super) message: &'a str,
    pub(super) back: &'a str,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub(super) struct KeysPage {
    pub(super) csrf: String,
    pub(super) form: String,
    /// Signed in with a tenant credential: its tenant is shown, with no tenant box.
    pub(super) scoped: bool,
    pub(super) tenant: String,
    pub(super) keys: Vec<Row>,
    pub(super) notice: Option<String>,
    pub(super) error: Option<String>,
}

#[derive(Template)]
#[template(path = "created.html")]
pub(super) struct CreatedPage {
    pub(super) csrf: String,
    pub(super) heading: &'static str,
    pub(super) secret: String,
    pub(super) tenant: String,
    pub(super) key: Row,
    /// The old key after a rotation (with the expiry a scheduled roll gave it).
    pub(super) replaces: Option<Row>,
    /// Whether the rotation gave the old key an expiry (a scheduled roll).
    pub(super) scheduled: bool,
}

#[derive(Template)]
#[template(path = "history.html")]
pub(super) struct HistoryPage {
    pub(super) csrf: String,
    /// Signed in with a tenant credential: its tenant only, no tenant box.
    pub(super) scoped: bool,
    pub(super) tenant: String,
    /// The one key shown (its id), or the whole tenant's history.
    pub(super) key: Option<String>,
    pub(super) events: Vec<EventRow>,
    /// The next (older) page's URL, when this page is full.
    pub(super) next: Option<String>,
}

/// An audit event as the History view shows it: no key, no hash.
pub(super) struct EventRow {
    pub(super) seq: i64,
    pub(super) at: String,
    pub(super) kind: &'static str,
    pub(super) key_id: String,
    /// The key's name, when the key still exists.
    pub(super) key_name: Option<String>,
    pub(super) actor_kind: &'static str,
    pub(super) actor: String,
    pub(super) client: Option<String>,
    pub(super) replacement: Option<String>,
    pub(super) expires: Option<String>,
    /// A leaked-key report's URL, shown as text.
    pub(super) detail: Option<String>,
}

impl EventRow {
    pub(super) fn new(e: &KeyEvent, key_name: Option<String>) -> Self {
        EventRow {
            seq: e.seq,
            at: rfc3339(e.at),
            kind: e.kind.as_str(),
            key_id: e.key_id.to_string(),
            key_name,
            actor_kind: e.actor_kind.as_str(),
            actor: e.actor.clone(),
            client: e.client.clone(),
            replacement: e.replacement.as_ref().map(ToString::to_string),
            expires: e.expires_at.map(rfc3339),
            detail: e.detail.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "revoke.html")]
pub(super) struct RevokePage {
    pub(super) csrf: String,
    pub(super) tenant: String,
    pub(super) key: Row,
}

/// A key as the table shows it.
pub(super) struct Row {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) environment: &'static str,
    pub(super) hint: String,
    pub(super) created: String,
    pub(super) last_used: String,
    pub(super) expires: String,
    pub(super) status: &'static str,
    /// Space-separated, or `all` for a key without scopes (full access).
    pub(super) scopes: String,
    /// `100/s,burst=200`, or `none`.
    pub(super) rate_limit: String,
}

impl Row {
    pub(super) fn new(r: &KeyRecord, now: SystemTime) -> Self {
        Row {
            id: r.id.to_string(),
            name: r.name.clone(),
            environment: r.environment.as_str(),
            hint: r.hint.clone(),
            created: rfc3339(r.created_at),
            last_used: r.last_used_at.map_or("never".into(), rfc3339),
            expires: r.expires_at.map_or("never".into(), rfc3339),
            status: r.status_at(now).as_str(),
            scopes: if r.scopes.is_empty() {
                "all".to_owned()
            } else {
                r.scopes.join(" ")
            },
            rate_limit: r.rate_limit.map_or("none".into(), |l| l.to_string()),
        }
    }
}

pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the API Keys page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub(super) fn message(status: StatusCode, title: &str, text: &str, back: &str) -> Response {
    let page = MessagePage {
        title,
        message: text,
        back,
    };
    render(status, &page)
}
