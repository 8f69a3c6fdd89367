//! No leaks between tenants: every endpoint, asked with no key, a wrong key, tenant A's
//! key and tenant B's key, about A's partition, B's partition and one that does not exist.
//! A caller learns nothing about partitions its key may not use: not their names, not
//! their sizes, not even whether they exist (a foreign partition and a missing one get
//! the same answer).

#[macro_use]
mod common;

use common::{b64, config, get, key, photo, post};
use facegate::config::Right;

const A: &str = "tenant-a-key-0123456789";
const B: &str = "tenant-b-key-0123456789";
const WRONG: &str = "not-a-key-of-anyone-000";
const ALL: [Right; 3] = [Right::Search, Right::Enrol, Right::Admin];

/// Whose partition a cell asks about, from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Own,
    Foreign,
    Missing,
}

#[actix_web::test]
async fn every_endpoint_by_every_caller_on_every_partition() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.auth.keys = vec![key("a", A, &["alpha"], &ALL), key("b", B, &["beta"], &ALL)];
    let svc = service!(cfg);
    let probe = b64(&photo("obama2.jpg"));
    let enrolment = b64(&photo("obama.jpg"));
    let newcomer = b64(&photo("biden.jpg"));
    for (k, p) in [(A, "alpha"), (B, "beta")] {
        let body = serde_json::json!({"image": enrolment, "subject_id": "obama", "partition": p});
        let (s, answer) = post(&svc, "/api/v1/enrol", body, Some(k)).await;
        assert_eq!(s, 200, "{answer}");
    }
    let callers = [
        ("no key", None),
        ("wrong key", Some(WRONG)),
        ("tenant A", Some(A)),
        ("tenant B", Some(B)),
    ];
    let mut cells = 0;
    for (who, k) in callers {
        let own = match k {
            Some(A) => Some("alpha"),
            Some(B) => Some("beta"),
            _ => None,
        };
        let mut refusals = Vec::new();
        for target in [Target::Own, Target::Foreign, Target::Missing] {
            let partition = match (target, own) {
                (Target::Missing, _) => "gamma",
                (Target::Own, Some("beta")) | (Target::Foreign, Some("alpha")) => "beta",
                _ => "alpha",
            };
            let bodies = [
                ("/api/v1/search", serde_json::json!({"image": probe, "partition": partition})),
                (
                    "/api/v1/verify",
                    serde_json::json!({"image": probe, "subject_id": "obama", "partition": partition}),
                ),
                (
                    "/api/v1/enrol",
                    serde_json::json!({"image": newcomer, "subject_id": "biden", "partition": partition}),
                ),
                ("/api/v1/delete", serde_json::json!({"subject_id": "biden", "partition": partition})),
            ];
            for (path, body) in bodies {
                let (s, answer) = post(&svc, path, body, k).await;
                cells += 1;
                let want = match (k, target) {
                    (None, _) | (Some(WRONG), _) => 401,
                    (_, Target::Own) => 200,
                    (_, Target::Foreign | Target::Missing) => 403,
                };
                assert_eq!(s.as_u16(), want, "{who} {path} on {target:?} {partition}: {answer}");
                if want == 403 {
                    refusals.push((path, target, answer.replace(partition, "P")));
                }
                if s.as_u16() != 200 {
                    let other = if own == Some("alpha") { "beta" } else { "alpha" };
                    assert!(
                        partition == other || !answer.contains(other),
                        "{who} {path}: the answer names another tenant's partition: {answer}"
                    );
                }
            }
            // Query-string partitions are refused as early and as alike.
            let (s, _) = post(
                &svc,
                &format!("/api/v1/search?partition={partition}"),
                serde_json::json!({"image": probe}),
                k,
            )
            .await;
            cells += 1;
            let want = match (k, target) {
                (None, _) | (Some(WRONG), _) => 401,
                (_, Target::Own) => 200,
                _ => 403,
            };
            assert_eq!(s.as_u16(), want, "{who} search?partition= on {target:?}");
            // The audit trail of a partition: the key's own only.
            let (s, body) = get(&svc, &format!("/api/v1/audit?partition={partition}"), k).await;
            cells += 1;
            assert_eq!(s.as_u16(), want, "{who} audit?partition= on {target:?}: {body}");
            if want == 403 {
                refusals.push(("/api/v1/audit", target, body.to_string().replace(partition, "P")));
            }
        }
        // A foreign partition that exists and one that does not: the same words.
        for path in [
            "/api/v1/search",
            "/api/v1/verify",
            "/api/v1/enrol",
            "/api/v1/delete",
            "/api/v1/audit",
        ] {
            let foreign = refusals.iter().find(|r| r.0 == path && r.1 == Target::Foreign).map(|r| &r.2);
            let missing = refusals.iter().find(|r| r.0 == path && r.1 == Target::Missing).map(|r| &r.2);
            assert_eq!(foreign, missing, "{who} {path}: existence of a foreign partition shows");
        }

        // The GET endpoints name partitions only from the caller's own.
        let (s, h) = get(&svc, "/api/v1/health", k).await;
        cells += 1;
        assert_eq!(s, 200);
        let text = h.to_string();
        match own {
            None => {
                let fields: Vec<&String> = h.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                assert_eq!(fields, ["components", "status"], "{who}: {h}");
            }
            Some(p) => assert_eq!(h["partitions"], serde_json::json!({ p: "ready" }), "{who}: {h}"),
        }
        for other in ["alpha", "beta"].into_iter().filter(|o| Some(*o) != own) {
            assert!(!text.contains(other), "{who}: health names {other}: {h}");
        }
        for path in ["/api/v1/partitions", "/api/v1/stats", "/api/v1/audit", "/metrics"] {
            let (s, body) = get(&svc, path, k).await;
            cells += 1;
            let text = body.to_string();
            match own {
                None => assert_eq!(s, 401, "{who} {path}: {text}"),
                Some(p) => {
                    assert_eq!(s, 200, "{who} {path}: {text}");
                    assert!(text.contains(p), "{who} {path} does not show its own partition: {text}");
                    let other = if p == "alpha" { "beta" } else { "alpha" };
                    assert!(!text.contains(other), "{who} {path} names {other}: {text}");
                }
            }
        }
        let (s, doc) = get(&svc, "/api/v1/openapi.json", k).await;
        cells += 1;
        assert_eq!(s, 200);
        let text = doc.to_string();
        assert!(
            !text.contains("alpha") && !text.contains("beta"),
            "{who}: the OpenAPI document names a partition"
        );
    }
    assert_eq!(cells, 4 * (3 * 6 + 6), "every cell of the matrix was asked");
}
