//! The checked, compiled form of definitions that the engine runs: expressions compiled once,
//! durations and deadlines parsed, schemas turned into validators, steps in dependency order.
//! Built only from a [`Catalog`] that passed every check, so compiling here cannot fail on
//! anything but an inconsistency between the checker and this module.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::case::masking::Personal;
use crate::workflow::catalog::{self, Catalog};
use crate::workflow::deadline::{
    self as terms, Consequences, Deadline, ExtensionRule, LifeEventRule, Silence, SupplementRule,
};
use crate::workflow::diagnostic::Diagnostic;
use crate::workflow::exchange::{Exchange, Retention};
use crate::workflow::expr::{self, EvalError, Expr, Input};
use crate::workflow::spec::{
    AdapterSpec, BreachSpec, ChainOutcome, ExtensionSpec, Method, Mode, OnRejection, OutcomesSpec,
    RetrySpec, TriggerSpec, WorkflowSpec,
};
use crate::workflow::triggers::{EventOn, On, Trigger, WaitFor, source_taken};

/// Why a directory of definitions cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Every problem `civicflow validate` reports for these files.
    #[error("{} problem(s) in the definitions; `civicflow validate` shows the same", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

#[derive(Debug, thiserror::Error)]
#[error("{what} in {definition}: {detail}")]
pub struct CompileError {
    pub definition: String,
    pub what: String,
    pub detail: String,
}

/// JSON with `${ … }` leaves: the form of `with`, request bodies and outputs.
#[derive(Debug, Clone)]
pub enum Template {
    Literal(Value),
    Expr(Expr),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

impl Template {
    pub fn compile(value: &Value) -> Result<Template, String> {
        Ok(match value {
            Value::String(s) => match expr::inner(s) {
                Some(src) => Template::Expr(Expr::compile(src)?),
                None => Template::Literal(value.clone()),
            },
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .map(Template::compile)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Template::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    pub fn eval(&self, context: &Value) -> Result<Value, EvalError> {
        match self {
            Template::Literal(v) => Ok(v.clone()),
            _ => self.eval_in(&Input::new(context)),
        }
    }

    pub fn eval_in(&self, input: &Input) -> Result<Value, EvalError> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Expr(e) => e.eval_in(input)?,
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.eval_in(input))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => {
                let mut out = Map::new();
                for (k, t) in fields {
                    out.insert(k.clone(), t.eval_in(input)?);
                }
                Value::Object(out)
            }
        })
    }
}

/// A JSON Schema ready to validate.
pub struct Schema {
    validator: jsonschema::Validator,
    /// What the schema marks personal (`x-personal`), for masking.
    personal: Personal,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

/// A value's mismatch with a schema: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SchemaViolation {
    /// JSON Pointer into the value, e.g. `/child/date_of_birth`.
    pub field: String,
    pub message: String,
}

