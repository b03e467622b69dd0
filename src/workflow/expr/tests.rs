//! Expressions evaluated both ways, and their failures.

use serde_json::{Value, json};

use super::fast::to_json;
use super::*;

fn eval(expr: &str, ctx: Value) -> Result<Value, EvalError> {
    Expr::compile(expr).unwrap().eval(&ctx)
}

#[test]
fn evaluates_over_the_context() {
    let ctx = json!({"input": {"child": {"full_name": "An"}}, "steps": {"birth": {"output": {"id": "1"}}}});
    assert_eq!(eval(".input.child.full_name", ctx.clone()), Ok(json!("An")));
    assert_eq!(
        eval("{id: .steps.birth.output.id, n: 1}", ctx),
        Ok(json!({"id": "1", "n": 1}))
    );
}

#[test]
fn child_under_six_is_expressible() {
    let under_six = r#"(.input.child.date_of_birth | split("-") | .[0] |= (tonumber + 6 | tostring) | join("-")) > .case.started_on"#;
    let ctx = |born: &str| json!({"input": {"child": {"date_of_birth": born}}, "case": {"started_on": "2026-11-23"}});
    let expr = Expr::compile(under_six).unwrap();
    assert_eq!(expr.eval_bool(&ctx("2026-11-20")), Ok(true));
    assert_eq!(expr.eval_bool(&ctx("2020-11-24")), Ok(true));
    assert_eq!(expr.eval_bool(&ctx("2020-11-23")), Ok(false));
}

#[test]
fn refuses_bad_and_impure_expressions() {
    assert!(Expr::compile(".a | ").is_err());
    assert!(
        Expr::compile("now").unwrap_err().contains("now"),
        "{}",
        Expr::compile("now").unwrap_err()
    );
    assert!(Expr::compile("env.HOME").is_err());
    assert!(Expr::compile("nosuchfunction(1)").is_err());
}

