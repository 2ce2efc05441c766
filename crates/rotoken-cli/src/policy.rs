//! `rotoken policy show` and `rotoken policy set`: the database's policy,
//! which every opener runs by, and the check that refuses other commands
//! given policy flags that disagree with it.

use clap::{Args, Subcommand};
use rotoken::{Engine, Policy};
use serde::Serialize;

use crate::Global;
use crate::commands::{open, with_flags};
use crate::output::{self, CliError};

/// `rotoken policy`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the database's policy and the history of its changes.
    Show,
    /// Change the database's policy for every server and command: the
    /// policy flags given (--grace-secs, --idle-days, --absolute-days,
    /// --revoked-retention-secs, --event-retention-days,
    /// --max-families-per-user) replace the stored values. The database
    /// must not be held by `rotoken serve` (redb); for PostgreSQL, servers
    /// pick the change up at their next gc tick.
    Set(SetArgs),
}

/// `rotoken policy set`.
#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// Who makes the change, recorded in the history [default: $USER].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

/// A policy as printed.
#[derive(Debug, Serialize)]
struct PolicyJson {
    grace_secs: u64,
    idle_lifetime_secs: u64,
    absolute_lifetime_secs: u64,
    revoked_retention_secs: u64,
    event_retention_secs: u64,
    max_generations: u32,
    max_families_per_user: u32,
}

impl From<&Policy> for PolicyJson {
    fn from(p: &Policy) -> Self {
        Self {
            grace_secs: p.grace.as_secs(),
            idle_lifetime_secs: p.idle_lifetime.as_secs(),
            absolute_lifetime_secs: p.absolute_lifetime.as_secs(),
            revoked_retention_secs: p.revoked_retention.as_secs(),
            event_retention_secs: p.event_retention.as_secs(),
            max_generations: p.max_generations,
            max_families_per_user: p.max_families_per_user,
        }
    }
}

#[derive(Debug, Serialize)]
struct ChangeJson {
    at: String,
    by: String,
    old: PolicyJson,
    new: PolicyJson,
}

#[derive(Debug, Serialize)]
struct ShowJson {
    policy: PolicyJson,
    history: Vec<ChangeJson>,
}

pub(crate) fn run(g: &Global, command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::Show => {
            let engine = open_as_stored(g)?;
            show(&engine)
        }
        PolicyCommand::Set(a) => {
            let engine = open_as_stored(g)?;
            let wanted = with_flags(g, engine.policy());
            let by =
                a.by.or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "rotoken-cli".to_owned());
            engine
                .set_policy(wanted, &by)
                .map_err(|e| CliError::from_code(e.code(), e))?;
            show(&engine)
        }
    }
}

fn show(engine: &Engine) -> Result<(), CliError> {
    let history = engine
        .policy_history()?
        .into_iter()
        .map(|c| ChangeJson {
            at: output::rfc3339(c.at),
            by: c.by,
            old: PolicyJson::from(&c.old),
            new: PolicyJson::from(&c.new),
        })
        .collect();
    output::print_json(&ShowJson {
        policy: PolicyJson::from(&engine.policy()),
        history,
    })
}

/// Opens the existing database without comparing the policy flags (they
/// are the change `set` makes).
fn open_as_stored(g: &Global) -> Result<Engine, CliError> {
    open(g, false, false)
}

/// Refuses a command whose policy flags disagree with the database's
/// policy: they would be silently ignored (every opener runs by the stored
/// policy), and a `gc` with other rules than the server is what the stored
/// policy exists to prevent.
pub(crate) fn check_flags(g: &Global, engine: &Engine) -> Result<(), CliError> {
    let stored = engine.policy();
    let wanted = with_flags(g, stored.clone());
    if !same_rules(&wanted, &stored) {
        return Err(CliError::refused(
            "policy_mismatch",
            "the policy flags differ from the database's policy, which every server and command runs by; \
             change it with `rotoken policy set` (see `rotoken policy show`)",
        ));
    }
    Ok(())
}

/// True if `a` and `b` have the same rules (durability aside).
pub(crate) fn same_rules(a: &Policy, b: &Policy) -> bool {
    serde_json::to_value(PolicyJson::from(a)).ok() == serde_json::to_value(PolicyJson::from(b)).ok()
}
