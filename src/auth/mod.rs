//! Who may do what. Every API caller presents a bearer token; civicflow keeps only its SHA-256
//! digest, so a copy of the store gives no one a working credential. A token carries one
//! [`Role`], and the role alone decides which operations it may use ([`Role::allows`]).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

pub use crate::store::ApiToken;
use crate::store::{Store, StoreError, Transaction};

/// What a caller is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// The public-service portal: starts cases and reads them for citizens.
    Portal,
    /// Finds stuck cases and acts on them; sees personal data masked.
    Operator,
    /// An operator who also sees personal data and may act on many cases at once.
    Supervisor,
    /// An agency: posts callbacks for its own steps, manages its own adapters.
    Agency(String),
    /// Issues and revokes tokens; may do everything an operator or the portal may.
    Admin,
    /// A metrics scraper (Prometheus): reads `/metrics` and nothing else.
    Metrics,
    /// An event source (a hospital, an agency's system): posts CloudEvents whose `source` is
    /// this one or under it (`source:urn:vn:moh:hospital:bach-mai`), of the types the
    /// workflows take from it, and nothing else.
    Source(String),
    /// An auditor (an inspectorate, a court's expert): reads the audit log, its signed tree
    /// heads and proofs, which hold no personal data in clear, and nothing else.
    Auditor,
}

/// An operation of the API, as far as permission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    StartCase,
    ReadCase,
    ListCases,
    ReadHistory,
    ListIncidents,
    /// Retry, skip, fix or cancel one case.
    Act,
    BulkAct,
    /// Read personal data unmasked in a history.
    Unmasked,
    /// Post a step's callback. The step's own agency is checked against the role separately.
    Callback,
    ManageWebhooks,
    ManageTokens,
    /// List definitions and the registry's history.
    ReadRegistry,
    /// Publish or deprecate a definition; whose namespace it is, the registry checks.
    Publish,
    /// Try a manifest against an agency's endpoint, touching no case (whoever may publish).
    TestAdapter,
    /// Read the on-time figures (no personal data in them).
    ReadKpis,
    /// Scrape `/metrics`.
    ReadMetrics,
    /// See the agencies' circuits (which are down, the steps that wait for them).
    ReadAgencies,
    /// Open or close an agency's circuit by hand.
    SetCircuit,
    /// Take a copy of the whole store (admin).
    Backup,
    /// Give a case its apology and new date; the workflow says which of these roles may
    /// (`extension.granted_by`, supervisors by default), an admin always may.
    Extend,
    /// Supplement an incomplete dossier (the citizen's answer, through the portal).
    Supplement,
    /// Post CloudEvents; an event source only its own `source`, checked by the API.
    PostEvent,
    /// Record a citizen's consent, or its withdrawal, and read a citizen's consents (the
    /// portal, where the citizen gives them).
    ManageConsents,
    /// Erase a person's personal data early, on their request (admin).
    EraseSubject,
    /// Read the audit log: entries, signed tree heads, inclusion and consistency proofs.
    ReadAudit,
}

impl Role {
    pub fn allows(&self, op: Operation) -> bool {
        use Operation::*;
        match self {
            Role::Portal => matches!(
                op,
                StartCase
                    | ReadCase
                    | ListCases
                    | Unmasked
                    | ManageWebhooks
                    | ReadRegistry
                    | ReadKpis
                    | Supplement
                    | ManageConsents
            ),
            Role::Operator => matches!(
                op,
                ReadCase
                    | ListCases
                    | ReadHistory
                    | ListIncidents
                    | Act
                    | ReadRegistry
                    | ReadKpis
                    | ReadAgencies
                    | SetCircuit
                    | Extend
            ),
            Role::Supervisor => matches!(
                op,
                ReadCase
                    | ListCases
                    | ReadHistory
                    | ListIncidents
                    | Act
                    | BulkAct
                    | Unmasked
                    | ReadRegistry
                    | ReadKpis
                    | ReadAgencies
                    | SetCircuit
                    | Extend
            ),
            Role::Agency(_) => {
                matches!(op, Callback | ReadRegistry | Publish | TestAdapter | Extend)
            }
            Role::Admin => op != Callback,
            Role::Metrics => op == ReadMetrics,
            Role::Source(_) => op == PostEvent,
            Role::Auditor => op == ReadAudit,
        }
    }

    /// Whether this role may post events from `source`: an event source its own (the same URI,
    /// or one under it), an admin any.
    pub fn may_send_from(&self, source: &str) -> bool {
        match self {
            Role::Admin => true,
            Role::Source(own) => {
                source == own
                    || source.strip_prefix(own.as_str()).is_some_and(|rest| {
                        own.ends_with([':', '/']) || rest.starts_with([':', '/'])
                    })
            }
            _ => false,
        }
    }

