//! Finding cases and incidents by reading an index, never by scanning every case: the portal's
//! "cases of this citizen", the operators' incident list. Pages are cut by an opaque cursor, so
//! a list stays consistent while cases change under it.

use jiff::Timestamp;
use serde::Serialize;

use super::{IndexRange, Order, Position, Store, StoreError};
use crate::case::{
    Case, CaseId, CaseStatus, DueDimension, Extension, IncidentDimension, IncidentReason,
    SupplementRequest, Tier, due_value, index, parse_due_value, parse_incident_value,
};

/// The most entries one request reads from an index to fill a page: filters the index cannot
/// answer alone may make a page come back short, with a cursor to go on from.
const SCAN_BUDGET: usize = 5_000;

/// The most cases or incidents in one page.
pub const MAX_PAGE: usize = 500;

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub workflow: Option<String>,
    pub step: Option<String>,
    pub agency: Option<String>,
    pub reason: Option<IncidentReason>,
    /// Opened at or after.
    pub opened_after: Option<Timestamp>,
    /// Opened before.
    pub opened_before: Option<Timestamp>,
}

/// One open incident, with what an operator needs to pick it up.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IncidentRow {
    #[schema(value_type = String, format = Uuid)]
    pub case_id: CaseId,
    pub workflow: String,
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    pub reason: IncidentReason,
    pub message: String,
    pub opened_at: Timestamp,
    pub case_status: CaseStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Cases this page stepped over because their record is damaged (`civicflow store check`
    /// lists every damaged record).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>, format = Uuid)]
    pub damaged: Vec<CaseId>,
}

/// Reads case `id` for a listing: a damaged record is noted in `damaged` and stepped over.
async fn listed<S: Store>(
    store: &S,
    id: CaseId,
    damaged: &mut Vec<CaseId>,
) -> Result<Option<Case>, StoreError> {
    match store.case(id).await {
        Err(StoreError::Damaged { .. }) => {
            damaged.push(id);
            Ok(None)
        }
        read => read,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the cursor `{0}` is not one this server gave out")]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IncidentFilter {
    /// The index dimension that answers most of this filter by itself.
    fn dimension(&self) -> IncidentDimension {
        match (&self.workflow, &self.step, &self.agency, self.reason) {
            (Some(workflow), Some(step), _, _) => IncidentDimension::Step {
                workflow: workflow.clone(),
                step: step.clone(),
            },
            (_, _, Some(agency), _) => IncidentDimension::Agency(agency.clone()),
            (Some(workflow), _, _, _) => IncidentDimension::Workflow(workflow.clone()),
            (_, _, _, Some(reason)) => IncidentDimension::Reason(reason),
            _ => IncidentDimension::All,
        }
    }

    fn admits(&self, case: &Case, row: &IncidentRow) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == case.workflow)
            && self
                .step
                .as_ref()
                .is_none_or(|s| row.step.as_ref() == Some(s))
            && self
                .agency
                .as_ref()
                .is_none_or(|a| row.agency.as_ref() == Some(a))
            && self.reason.is_none_or(|r| r == row.reason)
    }
}

