//! A located problem in a definition file, printed as `file:line:col: error[CODE]: message`.

use std::fmt;

use crate::workflow::source::Pos;

/// Stable codes: operators and agency engineers search for them, so a code is never reused for
/// another problem. `docs/workflow-language.md` lists them all.
pub mod code {
    pub const YAML_SYNTAX: &str = "CF001";
    pub const INPUT_LIMIT: &str = "CF002";
    pub const UNREADABLE: &str = "CF003";
    pub const UNKNOWN_KIND: &str = "CF004";
    pub const UNKNOWN_FIELD: &str = "CF010";
    pub const MISSING_FIELD: &str = "CF011";
    pub const WRONG_TYPE: &str = "CF012";
    pub const INVALID_VALUE: &str = "CF013";
    pub const DUPLICATE_STEP: &str = "CF020";
    pub const UNKNOWN_NEED: &str = "CF021";
    pub const CYCLE: &str = "CF022";
    pub const UNKNOWN_ADAPTER: &str = "CF030";
    pub const UNKNOWN_ADAPTER_VERSION: &str = "CF031";
    pub const AGENCY_MISMATCH: &str = "CF032";
    pub const EXPRESSION: &str = "CF040";
    pub const NOT_AN_ANCESTOR: &str = "CF041";
    pub const DYNAMIC_STEPS: &str = "CF042";
    pub const PARTIAL_EXPRESSION: &str = "CF043";
    pub const MISSING_INPUT: &str = "CF050";
    pub const COMPLETION: &str = "CF051";
    pub const DUPLICATE_WORKFLOW: &str = "CF060";
    pub const DUPLICATE_ADAPTER: &str = "CF061";
    pub const DEPRECATED_ADAPTER: &str = "CF062";
    pub const DURATION: &str = "CF070";
    pub const DEADLINE_BEYOND_CASE: &str = "CF071";
    pub const REMINDER: &str = "CF072";
    pub const ESCALATION: &str = "CF073";
    pub const JSON_SCHEMA: &str = "CF080";
    pub const SILENCE_WITHOUT_LEGAL_BASIS: &str = "CF090";
    pub const SILENCE_OUTPUT: &str = "CF091";
    pub const TRIGGER: &str = "CF100";
    pub const EVENT_NOT_AWAITED: &str = "CF101";
    pub const UNKNOWN_CHAIN: &str = "CF102";
    pub const CHAIN_LOOP: &str = "CF103";
    pub const PERSONAL_DATA_UNDECLARED: &str = "CF110";
    pub const LAWFUL_BASIS: &str = "CF111";
    pub const RETENTION: &str = "CF112";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, pos: Pos, code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            pos,
            code,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: error[{}]: {}",
            self.file, self.pos, self.code, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if it is close enough to be what was meant.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
