//! What a hostile or careless client can do to the server, over the real app: refusals
//! decided before the body is read or parsed, a wrong method, a stalled upload, the
//! gallery's file modes, and schema-valid requests generated from the OpenAPI document.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use actix_web::{http::StatusCode, test};
use common::{b64, config, element, get, key, photo, post};
use facegate::config::Right;
use proptest::strategy::{Strategy, ValueTree};

#[actix_web::test]
async fn a_wrong_method_on_a_known_route_is_405_naming_the_right_one() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let svc = service!(config(tmp.path()));
    for (method, path, allow) in [
        (actix_web::http::Method::GET, "/api/v1/search", "POST"),
        (actix_web::http::Method::PUT, "/api/v1/enrol", "POST"),
        (actix_web::http::Method::DELETE, "/api/v1/delete", "POST"),
        (actix_web::http::Method::POST, "/api/v1/health", "GET"),
        (actix_web::http::Method::POST, "/metrics", "GET"),
    ] {
        let req = test::TestRequest::default().method(method.clone()).uri(path).to_request();
        let res = test::call_service(&svc, req).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let body = String::from_utf8_lossy(&test::read_body(res).await).into_owned();
        assert_eq!(element(&body, "status").as_deref(), Some("METHOD_NOT_ALLOWED"), "{body}");
    }
    let (s, _) = get(&svc, "/api/v1/nothing-here", None).await;
    assert_eq!(s, 404);
}

/// A key aimed at a partition it may not use is refused from the query, before the body:
/// the body below is not even JSON, and the answer is 403, not 400.
#[actix_web::test]
async fn a_key_without_rights_is_refused_before_the_body_is_parsed() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.auth.keys = vec![key("tenant-a", "key-a", &["a"], &[Right::Search, Right::Enrol])];
    let svc = service!(cfg);
    for path in ["/api/v1/search", "/api/v1/verify", "/api/v1/enrol", "/api/v1/delete"] {
        let req = test::TestRequest::post()
            .uri(&format!("{path}?partition=b"))
            .insert_header(("X-API-Key", "key-a"))
            .set_payload("{ this is not json")
            .to_request();
        let res = test::call_service(&svc, req).await;
        assert_eq!(res.status(), 403, "{path}");
    }
    // The query and the body must agree.
    let (s, body) = post(
        &svc,
        "/api/v1/delete?partition=a",
        serde_json::json!({"subject_id": "x", "partition": "b"}),
        Some("key-a"),
    )
    .await;
    assert_eq!(
        (s.as_u16(), element(&body, "status").as_deref()),
        (400, Some("INVALID_REQUEST")),
        "{body}"
    );
    // A query partition alone is the partition: deleting from an empty one is a 404.
    let (s, _) = post(
        &svc,
        "/api/v1/delete?partition=a",
        serde_json::json!({"subject_id": "x"}),
        Some("key-a"),
    )
    .await;
    assert_eq!(s, 404);
}

/// With the pipeline full, a request is refused before its body is parsed: garbage gets
/// 503 with Retry-After, not 400.
#[actix_web::test]
async fn a_full_pipeline_refuses_before_parsing() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.pool.max_inflight = 1;
    let svc = service!(cfg);
    let photo = serde_json::json!({"image": b64(&photo("obama.jpg")), "subject_id": "obama"}).to_string();
    let enrol = test::call_service(&svc, test::TestRequest::post().uri("/api/v1/enrol").set_payload(photo).to_request());
    let garbage = test::call_service(
        &svc,
        test::TestRequest::post()
            .uri("/api/v1/search")
            .set_payload("{ not json")
            .to_request(),
    );
    let (enrolled, refused) = futures_util::future::join(enrol, garbage).await;
    assert_eq!(enrolled.status(), 200);
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
}

/// A declared body over the limit is refused at once; a body that stops arriving is
/// answered 408 after `body_timeout_secs` and its connection closed.
#[actix_web::test]
async fn oversized_and_stalled_bodies_are_refused_without_waiting_for_them() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.server.body_timeout_secs = 1;
    let limit = cfg.server.max_body_bytes;
    let svc = service!(cfg);
    let (_sender, payload) = actix_http::h1::Payload::create(false);
    let req = test::TestRequest::post()
        .uri("/api/v1/search")
        .insert_header(("content-length", (limit + 1).to_string()))
        .to_request();
    let (req, _) = req.replace_payload(actix_http::Payload::from(payload));
    let res = test::call_service(&svc, req).await;
    assert_eq!(res.status(), 413);

    let (mut sender, payload) = actix_http::h1::Payload::create(false);
    sender.feed_data(actix_web::web::Bytes::from_static(b"{\"image\": \"AAAA"));
    let req = test::TestRequest::post()
        .uri("/api/v1/search")
        .insert_header(("content-length", "100000"))
        .to_request();
    let (req, _) = req.replace_payload(actix_http::Payload::from(payload));
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(10), test::call_service(&svc, req))
        .await
        .unwrap_or_else(|_| panic!("a stalled body held the request past 10 s"));
    assert_eq!(res.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(sender);
}

