//! Signing in to the operators' page, and what every page request checks.
//!
//! An operator, supervisor or admin signs in with their API token; the page opens a session
//! for it ([`auth::open_session`]): a token of the same role and holder that expires after
//! eight hours, is revoked at sign-out and with the token signed in with, and is stored like
//! any token, so every node behind a load balancer knows it. Its secret lives only in an
//! `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui`, so the page's scripts never see it. A
//! page request acts as that token through the API's own handlers: the role rules and the
//! masking of personal data are the API's, unchanged.
//!
//! Every form carries a CSRF token derived from the session's secret, which another site can
//! neither read nor guess; a POST without it, or one the browser says came from another site
//! (`Sec-Fetch-Site`), is refused before anything happens. A refused sign-in spends the client
//! address's budget of requests without a valid token, as the API's bad tokens do.

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{UiError, Who, render};
use crate::api::auth::{Caller, spend, without_token};
use crate::api::{ApiError, AppState};
use crate::auth::{self, Operation, Principal, Role, digest};
use crate::store::Store;

pub const COOKIE_NAME: &str = "civicflow_session";

/// A signed-in page request: who, and the CSRF token its forms carry.
pub struct Session {
    pub caller: Caller,
    pub who: Who,
    token_id: String,
}

/// The roles the page is for: those that settle cases.
fn may_sign_in(role: &Role) -> bool {
    matches!(role, Role::Operator | Role::Supervisor | Role::Admin)
}

/// The CSRF token of the session whose secret is `secret`.
fn csrf_of(secret: &str) -> String {
    hex::encode(&Sha256::digest(format!("civicflow-ui-csrf:{secret}").as_bytes())[..16])
}

fn cookie_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

impl<S: Store + Clone> FromRequestParts<AppState<S>> for Session {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Session, UiError> {
        let Some(secret) = cookie_secret(&parts.headers) else {
            return Err(UiError::SignIn(None));
        };
        let now = state.engine.now();
        let token = auth::authenticate(state.engine.store(), secret, now)
            .await
            .map_err(ApiError::store)?
            .filter(|t| t.session_of.is_some());
        let Some(token) = token else {
            return Err(UiError::SignIn(Some(
                "Your session has ended: sign in again.",
            )));
        };
        // The page spends its holder's budget, as the API does.
        spend(state, &token)?;
        let Some(role) = token.role().filter(may_sign_in) else {
            return Err(UiError::SignIn(None));
        };
        let who = Who {
            name: token.name.clone(),
            role: role.to_string(),
            csrf: csrf_of(secret),
            may_bulk: role.allows(Operation::BulkAct),
            may_act: role.allows(Operation::Act),
        };
        Ok(Session {
            caller: Caller(Principal {
                token_id: token.id.clone(),
                name: token.name,
                role,
            }),
            who,
            token_id: token.id,
        })
    }
}

impl Session {
    /// Refuses a form whose CSRF token is not this session's, or that the browser says was
    /// sent from another site.
    pub fn check_form(&self, headers: &HeaderMap, csrf: &str) -> Result<(), UiError> {
        same_site(headers)?;
        let expected = self.who.csrf.as_bytes();
        let given = csrf.as_bytes();
        let equal = expected.len() == given.len()
            && expected
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if equal {
            Ok(())
        } else {
            Err(UiError::Forbidden(
                "This form is not from your session (it may be from another site, or from before you signed in again): reload the page and try again.",
            ))
        }
    }
}

/// Refuses a request the browser marks as sent from another site. (Not a comparison of
/// `Origin` with `Host`: a reverse proxy may rewrite `Host`; the CSRF token is the check that
/// holds everywhere.)
fn same_site(headers: &HeaderMap) -> Result<(), UiError> {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s == "cross-site") {
        return Err(UiError::Forbidden(
            "A form sent from another site is refused.",
        ));
    }
    Ok(())
}

#[derive(askama::Template)]
#[template(path = "ui/sign_in.html")]
pub struct SignInPage {
    pub who: Option<Who>,
    pub message: Option<String>,
}

pub async fn sign_in_form() -> Response {
    render(&SignInPage {
        who: None,
        message: None,
    })
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
}

/// Exchanges an operator's, supervisor's or admin's API token for a session cookie.
pub async fn sign_in<S: Store + Clone>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    extensions: Extensions,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    same_site(&headers)?;
    // A refused sign-in spends the address's budget, as a request with a bad token does.
    let refused = |message: &str| {
        without_token(&state, &extensions)?;
        let page = render(&SignInPage {
            who: None,
            message: Some(message.to_owned()),
        });
        Ok((StatusCode::UNAUTHORIZED, page).into_response())
    };
    let Ok(Form(form)) = form else {
        return refused("Paste your API token to sign in.");
    };
    let now = state.engine.now();
    let token = state
        .engine
        .store()
        .api_token(&digest(form.token.trim()))
        .await
        .map_err(ApiError::store)?
        .filter(|t| t.is_active(now) && t.session_of.is_none());
    let Some(token) = token else {
        return refused("This token is unknown, revoked or expired.");
    };
    if !token.role().is_some_and(|r| may_sign_in(&r)) {
        return refused(
            "This page is for operators, supervisors and admins; this token's role may not sign in here.",
        );
    }
    let (session, secret) = auth::open_session(state.engine.store(), &token, now)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(token = %token.id, session = %session.id, name = %token.name, "signed in to the operators' page");
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE_NAME}={secret}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        auth::SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/ui/incidents").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session: its token is revoked on every node, and the cookie cleared.
pub async fn sign_out<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let now = state.engine.now();
    auth::revoke(
        state.engine.store(),
        &session.token_id,
        &session.caller.0.actor(),
        now,
    )
    .await
    .map_err(ApiError::internal)?;
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static(
            "civicflow_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}
