//! `facegate-tools enrol-dir DIR --partition P`: enrol every image of a folder through a running
//! server, several requests in flight, with a progress bar, a summary of accepted and
//! rejected images by reason, and a JSON-lines report of the rejects.
//!
//! Resumable: every accepted image is appended to a state file, and a second run skips
//! them. Unreadable files are reported, never fatal; an overloaded server is waited for.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{element, Client};

#[derive(Args)]
pub struct EnrolDir {
    /// Folder of images (searched recursively).
    pub dir: PathBuf,
    #[arg(long, default_value = "default")]
    pub partition: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API key (or FACEGATE_API_KEY).
    #[arg(long, env = "FACEGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where the subject id comes from: the image's folder, or its file name (without extension).
    #[arg(long, value_enum, default_value_t = SubjectFrom::Folder)]
    pub subject_from: SubjectFrom,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Accepted images, one path per line (a second run skips them).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Rejected images, one JSON object per line.
    #[arg(long, default_value = "enrol-rejects.jsonl")]
    pub report: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SubjectFrom {
    Folder,
    File,
}

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "pgm", "ppm", "pnm"];

type AnyError = Box<dyn std::error::Error>;

/// The subject id of an image: its folder's name, or its file stem; an image directly in
/// DIR always uses its file stem.
pub fn subject_of(root: &Path, file: &Path, from: SubjectFrom) -> Option<String> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    match from {
        SubjectFrom::File => Some(stem),
        SubjectFrom::Folder => match file.parent() {
            Some(p) if p != root => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            _ => Some(stem),
        },
    }
}

/// Image files under `dir`, sorted; an error naming the extensions looked for when there
/// are none (a folder of TIFFs should not read as an empty folder).
pub fn some_images(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let found = images(dir);
    if found.is_empty() {
        return Err(format!("no images ({}) under {}", EXTENSIONS.join(", "), dir.display()));
    }
    Ok(found)
}

/// Image files under `dir`, sorted.
pub fn images(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .map(|x| EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str()))
                .unwrap_or(false)
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

enum Outcome {
    Accepted,
    Rejected { status: u16, code: String, message: String },
    Failed(String),
}

/// What a run did, by outcome ("accepted", "rejected NO_FACE", "failed", ...), and how
/// many images an earlier run had already enrolled.
#[derive(Debug, Default)]
pub struct Summary {
    pub outcomes: BTreeMap<String, usize>,
    pub skipped: usize,
}

/// Where the run's accepted images are recorded and what it writes as it goes.
struct Records {
    state: Mutex<std::fs::File>,
    report: Mutex<std::fs::File>,
    tally: Mutex<BTreeMap<String, usize>>,
}

impl Records {
    /// Writes what an image's outcome calls for (its path to the state file when
    /// accepted, a JSON line to the report otherwise) and counts it.
    fn record(&self, file: &Path, subject: &str, outcome: &Outcome) {
        let key = match outcome {
            Outcome::Accepted => {
                let mut f = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(f, "{}", file.display());
                "accepted".to_string()
            }
            Outcome::Rejected { status, code, message } => {
                let line = serde_json::json!({"file": file.display().to_string(), "subject_id": subject, "http_status": status, "status": code, "message": message});
                let _ = writeln!(self.report.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
                format!("rejected {code}")
            }
            Outcome::Failed(e) => {
                let line = serde_json::json!({"file": file.display().to_string(), "subject_id": subject, "error": e});
                let _ = writeln!(self.report.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
                "failed".to_string()
            }
        };
        *self.tally.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
    }
}

pub fn run(a: EnrolDir) -> Result<Summary, AnyError> {
    if !a.dir.is_dir() {
        return Err(format!("{}: not a folder", a.dir.display()).into());
    }
    let state_path = a
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("enrol-{}.state", a.partition)));
    let done: HashSet<String> = std::fs::read_to_string(&state_path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let all = images(&a.dir);
    let todo: Vec<PathBuf> = all.iter().filter(|p| !done.contains(&p.display().to_string())).cloned().collect();
    println!(
        "{} images under {}, {} already enrolled (state {}), {} to go",
        all.len(),
        a.dir.display(),
        all.len() - todo.len(),
        state_path.display(),
        todo.len()
    );
    let records = Records {
        state: Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(&state_path)?),
        report: Mutex::new(std::fs::File::create(&a.report)?),
        tally: Mutex::new(BTreeMap::new()),
    };
    enrol_all(&a, &todo, &records)?;
    let tally = records.tally.into_inner().unwrap_or_else(|e| e.into_inner());
    println!("summary:");
    for (k, n) in &tally {
        println!("  {k:<28} {n}");
    }
    println!("rejects and failures: {}", a.report.display());
    Ok(Summary {
        outcomes: tally,
        skipped: all.len() - todo.len(),
    })
}

/// Enrols `todo` with `a.concurrency` requests in flight, behind a progress bar.
fn enrol_all(a: &EnrolDir, todo: &[PathBuf], records: &Records) -> Result<(), AnyError> {
    let client = Client::new(&a.server, a.api_key.clone());
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(ProgressStyle::with_template("enrol [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}")?.progress_chars("=> "));
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..a.concurrency.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = todo.get(i) else { break };
                let subject = subject_of(&a.dir, file, a.subject_from).unwrap_or_default();
                let outcome = enrol_one(&client, file, &subject, &a.partition);
                records.record(file, &subject, &outcome);
                bar.inc(1);
            });
        }
    });
    bar.finish();
    Ok(())
}

fn enrol_one(client: &Client, file: &Path, subject: &str, partition: &str) -> Outcome {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("cannot read: {e}")),
    };
    let body = serde_json::json!({
        "image": base64::engine::general_purpose::STANDARD.encode(&bytes),
        "subject_id": subject,
        "partition": partition,
    })
    .to_string();
    for _attempt in 0..20 {
        match client.post("/api/v1/enrol", &body) {
            Err(e) => return Outcome::Failed(e),
            Ok(a) if a.status == 200 => return Outcome::Accepted,
            // Overloaded: wait as told and try again; anything else is the answer.
            Ok(a) if a.status == 503 && a.retry_after.is_some() => std::thread::sleep(Duration::from_secs(a.retry_after.unwrap_or(1))),
            Ok(a) => {
                return Outcome::Rejected {
                    status: a.status,
                    code: element(&a.body, "status").unwrap_or_else(|| "HTTP".into()),
                    message: element(&a.body, "message").unwrap_or_default(),
                }
            }
        }
    }
    Outcome::Failed("the server stayed overloaded".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_ids_come_from_the_folder_or_the_file() {
        let root = Path::new("/photos");
        assert_eq!(
            subject_of(root, Path::new("/photos/alice/1.jpg"), SubjectFrom::Folder).as_deref(),
            Some("alice")
        );
        assert_eq!(
            subject_of(root, Path::new("/photos/bob.png"), SubjectFrom::Folder).as_deref(),
            Some("bob")
        );
        assert_eq!(
            subject_of(root, Path::new("/photos/alice/a-2.jpg"), SubjectFrom::File).as_deref(),
            Some("a-2")
        );
    }
}
