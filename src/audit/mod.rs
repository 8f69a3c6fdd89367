//! The audit trail: a hash-chained record of every biometric operation (who asked, on which
//! partition, about which subjects, what was decided, with which scores and model), never
//! an image or a template. Records live in their own SQLite file in the data directory,
//! written by one thread with group commit; a request is answered once its record is
//! durable.
//!
//! A route audits itself with [`Audit::entry`] once its partition is known and the key may
//! use it, notes what it learns on the [`Entry`] (the face, the candidates, the subject),
//! and hands its outcome, success or error, to [`Entry::finish`], whose result it returns.

pub mod chain;
pub mod query;
pub mod record;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, ResponseError};
use facegate_actors::Candidate;
use facegate_models::FaceTemplate;
use serde::{Deserialize, Serialize};

pub use record::{Draft, Gate, Operation, Record, Subject};

use crate::auth::Caller;
use crate::collision::Collision;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// A request whose record cannot be written is answered 503 UNAVAILABLE.
    Fail,
    /// The failure is logged and the request answered as if it had been written.
    Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    pub on_failure: OnFailure,
    /// Records older than this many days are pruned; 0 keeps them all.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            on_failure: OnFailure::Fail,
            retention_days: 365,
        }
    }
}

/// The audit file of a data directory.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join(writer::FILE_NAME)
}

/// The service's audit trail (a no-op when disabled).
pub struct Audit {
    writer: Option<writer::Writer>,
    on_failure: OnFailure,
    path: PathBuf,
}

impl Audit {
    pub fn open(cfg: &AuditConfig, data_dir: &Path) -> Result<Self, String> {
        let path = file(data_dir);
        let writer = if cfg.enabled {
            let retention = (cfg.retention_days > 0).then(|| Duration::from_secs(u64::from(cfg.retention_days) * 86_400));
            let w = writer::Writer::start(&path, retention).map_err(|e| format!("audit trail {}: {e}", path.display()))?;
            tracing::info!(file = %path.display(), on_failure = ?cfg.on_failure, retention_days = cfg.retention_days, "audit trail");
            Some(w)
        } else {
            tracing::warn!("audit.enabled = false: biometric operations leave no audit record");
            None
        };
        Ok(Self {
            writer,
            on_failure: cfg.on_failure,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Start the record of `operation` on `partition` for the request `req` by `caller`.
    /// With `on_failure = "fail"`, 503 at once while the audit file takes no writes: the
    /// operation is not run when its record could not be kept.
    pub fn entry(&self, req: &HttpRequest, caller: &Caller, operation: Operation, partition: &str) -> Result<Entry<'_>, ApiError> {
        let request_id = crate::app::request_id(req);
        let key = match caller {
            Caller::Open => None,
            Caller::Key(k) => Some(k.name.clone()),
        };
        self.entry_for(request_id, key, operation, partition)
    }

    /// [`Audit::entry`] from the request id and key name themselves.
    pub fn entry_for(&self, request_id: String, key: Option<String>, operation: Operation, partition: &str) -> Result<Entry<'_>, ApiError> {
        if let Some(w) = &self.writer {
            if self.on_failure == OnFailure::Fail && !w.healthy() {
                return Err(unwritable());
            }
        }
        Ok(Entry {
            audit: self,
            draft: Draft {
                request_id,
                key,
                operation,
                partition: partition.to_string(),
                decision: String::new(),
                status: 0,
                subjects: Vec::new(),
                quality: None,
                gate: None,
                model_id: None,
            },
            also: Vec::new(),
        })
    }
}

fn unwritable() -> ApiError {
    ApiError::Unavailable(
        "the audit trail cannot be written, so biometric requests are refused (audit.on_failure = \"fail\"); retry shortly".into(),
    )
}

/// The record of one operation being built.
pub struct Entry<'a> {
    audit: &'a Audit,
    draft: Draft,
    /// Records of the same request in other partitions (a collision's matched subject).
    also: Vec<Draft>,
}

