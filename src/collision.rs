//! The identity-collision check at enrolment: before a template is stored it is searched
//! against its partition (and the partitions of `collision.also_search` the caller may
//! read). A match to another subject at or above the threshold is a collision: one person
//! enrolled under two identities, or a morph that also matches an enrolled contributor.
//! Unlike a single-image MAD model, this does not depend on the tool that made the morph.

use actix_web::http::header::HeaderName;
use facegate_actors::{GalleryDirectory, GalleryError};
use facegate_models::FaceTemplate;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Caller;
use crate::config::Right;
use crate::error::ApiError;

/// The answer header of an enrolment stored with a flagged collision.
pub const HEADER: HeaderName = HeaderName::from_static("x-identity-collision");

/// Apply the policy to an analysed enrolment photo: Err for a refused collision (nothing
/// is stored), the collision to report for a flagged one. Either is noted on the
/// enrolment's audit record.
pub async fn screen(
    state: &AppState,
    caller: &Caller,
    partition: &str,
    subject: &str,
    face: &FaceTemplate,
    audit: &mut crate::audit::Entry<'_>,
) -> Result<Option<Collision>, ApiError> {
    let cfg = &state.cfg.collision;
    let Some(c) = check(cfg, &state.gallery, caller, partition, subject, &face.vector, &face.model_id).await? else {
        return Ok(None);
    };
    let action = if cfg.policy == Policy::Reject { "rejected" } else { "flagged" };
    state.metrics.collisions.with_label_values(&[action]).inc();
    // The log is the operator's: it names the colliding subject whatever the caller may read.
    tracing::warn!(partition, subject, collides_with_partition = %c.partition, score = c.score, action, "identity collision");
    audit.collision(&c, cfg.policy == Policy::Reject);
    if cfg.policy == Policy::Reject {
        return Err(c.into_error());
    }
    Ok(Some(c))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Refuse the enrolment: 409 IDENTITY_COLLISION.
    Reject,
    /// Enrol, and report the collision (response header, log, metrics).
    Flag,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollisionConfig {
    pub policy: Policy,
    /// Cosine at or above which another subject is the same person.
    pub threshold: f32,
    /// Further partitions searched at every enrolment (e.g. a watchlist), each only when
    /// the caller has the search right on it.
    pub also_search: Vec<String>,
}

impl Default for CollisionConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Reject,
            threshold: 0.40,
            also_search: Vec::new(),
        }
    }
}

/// Another subject the new template matches.
#[derive(Debug, Clone)]
pub struct Collision {
    pub partition: String,
    /// None when the caller may not read that partition: it is never named.
    pub subject: Option<String>,
    /// The subject matched, for the audit record in its own partition; never shown to
    /// the caller.
    pub matched: String,
    pub score: f32,
}

impl Collision {
    /// For the response header and the log: names only what the caller may read.
    pub fn describe(&self) -> String {
        match &self.subject {
            Some(s) => format!("partition={}; subject={s}; score={:.3}", self.partition, self.score),
            None => format!("score={:.3}; in a partition this key may not read", self.score),
        }
    }

    pub fn into_error(self) -> ApiError {
        ApiError::IdentityCollision(match &self.subject {
            Some(s) => format!(
                "this face matches subject {s:?} of partition {:?} (score {:.3}, collision threshold reached): one person cannot be enrolled under two identities",
                self.partition, self.score
            ),
            None => format!(
                "this face matches an enrolled subject (score {:.3}, collision threshold reached): one person cannot be enrolled under two identities",
                self.score
            ),
        })
    }
}

/// The best match of `vector` to a subject other than `subject` of `partition`, across the
/// partitions this enrolment is checked against; None below the threshold or with the
/// policy off.
pub async fn check(
    cfg: &CollisionConfig,
    gallery: &GalleryDirectory,
    caller: &Caller,
    partition: &str,
    subject: &str,
    vector: &[f32],
    model_id: &str,
) -> Result<Option<Collision>, ApiError> {
    if cfg.policy == Policy::Off {
        return Ok(None);
    }
    let mut targets = vec![partition.to_string()];
    targets.extend(cfg.also_search.iter().filter(|p| p.as_str() != partition).cloned());
    let mut best: Option<Collision> = None;
    for target in targets {
        let own = target == partition;
        // Another partition is searched only on behalf of a caller who may search it.
        let readable = caller.may_see(&target) && caller.has(Right::Search);
        if !own && !readable {
            continue;
        }
        // Two candidates: the subject itself may be the best one in its own partition.
        let hits = match gallery.search(&target, vector.to_vec(), model_id, 2, cfg.threshold).await {
            Ok(h) => h,
            Err(GalleryError::PartitionNotFound(_)) => continue,
            // A partition of another recognizer cannot be compared with; in the enrolling
            // partition the enrolment itself answers 409 for it.
            Err(GalleryError::ModelMismatch { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(hit) = hits.into_iter().find(|h| !(own && h.subject_id == subject)) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| hit.score > b.score) {
            best = Some(Collision {
                partition: target.clone(),
                subject: readable.then(|| hit.subject_id.clone()),
                matched: hit.subject_id.clone(),
                score: hit.score,
            });
        }
    }
    Ok(best)
}
