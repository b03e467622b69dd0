//! Authentication and rate limits at the door: every request but the health check presents a
//! bearer token; the token's role decides what it may do, and each token has its own request
//! budget, so one misbehaving caller cannot starve the others.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{ApiError, AppState};
use crate::auth::{Operation, Principal, digest};
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

pub fn limiter(limits: Limits) -> Limiter {
    let quota = Quota::per_second(limits.per_second).allow_burst(limits.burst);
    Arc::new(RateLimiter::keyed(quota))
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
        Operation::ReadKpis => "read the on-time figures",
        Operation::ReadMetrics => "read the metrics",
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
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthenticated("send the header `Authorization: Bearer <token>`"))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <token>`"))?;
        let token = state
            .engine
            .store()
            .api_token(&digest(secret))
            .await
            .map_err(ApiError::internal)?
            .filter(|t| t.is_active())
            .ok_or_else(|| unauthenticated("the token is unknown or has been revoked"))?;
        let role = token.role().ok_or_else(|| {
            ApiError::internal(format!(
                "API token {} has a role that is not one: `{}`",
                token.id, token.role
            ))
        })?;
        if let Err(not_until) = state.limiter.check_key(&token.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests with token {}; retry in {} ms",
                    token.id,
                    wait.as_millis().max(1)
                ),
            )
            .with_retry_after(wait));
        }
        Ok(Caller(Principal {
            token_id: token.id,
            name: token.name,
            role,
        }))
    }
}
