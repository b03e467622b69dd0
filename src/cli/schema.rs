//! `civicflow schema workflow|adapter`: prints the JSON Schema editors use for definition files.

use clap::ValueEnum;

use crate::workflow::spec;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileKind {
    Workflow,
    Adapter,
}

pub fn render(kind: FileKind) -> String {
    let schema = match kind {
        FileKind::Workflow => spec::workflow_schema(),
        FileKind::Adapter => spec::adapter_schema(),
    };
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}
