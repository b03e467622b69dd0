//! Which steps (or input fields) an expression reads, from its syntax tree: `.steps.<id>`
//! paths; any other use of `.steps` is dynamic.

use jaq_core::load::parse::Term;
use jaq_core::path::Part as PathPart;

use super::compiled::StepRefs;

pub(super) fn literal<'a>(
    parts: &'a [jaq_core::load::lex::StrPart<&'a str, Term<&'a str>>],
) -> Option<&'a str> {
    match parts {
        [jaq_core::load::lex::StrPart::Str(s)] => Some(s),
        _ => None,
    }
}

/// Finds `.<root>.<name>` paths (`.steps.<id>`, `.input.<field>`); any other use of `.<root>`
/// is dynamic.
pub(super) fn walk(term: &Term<&str>, root: &str, refs: &mut StepRefs) {
    visit(term, &mut |t| {
        if let Term::Path(base, path) = t
            && matches!(**base, Term::Id)
            && let Some((PathPart::Index(Term::Str(None, parts)), _)) = path.0.first()
            && literal(parts) == Some(root)
        {
            match path.0.get(1) {
                Some((PathPart::Index(Term::Str(None, id)), _)) if literal(id).is_some() => {
                    refs.ids.insert(literal(id).unwrap_or_default().to_owned());
                }
                _ => refs.dynamic = true,
            }
        }
    });
}

/// The literal key paths read under `.<root>` (`.input.child.full_name` is `[child,
/// full_name]`), and whether `.<root>` is read in a way no literal path names (`.input`, or
/// `.input[$k]` at its first key).
pub(super) fn paths(term: &Term<&str>, root: &str) -> (Vec<Vec<String>>, bool) {
    let mut found = Vec::new();
    let mut dynamic = false;
    visit(term, &mut |t| {
        if let Term::Path(base, path) = t
            && matches!(**base, Term::Id)
            && let Some((PathPart::Index(Term::Str(None, parts)), _)) = path.0.first()
            && literal(parts) == Some(root)
        {
            let keys: Vec<String> = path.0[1..]
                .iter()
                .map_while(|(part, _)| match part {
                    PathPart::Index(Term::Str(None, key)) => literal(key).map(str::to_owned),
                    _ => None,
                })
                .collect();
            if keys.is_empty() {
                dynamic = true;
            } else {
                found.push(keys);
            }
        }
    });
    (found, dynamic)
}

/// Calls `f` on every term of the tree.
pub(super) fn visit<'a>(term: &Term<&'a str>, f: &mut impl FnMut(&Term<&'a str>)) {
    use jaq_core::load::lex::StrPart;
    f(term);
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => {}
        Term::Str(_, parts) => {
            for part in parts {
                if let StrPart::Term(t) = part {
                    visit(t, f);
                }
            }
        }
        Term::Arr(inner) => {
            if let Some(t) = inner {
                visit(t, f);
            }
        }
        Term::Obj(entries) => {
            for (k, v) in entries {
                visit(k, f);
                if let Some(v) = v {
                    visit(v, f);
                }
            }
        }
        Term::Neg(t) | Term::Label(_, t) => visit(t, f),
        Term::BinOp(l, _, r) => {
            visit(l, f);
            visit(r, f);
        }
        Term::Fold(_, xs, _, args) => {
            visit(xs, f);
            for a in args {
                visit(a, f);
            }
        }
        Term::TryCatch(t, c) => {
            visit(t, f);
            if let Some(c) = c {
                visit(c, f);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (c, t) in branches {
                visit(c, f);
                visit(t, f);
            }
            if let Some(o) = otherwise {
                visit(o, f);
            }
        }
        Term::Def(defs, body) => {
            for d in defs {
                visit(&d.body, f);
            }
            visit(body, f);
        }
        Term::Call(_, args) => {
            for a in args {
                visit(a, f);
            }
        }
        Term::Path(base, path) => {
            visit(base, f);
            for (part, _) in &path.0 {
                match part {
                    PathPart::Index(i) => visit(i, f),
                    PathPart::Range(a, b) => {
                        if let Some(a) = a {
                            visit(a, f);
                        }
                        if let Some(b) = b {
                            visit(b, f);
                        }
                    }
                }
            }
        }
    }
}