    /// The agency this role speaks for, if it is an agency's.
    pub fn agency(&self) -> Option<&str> {
        match self {
            Role::Agency(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a role; the roles are portal, operator, supervisor, agency:<agency id>, source:<event source URI>, auditor, admin and metrics"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "portal" => Ok(Role::Portal),
            "operator" => Ok(Role::Operator),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            "metrics" => Ok(Role::Metrics),
            "auditor" => Ok(Role::Auditor),
            _ => match s.strip_prefix("agency:") {
                Some(a)
                    if !a.is_empty()
                        && a.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    Ok(Role::Agency(a.to_owned()))
                }
                _ => match s.strip_prefix("source:") {
                    Some(uri)
                        if !uri.is_empty()
                            && uri.len() <= crate::case::cloud_event::MAX_ATTRIBUTE_BYTES
                            && !uri.chars().any(|c| c.is_control() || c.is_whitespace()) =>
                    {
                        Ok(Role::Source(uri.to_owned()))
                    }
                    _ => Err(UnknownRole(s.to_owned())),
                },
            },
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Portal => f.write_str("portal"),
            Role::Operator => f.write_str("operator"),
            Role::Supervisor => f.write_str("supervisor"),
            Role::Agency(a) => write!(f, "agency:{a}"),
            Role::Admin => f.write_str("admin"),
            Role::Metrics => f.write_str("metrics"),
            Role::Source(uri) => write!(f, "source:{uri}"),
            Role::Auditor => f.write_str("auditor"),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl ApiToken {
    /// A new token for `role`: the record to store and the secret to hand over (once).
    pub fn issue(role: Role, name: &str, by: &str, now: Timestamp) -> (ApiToken, String) {
        let id = random_hex(4);
        let secret = format!("cf_{id}_{}", random_hex(24));
        let token = ApiToken {
            id,
            digest: digest(&secret),
            role: role.to_string(),
            name: name.to_owned(),
            created_at: now,
            created_by: by.to_owned(),
            revoked_at: None,
            revoked_by: None,
            expires_at: None,
            session_of: None,
            parent_digest: None,
        };
        (token, secret)
    }

    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// The token's role; `None` if the stored text names none (a damaged record).
    pub fn role(&self) -> Option<Role> {
        self.role.parse().ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no token with id `{0}`")]
    Unknown(String),
    #[error("token `{id}` was already revoked at {at}")]
    AlreadyRevoked { id: String, at: Timestamp },
    #[error("a token needs a name saying who holds it")]
    NoName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issues a token for `role`, held by `name`, on behalf of `by`: the stored record and the
/// secret, which is shown once and never again.
pub async fn issue<S: Store>(
    store: &S,
    role: Role,
    name: &str,
    by: &str,
    now: Timestamp,
) -> Result<(ApiToken, String), TokenError> {
    if name.trim().is_empty() {
        return Err(TokenError::NoName);
    }
    store_new(store, role, name.trim(), by, now, |_| {}).await
}

/// Stores a new token for `role` under an id no stored token has, shaped by `shape` (an
/// expiry, a parent): the record and the secret.
async fn store_new<S: Store>(
    store: &S,
    role: Role,
    name: &str,
    by: &str,
    now: Timestamp,
    shape: impl Fn(&mut ApiToken),
) -> Result<(ApiToken, String), TokenError> {
    let tokens = store.api_tokens().await?;
    let taken: Vec<&str> = tokens.iter().map(|t| t.id.as_str()).collect();
    // Sessions that ended long ago are forgotten as new tokens are made, instead of piling up
    // in the list every issue and revocation reads.
    let forgotten: Vec<String> = tokens
        .iter()
        .filter(|t| t.session_of.is_some() && ended_before(t, now - SESSION_KEPT))
        .map(|t| t.digest.clone())
        .collect();
    let (token, secret) = loop {
        let (mut token, secret) = ApiToken::issue(role.clone(), name, by, now);
        if !taken.contains(&token.id.as_str()) {
            shape(&mut token);
            break (token, secret);
        }
    };
    let tx = Transaction {
        put_api_tokens: vec![token.clone()],
        delete_api_tokens: forgotten,
        audit: vec![token_record("issued", &token, by)],
        ..Transaction::default()
    };
    store.commit(&tx).await?;
    Ok((token, secret))
}

/// Revokes token `id`, and the operators' page sessions signed in with it: they stop working at
/// once; their records stay, for the audit trail.
pub async fn revoke<S: Store>(
    store: &S,
    id: &str,
    by: &str,
    now: Timestamp,
) -> Result<ApiToken, TokenError> {
    let tokens = store.api_tokens().await?;
    let token = tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| TokenError::Unknown(id.to_owned()))?;
    if let Some(at) = token.revoked_at {
        return Err(TokenError::AlreadyRevoked {
            id: token.id.clone(),
            at,
        });
    }
    let sessions = tokens
        .iter()
        .filter(|t| t.session_of.as_deref() == Some(id) && t.is_active(now));
    let revoked: Vec<ApiToken> = std::iter::once(token)
        .chain(sessions)
        .map(|t| ApiToken {
            revoked_at: Some(now),
            revoked_by: Some(by.to_owned()),
            ..t.clone()
        })
        .collect();
    let tx = Transaction {
        audit: revoked
            .iter()
            .map(|t| token_record("revoked", t, by))
            .collect(),
        put_api_tokens: revoked.clone(),
        ..Transaction::default()
    };
    store.commit(&tx).await?;
    Ok(revoked.into_iter().next().expect("the token itself"))
}

/// The audit log's record of a token issued or revoked: its public id, never its secret.
pub fn token_record(action: &str, token: &ApiToken, by: &str) -> crate::audit::Record {
    crate::audit::Record::Token {
        action: action.to_owned(),
        token: token.id.clone(),
        role: token.role.clone(),
        by: by.to_owned(),
    }
}

/// How long a session of the operators' page lasts.
pub const SESSION_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(8);

/// How long a session's record is kept once it ended (expired or revoked): the audit trail
/// of recent sign-ins, then forgotten.
pub const SESSION_KEPT: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

/// Whether `token` stopped working before `at`.
fn ended_before(token: &ApiToken, at: Timestamp) -> bool {
    token.revoked_at.is_some_and(|r| r < at) || token.expires_at.is_some_and(|e| e < at)
}

/// The token whose secret is `secret`, if it works at `now`: neither revoked nor expired, and,
/// for a session of the operators' page, signed in with a token that still works (read at
/// every request: a session opened while its token was being revoked dies with it).
pub async fn authenticate<S: Store>(
    store: &S,
    secret: &str,
    now: Timestamp,
) -> Result<Option<ApiToken>, StoreError> {
    let Some(token) = store
        .api_token(&digest(secret))
        .await?
        .filter(|t| t.is_active(now))
    else {
        return Ok(None);
    };
    if token.session_of.is_none() {
        return Ok(Some(token));
    }
    // A session from before parents were recorded is refused: sessions last hours.
    let Some(parent) = &token.parent_digest else {
        return Ok(None);
    };
    let parent_works = store
        .api_token(parent)
        .await?
        .is_some_and(|p| p.is_active(now) && token.session_of.as_deref() == Some(&*p.id));
    Ok(parent_works.then_some(token))
}

/// A session of the operators' page for the holder of `signed_in_with`: a token of the same
/// role and holder that expires after [`SESSION_LIFETIME`], stored like any token so that every
/// node knows it. The secret goes into the browser's cookie only.
pub async fn open_session<S: Store>(
    store: &S,
    signed_in_with: &ApiToken,
    now: Timestamp,
) -> Result<(ApiToken, String), TokenError> {
    let role = signed_in_with
        .role()
        .ok_or_else(|| TokenError::Unknown(signed_in_with.id.clone()))?;
    let by = format!("sign-in with token {}", signed_in_with.id);
    store_new(store, role, &signed_in_with.name, &by, now, |session| {
        session.expires_at = Some(now + SESSION_LIFETIME);
        session.session_of = Some(signed_in_with.id.clone());
        session.parent_digest = Some(signed_in_with.digest.clone());
    })
    .await
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// How the caller is named in a case's history: `alice (operator, token 1a2b3c4d)`.
    pub fn actor(&self) -> String {
        format!("{} ({}, token {})", self.name, self.role, self.token_id)
    }
}

/// Hex SHA-256 of a token: what the store keys tokens by.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `bytes` random bytes from the operating system's generator, as hex: secrets (API tokens,
/// callback tokens, webhook keys).
pub fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_inactive_once_revoked_or_expired() {
        let now = Timestamp::now();
        let (mut token, _) = ApiToken::issue(Role::Operator, "Lan", "admin", now);
        assert!(token.is_active(now));
        token.expires_at = Some(now + SESSION_LIFETIME);
        assert!(token.is_active(now));
        assert!(!token.is_active(now + SESSION_LIFETIME));
        token.expires_at = None;
        token.revoked_at = Some(now);
        assert!(!token.is_active(now));
    }

    #[test]
    fn roles_read_and_print_the_same() {
        for s in [
            "portal",
            "operator",
            "supervisor",
            "admin",
            "agency:police",
            "source:urn:vn:moh:hospital:bach-mai",
        ] {
            assert_eq!(s.parse::<Role>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "agency:",
            "agency:Police",
            "root",
            "agency:a b",
            "source:",
            "source:a b",
        ] {
            assert!(bad.parse::<Role>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_event_source_posts_only_from_its_own_source() {
        let hospital = Role::Source("urn:vn:moh:hospital:bach-mai".into());
        assert!(hospital.allows(Operation::PostEvent));
        assert!(!hospital.allows(Operation::StartCase));
        assert!(hospital.may_send_from("urn:vn:moh:hospital:bach-mai"));
        assert!(hospital.may_send_from("urn:vn:moh:hospital:bach-mai/ward-3"));
        assert!(!hospital.may_send_from("urn:vn:moh:hospital:bach-mai-2"));
        assert!(!hospital.may_send_from("urn:vn:moh:hospital:cho-ray"));
        assert!(Role::Admin.may_send_from("anything"));
        assert!(!Role::Portal.may_send_from("urn:vn:moh:hospital:bach-mai"));
    }

    #[test]
    fn only_an_agency_posts_callbacks_and_only_admin_manages_tokens() {
        let all = [
            Role::Portal,
            Role::Operator,
            Role::Supervisor,
            Role::Agency("police".into()),
            Role::Admin,
        ];
        for role in &all {
            assert_eq!(
                role.allows(Operation::Callback),
                role.agency().is_some(),
                "{role}"
            );
            assert_eq!(
                role.allows(Operation::ManageTokens),
                *role == Role::Admin,
                "{role}"
            );
        }
        assert!(!Role::Operator.allows(Operation::Unmasked));
        assert!(!Role::Operator.allows(Operation::BulkAct));
        assert!(Role::Supervisor.allows(Operation::BulkAct));
    }

    fn store() -> crate::store::sled::SledStore {
        let dir = std::env::temp_dir().join(format!("civicflow-auth-{}", uuid::Uuid::new_v4()));
        crate::store::sled::SledStore::open(&dir, 1 << 20).unwrap()
    }

    /// Issue 33: a sign-in that read its token just before the token was revoked opens a
    /// session after the revocation listed the sessions to revoke; the session is refused all
    /// the same, since every request reads the token it was signed in with.
    #[tokio::test]
    async fn a_session_opened_while_its_token_was_revoked_does_not_work() {
        let store = store();
        let now = Timestamp::now();
        let (token, _) = issue(&store, Role::Operator, "Lan", "admin", now)
            .await
            .unwrap();
        let (_, before) = open_session(&store, &token, now).await.unwrap();
        assert!(authenticate(&store, &before, now).await.unwrap().is_some());
        revoke(&store, &token.id, "admin", now).await.unwrap();
        // The sign-in read `token` while it still worked.
        let (_, late) = open_session(&store, &token, now).await.unwrap();
        assert!(authenticate(&store, &before, now).await.unwrap().is_none());
        assert!(authenticate(&store, &late, now).await.unwrap().is_none());
    }

    /// Issue 33: signing in and issuing tokens do not move the configuration version (every
    /// node would reload and recompile its definitions), and sessions long ended are forgotten.
    #[tokio::test]
    async fn sign_ins_leave_the_configuration_alone_and_old_sessions_are_forgotten() {
        let store = store();
        let long_ago = Timestamp::now() - SESSION_KEPT - SESSION_LIFETIME - SESSION_LIFETIME;
        let (token, _) = issue(&store, Role::Operator, "Lan", "admin", long_ago)
            .await
            .unwrap();
        let version = store.config_version().await.unwrap();
        let (old, _) = open_session(&store, &token, long_ago).await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), version);
        let now = Timestamp::now();
        let (recent, _) = open_session(&store, &token, now).await.unwrap();
        let kept: Vec<String> = store
            .api_tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert!(!kept.contains(&old.id), "{kept:?}");
        assert!(
            kept.contains(&recent.id) && kept.contains(&token.id),
            "{kept:?}"
        );
        revoke(&store, &token.id, "admin", now).await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), version);
    }

    #[test]
    fn an_issued_token_is_stored_as_its_digest() {
        let (token, secret) =
            ApiToken::issue(Role::Portal, "portal", "test", Timestamp::UNIX_EPOCH);
        assert!(secret.starts_with(&format!("cf_{}_", token.id)));
        assert_eq!(token.digest, digest(&secret));
        assert!(!token.digest.contains(&secret));
        assert_eq!(token.digest.len(), 64);
    }
}
