//! Events for watchlist operations: webhook subscriptions per partition, and the events
//! `match`, `unknown`, `spoof` (from identify), `enrol` and `delete`, each queued in a
//! durable outbox before the API answers and delivered, signed, by background workers.
//! An event carries ids, scores, the partition, the time and the request id; never an
//! image or a template.

pub mod deliver;
pub mod guard;
pub mod outbox;
pub mod sign;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use facegate_models::pipeline::NotSearched;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use serde::Serialize;
use serde_json::json;

use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use crate::routes::identify::IdentifiedFace;

/// Every event type a subscription may ask for.
pub const KINDS: [&str; 5] = ["match", "unknown", "spoof", "enrol", "delete"];

#[derive(Debug, Clone, Serialize)]
pub struct Subscription {
    pub id: String,
    pub partition: String,
    pub url: String,
    /// Shown once, when the subscription is created.
    #[serde(skip)]
    pub secret: String,
    pub events: Vec<String>,
    /// `match` is a candidate scoring at least this; `unknown` a searched face with none.
    pub threshold: f64,
    pub created_ms: i64,
}

impl Subscription {
    fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }
}

/// What happened, as the handlers know it.
pub enum Event<'a> {
    Identified {
        partitions: &'a [String],
        faces: &'a [IdentifiedFace],
        request_id: &'a str,
    },
    Enrolled {
        partition: &'a str,
        subject_id: &'a str,
        quality: f32,
        request_id: &'a str,
    },
    Deleted {
        partition: &'a str,
        subject_id: &'a str,
        request_id: &'a str,
    },
}

pub struct EventMetrics {
    /// delivered, failed (an attempt), dropped (given up or unsubscribed).
    pub outcomes: IntCounterVec,
    pub depth: IntGauge,
    /// From the event (the API's answer) to the receiver's 2xx.
    pub delay: Histogram,
    /// Events that could not be written to the outbox (logged; the answer stood).
    pub lost: IntCounterVec,
}