impl Entry<'_> {
    /// The analysed face: its quality and the recognizer's model id.
    pub fn face(&mut self, face: &FaceTemplate) {
        self.draft.quality = Some(record::round3(face.quality));
        self.draft.model_id = Some(face.model_id.clone());
    }

    pub fn model(&mut self, model_id: &str) {
        self.draft.model_id = Some(model_id.to_string());
    }

    /// A subject the operation involved, with its score once it was compared (noting a
    /// subject again sets its score).
    pub fn subject(&mut self, id: &str, score: Option<f32>) {
        let score = score.map(record::round3);
        match self.draft.subjects.iter_mut().find(|s| s.id == id) {
            Some(s) => s.score = score.or(s.score),
            None => self.draft.subjects.push(Subject { id: id.to_string(), score }),
        }
    }

    /// The candidates a search returned.
    pub fn candidates(&mut self, hits: &[Candidate]) {
        for h in hits {
            self.subject(&h.subject_id, Some(h.score));
        }
    }

    /// The same operation also searched `partition` and returned `hits` there (an identify
    /// across partitions): a record of its own in that partition, finished with this one.
    pub fn also_in(&mut self, partition: &str, hits: &[Candidate]) {
        let mut other = self.draft.clone();
        other.partition = partition.to_string();
        other.subjects = hits
            .iter()
            .map(|h| Subject {
                id: h.subject_id.clone(),
                score: Some(record::round3(h.score)),
            })
            .collect();
        self.also.push(other);
    }

    /// The decision of a successful answer when it is not plain `OK` (`MATCH`, `FLAGGED`).
    pub fn decision(&mut self, decision: &str) {
        self.draft.decision = decision.to_string();
    }

    /// An enrolment's face matched another subject: a `collision` record goes to the
    /// matched subject's partition, and an enrolment stored anyway is `FLAGGED`.
    pub fn collision(&mut self, c: &Collision, rejected: bool) {
        if !rejected {
            self.decision("FLAGGED");
        }
        let same = c.partition == self.draft.partition;
        if same {
            self.subject(&c.matched, Some(c.score));
        }
        let mut other = self.draft.clone();
        other.operation = Operation::Collision;
        other.partition = c.partition.clone();
        other.decision = if rejected { "IDENTITY_COLLISION" } else { "FLAGGED" }.into();
        if !same {
            other.subjects = vec![Subject {
                id: c.matched.clone(),
                score: Some(record::round3(c.score)),
            }];
        }
        self.also.push(other);
    }

    /// Append the record of this outcome and wait until it is durable; the outcome, or
    /// 503 when the record could not be written and `on_failure = "fail"`.
    pub async fn finish(self, outcome: Result<HttpResponse, ApiError>) -> Result<HttpResponse, ApiError> {
        let audit = self.audit;
        let Some(writer) = &audit.writer else {
            return outcome;
        };
        let (status, decision, gate) = match &outcome {
            Ok(res) => (
                res.status().as_u16(),
                if self.draft.decision.is_empty() {
                    "OK".to_string()
                } else {
                    self.draft.decision.clone()
                },
                None,
            ),
            Err(e) => (
                e.status_code().as_u16(),
                e.code().to_string(),
                e.gate_score().map(|(name, score)| Gate {
                    name: name.to_string(),
                    score: record::round3(score),
                }),
            ),
        };
        let mut drafts = vec![self.draft];
        drafts.extend(self.also);
        for d in &mut drafts {
            d.status = status;
            // A collision record keeps the decision taken on the match.
            if d.operation != Operation::Collision {
                d.decision = decision.clone();
                d.gate = gate.clone();
            }
        }
        let written = futures_util::future::join_all(drafts.into_iter().map(|d| writer.append(d))).await;
        match written.into_iter().find_map(Result::err) {
            None => outcome,
            Some(e) if audit.on_failure == OnFailure::Fail => {
                tracing::error!(error = %e, "audit record not written: answering 503");
                Err(unwritable())
            }
            Some(e) => {
                tracing::error!(error = %e, "audit record not written (audit.on_failure = \"log\"): answering anyway");
                outcome
            }
        }
    }
}
