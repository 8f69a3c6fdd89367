//! `facegate-tools enrol-dir` against a real server on a loopback port: a folder with good
//! photos, a photo without a face and a file that is not an image; then a second run.

use std::path::{Path, PathBuf};

use actix_web::{middleware, web, App, HttpServer};
use facegate::app::{self, AppState};
use facegate::config::Config;
use facegate_tools::enrol_dir::{self, EnrolDir, SubjectFrom};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/testdata").join(name)
}

fn copy(name: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap_or(to)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(testdata(name), to).unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn enrols_a_folder_reports_bad_files_and_resumes() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let photos = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = photos.path();
    copy("obama.jpg", &p.join("obama/1.jpg"));
    copy("obama2.jpg", &p.join("obama/2.jpg"));
    copy("biden.jpg", &p.join("biden/1.jpg"));
    copy("coffee.png", &p.join("cup/1.png"));
    std::fs::write(p.join("biden/broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(p.join("notes.txt"), b"ignored: not an image").unwrap_or_else(|e| panic!("{e}"));

    // A real server on an ephemeral loopback port, in its own actix system.
    let (tx, rx) = std::sync::mpsc::channel();
    let data_dir = data.path().to_path_buf();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mut cfg = Config::default();
            let key = data_dir.join("test-master.key");
            std::fs::write(&key, facegate_actors::seal::MasterKey::generate_hex().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            cfg.gallery.encryption.master_key_file = Some(key);
            cfg.gallery.data_dir = data_dir;
            cfg.pool.workers = 1;
            cfg.resolve_paths();
            let state = web::Data::from(AppState::start(cfg).unwrap_or_else(|e| panic!("{e}")));
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .wrap(middleware::from_fn(app::observe))
                    .configure(app::routes)
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(server.addrs()[0].port());
            let _ = server.run().await;
        })
    });
    let port = rx.recv().unwrap_or_else(|e| panic!("{e}"));
    let state = p.join("state");
    let report = p.join("rejects.jsonl");
    let args = || EnrolDir {
        dir: p.to_path_buf(),
        partition: "staff".into(),
        server: format!("http://127.0.0.1:{port}"),
        api_key: None,
        subject_from: SubjectFrom::Folder,
        concurrency: 2,
        state: Some(state.clone()),
        report: report.clone(),
    };
    let first = enrol_dir::run(args()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.outcomes.get("accepted"), Some(&3), "{first:?}");
    assert_eq!(first.outcomes.get("rejected NO_FACE"), Some(&1), "{first:?}");
    assert_eq!(first.outcomes.get("rejected DECODE_FAILED"), Some(&1), "{first:?}");
    let lines = std::fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(lines.lines().count(), 2);
    assert!(lines.contains("broken.jpg") && lines.contains("cup"), "{lines}");

    let second = enrol_dir::run(args()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.skipped, 3, "accepted images are not sent again");
    assert_eq!(second.outcomes.get("accepted"), None, "{second:?}");
}
