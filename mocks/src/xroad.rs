//! The agencies' side of X-Road's message metadata (what a security server in front of each
//! agency does for it): every procedure call must say who calls (`X-Road-Client`,
//! `INSTANCE/CLASS/MEMBER/SUBSYSTEM`), which service of this agency it calls (`X-Road-Service`,
//! `INSTANCE/CLASS/<agency>/<operation>/<version>`) and the message's id (`X-Road-Id`); the
//! citizen (`X-Road-UserId`) and the case (`X-Road-Issue`) are optional. The reply carries
//! `X-Road-Request-Hash`: SHA-512, base64, of the method, the request target, the message id
//! and the body, one per line.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha512};

pub const CLIENT: &str = "x-road-client";
pub const SERVICE: &str = "x-road-service";
pub const ID: &str = "x-road-id";
pub const USER_ID: &str = "x-road-userid";
pub const ISSUE: &str = "x-road-issue";
pub const REQUEST_HASH: &str = "x-road-request-hash";

/// The largest request body the gateway reads.
const MAX_BODY: usize = 1 << 20;

/// The request's hash, as the reply carries it.
pub fn request_hash(method: &str, target: &str, id: &str, body: &[u8]) -> String {
    let mut h = Sha512::new();
    for part in [
        method.as_bytes(),
        b" ",
        target.as_bytes(),
        b"\n",
        id.as_bytes(),
        b"\n",
        body,
    ] {
        h.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// What is wrong with a call's X-Road headers for agency `agency`, if anything.
fn check(headers: &HeaderMap, agency: &str) -> Result<(), String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let client = get(CLIENT).ok_or("X-Road-Client is missing")?;
    let parts: Vec<&str> = client.split('/').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "X-Road-Client `{client}` is not INSTANCE/CLASS/MEMBER/SUBSYSTEM"
        ));
    }
    let service = get(SERVICE).ok_or("X-Road-Service is missing")?;
    let parts: Vec<&str> = service.split('/').collect();
    if parts.len() < 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "X-Road-Service `{service}` is not INSTANCE/CLASS/MEMBER/SERVICE/VERSION"
        ));
    }
    if parts[2] != agency {
        return Err(format!(
            "X-Road-Service `{service}` names member `{}`, not this agency (`{agency}`)",
            parts[2]
        ));
    }
    match get(ID) {
        Some(id) if !id.is_empty() && id.len() <= 255 => {}
        _ => return Err("X-Road-Id is missing (1 to 255 characters)".into()),
    }
    for optional in [USER_ID, ISSUE] {
        if headers.contains_key(optional) && get(optional).is_none_or(str::is_empty) {
            return Err(format!("{optional} is empty"));
        }
    }
    Ok(())
}

/// The gateway in front of agency `agency`'s procedures (a `from_fn_with_state` middleware):
/// refuses a call without proper X-Road headers, and stamps the request's hash on the reply
/// (unless a fault already put another one there).
pub async fn gateway(State(agency): State<&'static str>, request: Request, next: Next) -> Response {
    // The test harness's own routes (`/admin/…`) are not procedures: no gateway.
    if request.uri().path().starts_with("/admin/") {
        return next.run(request).await;
    }
    if let Err(why) = check(request.headers(), agency) {
        let body = json!({"reason_code": "XROAD_HEADERS_INVALID", "message": why});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let body = json!({"reason_code": "BODY_UNREADABLE", "message": e.to_string()});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let id = parts
        .headers
        .get(ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let hash = request_hash(parts.method.as_str(), &target, &id, &bytes);
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let headers = response.headers_mut();
    if !headers.contains_key(REQUEST_HASH)
        && let Ok(value) = HeaderValue::from_str(&hash)
    {
        headers.insert(REQUEST_HASH, value);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_call_names_its_client_this_agencys_service_and_its_id() {
        let good = [
            (CLIENT, "VN/GOV/CIVICFLOW/orchestrator"),
            (SERVICE, "VN/GOV/police/residence-registration/v1"),
            (ID, "m-1"),
        ];
        assert_eq!(check(&headers(&good), "police"), Ok(()));
        assert!(
            check(&headers(&good), "civil-status")
                .unwrap_err()
                .contains("not this agency")
        );
        assert!(
            check(&headers(&good[1..]), "police")
                .unwrap_err()
                .contains("X-Road-Client")
        );
        assert!(
            check(&headers(&good[..2]), "police")
                .unwrap_err()
                .contains("X-Road-Id")
        );
        let bad_client = [(CLIENT, "civicflow"), good[1], good[2]];
        assert!(check(&headers(&bad_client), "police").is_err());
    }
}