impl EventMetrics {
    fn new(m: &Metrics) -> Result<Self, prometheus::Error> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, failed, dropped)",
            ),
            &["outcome"],
        )?;
        let depth = IntGauge::new("webhook_queue_depth", "Webhook deliveries waiting in the outbox")?;
        let delay = Histogram::with_opts(
            HistogramOpts::new("webhook_delivery_delay_seconds", "From the API's answer to the receiver's 2xx")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0]),
        )?;
        let lost = IntCounterVec::new(
            Opts::new(
                "webhook_outbox_errors_total",
                "Events that could not be queued in the outbox, by type",
            ),
            &["type"],
        )?;
        m.register(Box::new(outcomes.clone()))?;
        m.register(Box::new(depth.clone()))?;
        m.register(Box::new(delay.clone()))?;
        m.register(Box::new(lost.clone()))?;
        Ok(Self {
            outcomes,
            depth,
            delay,
            lost,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("webhook outbox: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("configuration: webhooks.deny_networks: {0}")]
    Config(String),
}

pub struct Events {
    shared: Arc<deliver::Shared>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, from unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// 32 random bytes as hex: a subscription's secret.
pub fn random_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)?;
    Ok(hex::encode(b))
}

impl Events {
    /// Open the outbox under `data_dir` and start the delivery workers, which resume every
    /// delivery a previous process left queued.
    pub fn start(cfg: &WebhookConfig, data_dir: &std::path::Path, metrics: &Metrics) -> Result<Self, EventsError> {
        let nets = cfg
            .deny_networks
            .iter()
            .map(|n| guard::Net::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EventsError::Config)?;
        let outbox = outbox::Outbox::open(&data_dir.join(&cfg.outbox_file))?;
        let subscriptions = outbox.subscriptions()?;
        let shared = Arc::new(deliver::Shared::new(
            outbox,
            subscriptions,
            cfg.clone(),
            nets,
            EventMetrics::new(metrics)?,
        ));
        shared.update_depth();
        deliver::start(&shared);
        Ok(Self { shared })
    }

    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.shared.subscriptions.read().clone()
    }

    pub fn max_per_partition(&self) -> usize {
        self.shared.cfg.max_subscriptions_per_partition
    }

    /// The URL normalised, or why it is refused (resolves the host: call off the runtime).
    pub fn check_url(&self, url: &str) -> Result<String, String> {
        guard::check_url(&self.shared.nets, url)
    }

    /// Store a subscription durably (blocking: call off the runtime).
    pub fn subscribe(&self, s: Subscription) -> Result<(), rusqlite::Error> {
        self.shared.outbox.add_subscription(&s)?;
        self.shared.subscriptions.write().push(s);
        Ok(())
    }

    /// Remove a subscription and its queued deliveries (blocking: call off the runtime).
    pub fn unsubscribe(&self, id: &str) -> Result<bool, rusqlite::Error> {
        let gone = self.shared.outbox.remove_subscription(id)?;
        self.shared.subscriptions.write().retain(|s| s.id != id);
        self.shared.update_depth();
        Ok(gone)
    }

    /// Queue the deliveries `event` causes, durably, before the caller answers. This never
    /// fails the request: the request's own work (an enrolment, a search) is done and
    /// committed by now, and answering 5xx would make a client retry work that succeeded.
    /// An outbox write that fails is logged and counted in
    /// `facegate_webhook_outbox_errors_total` instead.
    pub async fn publish(self: &Arc<Self>, event: Event<'_>) {
        let rows = self.expand(&event);
        if rows.is_empty() {
            return;
        }
        let kinds: Vec<String> = rows.iter().map(|r| r.kind.clone()).collect();
        let me = self.clone();
        let written = actix_web::web::block(move || me.shared.outbox.push(&rows, now_ms())).await;
        match written {
            Ok(Ok(())) => {
                self.shared.update_depth();
                self.shared.notify();
            }
            Ok(Err(e)) => self.lost(&kinds, &e.to_string()),
            Err(e) => self.lost(&kinds, &e.to_string()),
        }
    }

    fn lost(&self, kinds: &[String], why: &str) {
        for k in kinds {
            self.shared.metrics.lost.with_label_values(&[k.as_str()]).inc();
        }
        tracing::error!(error = %why, events = kinds.len(), "webhook events could not be queued; the answer stands");
    }

    /// One delivery per subscription and event it asked for.
    fn expand(&self, event: &Event<'_>) -> Vec<outbox::NewDelivery> {
        let subs = self.shared.subscriptions.read();
        if subs.is_empty() {
            return Vec::new();
        }
        let time = rfc3339(now_ms());
        let mut rows = Vec::new();
        let mut push = |s: &Subscription, kind: &str, request_id: &str, extra: serde_json::Value| {
            let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
            let mut body = json!({
                "id": id,
                "type": kind,
                "time": time,
                "partition": s.partition,
                "subscription_id": s.id,
                "request_id": request_id,
            });
            if let (Some(b), serde_json::Value::Object(x)) = (body.as_object_mut(), extra) {
                b.extend(x);
            }
            rows.push(outbox::NewDelivery {
                subscription_id: s.id.clone(),
                event_id: id,
                kind: kind.into(),
                body: body.to_string(),
            });
        };
        match event {
            Event::Enrolled {
                partition,
                subject_id,
                quality,
                request_id,
            } => {
                for s in subs.iter().filter(|s| s.partition == *partition && s.wants("enrol")) {
                    push(
                        s,
                        "enrol",
                        request_id,
                        json!({"subject_id": subject_id, "quality_score": round(*quality, 2)}),
                    );
                }
            }
            Event::Deleted {
                partition,
                subject_id,
                request_id,
            } => {
                for s in subs.iter().filter(|s| s.partition == *partition && s.wants("delete")) {
                    push(s, "delete", request_id, json!({"subject_id": subject_id}));
                }
            }
            Event::Identified {
                partitions,
                faces,
                request_id,
            } => {
                for s in subs.iter().filter(|s| partitions.contains(&s.partition)) {
                    for (i, f) in faces.iter().enumerate() {
                        let face = face_json(i + 1, f);
                        match &f.report.outcome {
                            Err(NotSearched::Spoof) if s.wants("spoof") => {
                                push(s, "spoof", request_id, json!({ "face": face }));
                            }
                            Err(_) => {}
                            Ok(_) => {
                                let hits: Vec<serde_json::Value> = f
                                    .hits
                                    .iter()
                                    .filter(|(p, _)| *p == s.partition)
                                    .flat_map(|(_, c)| c.iter())
                                    .filter(|c| f64::from(c.score) >= s.threshold)
                                    .map(|c| json!({"subject_id": c.subject_id, "score": round(c.score, 3)}))
                                    .collect();
                                if !hits.is_empty() && s.wants("match") {
                                    push(s, "match", request_id, json!({"face": face, "candidates": hits}));
                                } else if hits.is_empty() && s.wants("unknown") {
                                    push(s, "unknown", request_id, json!({ "face": face }));
                                }
                            }
                        }
                    }
                }
            }
        }
        rows
    }
}

fn round(v: f32, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (f64::from(v.clamp(0.0, 1.0)) * p).round() / p
}

/// What an event says of a face: where it is and what its gates measured.
fn face_json(index: usize, f: &IdentifiedFace) -> serde_json::Value {
    let r = &f.report;
    let [x1, y1, x2, y2] = r.face.bbox;
    json!({
        "index": index,
        "box": {"x": x1.round() as i64, "y": y1.round() as i64, "width": (x2 - x1).round() as i64, "height": (y2 - y1).round() as i64},
        "detection_score": round(r.face.score, 3),
        "quality_score": r.quality.map(|q| round(q, 2)),
        "pad_score": r.pad.map(|p| round(p, 3)),
        "pad_decision": r.live.map(|l| if l { "live" } else { "spoof" }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_765_065_600_000), "2025-12-07T00:00:00.000Z");
    }
}
