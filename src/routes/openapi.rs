use actix_web::HttpResponse;

use crate::auth::Public;

/// The OpenAPI 3 description of this API (kept true by a test over every route).
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// GET /api/v1/openapi.json
pub async fn handle(_: Public) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT)
}