impl SchemaViolation {
    /// Violations as one line of prose: `/field message; /other message`.
    pub fn prose(violations: &[SchemaViolation]) -> String {
        violations
            .iter()
            .map(|v| format!("{} {}", v.field, v.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Schema {
    fn compile(schema: &BTreeMap<String, Value>) -> Result<Schema, String> {
        let document = Value::Object(schema.clone().into_iter().collect());
        jsonschema::options()
            .should_validate_formats(true)
            .build(&document)
            .map(|validator| Schema {
                validator,
                personal: Personal::of_schema(&document),
            })
            .map_err(|e| e.to_string())
    }

    /// What the schema marks personal.
    pub fn personal(&self) -> &Personal {
        &self.personal
    }

    /// Every violation, not only the first.
    pub fn violations(&self, value: &Value) -> Vec<SchemaViolation> {
        self.validator
            .iter_errors(value)
            .map(|e| {
                let mut field = e.instance_path().to_string();
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                    field = format!("{field}/{}", property.as_str().unwrap_or_default());
                }
                SchemaViolation {
                    field,
                    message: e.to_string(),
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    pub multiplier: f64,
    pub max_duration: Duration,
}

impl Retry {
    fn compile(spec: &RetrySpec) -> Result<Retry, String> {
        Ok(Retry {
            max_attempts: spec.max_attempts,
            initial_interval: duration(&spec.initial_interval)?,
            max_interval: duration(&spec.max_interval)?,
            multiplier: spec.multiplier,
            max_duration: duration(&spec.max_duration)?,
        })
    }

    /// The ceiling of the wait before attempt `next` (2, 3, …): exponential, capped. The wait
    /// itself is drawn uniformly below it (full jitter).
    pub fn ceiling(&self, next: u32) -> Duration {
        let exp = self.multiplier.powi(next.saturating_sub(2).min(64) as i32);
        let secs = self.initial_interval.as_secs_f64() * exp;
        Duration::from_secs_f64(secs.min(self.max_interval.as_secs_f64()))
    }
}

pub fn duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("`{text}` is not a duration: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("`{text}` is negative"))
}

fn deadline(text: &str) -> Result<Deadline, String> {
    Deadline::parse(text).ok_or_else(|| format!("`{text}` is not a deadline"))
}

fn working_days(text: &Option<String>) -> Result<Option<u32>, String> {
    text.as_deref()
        .map(|t| terms::working_days(t).ok_or_else(|| format!("`{t}` is not in working days")))
        .transpose()
}

fn consequences(
    remind_before: &Option<String>,
    on_breach: &Option<BreachSpec>,
    extension: Option<&ExtensionSpec>,
) -> Result<Consequences, String> {
    Ok(Consequences {
        remind_before: working_days(remind_before)?,
        escalate_to: on_breach.as_ref().map(|b| b.escalate_to),
        extension: match extension {
            Some(e) => ExtensionRule {
                granted_by: e.granted_by.clone(),
                at_most: working_days(&e.at_most)?,
            },
            None => ExtensionRule::default(),
        },
    })
}

/// What a reply rule decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Success(Value),
    Rejection {
        reason_code: String,
        message: String,
    },
    Pending,
    /// The dossier is incomplete; the agency's list of what is missing, as its rule read it.
    NeedsSupplement(Value),
    /// No rule matched.
    NoMatch,
}

#[derive(Debug, Clone)]
pub struct Rules {
    success_when: Expr,
    success_output: Template,
    needs_supplement: Option<(Expr, Expr)>,
    rejection: Option<(Expr, Expr, Expr)>,
    pending: Option<Expr>,
}

impl Rules {
    fn compile(spec: &OutcomesSpec) -> Result<Rules, String> {
        let compile = |text: &str| Expr::compile(expr::inner(text).unwrap_or(text));
        Ok(Rules {
            success_when: compile(&spec.success.when)?,
            success_output: Template::compile(&spec.success.output)?,
            needs_supplement: match &spec.needs_supplement {
                Some(n) => Some((compile(&n.when)?, compile(&n.missing)?)),
                None => None,
            },
            rejection: match &spec.rejection {
                Some(r) => Some((
                    compile(&r.when)?,
                    compile(&r.reason_code)?,
                    compile(&r.message)?,
                )),
                None => None,
            },
            pending: match &spec.pending {
                Some(p) => Some(compile(&p.when)?),
                None => None,
            },
        })
    }

    /// Tries success, needs_supplement, rejection, pending, in that order, on a reply
    /// `{status, headers, body}`.
    pub fn decide(&self, reply: &Value) -> Result<Decision, EvalError> {
        let reply = &Input::new(reply);
        if self.success_when.eval_bool_in(reply)? {
            return Ok(Decision::Success(self.success_output.eval_in(reply)?));
        }
        if let Some((when, missing)) = &self.needs_supplement
            && when.eval_bool_in(reply)?
        {
            return Ok(Decision::NeedsSupplement(missing.eval_in(reply)?));
        }
        if let Some((when, code, message)) = &self.rejection
            && when.eval_bool_in(reply)?
        {
            let text = |v: Value| match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            return Ok(Decision::Rejection {
                reason_code: text(code.eval_in(reply)?),
                message: text(message.eval_in(reply)?),
            });
        }
        if let Some(when) = &self.pending
            && when.eval_bool_in(reply)?
        {
            return Ok(Decision::Pending);
        }
        Ok(Decision::NoMatch)
    }
}

#[derive(Debug, Clone)]
pub struct Poll {
    pub url: Expr,
    pub interval: Duration,
    pub rules: Rules,
}

#[derive(Debug)]
pub struct Adapter {
    /// `agency/name@version`.
    pub reference: String,
    pub agency: String,
    pub title: String,
    pub input: Schema,
    pub output: Schema,
    pub method: Method,
    pub path: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<Template>,
    pub reply: Rules,
    pub mode: Mode,
    pub callback: Option<Rules>,
    pub poll: Option<Poll>,
    pub timeout: Duration,
    pub retry: Retry,
    pub deadline: Deadline,
}

impl Adapter {
    pub fn compile(spec: &AdapterSpec) -> Result<Adapter, CompileError> {
        let reference = format!("{}@{}", spec.id, spec.version);
        let fail = |what: &str| {
            let reference = reference.clone();
            let what = what.to_owned();
            move |detail: String| CompileError {
                definition: format!("adapter {reference}"),
                what,
                detail,
            }
        };
        Ok(Adapter {
            agency: spec.agency.clone(),
            title: spec.title.clone(),
            input: Schema::compile(&spec.input_schema).map_err(fail("input_schema"))?,
            output: Schema::compile(&spec.output_schema).map_err(fail("output_schema"))?,
            method: spec.request.method,
            path: Template::compile(&Value::String(spec.request.path.clone()))
                .map_err(fail("request.path"))?,
            headers: spec
                .request
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), Template::compile(&Value::String(v.clone()))?)))
                .collect::<Result<_, String>>()
                .map_err(fail("request.headers"))?,
            body: match &spec.request.body {
                Some(b) => Some(Template::compile(b).map_err(fail("request.body"))?),
                None => None,
            },
            reply: Rules::compile(&spec.reply).map_err(fail("reply"))?,
            mode: spec.completion.mode,
            callback: match &spec.completion.callback {
                Some(c) => Some(Rules::compile(c).map_err(fail("completion.callback"))?),
                None => None,
            },
            poll: match &spec.completion.poll {
                Some(p) => Some(Poll {
                    url: Expr::compile(expr::inner(&p.url).unwrap_or(&p.url))
                        .map_err(fail("completion.poll.url"))?,
                    interval: duration(&p.interval).map_err(fail("completion.poll.interval"))?,
                    rules: Rules::compile(&p.reply).map_err(fail("completion.poll.reply"))?,
                }),
                None => None,
            },
            timeout: duration(&spec.timeout).map_err(fail("timeout"))?,
            retry: Retry::compile(&spec.retry).map_err(fail("retry"))?,
            deadline: deadline(&spec.deadline).map_err(fail("deadline"))?,
            reference,
        })
    }
}

#[derive(Debug)]
pub struct Step {
    pub id: String,
    pub title: Option<String>,
    pub adapter: Arc<Adapter>,
    pub needs: Vec<String>,
    pub condition: Option<Expr>,
    pub with: Template,
    pub deadline: Deadline,
    pub timeout: Duration,
    pub retry: Retry,
    pub on_rejection: OnRejection,
    pub consequences: Consequences,
    pub on_silence: Option<Silence>,
    pub supplement: SupplementRule,
    pub wait_for: Option<WaitFor>,
    pub exchange: Option<Exchange>,
}

#[derive(Debug)]
pub struct Workflow {
    pub name: String,
    pub version: u32,
    pub title: String,
    pub input: Schema,
    pub business_keys: Vec<(String, Expr)>,
    pub deadline: Option<Deadline>,
    pub consequences: Consequences,
    pub life_event: Option<LifeEventRule>,
    /// Events and chains that start it.
    pub triggers: Vec<Trigger>,
    /// How long its cases' personal data is kept after they end; kept while `None`.
    pub retention: Option<Retention>,
    /// In dependency order: a step comes after every step it needs.
    pub steps: Vec<Step>,
}

impl Workflow {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    fn compile(
        spec: &WorkflowSpec,
        adapters: &BTreeMap<String, Arc<Adapter>>,
    ) -> Result<Workflow, CompileError> {
        let name = format!("workflow {}@{}", spec.name, spec.version);
        let fail = |what: &str| {
            let name = name.clone();
            let what = what.to_owned();
            move |detail: String| CompileError {
                definition: name,
                what,
                detail,
            }
        };
        let compile = |text: &str| Expr::compile(expr::inner(text).unwrap_or(text));
        let mut steps = Vec::new();
        for s in &spec.steps {
            let at = format!("step {}", s.id);
            let adapter = resolve(adapters, &s.adapter)
                .ok_or_else(|| fail(&at)(format!("adapter {} is not loaded", s.adapter)))?;
            steps.push(Step {
                id: s.id.clone(),
                title: s.title.clone(),
                needs: s.needs.clone(),
                condition: match &s.condition {
                    Some(c) => Some(compile(c).map_err(fail(&at))?),
                    None => None,
                },
                with: Template::compile(&s.with).map_err(fail(&at))?,
                deadline: match &s.deadline {
                    Some(d) => deadline(d).map_err(fail(&at))?,
                    None => adapter.deadline,
                },
                timeout: match &s.timeout {
                    Some(t) => duration(t).map_err(fail(&at))?,
                    None => adapter.timeout,
                },
                retry: match &s.retry {
                    Some(r) => Retry::compile(r).map_err(fail(&at))?,
                    None => adapter.retry,
                },
                on_rejection: s.on_rejection,
                // Who may give a new date is the step's own rule, else the case's: a reminder
                // and an escalation are the step's alone (the case's are about its own time).
                consequences: consequences(
                    &s.remind_before,
                    &s.on_breach,
                    s.extension.as_ref().or(spec.extension.as_ref()),
                )
                .map_err(fail(&at))?,
                supplement: SupplementRule::of(s.supplement.as_ref(), spec.supplement.as_ref())
                    .map_err(fail(&at))?,
                on_silence: match &s.on_silence {
                    Some(silence) => Some(Silence {
                        outcome: silence.outcome,
                        legal_basis: silence.legal_basis.clone().unwrap_or_default(),
                        output: match &silence.output {
                            Some(o) => Some(Template::compile(o).map_err(fail(&at))?),
                            None => None,
                        },
                    }),
                    None => None,
                },
                wait_for: match &s.wait_for {
                    Some(w) => Some(WaitFor {
                        event_type: w.event_type.clone(),
                        sources: w.sources.clone(),
                        from: compile(&w.matching.from).map_err(fail(&at))?,
                        expect: compile(&w.matching.expect).map_err(fail(&at))?,
                        within: deadline(&w.within).map_err(fail(&at))?,
                        keep_early: working_days(&w.keep_early)
                            .map_err(fail(&at))?
                            .unwrap_or(crate::workflow::triggers::KEEP_EARLY_DAYS),
                    }),
                    None => None,
                },
                exchange: s
                    .exchange
                    .as_ref()
                    .map(Exchange::compile)
                    .transpose()
                    .map_err(fail(&at))?,
                adapter,
            });
        }
        Ok(Workflow {
            name: spec.name.clone(),
            version: spec.version,
            title: spec.title.clone(),
            input: Schema::compile(&spec.input_schema).map_err(fail("input_schema"))?,
            business_keys: spec
                .business_keys
                .iter()
                .map(|(k, v)| Ok((k.clone(), compile(v)?)))
                .collect::<Result<_, String>>()
                .map_err(fail("business_keys"))?,
            deadline: match &spec.deadline {
                Some(d) => Some(deadline(d).map_err(fail("deadline"))?),
                None => None,
            },
            consequences: consequences(
                &spec.remind_before,
                &spec.on_breach,
                spec.extension.as_ref(),
            )
            .map_err(fail("workflow"))?,
            life_event: match &spec.life_event {
                Some(l) => Some(LifeEventRule {
                    date: compile(&l.date).map_err(fail("life_event.date"))?,
                    within_days: terms::calendar_days(&l.within)
                        .ok_or_else(|| format!("`{}` is not in days", l.within))
                        .map_err(fail("life_event.within"))?,
                    legal_basis: l.legal_basis.clone(),
                }),
                None => None,
            },
            triggers: spec
                .on
                .iter()
                .map(|t| compile_trigger(t, &compile))
                .collect::<Result<_, String>>()
                .map_err(fail("on"))?,
            retention: spec
                .retention
                .as_ref()
                .map(Retention::compile)
                .transpose()
                .map_err(fail("retention"))?,
            steps: in_dependency_order(steps),
        })
    }

    /// The business-key value of `key` the case of this input would have.
    pub fn key_of(&self, key: &str, input: &Value) -> Option<String> {
        let (_, expr) = self.business_keys.iter().find(|(k, _)| k == key)?;
        let context = Input::of(expr::Part::Object(vec![(
            "input",
            expr::Part::Borrowed(input),
        )]));
        expr.eval_in(&context)
            .ok()
            .as_ref()
            .and_then(crate::workflow::triggers::match_value)
    }
}

fn compile_trigger(
    spec: &TriggerSpec,
    compile: &dyn Fn(&str) -> Result<Expr, String>,
) -> Result<Trigger, String> {
    let on = match (&spec.event, &spec.case) {
        (Some(e), None) => On::Event(EventOn {
            event_type: e.event_type.clone(),
            sources: e.sources.clone(),
            key: e.key.clone(),
            if_running: e.if_running,
        }),
        (None, Some(c)) => On::Case {
            workflow: c.workflow.clone(),
            outcome: c.outcome,
        },
        _ => return Err("a trigger names one of `event` and `case`".to_owned()),
    };
    Ok(Trigger {
        on,
        when: spec.when.as_deref().map(compile).transpose()?,
        with: Template::compile(&spec.with)?,
    })
}

/// The adapter a reference names: `agency/name@N`, or the newest loaded version for
/// `agency/name@latest`.
fn resolve(adapters: &BTreeMap<String, Arc<Adapter>>, reference: &str) -> Option<Arc<Adapter>> {
    let (id, version) = reference.split_once('@')?;
    if version != crate::workflow::check::LATEST {
        return adapters.get(reference).cloned();
    }
    adapters
        .values()
        .filter(|a| a.reference.split_once('@').is_some_and(|(i, _)| i == id))
        .max_by_key(|a| {
            a.reference
                .split_once('@')
                .and_then(|(_, v)| v.parse::<u32>().ok())
        })
        .cloned()
}

/// Kahn's algorithm, keeping file order among steps that are ready together. The checker has
/// refused cycles, so every step is placed.
fn in_dependency_order(mut pending: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|s| s.needs.iter().all(|n| out.iter().any(|o| &o.id == n)))
            .unwrap_or(0);
        out.push(pending.remove(ready));
    }
    out
}

