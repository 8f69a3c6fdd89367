//! The OpenAPI document, generated (utoipa) from the handlers' `#[utoipa::path]` attributes
//! and the request and answer types: a route, field or refusal cannot change without the
//! document changing with it. A test compares it with the router both ways.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Object, ObjectBuilder, Type};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::auth::Public;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "facegate",
        description = "Face-biometric REST service: 1:N search, 1:1 verify, enrol and delete over per-partition galleries, behind quality, presentation-attack (PAD) and morphing-attack (MAD) gates. Biometric endpoints take JSON and answer XML; errors answer <ErrorResponse><status>CODE</status><message>...</message></ErrorResponse>, gate rejections adding <quality_score>, <pad_score> or <mad_score>."
    ),
    paths(
        super::search::handle,
        super::verify::handle,
        super::enrol::handle,
        super::delete::handle,
        super::identify::handle,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::remove,
        super::health::handle,
        super::partitions::handle,
        super::stats::handle,
        super::audit::handle,
        handle,
        super::metrics::handle,
    ),
    components(responses(Invalid, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, Rejected, Spoof, Unavailable, WrongMethod, Timeout)),
    modifiers(&KeyHeader)
)]
struct Doc;

/// The document as served, rendered once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        Doc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3", content_type = "application/json", body = Object), (status = 405, response = WrongMethod)))]
pub async fn handle(_: Public) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document())
}

/// The X-API-Key header. Operations list `{}` beside it: a server without configured keys
/// (loopback only) takes requests without one.
struct KeyHeader;

impl Modify for KeyHeader {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        }
    }
}

/// Field schemas several requests share, stated once.
pub mod field {
    use super::*;

    fn string(pattern: &str, max: Option<usize>, description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .max_length(max)
            .description(Some(description))
    }

    pub fn image() -> Object {
        string(
            "^(data:image/[a-z]+;base64,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw](==)?|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?)?$",
            None,
            "Standard base64 (padding optional) of a JPEG or PNG, optionally as a data: URL. Its decoded size is limited by pipeline.limits.max_image_bytes (413).",
        )
        .format(Some(utoipa::openapi::SchemaFormat::Custom("byte".into())))
        .min_length(Some(4))
        .build()
    }

    pub fn partition() -> Object {
        string(
            "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
            Some(facegate_actors::names::MAX_PARTITION_LEN),
            "The partition (default \"default\"); may instead (or also, if equal) be given as the query parameter partition, which lets a key without rights on it be refused before the body is read.",
        )
        .build()
    }

    pub fn subject_id() -> Object {
        string(
            "^[^\\s\\x00-\\x1F\\x7F-\\x9F]([^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F])?$",
            Some(facegate_actors::names::MAX_SUBJECT_LEN),
            "1-128 characters, no control characters, no leading or trailing whitespace.",
        )
        .min_length(Some(1))
        .build()
    }
}

/// The body of every refusal, from the one error table (src/error.rs).
#[derive(ToSchema)]
#[schema(xml(name = "ErrorResponse"))]
#[allow(dead_code)] // written by xml::error, described here
pub struct ErrorResponse {
    /// The machine code (INVALID_REQUEST, NOT_FOUND, ...).
    status: String,
    /// What was wrong, for a person.
    message: String,
    /// Present on QUALITY_REJECTED.
    quality_score: Option<f32>,
    /// Present on SPOOF_DETECTED.
    pad_score: Option<f32>,
    /// Present on MORPH_DETECTED.
    mad_score: Option<f32>,
}

/// The refusals, one reusable response per status: each route lists those it can give.
macro_rules! refusal {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(ToResponse)]
        #[response(content_type = "application/xml")]
        #[allow(dead_code)]
        pub struct $name(#[to_schema] ErrorResponse);
    };
}

refusal!(Invalid, "INVALID_REQUEST, DECODE_FAILED or NO_FACE");
refusal!(Unauthorized, "UNAUTHORIZED");
refusal!(Forbidden, "FORBIDDEN");
refusal!(NotFound, "NOT_FOUND");
refusal!(
    Conflict,
    "CONFLICT (templates of another model), or at enrol IDENTITY_COLLISION: the face matches another enrolled subject at or above collision.threshold (policy reject); the subject is named only to a key that may search its partition. With policy flag the enrolment answers 200 with an X-Identity-Collision header instead"
);
refusal!(TooLarge, "PAYLOAD_TOO_LARGE");
refusal!(Rejected, "QUALITY_REJECTED or MORPH_DETECTED");
refusal!(Spoof, "SPOOF_DETECTED");
refusal!(
    Unavailable,
    "OVERLOADED (with Retry-After: the pipeline is full, or request bodies in memory are at server.body_budget_bytes; refused before the body is read) or UNAVAILABLE"
);
refusal!(
    Timeout,
    "REQUEST_TIMEOUT: the body did not arrive whole within server.body_timeout_secs; the connection is closed"
);

refusal!(
    WrongMethod,
    "METHOD_NOT_ALLOWED: the path takes another method, named in the Allow header"
);
