//! The JSON shape of an audit event, one object per event: what
//! `GET /admin/events`, `rotoken events` and `rotoken serve --events-to`
//! print, so a SIEM parses one format whichever way it collects them.
//!
//! ```json
//! {"seq":7,"at":"2026-12-02T01:49:27.123Z","family":"9f1c…","kind":"reuse_detected","presented":3,"current":5}
//! {"seq":8,"at":"2026-12-02T01:50:02Z","family":"9f1c…","kind":"revoked","reason":"subject"}
//! ```
//!
//! `seq` increases in commit order and is never reused: a reader resumes
//! after the last `seq` it handled. An event holds the random family id
//! only, never a subject, client id or token (P1).

use rotoken::{Event, EventKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One event as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventJson {
    /// The event's sequence number.
    pub seq: u64,
    /// When it happened (RFC 3339, UTC, milliseconds when not zero).
    pub at: String,
    /// The family (32 hexadecimal characters).
    pub family: String,
    /// `reuse_detected`, `diverged`, `revoked` or `expired`.
    pub kind: String,
    /// `reuse_detected`, `diverged`: the generation of the presented token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented: Option<u32>,
    /// `reuse_detected`, `diverged`: the family's generation at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    /// `revoked`: why (`token`, `family`, `subject`, `client`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&Event> for EventJson {
    fn from(e: &Event) -> Self {
        let (presented, current, reason) = match e.kind {
            EventKind::ReuseDetected { presented, current } | EventKind::Diverged { presented, current } => {
                (Some(presented), Some(current), None)
            }
            EventKind::Revoked(r) => (None, None, Some(r.as_str().to_owned())),
            _ => (None, None, None),
        };
        Self {
            seq: e.seq,
            at: rfc3339_millis(e.at_millis),
            family: e.family.to_string(),
            kind: e.kind.as_str().to_owned(),
            presented,
            current,
            reason,
        }
    }
}

/// Unix milliseconds as RFC 3339 (UTC), or the number itself for a time
/// RFC 3339 cannot hold.
fn rfc3339_millis(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| millis.to_string())
}

/// The events of `GET /admin/events`: `{"events": [...]}`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventsJson {
    /// At most the asked number, in sequence order.
    pub events: Vec<EventJson>,
}

impl EventsJson {
    /// The answer for `events`.
    pub fn new(events: &[Event]) -> Self {
        Self {
            events: events.iter().map(EventJson::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rotoken::{FamilyId, RevokeReason};

    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 42,
            at_millis: 1_764_640_167_123,
            family: FamilyId::from_bytes([0xab; 16]),
            kind,
        }
    }

    #[test]
    fn each_kind_carries_its_fields_and_nothing_else() {
        let reuse = serde_json::to_value(EventJson::from(&event(EventKind::ReuseDetected {
            presented: 3,
            current: 5,
        })))
        .unwrap();
        assert_eq!(
            reuse,
            serde_json::json!({
                "seq": 42,
                "at": "2025-12-02T01:49:27.123Z",
                "family": "ab".repeat(16),
                "kind": "reuse_detected",
                "presented": 3,
                "current": 5,
            })
        );
        let revoked = serde_json::to_value(EventJson::from(&event(EventKind::Revoked(RevokeReason::Subject)))).unwrap();
        assert_eq!(revoked["kind"], "revoked");
        assert_eq!(revoked["reason"], "subject");
        assert!(revoked.get("presented").is_none());
        let expired = serde_json::to_value(EventJson::from(&event(EventKind::Expired))).unwrap();
        assert_eq!(expired.as_object().unwrap().len(), 4, "{expired}");
    }

    #[test]
    fn a_line_reads_back_as_written() {
        let e = EventJson::from(&event(EventKind::Diverged {
            presented: 1,
            current: 0,
        }));
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<EventJson>(&line).unwrap(), e);
    }

    #[test]
    fn whole_seconds_have_no_fraction_and_absurd_times_stay_numbers() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_millis(i64::MAX), i64::MAX.to_string());
    }
}