/// Open incidents matching `filter`, oldest first (`Ascending`) or newest first.
pub async fn incidents<S: Store>(
    store: &S,
    filter: &IncidentFilter,
    order: Order,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Listing<IncidentRow>, QueryError> {
    let prefix = filter.dimension().prefix();
    let from = match filter.opened_after {
        Some(t) => format!("{prefix}{}", due_value(t)),
        None => prefix.clone(),
    };
    let to = match filter.opened_before {
        Some(t) => format!("{prefix}{}", due_value(t)),
        None => prefix_end(&prefix),
    };
    let range = IndexRange {
        from,
        to,
        after: cursor.map(decode_cursor).transpose()?,
        order,
        limit: limit.clamp(1, MAX_PAGE),
    };
    scan(store, index::INCIDENT, range, |value, case_id, case| {
        let (opened_at, reason, step) = parse_incident_value(value)?;
        let incident = case.incidents.iter().find(|i| {
            i.reason == reason
                && i.step == step
                && i.opened_at.as_millisecond() == opened_at.as_millisecond()
        })?;
        let row = IncidentRow {
            case_id,
            workflow: case.workflow.clone(),
            version: case.version,
            agency: step
                .as_ref()
                .and_then(|s| case.steps.get(s))
                .map(|s| s.agency.clone()),
            step,
            reason,
            message: incident.message.clone(),
            opened_at: incident.opened_at,
            case_status: case.status,
        };
        filter.admits(case, &row).then_some(row)
    })
    .await
}

/// Reads index `name` over `range` a page at a time, each entry's case from its record (the
/// case may have changed since the index was read: its record is the truth), until the page
/// has `range.limit` rows, the range ends, or the scan budget is spent. `row` makes an entry's
/// row, or `None` to step over it.
async fn scan<S: Store, T>(
    store: &S,
    name: &'static str,
    mut range: IndexRange,
    mut row: impl FnMut(&str, CaseId, &Case) -> Option<T>,
) -> Result<Listing<T>, QueryError> {
    let limit = range.limit;
    let mut items = Vec::new();
    let mut damaged = Vec::new();
    let mut scanned = 0;
    loop {
        let entries = store.index_range(name, &range).await?;
        let exhausted = entries.len() < range.limit;
        for (value, case_id) in entries {
            scanned += 1;
            range.after = Some((value.clone(), case_id));
            let Some(case) = listed(store, case_id, &mut damaged).await? else {
                continue;
            };
            if let Some(found) = row(&value, case_id, &case) {
                items.push(found);
                if items.len() == limit {
                    return Ok(Listing {
                        items,
                        next: range.after.as_ref().map(encode_cursor),
                        damaged,
                    });
                }
            }
        }
        if exhausted || scanned >= SCAN_BUDGET {
            let next = if exhausted {
                None
            } else {
                range.after.as_ref().map(encode_cursor)
            };
            return Ok(Listing {
                items,
                next,
                damaged,
            });
        }
    }
}

/// Which open due times the deadline list shows; every field given narrows.
#[derive(Debug, Clone, Default)]
pub struct DueFilter {
    pub workflow: Option<String>,
    pub agency: Option<String>,
    /// Escalated to this party (`supervisor`, `operator`, `agency:<id>`).
    pub escalated_to: Option<String>,
    /// Due before this time: `now` lists the overdue only.
    pub due_before: Option<Timestamp>,
}

/// One open due time: a step at its agency, or a running case as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DueRow {
    #[schema(value_type = String, format = Uuid)]
    pub case_id: CaseId,
    pub workflow: String,
    pub version: u32,
    /// The step; absent for the case as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub due_at: Timestamp,
    /// Its due time has passed.
    pub overdue: bool,
    /// To whom it was escalated when it became overdue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<String>,
    /// The case's apology and new date, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    /// The case's tier against its life event's legal time limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The request the step waits on, when it waits for the citizen's supplement: `due_at`
    /// is then the citizen's deadline, not the agency's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplement: Option<SupplementRequest>,
}

impl DueFilter {
    fn dimension(&self) -> DueDimension {
        match (&self.escalated_to, &self.agency) {
            (Some(to), _) => DueDimension::Escalated(to.clone()),
            (_, Some(agency)) => DueDimension::Agency(agency.clone()),
            _ => DueDimension::All,
        }
    }
}

