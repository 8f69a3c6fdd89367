//! The delivery workers: `webhooks.senders` threads that take due rows from the outbox,
//! POST them signed, and delete them once the receiver answers 2xx. A failure is retried
//! with exponential backoff until the event is `webhooks.max_age_secs` old, then dropped.
//! Each request has a deadline (`webhooks.timeout_ms`) and the workers are the only
//! threads that wait on receivers: a slow or dead receiver delays its own deliveries,
//! never an API answer, and holds at most the workers, never an HTTP worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use super::{guard, now_ms, outbox::Delivery, outbox::Outbox, sign, EventMetrics, Subscription};
use crate::config::WebhookConfig;

pub struct Shared {
    pub outbox: Outbox,
    pub subscriptions: RwLock<Vec<Subscription>>,
    pub cfg: WebhookConfig,
    pub nets: Arc<Vec<guard::Net>>,
    pub metrics: EventMetrics,
    /// Bumped at every new delivery; idle workers wait on it.
    wake: Mutex<u64>,
    woken: Condvar,
    /// Rows a worker is sending now, so that no two send the same one.
    busy: Mutex<HashSet<i64>>,
    agent: ureq::Agent,
}

impl Shared {
    pub fn new(outbox: Outbox, subscriptions: Vec<Subscription>, cfg: WebhookConfig, nets: Vec<guard::Net>, metrics: EventMetrics) -> Self {
        let nets = Arc::new(nets);
        let resolver_nets = nets.clone();
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .timeout_connect(Duration::from_millis(cfg.timeout_ms.min(2_000)))
            // A redirect could lead anywhere, past the URL checked at subscription.
            .redirects(0)
            .resolver(move |netloc: &str| guard::resolve(&resolver_nets, netloc))
            .user_agent("facegate-webhooks")
            .build();
        Self {
            outbox,
            subscriptions: RwLock::new(subscriptions),
            cfg,
            nets,
            metrics,
            wake: Mutex::new(0),
            woken: Condvar::new(),
            busy: Mutex::new(HashSet::new()),
            agent,
        }
    }

    /// New rows are in the outbox: wake the idle workers.
    pub fn notify(&self) {
        *self.wake.lock() += 1;
        self.woken.notify_all();
    }

    pub fn update_depth(&self) {
        if let Ok(n) = self.outbox.depth() {
            self.metrics.depth.set(n);
        }
    }
}

/// Start the workers; they run for the life of the process.
pub fn start(shared: &Arc<Shared>) {
    for i in 0..shared.cfg.senders.max(1) {
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name(format!("webhook-{i}")).spawn(move || run(&s));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a webhook delivery worker");
        }
    }
}

fn run(s: &Shared) {
    loop {
        let seen = *s.wake.lock();
        let claimed = {
            let mut busy = s.busy.lock();
            match s.outbox.due(now_ms(), &busy, 1) {
                Ok(mut due) => due.pop().inspect(|d| {
                    busy.insert(d.id);
                }),
                Err(e) => {
                    tracing::error!(error = %e, "webhook outbox unreadable");
                    None
                }
            }
        };
        match claimed {
            Some(d) => {
                attempt(s, &d);
                s.busy.lock().remove(&d.id);
            }
            None => {
                // Sleep until the next retry falls due or a new event arrives; a row due but
                // taken by another worker is rechecked after a short pause, not spun on.
                let wait = match s.outbox.next_due_ms() {
                    Ok(Some(t)) => (t - now_ms()).clamp(25, 1_000),
                    _ => 1_000,
                };
                let mut g = s.wake.lock();
                if *g == seen {
                    s.woken.wait_for(&mut g, Duration::from_millis(wait as u64));
                }
            }
        }
    }
}

/// The pause before attempt `n + 1` after `n` failed attempts: base x 2^(n-1), capped.
pub fn backoff(cfg: &WebhookConfig, failed: i64) -> u64 {
    let exp = (failed.max(1) - 1).min(30) as u32;
    cfg.retry_base_ms.saturating_mul(1u64 << exp).min(cfg.retry_max_ms)
}

fn attempt(s: &Shared, d: &Delivery) {
    let sub = s.subscriptions.read().iter().find(|x| x.id == d.subscription_id).cloned();
    let Some(sub) = sub else {
        // Unsubscribed since: nobody is waiting for it.
        finish(s, d, "dropped");
        return;
    };
    let t = (now_ms() / 1000) as u64;
    let result = s
        .agent
        .post(&sub.url)
        .set("Content-Type", "application/json")
        .set(sign::HEADER, &sign::header(&sub.secret, t, &d.body))
        .set("Facegate-Event", &d.kind)
        .set("Facegate-Event-Id", &d.event_id)
        .send_string(&d.body);
    let failure = match result {
        Ok(r) if (200..300).contains(&r.status()) => None,
        Ok(r) => Some(format!("answered {}", r.status())),
        Err(ureq::Error::Status(code, _)) => Some(format!("answered {code}")),
        Err(e) => Some(e.to_string()),
    };
    let Some(why) = failure else {
        s.metrics.delay.observe((now_ms() - d.created_ms).max(0) as f64 / 1e3);
        finish(s, d, "delivered");
        return;
    };
    s.metrics.outcomes.with_label_values(&["failed"]).inc();
    let attempts = d.attempts + 1;
    let next = now_ms() + backoff(&s.cfg, attempts) as i64;
    if next - d.created_ms > (s.cfg.max_age_secs as i64).saturating_mul(1000) {
        tracing::warn!(subscription = %sub.id, event = %d.event_id, attempts, reason = %why, "webhook delivery dropped: too old");
        finish(s, d, "dropped");
        return;
    }
    tracing::info!(subscription = %sub.id, event = %d.event_id, attempts, reason = %why, "webhook delivery failed; retrying");
    if let Err(e) = s.outbox.retry_at(d.id, attempts, next) {
        tracing::error!(error = %e, "webhook outbox: could not reschedule a delivery");
    }
}

fn finish(s: &Shared, d: &Delivery, outcome: &str) {
    s.metrics.outcomes.with_label_values(&[outcome]).inc();
    if let Err(e) = s.outbox.done(d.id) {
        tracing::error!(error = %e, "webhook outbox: could not remove a finished delivery");
    }
    s.update_depth();
}
