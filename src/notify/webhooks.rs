//! POSTs one event to one `[[webhooks]]` URL (docs/design.md §12): the body
//! in the webhook's format, header values from environment variables (read
//! once at start, never logged), a timeout per request, and retries with
//! exponential backoff and jitter up to `max_attempts`.

use std::time::Duration;

use crate::config::WebhookSettings;
use crate::events::Published;

use super::format::{self, Context};

/// The first retry's ceiling; each further one doubles, up to [`MAX_DELAY`].
const BASE_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(60);

/// A webhook ready to send: its settings, its headers' values and a client.
pub(crate) struct Webhook {
    pub(crate) settings: WebhookSettings,
    /// (header, value) from the environment; `Debug` is not derived so a
    /// value can never reach a log line.
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    client: reqwest::Client,
}

impl Webhook {
    /// Reads the header values from the environment: a variable that is
    /// unset (or not a valid header value) is warned about and its header
    /// left out.
    pub(crate) fn new(settings: WebhookSettings, client: reqwest::Client) -> Webhook {
        let mut headers = Vec::new();
        for (header, variable) in &settings.header_env {
            let value = std::env::var(variable)
                .ok()
                .filter(|value| !value.is_empty());
            let parsed = value.and_then(|value| {
                let mut value = reqwest::header::HeaderValue::from_str(&value).ok()?;
                value.set_sensitive(true);
                Some(value)
            });
            let name = reqwest::header::HeaderName::from_bytes(header.as_bytes()).ok();
            match (name, parsed) {
                (Some(name), Some(value)) => headers.push((name, value)),
                _ => tracing::warn!(
                    webhook = %host_of(&settings.url), header = %header, variable = %variable,
                    "the environment variable for this webhook header is unset or not a valid header value; the header is left out (set it in the daemon's environment)"
                ),
            }
        }
        Webhook {
            settings,
            headers,
            client,
        }
    }

    /// Where it goes, for logs: the host only (Slack's and Discord's URLs
    /// hold their secret in the path).
    pub(crate) fn label(&self) -> String {
        host_of(&self.settings.url)
    }

    /// Sends the event, retrying; `Err` says why the last try failed.
    pub(crate) async fn send(
        &self,
        event: &Published,
        context: &Context,
        rng: &mut fastrand::Rng,
    ) -> Result<(), String> {
        let body = format::body(self.settings.format, &event.event, &event.json, context);
        let mut attempt = 1;
        loop {
            let error = match self.post(&body).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if attempt >= self.settings.max_attempts {
                return Err(format!("{error} (after {attempt} tries)"));
            }
            let delay = crate::backoff::retry_delay(attempt, BASE_DELAY, MAX_DELAY, rng);
            tracing::debug!(webhook = %self.label(), attempt, %error, retry_in = ?delay, "webhook failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn post(&self, body: &format::Body) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.settings.url)
            .timeout(self.settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, body.content_type);
        for (name, value) in &body.headers {
            request = request.header(*name, value.as_str());
        }
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        let response = request
            .body(body.bytes.clone())
            .send()
            .await
            .map_err(|error| describe_error(&error))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// A request error in a few words, without the URL (it may hold a secret).
pub(crate) fn describe_error(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_builder() {
        "cannot build the request"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    match cause.is_empty() {
        true => what.to_owned(),
        false => format!("{what}: {cause}"),
    }
}

/// `hooks.slack.com` from a URL.
pub(crate) fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "?".to_owned())
}