/// Open due times matching `filter`, the earliest first: the most overdue lead.
pub async fn deadlines<S: Store>(
    store: &S,
    filter: &DueFilter,
    now: Timestamp,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Listing<DueRow>, QueryError> {
    let prefix = filter.dimension().prefix();
    let to = match filter.due_before {
        Some(t) => format!("{prefix}{}", due_value(t)),
        None => prefix_end(&prefix),
    };
    let range = IndexRange {
        from: prefix,
        to,
        after: cursor.map(decode_cursor).transpose()?,
        order: Order::Ascending,
        limit: limit.clamp(1, MAX_PAGE),
    };
    scan(store, index::DUE, range, |value, case_id, case| {
        let (due_at, step) = parse_due_value(value)?;
        let whole = step == crate::case::deadlines::WHOLE_CASE;
        let current = if whole {
            case.due_at
        } else {
            case.open_due(&step)
        };
        if case.status != CaseStatus::Running
            || current.map(|d| d.as_millisecond()) != Some(due_at.as_millisecond())
            || filter
                .workflow
                .as_ref()
                .is_some_and(|w| *w != case.workflow)
        {
            return None;
        }
        let agency = (!whole)
            .then(|| case.steps.get(&step).map(|s| s.agency.clone()))
            .flatten();
        if filter
            .agency
            .as_ref()
            .is_some_and(|a| agency.as_ref() != Some(a))
        {
            return None;
        }
        Some(DueRow {
            case_id,
            workflow: case.workflow.clone(),
            version: case.version,
            escalated_to: case.deadlines.escalated.get(&step).cloned(),
            extension: case.deadlines.extension.clone(),
            tier: case.deadlines.life_event.as_ref().map(|l| l.tier),
            // A request is open only while its step waits for it (`Change::close_step`).
            supplement: (!whole)
                .then(|| case.deadlines.open_request(&step).cloned())
                .flatten(),
            step: (!whole).then_some(step),
            agency,
            due_at,
            overdue: due_at <= now,
        })
    })
    .await
}

#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// `name=value` of a business key.
    pub key: Option<String>,
    pub workflow: Option<String>,
    pub status: Option<CaseStatus>,
}

impl CaseFilter {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.workflow.is_none() && self.status.is_none()
    }
}

/// Cases matching `filter`, oldest first (`Ascending`) or newest first, read from the index of
/// the most selective field given (a business key, then the workflow, then the status).
pub async fn cases<S: Store>(
    store: &S,
    filter: &CaseFilter,
    order: Order,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Listing<Case>, QueryError> {
    let (name, value) = match (&filter.key, &filter.workflow, filter.status) {
        (Some(key), _, _) => (index::KEY, key.clone()),
        (_, Some(workflow), _) => (index::WORKFLOW, workflow.clone()),
        (_, _, Some(status)) => (index::STATUS, status.as_str().to_owned()),
        _ => (index::STATUS, CaseStatus::Running.as_str().to_owned()),
    };
    let limit = limit.clamp(1, MAX_PAGE);
    let mut after = match cursor {
        Some(c) => Some(CaseId::parse_str(c).map_err(|_| QueryError::BadCursor(c.to_owned()))?),
        None => None,
    };
    let mut items = Vec::new();
    let mut damaged = Vec::new();
    let mut scanned = 0;
    loop {
        let page = store.cases_by(name, &value, after, order, limit).await?;
        for id in &page.ids {
            scanned += 1;
            after = Some(*id);
            let Some(case) = listed(store, *id, &mut damaged).await? else {
                continue;
            };
            let fits = filter.workflow.as_ref().is_none_or(|w| *w == case.workflow)
                && filter.status.is_none_or(|s| s == case.status);
            if fits {
                items.push(case);
                if items.len() == limit {
                    return Ok(Listing {
                        items,
                        next: after.map(|c| c.to_string()),
                        damaged,
                    });
                }
            }
        }
        if page.next.is_none() {
            return Ok(Listing {
                items,
                next: None,
                damaged,
            });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(Listing {
                items,
                next: after.map(|c| c.to_string()),
                damaged,
            });
        }
    }
}

/// The first string after every string that starts with `prefix`.
fn prefix_end(prefix: &str) -> String {
    // Index values are text; U+10FFFF sorts after every character they hold.
    format!("{prefix}\u{10FFFF}")
}

fn encode_cursor((value, case): &Position) -> String {
    hex::encode(format!("{value}\n{case}"))
}

fn decode_cursor(cursor: &str) -> Result<Position, QueryError> {
    let bad = || QueryError::BadCursor(cursor.to_owned());
    let text = String::from_utf8(hex::decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (value, case) = text.split_once('\n').ok_or_else(bad)?;
    let case = CaseId::parse_str(case).map_err(|_| bad())?;
    Ok((value.to_owned(), case))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_it_was_written() {
        let at = (
            "reason:deadline_missed/000001790000000/deadline_missed/birth".to_owned(),
            CaseId::now_v7(),
        );
        assert_eq!(decode_cursor(&encode_cursor(&at)).unwrap(), at);
        for bad in ["zz", "abc", "00", "ü"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
