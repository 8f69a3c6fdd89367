//! The generated OpenAPI document against the server: the same routes both ways, and every
//! refusal a route documents is one it gives, provoked here for real.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;

use actix_web::test;
use common::*;
use facegate::config::Right;
use futures_util::future::{select, Either};

type Route = (String, String);

fn documented(doc: &serde_json::Value) -> BTreeMap<Route, BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let statuses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(s, _)| s.parse::<u16>().ok())
                .filter(|s| *s >= 400)
                .collect();
            out.insert((path.clone(), method.to_uppercase()), statuses);
        }
    }
    out
}

fn the_document() -> serde_json::Value {
    serde_json::from_str(facegate::routes::openapi::document()).unwrap_or_else(|e| panic!("{e}"))
}

#[actix_web::test]
async fn the_document_and_the_router_agree_both_ways() {
    let doc = the_document();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let in_doc: BTreeSet<Route> = documented(&doc).into_keys().collect();
    let in_router: BTreeSet<Route> = facegate::app::ROUTES.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    assert_eq!(in_doc, in_router, "documented routes vs served routes");

    // Served as the document says, and each route answers as itself, not as the catch-all.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let svc = service!(config(tmp.path()));
    let (s, served) = get(&svc, "/api/v1/openapi.json", None).await;
    assert_eq!((s.as_u16(), &served), (200, &doc));
    for (path, method) in &in_router {
        let req = test::TestRequest::default()
            .method(method.parse().unwrap_or_else(|e| panic!("{method}: {e}")))
            .uri(path)
            .set_payload("{}")
            .to_request();
        let body = test::read_body(test::call_service(&svc, req).await).await;
        assert!(!String::from_utf8_lossy(&body).contains("no such endpoint"), "{method} {path}");
    }
}

/// What the provocations below produced: route -> statuses.
#[derive(Default)]
struct Seen(BTreeMap<Route, BTreeSet<u16>>);

impl Seen {
    fn add(&mut self, path: &str, method: &str, status: u16) {
        self.0.entry((path.into(), method.into())).or_default().insert(status);
    }
}

/// The POST routes that read a body.
const BODY_ROUTES: [&str; 6] = [
    "/api/v1/search",
    "/api/v1/verify",
    "/api/v1/enrol",
    "/api/v1/delete",
    "/api/v1/identify",
    "/api/v1/webhooks",
];

async fn send<S, B>(svc: &S, seen: &mut Seen, path: &str, method: &str, body: &serde_json::Value, key: Option<&str>) -> u16
where
    S: actix_web::dev::Service<actix_http::Request, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let mut req = test::TestRequest::default()
        .method(method.parse().unwrap_or_else(|e| panic!("{method}: {e}")))
        .uri(path)
        .set_payload(match body {
            serde_json::Value::String(raw) => raw.clone(),
            other => other.to_string(),
        });
    if let Some(k) = key {
        req = req.insert_header(("X-API-Key", k));
    }
    let status = test::call_service(svc, req.to_request()).await.status().as_u16();
    seen.add(path.split('?').next().unwrap_or(path), method, status);
    status
}

/// The body `path` takes for a photo of `subject` in `partition`.
fn body_for(path: &str, image: &str, subject: &str, partition: &str) -> serde_json::Value {
    match path {
        "/api/v1/search" => serde_json::json!({"image": image, "partition": partition}),
        "/api/v1/delete" => serde_json::json!({"subject_id": subject, "partition": partition}),
        "/api/v1/identify" => serde_json::json!({"image": image, "partitions": [partition]}),
        "/api/v1/webhooks" => serde_json::json!({"url": "http://127.0.0.1:9/hook", "partition": partition}),
        _ => serde_json::json!({"image": image, "subject_id": subject, "partition": partition}),
    }
}

