//! One load connection: its own agent (one keep-alive connection), its own
//! family, and the counters it keeps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::Config;

/// Reasons kept per connection (the report keeps the first few overall).
const SAMPLES_PER_CONNECTION: usize = 5;

/// The endpoints, built once from the base URL.
pub(crate) struct Urls {
    token: String,
    revoke: String,
    families: String,
    metrics: String,
}

impl Urls {
    pub(crate) fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            token: format!("{base}/oauth/token"),
            revoke: format!("{base}/oauth/revoke"),
            families: format!("{base}/admin/families"),
            metrics: format!("{base}/metrics"),
        }
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// `rotoken_rotations_total` from the server's `/metrics`, if it answers.
pub(crate) fn server_rotations(urls: &Urls, timeout: Duration) -> Option<u64> {
    let mut response = agent(timeout).get(&urls.metrics).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rotoken_rotations_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The fields of a token-endpoint or admin answer this tool looks at.
#[derive(Deserialize, Default)]
struct Body {
    refresh_token: Option<String>,
    error: Option<String>,
}

/// What came back for one request.
enum Answer {
    /// An HTTP answer: its status, the new refresh token, the OAuth error code.
    Http {
        status: u16,
        refresh_token: Option<String>,
        error: Option<String>,
    },
    /// No HTTP answer (connect, timeout, broken connection).
    Transport(String),
}

impl Answer {
    fn is(&self, want_status: u16, want_error: &str) -> bool {
        matches!(self, Self::Http { status, error, .. } if *status == want_status && error.as_deref() == Some(want_error))
    }

    /// Status and error code, for an error sample (never a token).
    fn describe(&self) -> String {
        match self {
            Self::Http { status, error, .. } => {
                format!("{status} {}", error.as_deref().map_or("(no error code)", safe_code))
            }
            Self::Transport(e) => format!("transport error: {e}"),
        }
    }
}

/// An OAuth error code as received, if it looks like one.
fn safe_code(code: &str) -> &str {
    if !code.is_empty() && code.len() <= 40 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        code
    } else {
        "(unrecognised error code)"
    }
}

/// Counters and the latency histogram of one connection, or of all.
pub(crate) struct Stats {
    /// Latency of every refresh of a connection's current token, in µs.
    pub(crate) latency: Histogram<u64>,
    /// Every request sent in the measured loop.
    pub(crate) requests: u64,
    /// Answers by HTTP status.
    pub(crate) status: BTreeMap<u16, u64>,
    /// Answers by OAuth `error` code.
    pub(crate) oauth_errors: BTreeMap<String, u64>,
    /// Requests that got no HTTP answer.
    pub(crate) transport_errors: u64,
    /// Successful rotations of a current token.
    pub(crate) refreshes: u64,
    /// Grace retries answered with the current token.
    pub(crate) grace_retries: u64,
    /// Replays refused with `invalid_grant` that killed the family.
    pub(crate) replays: u64,
    /// Revocations that killed the family.
    pub(crate) revocations: u64,
    /// Families created during the loop (after a replay or revocation).
    pub(crate) families_issued: u64,
    /// Unexpected answers.
    pub(crate) errors: u64,
    /// The first few reasons.
    pub(crate) samples: Vec<String>,
    /// Connections whose current token was refused at the end.
    pub(crate) lost_rotations: u64,
    /// Connections whose final refresh succeeded.
    pub(crate) final_ok: u64,
    /// When this connection's loop ended.
    pub(crate) loop_end: Option<Instant>,
}

impl Stats {
    pub(crate) fn new(empty: Histogram<u64>) -> Self {
        Self {
            latency: empty,
            requests: 0,
            status: BTreeMap::new(),
            oauth_errors: BTreeMap::new(),
            transport_errors: 0,
            refreshes: 0,
            grace_retries: 0,
            replays: 0,
            revocations: 0,
            families_issued: 0,
            errors: 0,
            samples: Vec::new(),
            lost_rotations: 0,
            final_ok: 0,
            loop_end: None,
        }
    }

    /// Adds `other` into `self`.
    pub(crate) fn absorb(&mut self, other: Self) -> Result<(), String> {
        self.latency
            .add(&other.latency)
            .map_err(|e| format!("merging latency histograms: {e:?}"))?;
        self.requests += other.requests;
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        for (k, v) in other.oauth_errors {
            *self.oauth_errors.entry(k).or_default() += v;
        }
        self.transport_errors += other.transport_errors;
        self.refreshes += other.refreshes;
        self.grace_retries += other.grace_retries;
        self.replays += other.replays;
        self.revocations += other.revocations;
        self.families_issued += other.families_issued;
        self.errors += other.errors;
        self.samples.extend(other.samples);
        self.lost_rotations += other.lost_rotations;
        self.final_ok += other.final_ok;
        self.loop_end = self.loop_end.max(other.loop_end);
        Ok(())
    }
}