/// Every loaded workflow version and adapter, compiled.
#[derive(Debug, Default)]
pub struct Definitions {
    workflows: BTreeMap<String, BTreeMap<u32, Arc<Workflow>>>,
    adapters: BTreeMap<String, Arc<Adapter>>,
    /// The specs, to bind a running case's steps to the adapter versions it started with when
    /// an `@latest` reference has moved on since.
    specs: BTreeMap<(String, u32), WorkflowSpec>,
    bound: std::sync::Mutex<BTreeMap<String, Arc<Workflow>>>,
}

impl Definitions {
    /// Checks and compiles every definition file under `paths`: what `civicflow serve` runs.
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Definitions, LoadError> {
        let (catalog, problems) = catalog::load(paths);
        if !problems.is_empty() {
            return Err(LoadError::Invalid(problems));
        }
        Ok(Definitions::compile(&catalog)?)
    }

    pub fn compile(catalog: &Catalog) -> Result<Definitions, CompileError> {
        let mut defs = Definitions::default();
        for versions in catalog.adapters.values() {
            for spec in versions.values() {
                let adapter = Adapter::compile(spec)?;
                defs.adapters
                    .insert(adapter.reference.clone(), Arc::new(adapter));
            }
        }
        for versions in catalog.workflows.values() {
            for spec in versions.values() {
                let workflow = Workflow::compile(spec, &defs.adapters)?;
                defs.workflows
                    .entry(spec.name.clone())
                    .or_default()
                    .insert(spec.version, Arc::new(workflow));
                defs.specs
                    .insert((spec.name.clone(), spec.version), spec.clone());
            }
        }
        Ok(defs)
    }