fn blurred() -> Vec<u8> {
    let img = image::load_from_memory(&photo("obama.jpg")).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    img.blur(9.0)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

/// Every error status the document gives a route is provoked on that route below, and
/// every status provoked is documented: the document promises nothing the route cannot
/// give and hides nothing it gives.
#[actix_web::test]
async fn every_documented_refusal_is_one_the_route_gives() {
    let mut seen = Seen::default();
    let obama = b64(&photo("obama.jpg"));

    // Keys: 401 without one, 403 without the right; 405 for the other method; 400 for a
    // body that is not JSON; 404 for a missing partition or subject.
    {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = config(tmp.path());
        cfg.auth.keys = vec![
            key("reader", "reader-key-0123456789", &["*"], &[Right::Search]),
            key("writer", "writer-key-0123456789", &["*"], &[Right::Enrol]),
            key("ops", "admin-key-01234567890", &["*"], &[Right::Admin]),
        ];
        let svc = service!(cfg);
        for (path, method) in facegate::app::ROUTES {
            let method = method.as_str();
            send(&svc, &mut seen, path, method, &serde_json::json!({}), None).await;
            // The route's 405: asked with a method no route takes.
            let status = send(
                &svc,
                &mut Seen::default(),
                path,
                "PATCH",
                &serde_json::json!({}),
                Some("reader-key-0123456789"),
            )
            .await;
            seen.add(path, method, status);
        }
        let (r, w, a) = (
            Some("reader-key-0123456789"),
            Some("writer-key-0123456789"),
            Some("admin-key-01234567890"),
        );
        for path in ["/api/v1/search", "/api/v1/verify", "/api/v1/identify"] {
            send(&svc, &mut seen, path, "POST", &body_for(path, &obama, "obama", "default"), w).await;
        }
        for path in ["/api/v1/enrol", "/api/v1/delete"] {
            send(&svc, &mut seen, path, "POST", &body_for(path, &obama, "obama", "default"), r).await;
        }
        send(
            &svc,
            &mut seen,
            "/api/v1/webhooks",
            "POST",
            &body_for("/api/v1/webhooks", "", "", "default"),
            r,
        )
        .await;
        send(&svc, &mut seen, "/api/v1/webhooks", "GET", &serde_json::json!({}), r).await;
        send(&svc, &mut seen, "/api/v1/webhooks?id=wh_1", "DELETE", &serde_json::json!({}), r).await;
        send(&svc, &mut seen, "/api/v1/webhooks", "DELETE", &serde_json::json!({}), a).await;
        send(
            &svc,
            &mut seen,
            "/api/v1/webhooks?id=wh_nowhere",
            "DELETE",
            &serde_json::json!({}),
            a,
        )
        .await;
        let nowhere = serde_json::json!({"image": obama, "partitions": ["nowhere"]});
        send(&svc, &mut seen, "/api/v1/identify", "POST", &nowhere, r).await;
        send(&svc, &mut seen, "/metrics", "GET", &serde_json::json!({}), r).await;
        send(&svc, &mut seen, "/api/v1/audit", "GET", &serde_json::json!({}), r).await;
        send(&svc, &mut seen, "/api/v1/audit?limit=0", "GET", &serde_json::json!({}), a).await;
        for path in BODY_ROUTES {
            let key = match path {
                "/api/v1/search" | "/api/v1/verify" | "/api/v1/identify" => r,
                "/api/v1/webhooks" => a,
                _ => w,
            };
            send(&svc, &mut seen, path, "POST", &serde_json::Value::String("{not json".into()), key).await;
        }
        send(
            &svc,
            &mut seen,
            "/api/v1/search",
            "POST",
            &serde_json::json!({"image": obama, "partition": "nowhere"}),
            r,
        )
        .await;
        send(
            &svc,
            &mut seen,
            "/api/v1/verify",
            "POST",
            &body_for("/api/v1/verify", &obama, "nobody", "default"),
            r,
        )
        .await;
        send(
            &svc,
            &mut seen,
            "/api/v1/delete",
            "POST",
            &serde_json::json!({"subject_id": "nobody"}),
            w,
        )
        .await;
    }

    // 409: a partition holding another recognizer's templates; 413: an image over the
    // limit; 422: a photo under the quality threshold; 503: the body budget held by a
    // stalled upload.
    {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        {
            let cfg = facegate_actors::GalleryConfig {
                data_dir: tmp.path().to_path_buf(),
                ..config(tmp.path()).gallery
            };
            let g = facegate_actors::GalleryDirectory::open(cfg, 512).unwrap_or_else(|e| panic!("{e}"));
            g.enrol("legacy", "old", vec![1.0 / (512f32).sqrt(); 512], "arcface-w600k-r50", 0.9)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            g.close().await;
        }
        let mut cfg = config(tmp.path());
        cfg.pipeline.quality.threshold = facegate_models::config::PerPurpose::all(0.22);
        cfg.pipeline.limits.max_image_bytes = 300_000;
        cfg.server.max_body_bytes = 1 << 20;
        cfg.server.body_budget_bytes = 1 << 20;
        cfg.server.overload_delay_ms = 0;
        cfg.webhooks.max_subscriptions_per_partition = 1;
        let svc = service!(cfg);
        assert_eq!(
            send(
                &svc,
                &mut seen,
                "/api/v1/enrol",
                "POST",
                &body_for("/api/v1/enrol", &obama, "obama", "default"),
                None
            )
            .await,
            200
        );
        for path in ["/api/v1/search", "/api/v1/verify", "/api/v1/enrol", "/api/v1/identify"] {
            send(&svc, &mut seen, path, "POST", &body_for(path, &obama, "old", "legacy"), None).await;
            let big = body_for(path, &"A".repeat(500_000), "obama", "default");
            send(&svc, &mut seen, path, "POST", &big, None).await;
            let blur = body_for(path, &b64(&blurred()), "obama", "default");
            send(&svc, &mut seen, path, "POST", &blur, None).await;
        }
        let hook = body_for("/api/v1/webhooks", "", "", "default");
        assert_eq!(send(&svc, &mut seen, "/api/v1/webhooks", "POST", &hook, None).await, 201);
        send(&svc, &mut seen, "/api/v1/webhooks", "POST", &hook, None).await;
        let huge = serde_json::json!({"url": "h".repeat(2 << 20)});
        send(&svc, &mut seen, "/api/v1/webhooks", "POST", &huge, None).await;

        let (_sender, stalled) = actix_http::h1::Payload::create(false);
        let hold = test::TestRequest::post()
            .uri("/api/v1/search")
            .insert_header(("content-length", (1 << 20).to_string()))
            .to_request();
        let (hold, _) = hold.replace_payload(actix_http::Payload::from(stalled));
        let holding = test::call_service(&svc, hold);
        let mut refused = Seen::default();
        let probes = async {
            // The stalled upload takes the budget first.
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
            for path in BODY_ROUTES {
                send(&svc, &mut refused, path, "POST", &body_for(path, &obama, "obama", "default"), None).await;
            }
        };
        match select(pin!(probes), pin!(holding)).await {
            Either::Left(_) => {}
            Either::Right((res, _)) => panic!("the stalled upload was answered first: {}", res.status()),
        }
        for ((path, method), statuses) in refused.0 {
            assert_eq!(statuses, BTreeSet::from([503]), "{method} {path} with the body budget spent");
            seen.add(&path, &method, 503);
        }
    }

    // 451: every photo is an attack at a PAD threshold of 1 (per purpose: enrol first).
    for pad in [
        facegate_models::config::PerPurpose {
            enrol: 1.0,
            verify: 0.0,
            search: 0.0,
        },
        facegate_models::config::PerPurpose {
            enrol: 0.0,
            verify: 1.0,
            search: 1.0,
        },
    ] {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = config(tmp.path());
        cfg.pipeline.pad.threshold = pad;
        let svc = service!(cfg);
        for path in ["/api/v1/enrol", "/api/v1/search", "/api/v1/verify"] {
            send(&svc, &mut seen, path, "POST", &body_for(path, &obama, "obama", "default"), None).await;
        }
    }

    // 408: a body that stops arriving.
    {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = config(tmp.path());
        cfg.server.body_timeout_secs = 1;
        let svc = service!(cfg);
        for path in BODY_ROUTES {
            let (mut sender, payload) = actix_http::h1::Payload::create(false);
            sender.feed_data(actix_web::web::Bytes::from_static(b"{\"image\": \"AAAA"));
            let req = test::TestRequest::post()
                .uri(path)
                .insert_header(("content-length", "100000"))
                .to_request();
            let (req, _) = req.replace_payload(actix_http::Payload::from(payload));
            seen.add(path, "POST", test::call_service(&svc, req).await.status().as_u16());
            drop(sender);
        }
    }

    // 503 from health: the data directory gone under a running server.
    {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = tmp.path().join("data");
        let svc = service!(config(&data));
        std::fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
        let (s, body) = get(&svc, "/api/v1/health", None).await;
        assert_eq!(s.as_u16(), 503, "{body}");
        seen.add("/api/v1/health", "GET", 503);
    }

    let doc = documented(&the_document());
    for (route, statuses) in &doc {
        let given: BTreeSet<u16> = seen.0.get(route).into_iter().flatten().copied().filter(|s| *s >= 400).collect();
        assert_eq!(statuses, &given, "{route:?}: documented refusals vs refusals provoked");
    }
    for route in seen.0.keys() {
        assert!(doc.contains_key(route), "{route:?} answered but is not documented");
    }
}
