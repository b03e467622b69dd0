//! The meaning of an adapter manifest.

use serde_json::Value;

use super::values::{duration, expression, json_schema, retry, template};
use crate::workflow::diagnostic::{Diagnostic, code};
use crate::workflow::source::{Located, escape};
use crate::workflow::spec::{AdapterSpec, Mode, OutcomesSpec};

pub fn adapter(file: &str, spec: &AdapterSpec, located: &Located) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let owner = spec.id.split('/').next().unwrap_or_default();
    if owner != spec.agency {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/agency"),
                code::AGENCY_MISMATCH,
                format!(
                    "adapter `{}` belongs to agency `{owner}`, not `{}`",
                    spec.id, spec.agency
                ),
            )
            .help("an adapter's id starts with its agency: `agency/name`"),
        );
    }
    json_schema(file, located, "/input_schema", &spec.input_schema, &mut out);
    json_schema(
        file,
        located,
        "/output_schema",
        &spec.output_schema,
        &mut out,
    );
    let path_value = Value::String(spec.request.path.clone());
    let mut request_exprs = template(file, located, "/request/path", &path_value, &mut out);
    for (name, value) in &spec.request.headers {
        request_exprs.extend(template(
            file,
            located,
            &format!("/request/headers/{}", escape(name)),
            &Value::String(value.clone()),
            &mut out,
        ));
    }
    if let Some(body) = &spec.request.body {
        request_exprs.extend(template(file, located, "/request/body", body, &mut out));
    }
    outcomes(file, located, "/reply", &spec.reply, &mut out);
    duration(file, located, "/timeout", &spec.timeout, &mut out);
    retry(file, located, "/retry", &spec.retry, &mut out);
    let completion = &spec.completion;
    let wants_pending = completion.mode != Mode::Sync;
    if wants_pending && spec.reply.pending.is_none() {
        out.push(
            Diagnostic::new(file, located.value_pos("/reply"), code::COMPLETION, format!("a `{:?}` adapter needs `reply.pending`: how civicflow recognises that the agency took the request in", completion.mode).to_lowercase())
                .help("add `pending: { when: ${ .status == 202 } }` under `reply`"),
        );
    }
    if !wants_pending && spec.reply.pending.is_some() {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/reply/pending"),
                code::COMPLETION,
                "a `sync` adapter has no pending replies: its reply is the result",
            )
            .help("remove `reply.pending`, or set `completion.mode` to `callback` or `poll`"),
        );
    }
    match completion.mode {
        Mode::Sync => {
            for (section, present) in [("callback", completion.callback.is_some()), ("poll", completion.poll.is_some())] {
                if present {
                    out.push(Diagnostic::new(file, located.key_pos(&format!("/completion/{section}")), code::COMPLETION, format!("`completion.{section}` has no meaning for a `sync` adapter")));
                }
            }
        }
        Mode::Callback => {
            match &completion.callback {
                Some(rules) => outcomes(file, located, "/completion/callback", rules, &mut out),
                None => out.push(Diagnostic::new(file, located.value_pos("/completion"), code::COMPLETION, "a `callback` adapter needs `completion.callback`: how the agency's callback is classified")),
            }
            if !request_exprs.iter().any(|(_, e)| e.reads_root("callback")) {
                out.push(
                    Diagnostic::new(file, located.value_pos("/request"), code::COMPLETION, "a `callback` adapter must tell the agency where to call back, but the request never uses `.callback.url`")
                        .help("put `${ .callback.url }` in the request body or a header"),
                );
            }
        }
        Mode::Poll => match &completion.poll {
            Some(poll) => {
                expression(file, located, "/completion/poll/url", &poll.url, &mut out);
                duration(file, located, "/completion/poll/interval", &poll.interval, &mut out);
                outcomes(file, located, "/completion/poll/reply", &poll.reply, &mut out);
                if poll.reply.pending.is_none() {
                    out.push(Diagnostic::new(file, located.value_pos("/completion/poll/reply"), code::COMPLETION, "polling needs `completion.poll.reply.pending`: how a status reply says \"not yet\""));
                }
            }
            None => out.push(Diagnostic::new(file, located.value_pos("/completion"), code::COMPLETION, "a `poll` adapter needs `completion.poll`: the status URL, the interval and how status replies are classified")),
        },
    }
    out
}

fn outcomes(
    file: &str,
    located: &Located,
    pointer: &str,
    rules: &OutcomesSpec,
    out: &mut Vec<Diagnostic>,
) {
    expression(
        file,
        located,
        &format!("{pointer}/success/when"),
        &rules.success.when,
        out,
    );
    template(
        file,
        located,
        &format!("{pointer}/success/output"),
        &rules.success.output,
        out,
    );
    if let Some(n) = &rules.needs_supplement {
        for (field, text) in [("when", &n.when), ("missing", &n.missing)] {
            expression(
                file,
                located,
                &format!("{pointer}/needs_supplement/{field}"),
                text,
                out,
            );
        }
    }
    if let Some(r) = &rules.rejection {
        expression(
            file,
            located,
            &format!("{pointer}/rejection/when"),
            &r.when,
            out,
        );
        expression(
            file,
            located,
            &format!("{pointer}/rejection/reason_code"),
            &r.reason_code,
            out,
        );
        expression(
            file,
            located,
            &format!("{pointer}/rejection/message"),
            &r.message,
            out,
        );
    }
    if let Some(p) = &rules.pending {
        expression(
            file,
            located,
            &format!("{pointer}/pending/when"),
            &p.when,
            out,
        );
    }
}
