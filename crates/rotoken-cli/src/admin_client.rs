//! A client of a running `rotoken serve`'s admin API (`--admin-url`), with
//! the admin token from `ROTOKEN_ADMIN_TOKEN`: how the one-shot commands
//! reach a redb file that the server holds locked.

use std::time::Duration;

use crate::output::CliError;

/// Largest admin answer read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// The admin API of one server.
pub(crate) struct AdminClient {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl AdminClient {
    /// The admin API at `base` (`http://127.0.0.1:8081`), the token from the
    /// environment; calls time out after `timeout`.
    pub(crate) fn from_env(base: &str, timeout: Duration) -> Result<Self, CliError> {
        let token = std::env::var("ROTOKEN_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                CliError::refused(
                    "admin_token_missing",
                    "--admin-url needs the admin token in ROTOKEN_ADMIN_TOKEN",
                )
            })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        })
    }

    /// `GET {base}{path}?{query}`: the body of a 200 answer.
    pub(crate) fn get(&self, path: &str, query: &[(&str, String)]) -> Result<String, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .get(&url)
            .header("Authorization", format!("Bearer {}", self.token));
        for (k, v) in query {
            request = request.query(k, v);
        }
        answer(&url, "GET", request.call())
    }

    /// `POST {base}{path}` with a JSON body: the body of a 200 answer.
    pub(crate) fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<String, CliError> {
        let url = format!("{}{path}", self.base);
        let result = self
            .agent
            .post(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string());
        answer(&url, "POST", result)
    }
}

/// The body of a 200 answer; any other status is an error carrying the
/// answer (`admin_failed` for 5xx, `admin_refused` otherwise).
fn answer(
    url: &str,
    method: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<String, CliError> {
    let unreachable =
        |e: &dyn std::fmt::Display| CliError::storage("admin_unreachable", format!("{method} {url}: {e}"));
    let mut response = result.map_err(|e| unreachable(&e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| unreachable(&e))?;
    if status != 200 {
        let message = format!("the admin API answered {status}: {body}");
        return Err(if status >= 500 {
            CliError::storage("admin_failed", message)
        } else {
            CliError::refused("admin_refused", message)
        });
    }
    Ok(body)
}
