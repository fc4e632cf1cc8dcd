//! Conditions: the `match` of a rule and of a goal, compiled into a
//! [`Condition`] tree with every error naming its field
//! (`rules[2].match.all[1].path: ...`).

use serde_json::Value;

use super::reader::Object;
use super::ConfigError;

type Result<T> = std::result::Result<T, ConfigError>;
use crate::rules::{Condition, Input, Test, MAX_DEPTH, MAX_TESTS};
use crate::slots::Slots;

/// What a condition can be: one source, or a composition.
pub const CONDITION_KINDS: &[&str] = &[
    "header",
    "cookie",
    "jwt_claim",
    "path",
    "method",
    "host",
    "query",
    "baggage",
    "all",
    "any",
    "not",
];

/// Compile the condition at `path` (a JSON object with exactly one kind).
pub fn compile_condition(value: &Value, path: String, slots: &mut Slots) -> Result<Condition> {
    let mut tests = 0;
    let condition = compile(value, path.clone(), slots, 1, &mut tests)?;
    if tests > MAX_TESTS {
        return Err(ConfigError::new(
            path,
            format!("{tests} tests in one condition; at most {MAX_TESTS}"),
        ));
    }
    Ok(condition)
}

fn compile(
    value: &Value,
    path: String,
    slots: &mut Slots,
    depth: usize,
    tests: &mut usize,
) -> Result<Condition> {
    if depth > MAX_DEPTH {
        return Err(ConfigError::new(
            path,
            format!("conditions nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    let object = Object::new(value, path, CONDITION_KINDS)?;
    let kind = object.exactly_one(CONDITION_KINDS)?;
    let at = object.path(kind);
    match kind {
        "all" | "any" => {
            let list = object.list(kind)?;
            if list.is_empty() {
                return Err(ConfigError::new(
                    at,
                    format!("empty `{kind}`: want at least one condition"),
                ));
            }
            let mut children = Vec::with_capacity(list.len());
            for (child_path, child) in list {
                children.push(compile(child, child_path, slots, depth + 1, tests)?);
            }
            let children = children.into_boxed_slice();
            Ok(if kind == "all" {
                Condition::All(children)
            } else {
                Condition::Any(children)
            })
        }
        "not" => {
            let inner = object.required(kind)?;
            if inner.is_array() {
                return Err(ConfigError::new(
                    at,
                    "`not` takes one condition, not a list (wrap a list in `any` or `all`)",
                ));
            }
            Ok(Condition::Not(Box::new(compile(
                inner,
                at,
                slots,
                depth + 1,
                tests,
            )?)))
        }
        _ => {
            *tests += 1;
            Ok(Condition::Test(compile_test(kind, &object, slots)?))
        }
    }
}

fn compile_test(kind: &str, object: &Object, slots: &mut Slots) -> Result<Test> {
    let named = matches!(
        kind,
        "header" | "cookie" | "jwt_claim" | "query" | "baggage"
    );
    let mut fields = super::compile::OPERATORS.to_vec();
    if named {
        fields.push("name");
    }
    let operand = Object::new(object.required(kind)?, object.path(kind), &fields)?;
    let input = if named {
        let name = operand.required_string("name")?;
        let name_path = operand.path("name");
        match kind {
            "header" => {
                Input::Header(slots.intern_header(&super::compile::header_name(name, &name_path)?))
            }
            "cookie" => {
                Input::Cookie(slots.intern_cookie(&super::compile::cookie_name(name, &name_path)?))
            }
            "jwt_claim" => {
                Input::Claim(slots.intern_claim(super::compile::claim_path(name, &name_path)?))
            }
            "baggage" => Input::Baggage(
                slots.intern_baggage(super::compile::header_name(name, &name_path)?.as_bytes()),
            ),
            _ => {
                if name.is_empty() {
                    return Err(ConfigError::new(name_path, "empty query parameter name"));
                }
                let slot = slots.intern_query(name.as_bytes());
                Input::Query {
                    path: slots.intern_header(":path"),
                    slot,
                }
            }
        }
    } else {
        match kind {
            "path" => Input::Path(slots.intern_header(":path")),
            "method" => Input::Method(slots.intern_header(":method")),
            _ => Input::Host(slots.intern_header(":authority")),
        }
    };
    let operator = super::compile::compile_operator(&operand)?;
    Ok(Test { input, operator })
}

/// A rule's `percent`: a share in basis points, 0 to 100 with at most two decimals.
pub fn percent_bp(value: &Value, path: &str) -> Result<u16> {
    // Numbers are printed through json::number_text: a `Value`'s Display would
    // bring serde_json's writer into the .wasm.
    let Some(number) = value.as_f64() else {
        let got = match value.as_str() {
            Some(text) => format!("the string {text:?}"),
            None => super::compile::kind(value).to_owned(),
        };
        return Err(ConfigError::new(
            path,
            format!("want a number from 0 to 100, got {got}"),
        ));
    };
    let shown = crate::json::number_text(number);
    let bp = number * 100.0;
    if !(0.0..=10_000.0).contains(&bp) {
        return Err(ConfigError::new(path, format!("{shown} is outside 0..100")));
    }
    if (bp - bp.round()).abs() > 1e-6 {
        return Err(ConfigError::new(
            path,
            format!("{shown} has more than two decimals (steps are 0.01)"),
        ));
    }
    Ok(bp.round() as u16)
}