    /// A workflow in one version, or its latest when `version` is `None`.
    pub fn workflow(&self, name: &str, version: Option<u32>) -> Option<Arc<Workflow>> {
        let versions = self.workflows.get(name)?;
        match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }

    /// A workflow version with each step bound to the adapter version `pinned` names for it
    /// (what a case recorded at its start). Usually the loaded workflow itself; when an
    /// `@latest` reference has moved on, a compiled copy bound to the case's versions, kept for
    /// the next case with the same ones.
    pub fn bound(
        &self,
        name: &str,
        version: u32,
        pinned: impl Fn(&str) -> Option<String>,
    ) -> Option<Arc<Workflow>> {
        let current = self.workflow(name, Some(version))?;
        let moved = current
            .steps
            .iter()
            .any(|s| pinned(&s.id).is_some_and(|p| p != s.adapter.reference));
        if !moved {
            return Some(current);
        }
        let mut spec = self.specs.get(&(name.to_owned(), version))?.clone();
        for step in &mut spec.steps {
            if let Some(p) = pinned(&step.id) {
                step.adapter = p;
            }
        }
        let key = spec
            .steps
            .iter()
            .map(|s| s.adapter.as_str())
            .fold(format!("{name}@{version}"), |k, a| format!("{k} {a}"));
        let mut cache = self.bound.lock().expect("not poisoned");
        if let Some(found) = cache.get(&key) {
            return Some(found.clone());
        }
        let compiled = Arc::new(Workflow::compile(&spec, &self.adapters).ok()?);
        cache.insert(key, compiled.clone());
        Some(compiled)
    }

