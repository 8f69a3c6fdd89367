//! A small blocking HTTP client for the operator commands (enrol-dir, bench load).

use std::time::Duration;

/// One answer: status, body, and the Retry-After seconds when the server sent one.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<u64>,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(base: &str, key: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// POST a JSON body; any HTTP status is an answer, only transport failures are errors.
    pub fn post(&self, path: &str, body: &str) -> Result<Answer, String> {
        let mut req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.set("X-API-Key", k);
        }
        let res = match req.send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = res.status();
        let retry_after = res.header("Retry-After").and_then(|v| v.parse().ok());
        let body = res.into_string().map_err(|e| e.to_string())?;
        Ok(Answer { status, body, retry_after })
    }
}

/// The text of an XML element of an answer (the server's own flat documents).
pub fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}
