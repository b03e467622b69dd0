//! The operators' web page at `/ui/`, served by the API's own server from the same binary, every
//! asset embedded: server-rendered HTML (askama templates, checked when civicflow is built),
//! plain forms that work without JavaScript, and htmx where a part of a page updates by itself.
//!
//! The page is a reader of the API, not a second API: each page calls the API's handler for
//! what it shows or does, as the signed-in token ([`session`]), and renders the JSON the API
//! answers. What a role may see or do, and how personal data is masked, are therefore the
//! API's rules, unchanged.

mod assets;
mod pages;
mod session;
mod views;

use askama::Template;
use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::{ApiError, AppState};
use crate::store::Store;

/// The signed-in holder, as the page header shows them, and what their role may do there.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub role: String,
    /// The CSRF token every form of the session carries.
    pub csrf: String,
    pub may_act: bool,
    pub may_bulk: bool,
}

/// What a page request can end in instead of its page.
#[derive(Debug)]
pub enum UiError {
    /// No session, or one that ended: to the sign-in page, with why.
    SignIn(Option<&'static str>),
    /// A form that is not the session's own (CSRF), or sent from another site.
    Forbidden(&'static str),
    /// The API refused or failed: its status and message, on a page.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError::Api(e)
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    who: Option<Who>,
    status: u16,
    title: String,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            UiError::SignIn(None) => return Redirect::to("/ui/sign-in").into_response(),
            UiError::SignIn(Some(why)) => {
                let page = session::SignInPage {
                    who: None,
                    message: Some(why.to_owned()),
                };
                return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
            }
            UiError::Forbidden(why) => (StatusCode::FORBIDDEN, "Refused", why.to_owned()),
            UiError::Api(e) => (e.status(), "Not done", e.message().to_owned()),
        };
        let page = ErrorPage {
            who: None,
            status: status.as_u16(),
            title: title.to_owned(),
            message,
        };
        (status, render(&page)).into_response()
    }
}

/// A page as HTML; a template that fails to render (it cannot, for the types it is given, but
/// the error is typed) is logged and answered 500.
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The page's routes, merged into the API's router.
pub fn routes<S: Store + Clone>() -> Router<AppState<S>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/incidents") }))
        .route(
            "/ui/sign-in",
            get(session::sign_in_form).post(session::sign_in::<S>),
        )
        .route("/ui/sign-out", post(session::sign_out::<S>))
        .route("/ui/incidents", get(pages::incidents::<S>))
        .route("/ui/bulk-retry", post(pages::bulk_retry::<S>))
        .route("/ui/search", get(pages::search::<S>))
        .route("/ui/kpis", get(pages::kpis::<S>))
        .route("/ui/cases/{id}", get(pages::case::<S>))
        .route("/ui/cases/{id}/act", post(pages::act::<S>))
        .route("/ui/cases/{id}/extend", post(pages::extend::<S>))
        .route("/ui/deadlines", get(pages::deadlines::<S>))
        .route("/ui/assets/{file}", get(assets::serve))
        .layer(axum::middleware::map_response(protect))
}

/// Headers on every answer of the page: pages hold personal data, so no cache keeps them; no
/// other site may frame them (clickjacking an action button), and the page loads scripts only
/// from itself.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
