//! The page's assets, embedded in the binary: no CDN, nothing fetched from the internet. Each
//! name carries its version, so a browser may keep it for a year.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

/// htmx 2.0.11 (BSD Zero Clause License), from the npm package `htmx.org`.
const HTMX: &[u8] = include_bytes!("../../../assets/ui/htmx-2.0.11.min.js");
const STYLE: &[u8] = include_bytes!("../../../assets/ui/style.css");

pub async fn serve(Path(file): Path<String>) -> Response {
    let (content_type, body, cache) = match file.as_str() {
        "htmx-2.0.11.min.js" => (
            "text/javascript",
            HTMX,
            "public, max-age=31536000, immutable",
        ),
        // Not versioned by name: the browser checks it again after an hour.
        "style.css" => ("text/css", STYLE, "public, max-age=3600"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, cache)], body).into_response()
}
