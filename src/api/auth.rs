//! Authentication and rate limits at the door: every request but the health check and the OpenAPI
//! document presents a bearer token; the token's role decides what it may do, and each token has its own request
//! budget, so one misbehaving caller cannot starve the others. Requests without a valid token
//! share a budget per client address.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{ApiError, AppState};
use crate::auth::{self, ApiToken, Operation, Principal};
use crate::store::Store;

/// Requests each token may make: a sustained rate and a burst above it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_second: NonZeroU32::new(200).expect("non-zero"),
            burst: NonZeroU32::new(400).expect("non-zero"),
        }
    }
}

pub type Limiter = Arc<DefaultKeyedRateLimiter<String>>;

/// How many budgets (tokens and addresses) are kept before idle ones are forgotten.
const FORGET_ABOVE: usize = 10_000;

pub fn limiter(limits: Limits) -> Limiter {
    let quota = Quota::per_second(limits.per_second).allow_burst(limits.burst);
    Arc::new(RateLimiter::keyed(quota))
}

/// A 429 for `who`, with when to try again.
fn too_many(
    who: String,
    not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>,
) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{who}; retry in {} ms", wait.as_millis().max(1)),
    )
    .with_retry_after(wait)
}

/// Counts a request that presented no valid token (the API's, or a sign-in to the operators'
/// page) against its client address's budget, the same as a token's, so that guessing tokens
/// or flooding with bad ones is throttled like any caller: `Err` (429) once it is spent.
pub fn without_token<S>(state: &AppState<S>, extensions: &Extensions) -> Result<(), ApiError> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "an unknown address".to_owned(), |c| c.0.ip().to_string());
    // Keys of addresses that stopped sending are forgotten once there are many, so a flood
    // from many addresses cannot grow the budgets without bound.
    if state.limiter.len() > FORGET_ABOVE {
        state.limiter.retain_recent();
    }
    state
        .limiter
        .check_key(&format!("unauthenticated {peer}"))
        .map_err(|not_until| {
            too_many(
                format!("too many requests without a valid token from {peer}"),
                not_until,
            )
        })
}

/// Counts a request made with `token` against its holder's budget: a session of the
/// operators' page spends the budget of the token it was signed in with, so the page and the
/// API share one. `Err` (429) once it is spent.
pub fn spend<S>(state: &AppState<S>, token: &ApiToken) -> Result<(), ApiError> {
    let holder = token.session_of.as_ref().unwrap_or(&token.id);
    state
        .limiter
        .check_key(holder)
        .map_err(|not_until| too_many(format!("too many requests with token {holder}"), not_until))
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl Caller {
    /// Refuses the request unless the caller's role allows `op`.
    pub fn require(&self, op: Operation) -> Result<(), ApiError> {
        if self.0.role.allows(op) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a token with role `{}` may not {}",
                self.0.role,
                describe(op)
            ),
        ))
    }
}

fn describe(op: Operation) -> &'static str {
    match op {
        Operation::StartCase => "start cases",
        Operation::ReadCase => "read cases",
        Operation::ListCases => "list cases",
        Operation::ReadHistory => "read a case's history",
        Operation::ListIncidents => "list incidents",
        Operation::Act => "act on cases",
        Operation::BulkAct => "act on many cases at once",
        Operation::Unmasked => "read personal data unmasked",
        Operation::Callback => "post agency callbacks",
        Operation::ManageWebhooks => "manage webhooks",
        Operation::ManageTokens => "manage API tokens",
        Operation::ReadRegistry => "read the registry of definitions",
        Operation::Publish => "publish or deprecate definitions",
        Operation::TestAdapter => "test adapters",
        Operation::ReadKpis => "read the on-time figures",
        Operation::ReadMetrics => "read the metrics",
        Operation::ReadAgencies => "read the agencies' circuits",
        Operation::SetCircuit => "open or close an agency's circuit",
        Operation::Backup => "take a backup of the store",
        Operation::Extend => "give a case a new date",
        Operation::Supplement => "supplement a dossier",
        Operation::PostEvent => "post events",
        Operation::ManageConsents => "record or read citizens' consents",
        Operation::EraseSubject => "erase a person's personal data",
        Operation::ReadAudit => "read the audit log",
    }
}

impl<S: Store + Clone> FromRequestParts<AppState<S>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Caller, ApiError> {
        let unauthenticated = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                message.to_owned(),
            )
        };
        let refused = |message: &str| match without_token(state, &parts.extensions) {
            Ok(()) => unauthenticated(message),
            Err(too_many) => too_many,
        };
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(refused("send the header `Authorization: Bearer <token>`"));
        };
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .filter(|s| !s.is_empty());
        let Some(secret) = secret else {
            return Err(refused("the Authorization header must be `Bearer <token>`"));
        };
        let token = auth::authenticate(state.engine.store(), secret, state.engine.now())
            .await
            .map_err(ApiError::store)?;
        let Some(token) = token else {
            return Err(refused("the token is unknown or has been revoked"));
        };
        let role = token.role().ok_or_else(|| {
            ApiError::internal(format!(
                "API token {} has a role that is not one: `{}`",
                token.id, token.role
            ))
        })?;
        spend(state, &token)?;
        Ok(Caller(Principal {
            token_id: token.id,
            name: token.name,
            role,
        }))
    }
}
