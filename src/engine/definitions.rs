//! The definitions an engine runs, as loaded at a configuration version, and the workflow
//! each case runs, bound to the adapter versions it started with.

use std::sync::Arc;

use crate::case::{Case, CaseId};
use crate::registry::PublishError;
use crate::store::Store;
use crate::workflow::definition::{Definitions, Workflow};

use super::Engine;

/// A case runs the workflow version it started on; that version must stay loaded, and stay
/// what it was: a file changed under the same version (other steps) cannot run the cases
/// started on it, which wait, with an incident, until the file is restored.
#[derive(Debug, thiserror::Error)]
#[error("case {case_id} runs workflow `{name}` version {version}, which {}", if *.changed {
    "is loaded with other steps than the case has: its file was changed under the same version; restore it, and give the change a new version"
} else {
    "is not loaded; restore its file in workflows/"
})]
pub struct MissingWorkflow {
    pub case_id: CaseId,
    pub name: String,
    pub version: u32,
    /// The version is loaded, but its steps are not the case's.
    pub changed: bool,
}

/// Definitions as loaded at a configuration version.
pub(super) struct Loaded {
    pub(super) version: u64,
    pub(super) defs: Arc<Definitions>,
}

impl<S: Store + Clone> Engine<S> {
    pub fn definitions(&self) -> Arc<Definitions> {
        self.defs.read().expect("not poisoned").defs.clone()
    }

    /// Runs `defs`, loaded at configuration version `version`, from now on, unless what runs
    /// was loaded at a later version already (a reload and a publication may race). Cases keep
    /// the workflow version they started on, which stays among the definitions.
    pub fn set_definitions(&self, version: u64, defs: Definitions) {
        let mut loaded = self.defs.write().expect("not poisoned");
        if version >= loaded.version {
            *loaded = Loaded {
                version,
                defs: Arc::new(defs),
            };
        }
    }

    /// Loads the definitions again if the shared configuration moved on since they were
    /// loaded (a publication on another node): how every node follows the registry.
    pub async fn reload_definitions(&self) -> Result<(), PublishError> {
        let loaded = self.defs.read().expect("not poisoned").version;
        if self.store.config_version().await? == loaded {
            return Ok(());
        }
        let (version, defs) = self.registry.load().await?;
        self.set_definitions(version, defs);
        Ok(())
    }

    /// The workflow `case` runs, bound to the adapter versions it started with, if it is loaded
    /// as the case knows it: what the API masks a case's data by. A read does not reload the
    /// definitions (the configuration follower does that within a second): a case whose
    /// workflow is not loaded is masked whole rather than costing a reload per read.
    pub fn workflow_of_case(&self, case: &Case) -> Option<Arc<Workflow>> {
        self.workflow_of(case).ok()
    }

    /// The workflow a case runs; if it is not loaded, the definitions are loaded again first
    /// in case another node published it since.
    pub(super) async fn workflow_for(&self, case: &Case) -> Result<Arc<Workflow>, MissingWorkflow> {
        if let Ok(wf) = self.workflow_of(case) {
            return Ok(wf);
        }
        if let Err(e) = self.reload_definitions().await {
            tracing::error!(error = %e, "the definitions cannot be loaded again");
        }
        self.workflow_of(case)
    }

    pub(super) fn workflow_of(&self, case: &Case) -> Result<Arc<Workflow>, MissingWorkflow> {
        let missing = |changed| MissingWorkflow {
            case_id: case.id,
            name: case.workflow.clone(),
            version: case.version,
            changed,
        };
        // Bound to the adapter versions the case started with.
        let wf = self
            .definitions()
            .bound(&case.workflow, case.version, |step| {
                case.steps.get(step).map(|s| s.adapter.clone())
            })
            .ok_or_else(|| missing(false))?;
        // Every decision indexes the case's steps by the workflow's: they must be the same.
        let same = wf.steps.len() == case.steps.len()
            && wf.steps.iter().all(|s| case.steps.contains_key(&s.id));
        if !same {
            return Err(missing(true));
        }
        Ok(wf)
    }
}
