//! The whole-store consistency check behind `rotoken check`.

use std::collections::BTreeMap;

use crate::core::Core;
use crate::error::StoreError;
use crate::keys::TagKind;
use crate::protocol::Protocol;
use crate::record::{Event, FamilyState};
use crate::types::{CheckReport, Problem};

/// Families and events read per store call.
const PAGE: usize = 1024;

impl Core {
    /// See [`crate::Engine::check`].
    pub(crate) fn check(&self) -> Result<CheckReport, StoreError> {
        let now = self.now();
        let read = self.store.begin_read()?;
        let mut report = CheckReport::default();
        if let Some(floor) = self.floor_ignored() {
            // Not adopted (no harm done here), but every opener must say
            // so until an operator lowers it.
            let ahead = floor.saturating_sub(crate::clock::to_millis(self.clock().now())) / 1000;
            report.problems.push(problem(
                "meta",
                "clock_floor".into(),
                format!(
                    "the stored clock floor is {ahead} s ahead of this server's clock (a server with a clock \
                     set wrong wrote it); fix that clock, then run `rotoken clock lower-floor` here"
                ),
            ));
        }
        let mut expected = BTreeMap::new();
        let mut after = None;
        loop {
            let page = read.scan_families(after.as_ref(), PAGE)?;
            let Some(last) = page.last().map(|(f, _)| *f) else {
                break;
            };
            for (family, bytes) in page {
                report.families += 1;
                let keys = self.check_family(&family, &bytes, now, &mut report);
                expected.insert(family, keys);
            }
            after = Some(last);
        }
        let indexes = read.check_indexes(&expected)?;
        report.index_entries = indexes.entries;
        for (table, family, what) in indexes.problems {
            report.problems.push(problem(table, family.to_string(), what));
        }
        let mut after = 0;
        loop {
            let page = read.events(after, PAGE)?;
            let Some(last) = page.last().map(|(seq, _)| *seq) else {
                break;
            };
            for (seq, value) in page {
                report.events += 1;
                if let Err(e) = Event::decode(seq, &value) {
                    report.problems.push(problem("events", seq.to_string(), e.to_string()));
                }
            }
            after = last;
        }
        Ok(report)
    }

    /// Checks one family's record; its index keys if the record decodes.
    fn check_family(
        &self,
        family: &crate::FamilyId,
        bytes: &[u8],
        now: i64,
        report: &mut CheckReport,
    ) -> Option<crate::store::IndexKeys> {
        let p = &self.protocol;
        let mut flag = |what: String| report.problems.push(problem("families", family.to_string(), what));
        let rec = match p.decode_record(family, bytes) {
            Ok(r) => r,
            Err(e) => {
                flag(e.to_string());
                return None;
            }
        };
        match p.grant_if_openable(family, &rec) {
            Ok(None) if !p.is_live(&rec, now) => {}
            Ok(None) => flag("a live family's grant is sealed with a retired key".into()),
            Ok(Some(g)) => {
                if p.keys.tag(TagKind::Subject, &g.subject) != rec.subject_tag
                    || p.keys.tag(TagKind::Client, &g.client_id) != rec.client_tag
                {
                    flag("grant does not match the record's tags".into());
                }
            }
            Err(e) => flag(e.to_string()),
        }
        if rec.state == FamilyState::Active {
            // The gc time may lag the idle deadline (gc moves it lazily) but
            // never the absolute expiry, which no policy change moves.
            if rec.gc_at > rec.expires_at {
                report.problems.push(problem(
                    "by_expiry",
                    family.to_string(),
                    "expiry entry lies after the family's absolute expiry".into(),
                ));
            }
            if (rec.generation > 0) != rec.sealed_successor.is_some() {
                report.problems.push(problem(
                    "families",
                    family.to_string(),
                    "sealed successor present iff generation > 0 is violated".into(),
                ));
            }
            report.active += 1;
        }
        Some(Protocol::index_keys(&rec))
    }
}

fn problem(table: &'static str, key: String, what: String) -> Problem {
    Problem { table, key, what }
}