    /// The newest version of each workflow an event of `event_type` from `source` starts,
    /// with the trigger that takes it.
    pub fn event_triggers<'a>(
        &'a self,
        event_type: &'a str,
        source: &'a str,
    ) -> impl Iterator<Item = (Arc<Workflow>, usize)> + 'a {
        self.newest_triggers(move |on| {
            matches!(on, On::Event(e) if e.event_type == event_type
                && source_taken(&e.sources, source))
        })
    }

    /// The newest version of each workflow that a case of `workflow` ending as `outcome`
    /// starts, with the trigger.
    pub fn followers<'a>(
        &'a self,
        workflow: &'a str,
        outcome: ChainOutcome,
    ) -> impl Iterator<Item = (Arc<Workflow>, usize)> + 'a {
        self.newest_triggers(move |on| {
            matches!(on, On::Case { workflow: w, outcome: o } if w == workflow && *o == outcome)
        })
    }

    /// The triggers of the newest version of each workflow that `takes` picks, by index.
    fn newest_triggers<'a>(
        &'a self,
        takes: impl Fn(&On) -> bool + 'a,
    ) -> impl Iterator<Item = (Arc<Workflow>, usize)> + 'a {
        self.newest().flat_map(move |wf| {
            let found: Vec<usize> = (0..wf.triggers.len())
                .filter(|&i| takes(&wf.triggers[i].on))
                .collect();
            found.into_iter().map(move |i| (wf.clone(), i))
        })
    }

    /// Every step of every loaded version that waits for events of `event_type` from
    /// `source`.
    pub fn waits_for<'a>(
        &'a self,
        event_type: &'a str,
        source: &'a str,
    ) -> impl Iterator<Item = &'a WaitFor> + 'a {
        self.workflows()
            .flat_map(|wf| wf.steps.iter().filter_map(|s| s.wait_for.as_ref()))
            .filter(move |w| w.event_type == event_type && source_taken(&w.sources, source))
    }

    /// The data agreements the loaded workflows' exchanges ask consent to: those a consent may
    /// be recorded for.
    pub fn agreements(&self) -> std::collections::BTreeSet<&str> {
        self.workflows()
            .flat_map(|wf| wf.steps.iter())
            .filter_map(|s| s.exchange.as_ref()?.consent.as_ref())
            .map(|c| c.agreement.as_str())
            .collect()
    }

    /// Whether any workflow takes events of `event_type` from `source`: what an event
    /// source's token may send.
    pub fn takes_event(&self, event_type: &str, source: &str) -> bool {
        self.event_triggers(event_type, source).next().is_some()
            || self.waits_for(event_type, source).next().is_some()
    }

    fn newest(&self) -> impl Iterator<Item = Arc<Workflow>> + '_ {
        self.workflows
            .values()
            .filter_map(|versions| versions.values().next_back().cloned())
    }

    /// Every loaded workflow version, by name then version.
    pub fn workflows(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows
            .values()
            .flat_map(|versions| versions.values().map(|w| &**w))
    }

    pub fn workflow_names(&self) -> impl Iterator<Item = &str> {
        self.workflows.keys().map(String::as_str)
    }

    pub fn agencies(&self) -> impl Iterator<Item = &str> {
        self.adapters.values().map(|a| a.agency.as_str())
    }

    /// Every loaded adapter, by `agency/name@version`.
    pub fn adapters(&self) -> impl Iterator<Item = &Adapter> {
        self.adapters.values().map(|a| &**a)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::workflow::catalog;

    fn shipped() -> Definitions {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let (catalog, problems) = catalog::load(&[root.join("workflows")]);
        assert!(problems.is_empty(), "{problems:?}");
        Definitions::compile(&catalog).unwrap()
    }

    #[test]
    fn compiles_the_shipped_chains_in_dependency_order() {
        let defs = shipped();
        let birth = defs.workflow("birth-registration", None).unwrap();
        let ids: Vec<&str> = birth.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["birth", "residence", "health_insurance"]);
        assert_eq!(
            birth.step("birth").unwrap().deadline,
            Deadline::WorkingDays(1)
        );
        assert_eq!(
            birth.step("residence").unwrap().adapter.mode,
            Mode::Callback
        );
        assert!(defs.workflow("birth-registration", Some(2)).is_none());
    }

    #[test]
    fn a_step_without_its_own_extension_rule_takes_the_workflows() {
        use crate::workflow::spec::{ExtensionSpec, Party};
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let (mut catalog, problems) = catalog::load(&[root.join("workflows")]);
        assert!(problems.is_empty(), "{problems:?}");
        let spec = catalog
            .workflows
            .get_mut("birth-registration")
            .and_then(|v| v.get_mut(&1))
            .unwrap();
        spec.extension = Some(ExtensionSpec {
            granted_by: vec![Party::Operator],
            at_most: Some("3 working days".into()),
        });
        let defs = Definitions::compile(&catalog).unwrap();
        let birth = defs.workflow("birth-registration", Some(1)).unwrap();
        let inherited = &birth.step("birth").unwrap().consequences.extension;
        assert_eq!(
            (inherited.granted_by.as_slice(), inherited.at_most),
            (&[Party::Operator][..], Some(3))
        );
        // A step's own rule stands, and a reminder is never inherited.
        let own = &birth.step("residence").unwrap().consequences;
        assert_eq!(own.extension.granted_by, [Party::Supervisor, Party::Agency]);
        assert_eq!(
            birth.step("birth").unwrap().consequences.remind_before,
            None
        );
    }

    #[test]
    fn templates_evaluate_expressions_at_the_leaves_only() {
        let t = Template::compile(&json!({"a": "${ .x + 1 }", "b": ["lit", "${ .y }"], "c": 3}))
            .unwrap();
        assert_eq!(
            t.eval(&json!({"x": 1, "y": "z"})).unwrap(),
            json!({"a": 2, "b": ["lit", "z"], "c": 3})
        );
    }

    #[test]
    fn rules_classify_in_order() {
        let defs = shipped();
        let birth = defs.workflow("birth-registration", None).unwrap();
        let rules = &birth.step("residence").unwrap().adapter.reply;
        assert_eq!(
            rules.decide(&json!({"status": 202, "body": {}})).unwrap(),
            Decision::Pending
        );
        assert_eq!(
            rules
                .decide(&json!({"status": 422, "body": {"reason_code": "X", "message": "m"}}))
                .unwrap(),
            Decision::Rejection {
                reason_code: "X".into(),
                message: "m".into()
            }
        );
        assert_eq!(
            rules.decide(&json!({"status": 200, "body": {}})).unwrap(),
            Decision::NoMatch
        );
    }

    #[test]
    fn backoff_ceiling_grows_and_is_capped() {
        let r = Retry {
            max_attempts: 10,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(5),
            multiplier: 2.0,
            max_duration: Duration::from_secs(60),
        };
        let ceilings: Vec<u64> = (2..7).map(|n| r.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 5, 5]);
    }
}