/// The current token and the two before it.
#[derive(Default)]
struct Chain {
    current: Option<String>,
    /// The immediate predecessor, and when it was retired.
    previous: Option<(String, Instant)>,
    /// The token before that: presenting it is always reuse.
    older: Option<String>,
}

/// One connection.
pub(crate) struct Worker<'a> {
    id: usize,
    config: &'a Config,
    urls: &'a Urls,
    agent: ureq::Agent,
    rng: fastrand::Rng,
    chain: Chain,
    stats: Stats,
    /// Whether requests are counted (not during setup and the final check).
    counting: bool,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(id: usize, config: &'a Config, urls: &'a Urls, empty: Histogram<u64>) -> Self {
        let seed = config
            .seed
            .wrapping_add((id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self {
            id,
            config,
            urls,
            agent: agent(config.request_timeout),
            rng: fastrand::Rng::with_seed(seed),
            chain: Chain::default(),
            stats: Stats::new(empty),
            counting: false,
        }
    }

    /// Creates the connection's first family.
    pub(crate) fn setup(&mut self) -> Result<(), String> {
        match self.issue() {
            Ok(token) => {
                self.chain.current = Some(token);
                Ok(())
            }
            Err(reason) => Err(format!("connection {}: creating a family: {reason}", self.id)),
        }
    }

    /// The measured loop: `steps` steps if given (the same work on any
    /// machine), else until `deadline`.
    pub(crate) fn run(&mut self, deadline: Instant, steps: Option<u64>) {
        self.counting = true;
        match steps {
            Some(n) => (0..n).for_each(|_| self.step()),
            None => {
                while Instant::now() < deadline {
                    self.step();
                }
            }
        }
        self.stats.loop_end = Some(Instant::now());
        self.counting = false;
    }

    /// Refreshes the current token once more: refused means a lost rotation.
    pub(crate) fn final_check(&mut self) {
        let Some(current) = self.chain.current.clone() else {
            return;
        };
        let answer = self.refresh(&current);
        match answer {
            Answer::Http {
                status: 200,
                refresh_token: Some(_),
                ..
            } => self.stats.final_ok += 1,
            other => {
                self.stats.lost_rotations += 1;
                let reason = format!(
                    "connection {}: lost rotation: the current token was refused at the end: {}",
                    self.id,
                    other.describe()
                );
                self.sample(reason);
            }
        }
    }

    pub(crate) fn into_stats(self) -> Stats {
        self.stats
    }

    fn step(&mut self) {
        let Some(current) = self.chain.current.clone() else {
            // The last family creation failed; try again, without spinning.
            std::thread::sleep(Duration::from_millis(10));
            self.new_family();
            return;
        };
        let c = self.config;
        let roll = self.rng.f64();
        if roll < c.replay_share {
            if let Some(older) = self.chain.older.clone() {
                return self.replay(&older, &current);
            }
        } else if roll < c.replay_share + c.revoke_share {
            return self.revoke(&current);
        } else if roll < c.replay_share + c.revoke_share + c.retry_share {
            let fresh = self
                .chain
                .previous
                .as_ref()
                .filter(|(_, retired)| retired.elapsed() < c.grace / 2)
                .map(|(t, _)| t.clone());
            if let Some(previous) = fresh {
                return self.retry(&previous, &current);
            }
        }
        self.rotate(current);
    }

    /// The normal step: refresh the current token and follow the chain.
    fn rotate(&mut self, current: String) {
        let started = Instant::now();
        let answer = self.refresh(&current);
        if self.counting {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.latency.saturating_record(us.max(1));
        }
        match answer {
            Answer::Http {
                status: 200,
                refresh_token: Some(next),
                ..
            } => {
                self.stats.refreshes += 1;
                self.chain.older = self.chain.previous.take().map(|(t, _)| t);
                self.chain.previous = Some((current, Instant::now()));
                self.chain.current = Some(next);
            }
            ref a @ Answer::Http { status, .. } if status >= 500 => {
                // "Nothing was changed": retry with the same token next time.
                self.error(format!("a refresh answered {}", a.describe()));
            }
            a @ Answer::Transport(_) => {
                // The rotation may have happened: the retry with the same
                // token falls in the grace window and gets the successor.
                self.error(format!("a refresh failed: {}", a.describe()));
            }
            a if a.is(400, "invalid_grant") => {
                self.error("a refresh of the live current token was refused (400 invalid_grant)".to_owned());
                self.new_family();
            }
            a => {
                self.error(format!("a refresh of the current token answered {}", a.describe()));
            }
        }
    }

    /// Replays a token two generations old: reuse, which kills the family.
    fn replay(&mut self, older: &str, current: &str) {
        let answer = self.refresh(older);
        if answer.is(400, "invalid_grant") {
            let after = self.refresh(current);
            if after.is(400, "invalid_grant") {
                self.stats.replays += 1;
            } else {
                self.error(format!(
                    "after a detected replay the current token answered {} (the family should be revoked)",
                    after.describe()
                ));
            }
        } else {
            self.error(format!(
                "a replay of a token two generations old answered {}",
                answer.describe()
            ));
        }
        self.new_family();
    }

    /// Revokes the current token (RFC 7009), then checks it is dead.
    fn revoke(&mut self, current: &str) {
        let answer = self.post_form(&self.urls.revoke, &[("token", current)]);
        if matches!(answer, Answer::Http { status: 200, .. }) {
            let after = self.refresh(current);
            if after.is(400, "invalid_grant") {
                self.stats.revocations += 1;
            } else {
                self.error(format!("after a revocation the token answered {}", after.describe()));
            }
        } else {
            self.error(format!("a revocation answered {}", answer.describe()));
        }
        self.new_family();
    }

    /// Presents the immediate predecessor again within the grace window: the
    /// answer must carry the current token, not a new one.
    fn retry(&mut self, previous: &str, current: &str) {
        match self.refresh(previous) {
            Answer::Http {
                status: 200,
                refresh_token: Some(t),
                ..
            } if t == current => self.stats.grace_retries += 1,
            Answer::Http { status: 200, .. } => {
                self.error("a grace retry answered 200 with another token than the current one".to_owned());
                self.new_family();
            }
            a if a.is(400, "invalid_grant") => {
                self.error("a grace retry was refused (400 invalid_grant)".to_owned());
                self.new_family();
            }
            a => self.error(format!("a grace retry answered {}", a.describe())),
        }
    }

    /// Replaces a dead family with a new one (the chain starts over).
    fn new_family(&mut self) {
        self.chain = Chain::default();
        match self.issue() {
            Ok(token) => {
                self.stats.families_issued += 1;
                self.chain.current = Some(token);
            }
            Err(reason) => self.error(format!("creating a family: {reason}")),
        }
    }

    /// `POST /admin/families`: the new family's first refresh token.
    fn issue(&mut self) -> Result<String, String> {
        let body = serde_json::json!({
            "subject": format!("{}-{}", self.config.subject_prefix, self.id),
            "client_id": self.config.client.id,
            "scope": self.config.scope,
        })
        .to_string();
        let request = self
            .agent
            .post(&self.urls.families)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.config.admin_token));
        match self.answer(request.send(body.as_str())) {
            Answer::Http {
                status: 200,
                refresh_token: Some(t),
                ..
            } => Ok(t),
            a => Err(a.describe()),
        }
    }

    /// `POST /oauth/token` with `grant_type=refresh_token`.
    fn refresh(&mut self, token: &str) -> Answer {
        let urls = self.urls;
        self.post_form(
            &urls.token,
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
    }

    /// A form POST with the client's credentials added.
    fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Answer {
        let client = &self.config.client;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("client_id", &client.id));
        if let Some(secret) = &client.secret {
            form.push(("client_secret", secret));
        }
        let result = self.agent.post(url).send_form(form);
        self.answer(result)
    }

    /// Reads the whole answer (so the connection goes back to the pool)
    /// and counts it.
    fn answer(&mut self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let answer = match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                match response.body_mut().read_to_vec() {
                    Ok(bytes) => {
                        let body: Body = serde_json::from_slice(&bytes).unwrap_or_default();
                        Answer::Http {
                            status,
                            refresh_token: body.refresh_token,
                            error: body.error,
                        }
                    }
                    Err(e) => Answer::Transport(format!("reading the body of a {status} answer: {e}")),
                }
            }
            Err(e) => Answer::Transport(e.to_string()),
        };
        if self.counting {
            self.stats.requests += 1;
            match &answer {
                Answer::Http { status, error, .. } => {
                    *self.stats.status.entry(*status).or_default() += 1;
                    if let Some(code) = error {
                        *self.stats.oauth_errors.entry(safe_code(code).to_owned()).or_default() += 1;
                    }
                }
                Answer::Transport(_) => self.stats.transport_errors += 1,
            }
        }
        answer
    }

    /// Counts an unexpected answer and keeps its reason if there is room.
    fn error(&mut self, what: String) {
        self.stats.errors += 1;
        self.sample(format!("connection {}: {what}", self.id));
    }

    fn sample(&mut self, reason: String) {
        if self.stats.samples.len() < SAMPLES_PER_CONNECTION {
            self.stats.samples.push(reason);
        }
    }
}