#[actix_web::test]
async fn the_gallery_files_are_private_to_the_service_user() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let svc = service!(config(&data));
    let (s, _) = post(
        &svc,
        "/api/v1/enrol",
        serde_json::json!({"image": b64(&photo("obama.jpg")), "subject_id": "obama", "partition": "p"}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let mut stack = vec![data];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")).flatten() {
            let meta = entry.metadata().unwrap_or_else(|e| panic!("{e}"));
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
            seen += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(seen >= 2, "the partition directory and its store exist");
}

/// Requests generated from the OpenAPI document's own schemas (every pattern, length and
/// range it states) are never refused as malformed: whatever the server checks, the
/// document says. Their images are random base64, so DECODE_FAILED is the expected answer.
#[actix_web::test]
async fn schema_valid_requests_are_never_refused_for_an_unstated_rule() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let svc = service!(config(tmp.path()));
    let (_, doc) = get(&svc, "/api/v1/openapi.json", None).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for (path, schema) in [
        ("/api/v1/search", "SearchRequest"),
        ("/api/v1/verify", "SubjectPhoto"),
        ("/api/v1/enrol", "SubjectPhoto"),
        ("/api/v1/delete", "DeleteRequest"),
    ] {
        let schema = &doc["components"]["schemas"][schema];
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let props = schema["properties"].as_object().unwrap_or_else(|| panic!("{path}: no properties"));
        for case in 0..40 {
            let mut body = serde_json::Map::new();
            for (name, prop) in props {
                if !required.contains(&name.as_str()) && case % 3 == 0 {
                    continue;
                }
                body.insert(name.clone(), generate(prop, &mut runner));
            }
            let body = serde_json::Value::Object(body);
            let (s, answer) = post(&svc, path, body.clone(), None).await;
            let code = element(&answer, "status").unwrap_or_default();
            assert!(
                s.as_u16() < 500 && code != "INVALID_REQUEST",
                "{path} refused a schema-valid request {body}: {s} {answer}"
            );
        }
    }
}

/// One value satisfying a property's schema: a string from its pattern within its lengths,
/// a number within its range.
fn generate(prop: &serde_json::Value, runner: &mut proptest::test_runner::TestRunner) -> serde_json::Value {
    match prop["type"].as_str() {
        Some("integer") => {
            let (lo, hi) = (prop["minimum"].as_i64().unwrap_or(0), prop["maximum"].as_i64().unwrap_or(1000));
            serde_json::json!(sample(lo..=hi, runner))
        }
        Some("number") => {
            let (lo, hi) = (prop["minimum"].as_f64().unwrap_or(0.0), prop["maximum"].as_f64().unwrap_or(1.0));
            serde_json::json!(sample(lo..=hi, runner))
        }
        Some("string") => {
            let pattern = prop["pattern"].as_str().unwrap_or(".*");
            // proptest generates from the regex without its anchors.
            let bare = pattern.trim_start_matches('^').trim_end_matches('$');
            let min = prop["minLength"].as_u64().unwrap_or(0) as usize;
            let max = prop["maxLength"].as_u64().unwrap_or(4096) as usize;
            let strategy = proptest::string::string_regex(bare)
                .unwrap_or_else(|e| panic!("{pattern}: {e}"))
                .prop_filter("within the schema's lengths", move |s| (min..=max).contains(&s.chars().count()));
            serde_json::Value::String(sample(strategy, runner))
        }
        other => panic!("no generator for type {other:?}"),
    }
}

fn sample<S: Strategy>(strategy: S, runner: &mut proptest::test_runner::TestRunner) -> S::Value {
    strategy
        .new_tree(runner)
        .unwrap_or_else(|e| panic!("cannot generate: {e}"))
        .current()
}

/// Every route the OpenAPI document lists refuses a request without a key, or with a wrong
/// one, when keys are configured, except the two that are public by design (liveness and the
/// document itself): a route added without its key check fails here.
#[actix_web::test]
async fn every_documented_route_but_health_and_the_document_needs_a_key() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.auth.keys = vec![key(
        "ops",
        "operations-key-012345678",
        &["*"],
        &[Right::Search, Right::Enrol, Right::Admin],
    )];
    let svc = service!(cfg);
    let doc: serde_json::Value = serde_json::from_str(facegate::routes::openapi::document()).unwrap_or_else(|e| panic!("{e}"));
    let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("no paths"));
    let mut checked = 0;
    for (path, item) in paths {
        for method in item.as_object().into_iter().flat_map(|o| o.keys()) {
            let public = matches!(path.as_str(), "/api/v1/health" | "/api/v1/openapi.json");
            for key in [None, Some("wrong-key-000000000000")] {
                let mut req = test::TestRequest::default()
                    .method(method.to_uppercase().parse().unwrap_or_else(|e| panic!("{method}: {e}")))
                    .uri(path)
                    .set_payload("{}");
                if let Some(k) = key {
                    req = req.insert_header(("X-API-Key", k));
                }
                let status = test::call_service(&svc, req.to_request()).await.status().as_u16();
                if public {
                    assert_eq!(status, 200, "{method} {path} with {key:?} is public");
                } else {
                    assert_eq!(status, 401, "{method} {path} with {key:?} must need a key");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 18, "{checked} requests: the document lists every route");
}
