//! GET /console: the operator console, static files compiled into the binary. It is a
//! client of the public API like any other: the key it signs in with stays in the page's
//! memory and is sent as X-API-Key on each call.

use actix_web::{http::header, web, HttpResponse};

use crate::{auth::Public, error::ApiError};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// The page may run its own script and style and call its own origin, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub async fn page(_: Public) -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn asset(_: Public, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match name.as_str() {
        "console.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        "console.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        _ => Err(ApiError::NotFound("no such console file".into())),
    }
}
