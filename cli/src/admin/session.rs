//! The page's sign-in sessions: in memory, expiring, each with its CSRF token, the
//! one-time ids of the forms it was shown, and a one-time notice for its next page.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::access::Scope;

/// How long a sign-in lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(3600);
/// Unused form ids a session remembers (the oldest are forgotten first).
const MAX_FORMS: usize = 32;

/// Sessions by the SHA-256 of their cookie: a lookup's timing says nothing about the
/// cookie, and nothing here lets one be rebuilt.
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_ttl(SESSION_TTL)
    }
}

struct Session {
    csrf: String,
    /// What the session may manage: what it signed in with.
    scope: Scope,
    expires: Instant,
    forms: VecDeque<String>,
    /// What the next page shows once (a revocation done), and for which tenant.
    flash: Option<(String, String)>,
}

impl Sessions {
    /// Sessions that end `ttl` after sign-in.
    pub(crate) fn with_ttl(ttl: Duration) -> Self {
        Sessions {
            by_hash: Mutex::default(),
            ttl,
        }
    }

    /// Starts a session with the powers of `scope`; returns its cookie value.
    pub(crate) fn create(&self, scope: Scope) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            hash(&cookie),
            Session {
                csrf: random_token(),
                scope,
                expires: now + self.ttl,
                forms: VecDeque::new(),
                flash: None,
            },
        );
        cookie
    }

    /// The CSRF token of the live session `cookie` names.
    #[cfg(test)]
    pub(crate) fn csrf(&self, cookie: &str) -> Option<String> {
        self.get(cookie).map(|(csrf, _)| csrf)
    }

    /// The CSRF token and scope of the live session `cookie` names.
    pub(crate) fn get(&self, cookie: &str) -> Option<(String, Scope)> {
        let mut sessions = self.lock();
        let key = hash(cookie);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some((s.csrf.clone(), s.scope.clone())),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub(crate) fn remove(&self, cookie: &str) {
        self.lock().remove(&hash(cookie));
    }

    /// A new one-time id for a form that creates a key, so that submitting it twice
    /// (a reload of the page that showed the key) creates and shows nothing.
    pub(crate) fn issue_form(&self, cookie: &str) -> Option<String> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(&hash(cookie))
            .filter(|s| s.expires > Instant::now())?;
        let id = random_token();
        if session.forms.len() >= MAX_FORMS {
            session.forms.pop_front();
        }
        session.forms.push_back(id.clone());
        Some(id)
    }

    /// Uses up form id `form`: true the first time only.
    pub(crate) fn take_form(&self, cookie: &str, form: &str) -> bool {
        let mut sessions = self.lock();
        let Some(session) = sessions
            .get_mut(&hash(cookie))
            .filter(|s| s.expires > Instant::now())
        else {
            return false;
        };
        match session.forms.iter().position(|f| same(f, form)) {
            Some(i) => {
                session.forms.remove(i);
                true
            }
            None => false,
        }
    }

    /// Leaves `notice` for the next page of `tenant` this session opens: the page says
    /// what the session did, never what a link claims.
    pub(crate) fn set_flash(&self, cookie: &str, tenant: &str, notice: String) {
        if let Some(session) = self.live(&mut self.lock(), cookie) {
            session.flash = Some((tenant.to_owned(), notice));
        }
    }

    /// The notice left for `tenant`'s page, once.
    pub(crate) fn take_flash(&self, cookie: &str, tenant: &str) -> Option<String> {
        let mut sessions = self.lock();
        let session = self.live(&mut sessions, cookie)?;
        match session.flash.take() {
            Some((for_tenant, notice)) if for_tenant == tenant => Some(notice),
            _ => None,
        }
    }

    fn live<'a>(
        &self,
        sessions: &'a mut HashMap<[u8; 32], Session>,
        cookie: &str,
    ) -> Option<&'a mut Session> {
        sessions
            .get_mut(&hash(cookie))
            .filter(|s| s.expires > Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Constant-time equality of two secrets (their lengths are not secret).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn hash(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// 256 random bits from the OS, as 64 hex digits.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_a_csrf_token_and_one_time_forms() {
        let sessions = Sessions::default();
        let cookie = sessions.create(Scope::All);
        assert_eq!(cookie.len(), 64);
        let csrf = sessions.csrf(&cookie).unwrap();
        assert_ne!(csrf, cookie);
        assert_eq!(sessions.csrf("not-a-session"), None);

        let form = sessions.issue_form(&cookie).unwrap();
        assert!(sessions.take_form(&cookie, &form));
        assert!(!sessions.take_form(&cookie, &form), "a form id works once");
        assert!(!sessions.take_form(&cookie, ""));

        sessions.remove(&cookie);
        assert_eq!(sessions.csrf(&cookie), None);
        assert_eq!(sessions.issue_form(&cookie), None);
    }

    #[test]
    fn a_flash_is_shown_once_to_its_session_and_tenant() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.create(Scope::All), sessions.create(Scope::All));
        sessions.set_flash(&a, "acme", "Revoked ci".to_owned());
        assert_eq!(sessions.take_flash(&b, "acme"), None, "another session");
        assert_eq!(
            sessions.take_flash(&a, "acme").as_deref(),
            Some("Revoked ci")
        );
        assert_eq!(sessions.take_flash(&a, "acme"), None, "once");
        sessions.set_flash(&a, "acme", "Revoked ci".to_owned());
        assert_eq!(sessions.take_flash(&a, "other"), None, "another tenant");
        assert_eq!(sessions.take_flash(&a, "acme"), None, "dropped on the way");
    }

    #[test]
    fn a_session_ends_at_its_expiry() {
        let sessions = Sessions::with_ttl(Duration::from_millis(50));
        let cookie = sessions.create(Scope::All);
        let form = sessions.issue_form(&cookie).unwrap();
        assert!(sessions.csrf(&cookie).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!sessions.take_form(&cookie, &form));
        assert_eq!(sessions.csrf(&cookie), None);
        assert_eq!(sessions.issue_form(&cookie), None);
    }

    #[test]
    fn only_the_last_forms_are_remembered() {
        let sessions = Sessions::default();
        let cookie = sessions.create(Scope::All);
        let first = sessions.issue_form(&cookie).unwrap();
        let rest: Vec<_> = (0..MAX_FORMS)
            .map(|_| sessions.issue_form(&cookie).unwrap())
            .collect();
        assert!(
            !sessions.take_form(&cookie, &first),
            "the oldest is forgotten"
        );
        assert!(rest.iter().all(|f| sessions.take_form(&cookie, f)));
    }
}
