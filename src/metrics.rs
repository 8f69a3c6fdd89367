//! Prometheus metrics: requests and latency per endpoint and status, pipeline stage
//! latencies, gate rejections, gallery sizes and the pipeline queue depth.

use facegate_models::StageTimings;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub stages: HistogramVec,
    pub rejections: IntCounterVec,
    pub collisions: IntCounterVec,
    pub subjects: IntGaugeVec,
    pub in_flight: IntGauge,
    pub body_bytes: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("facegate".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by endpoint and status"),
            &["endpoint", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint", "status"],
        )?;
        let stages = HistogramVec::new(
            HistogramOpts::new("pipeline_stage_duration_seconds", "Face pipeline stage latency").buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let rejections = IntCounterVec::new(Opts::new("gate_rejections_total", "Images refused, by gate"), &["gate"])?;
        let collisions = IntCounterVec::new(
            Opts::new(
                "identity_collisions_total",
                "Enrolments matching another subject, by what the policy did",
            ),
            &["action"],
        )?;
        let subjects = IntGaugeVec::new(Opts::new("gallery_subjects", "Enrolled subjects per partition"), &["partition"])?;
        let in_flight = IntGauge::new("pipeline_in_flight", "Requests admitted to the face pipeline (running or queued)")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(stages.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(collisions.clone()))?;
        registry.register(Box::new(subjects.clone()))?;
        let body_bytes = IntGauge::new(
            "request_body_bytes_held",
            "Request body bytes held in memory (server.body_budget_bytes bounds it)",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(body_bytes.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            stages,
            rejections,
            collisions,
            subjects,
            in_flight,
            body_bytes,
        })
    }

    /// Add another module's series (the webhook delivery metrics).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(c)
    }

    pub fn record_stages(&self, timings: &StageTimings) {
        for (stage, d) in &timings.0 {
            self.stages.with_label_values(&[stage.name()]).observe(d.as_secs_f64());
        }
    }

    /// The text exposition, without the series of partitions `visible` rejects: an admin
    /// key of one tenant does not learn another tenant's partition names or sizes.
    pub fn render(&self, visible: impl Fn(&str) -> bool) -> String {
        let mut families = self.registry.gather();
        for family in &mut families {
            let kept: Vec<_> = family
                .take_metric()
                .into_iter()
                .filter(|m| m.get_label().iter().all(|l| l.get_name() != "partition" || visible(l.get_value())))
                .collect();
            family.set_metric(kept);
        }
        families.retain(|f| !f.get_metric().is_empty());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}
