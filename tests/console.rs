//! The operator console in real headless chromium (Debian's /usr/bin/chromium, driven by
//! playwright-core from npm, tests/console/): a wrong key shown as such, sign-in, an
//! enrolment, a search of another photo of the same person showing its candidate, identify
//! drawing the face. The screenshot is kept in the target directory as the test's artefact.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "console-operator-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_console_enrols_searches_and_shows_the_candidate_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let driver = root.join("tests/console");
    let missing = [
        (Path::new("/usr/bin/chromium").to_path_buf(), "apt-get install chromium"),
        (driver.join("node_modules/playwright-core"), "npm ci --prefix tests/console"),
    ]
    .into_iter()
    .find(|(p, _)| !p.exists());
    if let Some((path, fix)) = missing {
        // CI installs both (facegate.sh setup): there a missing one is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{} is missing: {fix}", path.display());
        println!("skipped: {} is missing ({fix})", path.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = tmp.path().join("facegate.toml");
    std::fs::write(
        &config,
        format!("[[auth.keys]]\nname = \"operator\"\nkey = \"{KEY}\"\npartitions = [\"*\"]\nrights = [\"search\", \"enrol\", \"admin\"]\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("FACEGATE__GALLERY__DATA_DIR", tmp.path().join("data"))
        .env("FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE", master_key_file(tmp.path()))
        .env("FACEGATE__SERVER__PORT", port.to_string())
        .env("FACEGATE__POOL__WORKERS", "1")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&shot);
    let photos = root.join("models/testdata");
    let out = Command::new("node")
        .arg(driver.join("drive.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(KEY)
        .arg(photos.join("obama.jpg"))
        .arg(photos.join("obama2.jpg"))
        .arg(&shot)
        .arg(tmp.path().join("chromium-profile"))
        .output()
        .unwrap_or_else(|e| panic!("node: {e}"));
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the console run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("console OK"), "{stdout}");
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    println!("screenshot: {}", shot.display());
}

/// A master key for the spawned server's gallery (encryption at rest is on by default).
fn master_key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("test-master.key");
    std::fs::write(&path, "5a".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
    path
}
