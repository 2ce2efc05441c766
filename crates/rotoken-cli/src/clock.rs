//! `rotoken clock`: the store's clock floor, as this server's clock sees it,
//! and the operator's repair when a server with a clock set wrong persisted
//! a floor far ahead (docs/design.md, "Time").

use clap::Subcommand;
use serde::Serialize;

use crate::Global;
use crate::commands::open;
use crate::output::{self, CliError};

/// `rotoken clock ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ClockCommand {
    /// Lower the store's clock floor to this machine's clock, if it is ahead
    /// of it (a server with its clock set days ahead wrote it; engines do not
    /// adopt such a floor, and `rotoken check` reports it). Records a
    /// `clock_floor_lowered` event. Run it on a machine whose clock is right.
    LowerFloor,
}

#[derive(Serialize)]
struct LoweredJson {
    /// The floor before, unix ms (`null`: none was stored).
    floor_before_ms: Option<i64>,
    /// This machine's clock, unix ms: the floor now, if it was ahead.
    clock_ms: i64,
    /// True if the floor was ahead and is now lowered.
    lowered: bool,
}

pub(crate) fn run(g: &Global, command: &ClockCommand) -> Result<(), CliError> {
    match command {
        ClockCommand::LowerFloor => {
            let engine = open(g, false, false)?;
            let clock_ms = i64::try_from(engine.clock().now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
            let before = engine.lower_clock_floor()?;
            output::print_json(&LoweredJson {
                floor_before_ms: before,
                clock_ms,
                lowered: before.is_some_and(|f| f > clock_ms),
            })
        }
    }
}
