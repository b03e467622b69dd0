//! Publishing and deprecating definitions: the same checks as `civicflow validate`, run against
//! everything already loaded, and the namespace rule (an agency publishes only its own
//! adapters).

use jiff::Timestamp;
use tokio::sync::Mutex;

use super::{Change, Deprecation, Kind, Published};
use crate::auth::{Principal, Role};
use crate::store::{Store, StoreError, Transaction};
use crate::workflow::catalog::{Source, check_sources};
use crate::workflow::check::{self, Parsed, parse_file};
use crate::workflow::definition::{Adapter, CompileError, Definitions};
use crate::workflow::diagnostic::{Diagnostic, code};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Located problems, exactly as `civicflow validate` reports them.
    #[error("the definition has {} problem(s)", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error(
        "{role} may not publish or deprecate {what}; an agency manages only its own adapters, and workflows are an admin's"
    )]
    NotYours { role: Role, what: String },
    #[error(
        "{kind} `{id}` version {version} is already published and cannot change; publish version {next}"
    )]
    Exists {
        kind: &'static str,
        id: String,
        version: u32,
        next: u32,
    },
    #[error("no published {kind} `{id}` version {version}")]
    Unknown {
        kind: &'static str,
        id: String,
        version: u32,
    },
    #[error("{kind} `{id}` version {version} is already deprecated")]
    AlreadyDeprecated {
        kind: &'static str,
        id: String,
        version: u32,
    },
    #[error("this is {found}, not {expected}: publish it as {found}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which published version to deprecate, and why.
#[derive(Debug, Clone, Copy)]
pub struct Retire<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub version: u32,
    /// The version to use instead.
    pub replacement: Option<u32>,
    pub reason: &'a str,
}

/// How many times a publication is checked again after another configuration change landed
/// between its check and its commit.
const RECHECK: u32 = 8;

/// The bundled definitions (files read at start-up) and the store's published ones, checked
/// and compiled together.
pub struct Registry<S> {
    store: S,
    bundled: Vec<Source>,
    /// One change at a time on this node (across nodes, the configuration version decides):
    /// each is checked against what the one before left.
    changing: Mutex<()>,
}

impl<S: Store> Registry<S> {
    pub fn new(store: S, bundled: Vec<Source>) -> Registry<S> {
        Registry {
            store,
            bundled,
            changing: Mutex::new(()),
        }
    }

    /// Every definition, bundled then published, as named text, and the configuration version
    /// they are at (read first: the definitions are at least that recent).
    async fn sources(&self) -> Result<(u64, Vec<Source>, Vec<Published>), StoreError> {
        let version = self.store.config_version().await?;
        let published = self.store.definitions().await?;
        let mut sources = self.bundled.clone();
        sources.extend(published.iter().map(|p| Source {
            name: p.source_name(),
            text: p.text.clone(),
        }));
        Ok((version, sources, published))
    }

    /// What the server runs: every definition, checked and compiled, with the configuration
    /// version they were read at.
    pub async fn load(&self) -> Result<(u64, Definitions), PublishError> {
        let (version, sources, _) = self.sources().await?;
        let (catalog, problems) = check_sources(&sources);
        if !problems.is_empty() {
            return Err(PublishError::Invalid(problems));
        }
        Ok((version, Definitions::compile(&catalog)?))
    }

    /// The text of a definition, published or bundled, if it is loaded.
    pub async fn text(
        &self,
        kind: Kind,
        id: &str,
        version: u32,
    ) -> Result<Option<String>, StoreError> {
        let published = self.store.definitions().await?;
        if let Some(p) = published
            .iter()
            .find(|p| p.kind == kind && p.id == id && p.version == version)
        {
            return Ok(Some(p.text.clone()));
        }
        let bundled = self
            .bundled
            .iter()
            .find(|s| match parse_file(&s.name, &s.text) {
                Ok(Parsed::Adapter(a, _)) => {
                    kind == Kind::Adapter && a.id == id && a.version == version
                }
                Ok(Parsed::Workflow(w, _)) => {
                    kind == Kind::Workflow && w.name == id && w.version == version
                }
                Err(_) => false,
            });
        Ok(bundled.map(|s| s.text.clone()))
    }

    /// Every published definition, for listing.
    pub async fn published(&self) -> Result<Vec<Published>, StoreError> {
        self.store.definitions().await
    }

