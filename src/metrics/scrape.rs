//! A scrape: what this node recorded, and what every node shares read from the store.

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::Metrics;
use crate::calendar::vietnam_time;
use crate::kpi::report::{self, Figures, Period, ReportError};
use crate::kpi::{self, WHOLE_CASE};
use crate::store::{Store, StoreError};

/// The most due timers a scrape counts: a backlog larger than this is reported as this.
const DUE_COUNTED: usize = 10_000;

/// The OpenMetrics text format, which Prometheus asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus's classic text format, for every other reader (`promtool check metrics`, older
/// scrapers, a person with curl).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape in OpenMetrics text rewritten in the classic text format, which differs in three
/// ways: a counter's family is named with its samples' `_total` suffix, there are no `# UNIT`
/// lines, and no `# EOF`.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenIncident {
    reason: String,
    workflow: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KpiLabels {
    workflow: String,
    /// `*` for the cases as a whole.
    agency: String,
    step: String,
    /// `finished_on_time`, `finished_extended`, `finished_late`, `finished_without_deadline`,
    /// `open_in_time`, `open_overdue`, `open_without_deadline` or `open_awaiting_citizen`.
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLabels {
    workflow: String,
    agency: String,
    step: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

type Gauges<L> = Family<L, Gauge>;
type Ratios<L> = Family<L, Gauge<f64, std::sync::atomic::AtomicU64>>;

impl Metrics {
    /// The whole scrape: this node's series, then the shared ones as the store has them at
    /// `now`, with the on-time figures of the month of `now` (Vietnam time) so far.
    pub async fn scrape<S: Store>(&self, store: &S, now: Timestamp) -> Result<String, StoreError> {
        let today = now.to_zoned(vietnam_time()).date();
        let mut shared = Registry::with_prefix("civicflow");

        let groups = store.groups();
        shared.register(
            "store_commits",
            "Commits this node made durable",
            ConstCounter::new(groups.commits),
        );
        shared.register(
            "store_commit_groups",
            "Groups those commits were made durable in (sled: disk syncs; PostgreSQL: transactions); commits per group is the group size",
            ConstCounter::new(groups.groups),
        );
        let writable = Gauge::<i64>::default();
        writable.set(i64::from(store.writable().await.is_ok()));
        shared.register(
            "store_writable",
            "1 while the store takes writes; 0 while it cannot (a full disk, a failing device, a standby database): /v1/ready says not ready meanwhile",
            writable,
        );
        let due = store.due_timers(now, DUE_COUNTED).await?.len();
        let timers_due = Gauge::<i64>::default();
        timers_due.set(i64::try_from(due).unwrap_or(i64::MAX));
        shared.register(
            "timers_due",
            format!(
                "Timers due and not yet fired, across every node (counted up to {DUE_COUNTED})"
            ),
            timers_due,
        );

        let incidents: Gauges<OpenIncident> = Family::default();
        let from = kpi::INCIDENTS;
        let to = format!("{}\u{10ffff}", kpi::INCIDENTS);
        for (name, n) in store.counts(from, &to).await? {
            if let Some((reason, workflow)) = kpi::parse_incident(&name) {
                incidents
                    .get_or_create(&OpenIncident {
                        reason: reason.to_owned(),
                        workflow: workflow.to_owned(),
                    })
                    .inc_by(n);
            }
        }
        shared.register(
            "incidents_open",
            "Incidents open now (across every node), by reason and workflow",
            incidents,
        );

        let period = Period {
            from: today.first_of_month(),
            to: today,
            workflow: None,
            agency: None,
        };
        let month = match report::read(store, &period).await {
            Ok(r) => r,
            Err(ReportError::Store(e)) => return Err(e),
            Err(e) => unreachable!("the month so far is a valid period: {e}"),
        };
        let states: Gauges<KpiLabels> = Family::default();
        let rates: Ratios<RateLabels> = Family::default();
        for w in &month.workflows {
            let whole = w.cases.iter().map(|f| (WHOLE_CASE, WHOLE_CASE, f));
            let steps = w
                .steps
                .iter()
                .map(|s| (s.agency.as_str(), s.step.as_str(), &s.figures));
            for (agency, step, f) in whole.chain(steps) {
                let labels = |state: &str| KpiLabels {
                    workflow: w.workflow.clone(),
                    agency: agency.to_owned(),
                    step: step.to_owned(),
                    state: state.to_owned(),
                };
                for (state, n) in counts(f) {
                    states
                        .get_or_create(&labels(state))
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                if let Some(rate) = f.on_time_rate {
                    rates
                        .get_or_create(&RateLabels {
                            workflow: w.workflow.clone(),
                            agency: agency.to_owned(),
                            step: step.to_owned(),
                        })
                        .set(rate);
                }
            }
        }
        shared.register(
            "kpi_month_steps",
            "The month so far (Vietnam time): steps and whole cases (agency and step *) finished in it, by timeliness, and those started in it and open",
            states,
        );
        shared.register_with_unit(
            "kpi_month_on_time",
            "The month so far: finished on time among those finished with a statutory due time",
            Unit::Ratios,
            rates,
        );

        let pending: Gauges<WebhookLabels> = Family::default();
        for hook in store.webhooks().await? {
            let n = store.feed_count(hook.cursor).await?;
            pending
                .get_or_create(&WebhookLabels { webhook: hook.id })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        shared.register(
            "webhook_pending",
            "Notifications not yet acknowledged, by webhook",
            pending,
        );

        let mut text = String::new();
        encode_registry(&mut text, &self.registry).expect("writing to a String cannot fail");
        encode_registry(&mut text, &shared).expect("writing to a String cannot fail");
        encode_eof(&mut text).expect("writing to a String cannot fail");
        Ok(text)
    }
}

/// The counts of a row of the on-time table, by state.
fn counts(f: &Figures) -> [(&'static str, u64); 8] {
    [
        ("finished_on_time", f.finished_on_time),
        ("finished_extended", f.finished_extended),
        ("finished_late", f.finished_late),
        ("finished_without_deadline", f.finished_without_deadline),
        ("open_in_time", f.open_in_time),
        ("open_overdue", f.open_overdue),
        ("open_without_deadline", f.open_without_deadline),
        ("open_awaiting_citizen", f.open_awaiting_citizen),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_units_nor_end() {
        let open = "# HELP c_started Cases started.\n# TYPE c_started counter\n\
                    c_started_total{workflow=\"w\"} 2\n\
                    # HELP c_took Took.\n# TYPE c_took histogram\n# UNIT c_took seconds\n\
                    c_took_count 1\n# EOF\n";
        assert_eq!(
            classic(open),
            "# HELP c_started_total Cases started.\n# TYPE c_started_total counter\n\
             c_started_total{workflow=\"w\"} 2\n\
             # HELP c_took Took.\n# TYPE c_took histogram\nc_took_count 1\n"
        );
    }
}