#[test]
fn finds_step_references() {
    let refs = Expr::compile(
        r#"{a: .steps.birth.output.x, b: (.steps.card.output | .y), c: "\(.steps.police.status)"}"#,
    )
    .unwrap()
    .step_refs();
    assert_eq!(
        refs.ids.into_iter().collect::<Vec<_>>(),
        ["birth", "card", "police"]
    );
    assert!(!refs.dynamic);
    assert!(Expr::compile(".steps | keys").unwrap().step_refs().dynamic);
    assert!(
        Expr::compile(r#".steps[.input.which]"#)
            .unwrap()
            .step_refs()
            .dynamic
    );
    assert!(
        Expr::compile(".callback.url")
            .unwrap()
            .reads_root("callback")
    );
}

#[test]
fn lookups_and_comparisons_skip_jq() {
    let fast = |src: &str| Expr::compile(src).unwrap().fast.is_some();
    for src in [
        ".",
        ".input.child.full_name",
        ".status == 201",
        r#".body.outcome == "refused""#,
        r#".status == 200 and .body.state == "issued""#,
        r#".input.relationship_to_head // "con""#,
        ".a == null",
        ".body | {a}",
        "false",
        ".input + {callback_url: .callback.url}",
    ] {
        assert!(fast(src), "{src}");
    }
    for src in [
        ".a?",
        ".a[0]",
        r#".a == "x\n""#,
        ".a == .b",
        ".a | tostring",
        "{(.k): 1}",
        ".a - .b",
    ] {
        assert!(!fast(src), "{src}");
    }
}

#[test]
fn an_assembled_input_answers_as_its_whole_value_does() {
    let input = json!({"child": {"name": "An", "born": "2026-11-20"}, "n": [1, 2]});
    let output = json!({"id": "079226000123"});
    let contexts = || {
        [
            Part::Object(vec![
                ("input", Part::Borrowed(&input)),
                (
                    "steps",
                    Part::Object(vec![(
                        "birth",
                        Part::Object(vec![("output", Part::Borrowed(&output))]),
                    )]),
                ),
                (
                    "case",
                    Part::Owned(json!({"id": "c1", "started_on": "2026-11-30"})),
                ),
            ]),
            Part::Object(vec![
                ("a", Part::Owned(json!(1))),
                ("a", Part::Owned(json!({"x": 2}))),
            ]),
            Part::Object(Vec::new()),
            Part::Owned(json!("text")),
            Part::Borrowed(&output),
        ]
    };
    let exprs = [
        ".",
        ".input",
        ".input.child.name",
        ".input.child.name.deeper",
        ".steps",
        ".steps.birth",
        ".steps.birth.output.id",
        ".steps.residence.output",
        r#".case.id == "c1""#,
        ".a.x",
        ".a",
        "{input}",
        ".steps | {birth}",
        ".input + .case",
        ".input | keys",
        r#"(.input.child.born | split("-") | .[0] |= (tonumber + 6 | tostring) | join("-")) > .case.started_on"#,
    ];
    for src in exprs {
        let expr = Expr::compile(src).unwrap();
        for part in contexts() {
            let whole = part.to_value();
            let expected = expr.eval_in(&Input::new(&whole));
            let assembled = Input::of(part);
            assert_eq!(expr.eval_in(&assembled), expected, "{src} on {whole}");
            // Read again: the whole value made on first need is kept, not made twice.
            assert_eq!(expr.eval_in(&assembled), expected, "{src} on {whole}");
        }
    }
}

#[test]
fn the_fast_path_answers_as_jq_does() {
    let contexts = [
        json!({"status": 201, "body": {"state": "issued", "n": 1.0, "list": [1, 2]}}),
        json!({"status": 201.0, "body": {"state": "refused", "n": 1}}),
        json!({"status": "201", "body": null}),
        json!({"status": 200, "body": {"state": false}}),
        json!({"body": "text"}),
        json!({"body": [1], "status": {"a": 1}}),
        json!({"body": {"status": 3, "x": {"y": 1}}, "status": {"a": 1}}),
        json!(null),
        json!([1, 2]),
    ];
    let exprs = [
        ".",
        ".status",
        ".body.state",
        ".body.state.deeper",
        ".status == 201",
        ".body.n == 1",
        r#".body.state == "issued""#,
        r#".status == 201 and .body.state == "issued""#,
        ".body.state and .status",
        r#".body.state // "none""#,
        ".missing == null",
        ".body.list == 1",
        "false",
        "1.5",
        r#""text""#,
        ".body | {state, n}",
        ".body | {}",
        "{s: .status, body}",
        ".body + {k: .status}",
        ".status + .body",
        ".missing + .body",
        ".body | {x} + {status}",
    ];
    for src in exprs {
        let expr = Expr::compile(src).unwrap();
        assert!(expr.fast.is_some(), "{src}");
        for ctx in &contexts {
            let input = Input::new(ctx);
            assert_eq!(expr.eval_in(&input), expr.eval_jq(&input), "{src} on {ctx}");
        }
    }
}

#[test]
fn jq_values_become_the_json_their_text_gives() {
    let ctx = json!({"a": {"b": [1, 2.5, "x", null, true]}});
    for src in [
        ".a | {b, c: 1}",
        "[.a.b[] | tostring]",
        "1 / 3",
        "6 / 2",
        "1e1000",
        "100000000000000000000000",
        "nan",
        r#"{"k": "é\u0000"}"#,
    ] {
        let expr = Expr::compile(src).unwrap();
        let input = Input::new(&ctx);
        let val = expr.first_output(&input).unwrap().unwrap().unwrap();
        let by_text = serde_json::from_str::<Value>(&val.to_string()).ok();
        if let Some(direct) = to_json(&val) {
            assert_eq!(Some(direct), by_text, "{src}");
        }
        assert_eq!(expr.eval_in(&input).ok(), by_text, "{src}");
    }
}

#[test]
fn failures_are_errors_not_panics() {
    assert!(matches!(
        eval(".a.b", json!({"a": "text"})),
        Err(EvalError::Failed { .. })
    ));
    assert!(matches!(
        eval("empty", json!({})),
        Err(EvalError::NoValue { .. })
    ));
    assert_eq!(
        Expr::compile("empty").unwrap().eval_bool(&json!({})),
        Ok(false)
    );
}
