//! What the API tests share: the real app (real models, FAISS, SQLite) as an
//! `actix_web::test` service, photos, and requests that check the answer's content type.
#![allow(dead_code)] // each test binary uses its own subset

pub mod pg;

use std::path::PathBuf;

use actix_web::{dev::ServiceResponse, http::StatusCode, test};
use base64::Engine;
use facegate::config::{ApiKey, Config, Right};

/// The app on `cfg`, as `facegate serve` builds it.
#[allow(unused_macros)] // the tests that spawn the binary use none
macro_rules! service {
    ($cfg:expr) => {{
        let state = actix_web::web::Data::from(facegate::app::AppState::start($cfg).unwrap_or_else(|e| panic!("{e}")));
        actix_web::test::init_service(
            actix_web::App::new()
                .app_data(state)
                .wrap(actix_web::middleware::from_fn(facegate::app::observe))
                .configure(facegate::app::routes),
        )
        .await
    }};
}

pub fn photo(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/testdata").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run python3 models/fetch.py", path.display()))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An API key named `name` for `partitions` with `rights`.
pub fn key(name: &str, key: &str, partitions: &[&str], rights: &[Right]) -> ApiKey {
    ApiKey {
        name: name.into(),
        key: key.into(),
        partitions: partitions.iter().map(|s| s.to_string()).collect(),
        rights: rights.iter().copied().collect(),
    }
}

/// The app's configuration on `data`, encrypted under a fresh master key kept in a file
/// beside the partitions (tests only: a real key lives elsewhere).
pub fn config(data: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.gallery.data_dir = data.to_path_buf();
    cfg.gallery.encryption.master_key_file = Some(master_key_file(data));
    cfg.pool.workers = 1;
    cfg.resolve_paths();
    cfg
}

/// A master key file in `dir` (made once; the same key on every later call).
pub fn master_key_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("test-master.key");
    if !path.exists() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(facegate_actors::seal::MasterKey::generate_hex().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    path
}

/// Where a test's galleries live: a scratch directory, and for the postgres backend a real
/// PostgreSQL started for the test (tests/common/pg.rs).
pub struct Storage {
    pub tmp: tempfile::TempDir,
    pub pg: Option<pg::Pg>,
}

impl Storage {
    pub fn new(postgres: bool) -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
            pg: postgres.then(pg::Pg::start),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// `config` on this storage's backend.
    pub fn config(&self) -> Config {
        let mut cfg = config(self.tmp.path());
        if let Some(pg) = &self.pg {
            cfg.gallery.backend = facegate_actors::GalleryBackend::Postgres;
            cfg.gallery.postgres.url = pg.url();
            cfg.gallery.postgres.poll_ms = 200;
        }
        cfg
    }
}

/// Each listed `async fn NAME(storage: Storage)` as two tests, `NAME::embedded` and
/// `NAME::postgres`.
#[allow(unused_macros)] // used by some test binaries only
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn embedded() {
                super::$name(super::common::Storage::new(false)).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$name(super::common::Storage::new(true)).await
            }
        }
    )*};
}

pub async fn post<S, B: actix_web::body::MessageBody>(
    svc: &S,
    path: &str,
    body: serde_json::Value,
    key: Option<&str>,
) -> (StatusCode, String)
where
    S: actix_web::dev::Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let mut req = test::TestRequest::post().uri(path).set_payload(body.to_string());
    if let Some(k) = key {
        req = req.insert_header(("X-API-Key", k));
    }
    let res = test::call_service(svc, req.to_request()).await;
    let status = res.status();
    if status.as_u16() != 200
        || path.starts_with("/api/v1/s")
        || path.starts_with("/api/v1/v")
        || path.starts_with("/api/v1/e")
        || path.starts_with("/api/v1/d")
    {
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("application/xml"), "{path} answered {ct}");
    }
    (status, String::from_utf8_lossy(&test::read_body(res).await).into_owned())
}

pub async fn get<S, B: actix_web::body::MessageBody>(svc: &S, path: &str, key: Option<&str>) -> (StatusCode, serde_json::Value)
where
    S: actix_web::dev::Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let mut req = test::TestRequest::get().uri(path);
    if let Some(k) = key {
        req = req.insert_header(("X-API-Key", k));
    }
    let res = test::call_service(svc, req.to_request()).await;
    let status = res.status();
    let body = test::read_body(res).await;
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())),
    )
}

pub fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}

/// `facegate serve` as its own process on `data` and `port` (2 workers, the collision check
/// off: these tests write one photo under many subjects), with `env` on top; returned once it
/// accepts connections.
pub fn spawn_server(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_facegate"));
    cmd.arg("serve")
        .env("FACEGATE__GALLERY__DATA_DIR", data)
        .env("FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE", master_key_file(data))
        .env("FACEGATE__SERVER__PORT", port.to_string())
        .env("FACEGATE__POOL__WORKERS", "2")
        .env("FACEGATE__COLLISION__POLICY", "off")
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}
