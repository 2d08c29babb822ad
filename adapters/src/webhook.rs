//! `JobEventsPort` that POSTs every event as JSON to a webhook, signed with
//! HMAC-SHA256 over the delivery id, the timestamp and the body
//! (`X-Ferry-Signature: sha256=<hex of HMAC(secret, "<delivery>.<timestamp>.<body>")>`,
//! see [`signed_content`]), so a captured delivery cannot be replayed under
//! a new delivery id, nor late without its old timestamp showing;
//! retried with the domain's retry policy (full jitter) on transient
//! statuses (`retry::is_transient_status`) and network errors.
//!
//! Delivery never slows the job runner: `publish` only enqueues into a
//! bounded queue; one background task delivers in order. If the queue is
//! full (the receiver is down for long), the event is dropped with a
//! warning; every event stays in the job store for replay.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::warn;

use ferry_domain::RetryPolicy;
use ferry_domain::ports::{JobEvent, JobEventsPort};
use ferry_domain::retry::{self, is_transient_status};
use ferry_domain::source::redact_text;

use crate::wire::EventDto;

/// Webhook settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Vec<u8>,
    /// Deliveries per event (`retry.attempts`, 1 = no retry) and the
    /// delays between them: the domain's one retry policy.
    pub retry: RetryPolicy,
    pub queue: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_text(&self.url))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    pub fn new(url: String, secret: Vec<u8>) -> Self {
        Self {
            url,
            secret,
            retry: RetryPolicy {
                attempts: 5,
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
                deadline: Duration::from_secs(10 * 60),
            },
            queue: 10_000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What is signed: `<delivery id>.<unix seconds>.<body>`.
pub fn signed_content(delivery: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{delivery}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// `sha256=<hex HMAC-SHA256(secret, content)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => String::new(),
    }
}

/// The webhook sink; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookEvents {
    tx: mpsc::Sender<JobEvent>,
}

impl WebhookEvents {
    /// Starts the delivery task (needs a tokio runtime).
    pub fn start(config: WebhookConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("cannot build the webhook client: {}", e.without_url()))?;
        let (tx, mut rx) = mpsc::channel::<JobEvent>(config.queue.max(1));
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                deliver(&client, &config, &event).await;
            }
        });
        Ok(Self { tx })
    }
}

async fn deliver(client: &reqwest::Client, config: &WebhookConfig, event: &JobEvent) {
    let body = match serde_json::to_string(&EventDto::from(event)) {
        Ok(body) => body,
        Err(e) => {
            warn!(job = %event.job_id, seq = event.seq, error = %e, "webhook: event not encodable");
            return;
        }
    };
    let delivery = format!("{}-{}", event.job_id, event.seq);
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sig = signature(
        &config.secret,
        &signed_content(&delivery, timestamp, body.as_bytes()),
    );
    let mut last;
    let first_try = std::time::Instant::now();
    let mut retry = 0;
    loop {
        let sent = client
            .post(&config.url)
            .header("content-type", "application/json")
            .header("x-ferry-signature", &sig)
            .header("x-ferry-timestamp", timestamp.to_string())
            .header("x-ferry-event", event.kind.name())
            .header("x-ferry-delivery", &delivery)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => {
                let status = resp.status().as_u16();
                last = format!("HTTP {status}");
                if !is_transient_status(status) {
                    break;
                }
            }
            Err(e) => last = e.without_url().to_string(),
        }
        let Some(delay) = config
            .retry
            .delay(retry, retry::jitter(), first_try.elapsed())
        else {
            break;
        };
        retry += 1;
        tokio::time::sleep(delay).await;
    }
    warn!(job = %event.job_id, seq = event.seq, error = %last, webhook = %redact_text(&config.url), "webhook delivery failed");
}

#[async_trait]
impl JobEventsPort for WebhookEvents {
    async fn publish(&self, event: &JobEvent) {
        if self.tx.try_send(event.clone()).is_err() {
            warn!(job = %event.job_id, seq = event.seq, "webhook queue full; event not delivered (it stays in the job store)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