    /// Publishes a definition given as YAML text: checks it with everything loaded, records
    /// it, and hands the definitions the server runs from now on (with their configuration
    /// version) to `apply`. The record is committed only if no other change to the
    /// configuration landed since the check (on any node); if one did, the check runs again
    /// against it. So publications are checked and applied one at a time, in order.
    pub async fn publish(
        &self,
        expected: Kind,
        text: &str,
        by: &Principal,
        now: Timestamp,
        apply: impl FnOnce(u64, Definitions),
    ) -> Result<Published, PublishError> {
        let _one = self.changing.lock().await;
        let mut round = 0;
        loop {
            round += 1;
            match self.publish_once(expected, text, by, now).await {
                Err(PublishError::Store(StoreError::ConfigChanged { .. })) if round < RECHECK => {}
                Ok((version, record, defs)) => {
                    apply(version, defs);
                    return Ok(record);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One check and commit of a publication, conditional on the configuration version it was
    /// checked against: the version it made, the record and the definitions with it.
    async fn publish_once(
        &self,
        expected: Kind,
        text: &str,
        by: &Principal,
        now: Timestamp,
    ) -> Result<(u64, Published, Definitions), PublishError> {
        let parsed =
            parse_file(&provisional_name(expected, text), text).map_err(PublishError::Invalid)?;
        let (kind, id, version) = match &parsed {
            Parsed::Adapter(spec, _) => (Kind::Adapter, spec.id.clone(), spec.version),
            Parsed::Workflow(spec, _) => (Kind::Workflow, spec.name.clone(), spec.version),
        };
        if kind != expected {
            return Err(PublishError::WrongKind {
                expected: article(expected),
                found: article(kind),
            });
        }
        allowed(&by.role, kind, &id)?;
        let (config, mut sources, published) = self.sources().await?;
        let record = Published {
            kind,
            id,
            version,
            text: text.to_owned(),
            published_at: now,
            published_by: by.actor(),
            deprecated: None,
        };
        let name = record.source_name();
        sources.push(Source {
            name: name.clone(),
            text: text.to_owned(),
        });
        // One check of everything with the new definition last: a version already taken shows
        // as its duplicate, and a workflow it would break as that workflow's problems.
        let (catalog, mut problems) = check_sources(&sources);
        let duplicate = problems.iter().any(|d| {
            d.file == name && matches!(d.code, code::DUPLICATE_ADAPTER | code::DUPLICATE_WORKFLOW)
        });
        if duplicate {
            let taken = match kind {
                Kind::Adapter => catalog.adapters.get(&record.id).map(|v| v.keys().max()),
                Kind::Workflow => catalog.workflows.get(&record.id).map(|v| v.keys().max()),
            };
            return Err(PublishError::Exists {
                kind: kind.as_str(),
                next: taken.flatten().copied().unwrap_or(version) + 1,
                id: record.id,
                version,
            });
        }
        if let Parsed::Workflow(spec, located) = &parsed {
            for (i, step) in spec.steps.iter().enumerate() {
                if let Some(d) = deprecated_pin(&published, &step.adapter) {
                    let pos = located.value_pos(&format!("/steps/{i}/adapter"));
                    problems
                        .push(Diagnostic::new(&name, pos, code::DEPRECATED_ADAPTER, d.0).help(d.1));
                }
            }
        }
        if !problems.is_empty() {
            return Err(PublishError::Invalid(problems));
        }
        let defs = Definitions::compile(&catalog)?;
        let tx = Transaction {
            put_definitions: vec![record.clone()],
            registry_changes: vec![change(&record, "published", by, now, String::new())],
            expect_config: Some(config),
            ..Transaction::default()
        };
        self.store.commit(&tx).await?;
        Ok((config + 1, record, defs))
    }

    /// Checks an adapter manifest on its own, as publishing would, without recording it: what
    /// `adapters test` runs.
    pub fn check_manifest(&self, text: &str, by: &Principal) -> Result<Adapter, PublishError> {
        let name = provisional_name(Kind::Adapter, text);
        let Parsed::Adapter(spec, located) =
            parse_file(&name, text).map_err(PublishError::Invalid)?
        else {
            return Err(PublishError::WrongKind {
                expected: article(Kind::Adapter),
                found: article(Kind::Workflow),
            });
        };
        allowed(&by.role, Kind::Adapter, &spec.id)?;
        let problems = check::adapter(&name, &spec, &located);
        if !problems.is_empty() {
            return Err(PublishError::Invalid(problems));
        }
        Ok(Adapter::compile(&spec)?)
    }

    /// Deprecates a published version: running cases keep it; new workflows may not pin it.
    pub async fn deprecate(
        &self,
        what: Retire<'_>,
        by: &Principal,
        now: Timestamp,
    ) -> Result<Published, PublishError> {
        let _one = self.changing.lock().await;
        let mut round = 0;
        loop {
            round += 1;
            match self.deprecate_once(what, by, now).await {
                Err(PublishError::Store(StoreError::ConfigChanged { .. })) if round < RECHECK => {}
                done => return done,
            }
        }
    }

    async fn deprecate_once(
        &self,
        what: Retire<'_>,
        by: &Principal,
        now: Timestamp,
    ) -> Result<Published, PublishError> {
        let Retire {
            kind,
            id,
            version,
            replacement,
            reason,
        } = what;
        allowed(&by.role, kind, id)?;
        let config = self.store.config_version().await?;
        let unknown = || PublishError::Unknown {
            kind: kind.as_str(),
            id: id.to_owned(),
            version,
        };
        let mut record = self
            .store
            .definitions()
            .await?
            .into_iter()
            .find(|p| p.kind == kind && p.id == id && p.version == version)
            .ok_or_else(unknown)?;
        if record.deprecated.is_some() {
            return Err(PublishError::AlreadyDeprecated {
                kind: kind.as_str(),
                id: id.to_owned(),
                version,
            });
        }
        record.deprecated = Some(Deprecation {
            at: now,
            by: by.actor(),
            replacement,
            reason: reason.to_owned(),
        });
        let note = match replacement {
            Some(r) => format!("{reason} (use version {r})"),
            None => reason.to_owned(),
        };
        let tx = Transaction {
            put_definitions: vec![record.clone()],
            registry_changes: vec![change(&record, "deprecated", by, now, note)],
            // Another node's deprecation of the same version meanwhile makes this one fail
            // rather than write over it.
            expect_config: Some(config),
            ..Transaction::default()
        };
        self.store.commit(&tx).await?;
        Ok(record)
    }
}

/// The name diagnostics give a definition that may not parse: its registry name if its `id`
/// (or `name`) and `version` can be read, else just where it was published.
fn provisional_name(kind: Kind, text: &str) -> String {
    let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap_or_default();
    let id = doc
        .get("id")
        .or_else(|| doc.get("name"))
        .and_then(|v| v.as_str());
    match (id, doc.get("version").and_then(serde_json::Value::as_u64)) {
        (Some(id), Some(version)) => format!("registry:{}/{id}@{version}", kind.as_str()),
        _ => format!("registry:{}", kind.as_str()),
    }
}

fn article(kind: Kind) -> &'static str {
    match kind {
        Kind::Adapter => "an adapter",
        Kind::Workflow => "a workflow",
    }
}

/// An agency manages only the adapters under its own name; workflows cross agencies and are
/// an admin's.
fn allowed(role: &Role, kind: Kind, id: &str) -> Result<(), PublishError> {
    let ok = match (role, kind) {
        (Role::Admin, _) => true,
        (Role::Agency(agency), Kind::Adapter) => id.split('/').next() == Some(agency.as_str()),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(PublishError::NotYours {
        role: role.clone(),
        what: format!("{} `{id}`", kind.as_str()),
    })
}

/// If `reference` (`agency/name@version`) pins a deprecated version: the message and the help.
fn deprecated_pin(published: &[Published], reference: &str) -> Option<(String, String)> {
    let (id, version) = reference.rsplit_once('@')?;
    let version: u32 = version.parse().ok()?;
    let p = published
        .iter()
        .find(|p| p.kind == Kind::Adapter && p.id == id && p.version == version)?;
    let d = p.deprecated.as_ref()?;
    let message = format!("adapter `{reference}` is deprecated: {}", d.reason);
    let help = match d.replacement {
        Some(r) => format!("pin `{id}@{r}` instead"),
        None => "pin a version that is not deprecated".to_owned(),
    };
    Some((message, help))
}

fn change(p: &Published, action: &str, by: &Principal, at: Timestamp, note: String) -> Change {
    Change {
        at,
        by: by.actor(),
        action: action.to_owned(),
        kind: p.kind,
        id: p.id.clone(),
        version: p.version,
        note,
    }
}
