//! Validation and compilation of a parsed configuration into a [`Plan`].

use serde_json::Value;

use super::conditions::{compile_condition, percent_bp};
use super::reader::{wrong_type, Object};
use super::{ConfigError, Loaded};
use crate::brake::Brake;
use crate::bucket::{Split, BUCKETS};
use crate::goals::{Goal, MAX_GOALS};
use crate::grpc::{self, GrpcPolicy};
use crate::hash::FastMap;
use crate::labels::ResponseClass;
use crate::metrics::MetricNames;
use crate::pin::{PinCookie, SameSite};
use crate::plan::{Cohort, DecisionHeader, Mode, Plan, RoutingMark, Scope, StickyKey};
use crate::ramp::{parse_hold, parse_rfc3339, Ramp, RampStep};
use crate::request::JwtSource;
use crate::rules::{Operator, Rule, RuleSet, Source};
use crate::slots::Slots;

pub const MAX_SUBSETS: usize = 16;
pub const DEFAULT_HEADER: &str = "x-canary-subset";
pub const DEFAULT_METRICS_PREFIX: &str = "canary";
pub const DEFAULT_METADATA_KEY: &str = "payload";
/// jwt_authn's `forward_payload_header` as the shipped envoy.yaml names it.
pub const DEFAULT_PAYLOAD_HEADER: &str = "x-jwt-payload";
const NAME_PATTERN: &str = "[a-z0-9][a-z0-9_-]{0,62}";
const KEY_SOURCES: &[&str] = &["jwt_claim", "cookie", "header", "baggage"];
const COHORT_FIELDS: &[&str] = &["bucket", "force", "trust_incoming"];
pub const DEFAULT_COHORT_BUCKET: &str = "canary-bucket";
pub const DEFAULT_COHORT_FORCE: &str = "canary-force";
pub(super) const OPERATORS: &[&str] = &["exact", "prefix", "present", "in", "contains", "regex"];

type Result<T> = std::result::Result<T, ConfigError>;

const TOP_FIELDS: &[&str] = &[
    "subsets",
    "default_subset",
    "header",
    "metrics_prefix",
    "sticky",
    "jwt",
    "rules",
    "decision_header",
    "mode",
    "ramp",
    "brake",
    "goals",
    "cohort",
    "grpc",
    "scope",
];
const PIN_FIELDS: &[&str] = &[
    "name",
    "max_age",
    "path",
    "secure",
    "http_only",
    "same_site",
];
pub const DEFAULT_PIN_MAX_AGE: u64 = 30 * 24 * 3600;

pub fn compile(config: &Value) -> Result<Loaded> {
    let top = Object::new(config, String::new(), TOP_FIELDS)?;
    let mut slots = Slots::default();
    let mut warnings = Vec::new();
    let (subsets, weights_bp) = compile_subsets(&top)?;

    let default_subset = match top.string("default_subset")? {
        None => 0,
        Some(name) => subset_index(&subsets, name, "default_subset")?,
    };
    let header = match top.string("header")? {
        None => DEFAULT_HEADER.to_owned(),
        Some(h) => header_name(h, "header")?,
    };
    let metrics_prefix = match top.string("metrics_prefix")? {
        None => DEFAULT_METRICS_PREFIX.to_owned(),
        Some(p) => metrics_prefix(p)?,
    };
    let jwt = compile_jwt(top.object("jwt", &["source", "metadata_key", "header"])?)?;
    if matches!(&jwt, JwtSource::PayloadHeader { header: h } if *h == header) {
        return Err(ConfigError::new(
            "jwt.header",
            format!("{header:?} is the decision header, which the filter overwrites"),
        ));
    }

    let (sticky_keys, seed, pin) = match top.object("sticky", &["keys", "seed", "pin_cookie"])? {
        None => (Vec::new(), String::new(), None),
        Some(sticky) => {
            let mut keys = Vec::new();
            for (path, key) in sticky.list("keys")? {
                keys.push(sticky_key(key, &path, &mut slots)?);
            }
            (
                keys,
                sticky.string("seed")?.unwrap_or_default().to_owned(),
                sticky
                    .object("pin_cookie", PIN_FIELDS)?
                    .map(|p| pin_cookie(&p, &mut slots))
                    .transpose()?,
            )
        }
    };
    let decision_header = top
        .get("decision_header")
        .map(|value| compile_decision_header(value, &mut slots))
        .transpose()?;
    let mode = match top.string("mode")? {
        None | Some("enforce") => Mode::Enforce,
        Some("shadow") => Mode::Shadow,
        Some(other) => {
            return Err(ConfigError::new(
                "mode",
                format!("unknown mode {other:?}, expected \"enforce\" or \"shadow\""),
            ))
        }
    };

    // The crate's one map type (see `Slots`): std's HashSet would add SipHash and
    // std's random seeding to the .wasm.
    let mut rule_names: FastMap<Box<[u8]>, usize> = FastMap::default();
    let rule_list = top.list("rules")?;
    let mut rules = Vec::with_capacity(rule_list.len());
    for (path, rule) in rule_list {
        let rule = Object::new(rule, path, &["name", "subset", "match", "percent"])?;
        let name = rule.required_string("name")?;
        if !valid_name(name) {
            return Err(ConfigError::new(
                rule.path("name"),
                format!("{name:?} is not a valid rule name (want {NAME_PATTERN})"),
            ));
        }
        if rule_names.insert(name.as_bytes().into(), 0).is_some() {
            return Err(ConfigError::new(
                rule.path("name"),
                format!("duplicate rule name {name:?}"),
            ));
        }
        let subset = subset_index(
            &subsets,
            rule.required_string("subset")?,
            &rule.path("subset"),
        )?;
        let condition = compile_condition(rule.required("match")?, rule.path("match"), &mut slots)?;
        let percent_bp = rule
            .get("percent")
            .map(|p| percent_bp(p, &rule.path("percent")))
            .transpose()?;
        rules.push(Rule {
            name: name.to_owned(),
            subset,
            condition,
            percent_bp,
        });
    }

    let uses_claims = rules.iter().any(|r| r.condition.reads_claims())
        || sticky_keys
            .iter()
            .any(|k| matches!(k.source, Source::Claim(_)));
    if jwt == JwtSource::UnverifiedBearer && uses_claims {
        warnings.push(
            "jwt.source is \"unverified_bearer\": JWT claims are read from the Authorization \
             header WITHOUT checking the signature; any client can forge them. Use \"verified\" \
             with Envoy's jwt_authn (Istio RequestAuthentication) in production."
                .to_owned(),
        );
    }

    let ramp = top
        .object("ramp", &["subset", "start", "steps"])?
        .map(|r| compile_ramp(&r, &subsets))
        .transpose()?;

    let brake = top
        .object(
            "brake",
            &[
                "subset",
                "max_error_rate",
                "max_p99_ms",
                "window",
                "min_requests",
                "cooldown",
                "stop_rules",
                "reset",
            ],
        )?
        .map(|b| compile_brake(&b, &subsets, default_subset))
        .transpose()?;

    let goals = compile_goals(&top, &mut slots)?;
    let cohort = top
        .object("cohort", COHORT_FIELDS)?
        .map(|c| compile_cohort(&c, &mut slots))
        .transpose()?;
    let scope = match top.get("scope") {
        None => None,
        Some(value) => {
            let mut slots = Slots::default();
            let condition = compile_condition(value, "scope".to_owned(), &mut slots)?;
            Some(Scope { condition, slots })
        }
    };
    let grpc = top
        .object("grpc", &["failure_codes"])?
        .map(|g| compile_grpc(&g))
        .transpose()?
        .unwrap_or_default();
    let mut rule_name_list = Vec::with_capacity(rules.len());
    for rule in &rules {
        rule_name_list.push(rule.name.clone());
    }
    let mut goal_name_list = Vec::with_capacity(goals.len());
    for goal in &goals {
        goal_name_list.push(goal.name.clone());
    }
    let mut metrics = MetricNames::new(&metrics_prefix, &subsets, &rule_name_list, &goal_name_list);
    if cohort.is_none() {
        metrics.cohort_overflows = None;
    }
    slots.watch_routing_header(&header);
    let mark = RoutingMark {
        key: format!("{}{header}", RoutingMark::KEY_PREFIX),
        by: metrics_prefix.clone(),
        leave: scope.is_some(),
    };
    let plan = Plan {
        split: Split::new(&weights_bp, &seed),
        metrics,
        subsets,
        weights_bp,
        default_subset,
        header,
        sticky_keys,
        seed,
        jwt,
        rules: RuleSet::new(rules),
        slots,
        pin,
        decision_header,
        mode,
        ramp,
        brake,
        goals,
        cohort,
        grpc,
        scope,
        mark,
    };
    Ok(Loaded { plan, warnings })
}

/// `goals`: unique names, a condition and the response class that completes each.
fn compile_goals(top: &Object, slots: &mut Slots) -> Result<Vec<Goal>> {
    let list = top.list("goals")?;
    if list.len() > MAX_GOALS {
        return Err(ConfigError::new(
            "goals",
            format!("{} goals; at most {MAX_GOALS}", list.len()),
        ));
    }
    let mut goals: Vec<Goal> = Vec::with_capacity(list.len());
    for (path, goal) in list {
        let goal = Object::new(goal, path, &["name", "match", "status"])?;
        let name = goal.required_string("name")?;
        if !valid_name(name) {
            return Err(ConfigError::new(
                goal.path("name"),
                format!("{name:?} is not a valid goal name (want {NAME_PATTERN})"),
            ));
        }
        if goals.iter().any(|g| g.name == name) {
            return Err(ConfigError::new(
                goal.path("name"),
                format!("duplicate goal name {name:?}"),
            ));
        }
        let condition = compile_condition(goal.required("match")?, goal.path("match"), slots)?;
        let status = goal.required_string("status")?;
        let class = ResponseClass::ALL
            .into_iter()
            .find(|c| c.as_str() == status)
            .ok_or_else(|| {
                ConfigError::new(
                    goal.path("status"),
                    format!(
                        "unknown status class {status:?}, expected \"2xx\", \"3xx\", \"4xx\", \"5xx\", \
                         \"grpc_ok\", \"grpc_error\" or \"grpc_other\""
                    ),
                )
            })?;
        goals.push(Goal {
            name: name.to_owned(),
            condition,
            class,
        });
    }
    Ok(goals)
}

fn compile_subsets(top: &Object) -> Result<(Vec<String>, Vec<u16>)> {
    let subsets = match top.required("subsets")? {
        serde_json::Value::Array(_) => top.list("subsets")?,
        other => {
            return Err(ConfigError::new(
                "subsets",
                format!("want a list, got {}", kind(other)),
            ))
        }
    };
    if subsets.is_empty() || subsets.len() > MAX_SUBSETS {
        return Err(ConfigError::new(
            "subsets",
            format!("want 1 to {MAX_SUBSETS} subsets, got {}", subsets.len()),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(subsets.len());
    let mut weights = Vec::with_capacity(subsets.len());
    let mut last = String::new();
    for (path, subset) in &subsets {
        let subset = Object::new(subset, path.clone(), &["name", "weight"])?;
        let name = subset.required_string("name")?;
        if !valid_name(name) {
            return Err(ConfigError::new(
                subset.path("name"),
                format!("{name:?} is not a valid subset name (want {NAME_PATTERN})"),
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(ConfigError::new(
                subset.path("name"),
                format!("duplicate subset {name:?}"),
            ));
        }
        names.push(name.to_owned());
        last = subset.path("weight");
        weights.push(weight_bp(subset.number("weight")?, &last)?);
    }
    let sum: u32 = weights.iter().map(|&w| u32::from(w)).sum();
    if sum != u32::from(BUCKETS) {
        return Err(ConfigError::new(
            last,
            format!("weights sum to {}, want 100", format_bp(sum)),
        ));
    }
    Ok((names, weights))
}

pub(super) fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        _ => "something else",
    }
}

/// A percentage with at most two decimals, as basis points.
fn weight_bp(weight: f64, path: &str) -> Result<u16> {
    // Printed through serde_json (as the user wrote it), not core's float printer.
    let shown = crate::json::number_text(weight);
    if !weight.is_finite() || !(0.0..=100.0).contains(&weight) {
        return Err(ConfigError::new(
            path,
            format!("{shown} is not a percentage between 0 and 100"),
        ));
    }
    let scaled = weight * 100.0;
    let bp = scaled.round();
    if (scaled - bp).abs() > 1e-6 {
        return Err(ConfigError::new(
            path,
            format!("{shown} has more than two decimals (weights move in steps of 0.01)"),
        ));
    }
    // 0 ≤ bp ≤ 10,000: the range check above bounds it.
    Ok(bp as u16)
}

fn format_bp(bp: u32) -> String {
    if bp % 100 == 0 {
        format!("{}", bp / 100)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
            .trim_end_matches('0')
            .to_owned()
    }
}

fn subset_index(subsets: &[String], name: &str, path: &str) -> Result<usize> {
    subsets.iter().position(|s| s == name).ok_or_else(|| {
        // Joined by hand: `[String]::join` would be a second `join` instance
        // next to the `[&str]` one (~1 KiB of .wasm).
        let mut have = String::new();
        for (i, s) in subsets.iter().enumerate() {
            if i > 0 {
                have.push_str(", ");
            }
            have.push_str(s);
        }
        ConfigError::new(
            path,
            format!("{name:?} is not a listed subset (have {have})"),
        )
    })
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// An HTTP header name (RFC 9110 token), lowercased as Envoy stores them.
pub(super) fn header_name(name: &str, path: &str) -> Result<String> {
    let is_token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// One stats-name segment, so the shipped tag regexes (and Prometheus names) fit.
fn metrics_prefix(prefix: &str) -> Result<String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(prefix.to_owned())
    } else {
        Err(ConfigError::new(
            "metrics_prefix",
            format!(
                "{prefix:?} is not a valid stats prefix (want 1 to 64 of [A-Za-z0-9_], no dots)"
            ),
        ))
    }
}

fn compile_jwt(jwt: Option<Object>) -> Result<JwtSource> {
    let Some(jwt) = jwt else {
        return Ok(JwtSource::Verified {
            metadata_key: DEFAULT_METADATA_KEY.to_owned(),
        });
    };
    let source = jwt.string("source")?.unwrap_or("verified");
    let metadata_key = jwt.string("metadata_key")?;
    let header = jwt.string("header")?;
    let only_for = |field: &str, wanted: &str| {
        Err(ConfigError::new(
            field,
            format!("only applies to source \"{wanted}\""),
        ))
    };
    match (source, metadata_key, header) {
        (_, Some(_), _) if source != "verified" => only_for("jwt.metadata_key", "verified"),
        (_, _, Some(_)) if source != "payload_header" => only_for("jwt.header", "payload_header"),
        ("verified", None, _) => Ok(JwtSource::Verified {
            metadata_key: DEFAULT_METADATA_KEY.to_owned(),
        }),
        ("verified", Some(""), _) => Err(ConfigError::new(
            "jwt.metadata_key",
            "must not be empty (Istio uses \"payload\")",
        )),
        ("verified", Some(key), _) => Ok(JwtSource::Verified {
            metadata_key: key.to_owned(),
        }),
        ("payload_header", _, header) => Ok(JwtSource::PayloadHeader {
            header: header_name(header.unwrap_or(DEFAULT_PAYLOAD_HEADER), "jwt.header")?,
        }),
        ("unverified_bearer", _, _) => Ok(JwtSource::UnverifiedBearer),
        (other, _, _) => Err(ConfigError::new(
            "jwt.source",
            format!(
                "unknown source {other:?}, expected \"verified\", \"payload_header\" or \"unverified_bearer\""
            ),
        )),
    }
}

pub(super) fn claim_path(name: &str, path: &str) -> Result<Vec<String>> {
    let mut segments = Vec::new();
    for segment in name.split('.') {
        segments.push(segment.to_owned());
    }
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a claim name or dotted path (like realm_access.roles)"),
        ));
    }
    Ok(segments)
}

fn sticky_key(key: &Value, path: &str, slots: &mut Slots) -> Result<StickyKey> {
    let key = Object::new(key, path.to_owned(), KEY_SOURCES)?;
    let kind = key.exactly_one(KEY_SOURCES)?;
    let name = key.required_string(kind)?;
    let name_path = key.path(kind);
    let source = match kind {
        "jwt_claim" => Source::Claim(slots.intern_claim(claim_path(name, &name_path)?)),
        "cookie" => Source::Cookie(slots.intern_cookie(&cookie_name(name, &name_path)?)),
        "baggage" => {
            Source::Baggage(slots.intern_baggage(header_name(name, &name_path)?.as_bytes()))
        }
        _ => Source::Header(slots.intern_header(&header_name(name, &name_path)?)),
    };
    Ok(StickyKey {
        label: format!("{kind}:{name}"),
        source,
    })
}

fn compile_ramp(ramp: &Object, subsets: &[String]) -> Result<Ramp> {
    let subset = subset_index(
        subsets,
        ramp.required_string("subset")?,
        &ramp.path("subset"),
    )?;
    if subset + 1 != subsets.len() || subsets.len() < 2 {
        return Err(ConfigError::new(
            ramp.path("subset"),
            "must be the last of at least two listed subsets, so that raising its weight only moves users into it",
        ));
    }
    let start_text = ramp.required_string("start")?;
    let start_ms = parse_rfc3339(start_text).ok_or_else(|| {
        ConfigError::new(
            ramp.path("start"),
            format!("{start_text:?} is not an RFC 3339 time like \"2026-12-01T10:00:00Z\""),
        )
    })?;
    let list = match ramp.required("steps")? {
        Value::Array(_) => ramp.list("steps")?,
        _ => {
            return Err(ConfigError::new(
                ramp.path("steps"),
                "want a list of {\"weight\", \"hold\"}",
            ))
        }
    };
    if list.is_empty() {
        return Err(ConfigError::new(
            ramp.path("steps"),
            "want at least one step",
        ));
    }
    let last = list.len() - 1;
    let mut steps: Vec<RampStep> = Vec::with_capacity(list.len());
    for (i, (path, step)) in list.iter().enumerate() {
        let step = Object::new(step, path.clone(), &["weight", "hold"])?;
        let weight_bp = weight_bp(step.number("weight")?, &step.path("weight"))?;
        if let Some(previous) = steps.last() {
            if weight_bp < previous.weight_bp {
                return Err(ConfigError::new(
                    step.path("weight"),
                    "steps must not decrease (a ramp only moves users into the canary)",
                ));
            }
        }
        let hold_ms = match (step.string("hold")?, i == last) {
            (None, true) => None,
            (Some(_), true) => {
                return Err(ConfigError::new(
                    step.path("hold"),
                    "the last step holds forever; remove \"hold\"",
                ))
            }
            (None, false) => return Err(ConfigError::new(path.clone(), "missing field `hold`")),
            (Some(text), false) => Some(parse_hold(text).filter(|h| *h > 0).ok_or_else(|| {
                ConfigError::new(
                    step.path("hold"),
                    format!("{text:?} is not a duration like \"30s\", \"5m\" or \"2h\""),
                )
            })?),
        };
        steps.push(RampStep { weight_bp, hold_ms });
    }
    Ok(Ramp {
        subset,
        start_ms,
        steps,
    })
}

fn compile_brake(brake: &Object, subsets: &[String], default_subset: usize) -> Result<Brake> {
    let subset = subset_index(
        subsets,
        brake.required_string("subset")?,
        &brake.path("subset"),
    )?;
    if subset == default_subset {
        return Err(ConfigError::new(
            brake.path("subset"),
            "must not be the default subset: a tripped brake sends its users there",
        ));
    }
    if brake.get("max_error_rate").is_none() && brake.get("max_p99_ms").is_none() {
        return Err(ConfigError::new(
            brake.path("max_error_rate"),
            "want max_error_rate, max_p99_ms or both",
        ));
    }
    let max_error_rate = match brake.get("max_error_rate") {
        None => 1.0,
        Some(_) => {
            let rate = brake.number("max_error_rate")?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::new(
                    brake.path("max_error_rate"),
                    "want a fraction from 0 to 1 (0.01 is 1 %)",
                ));
            }
            rate
        }
    };
    let max_p99_ms = brake.unsigned("max_p99_ms")?;
    let duration = |key: &str, default: &str| -> Result<i64> {
        let text = brake.string(key)?.unwrap_or(default);
        parse_hold(text).filter(|d| *d > 0).ok_or_else(|| {
            ConfigError::new(
                brake.path(key),
                format!("{text:?} is not a duration like \"30s\", \"5m\" or \"2h\""),
            )
        })
    };
    let window_ms = duration("window", "30s")?;
    let cooldown_ms = match brake.string("cooldown")? {
        None | Some("never") => None,
        Some(_) => Some(duration("cooldown", "never")?),
    };
    let min_requests = brake.unsigned("min_requests")?.unwrap_or(50).max(1);
    Ok(Brake {
        subset,
        max_error_rate,
        max_p99_ms,
        window_ms,
        min_requests,
        cooldown_ms,
        stop_rules: brake.boolean("stop_rules")?.unwrap_or(true),
        reset: brake.string("reset")?.unwrap_or_default().to_owned(),
    })
}

fn pin_cookie(pin: &Object, slots: &mut Slots) -> Result<PinCookie> {
    let name = cookie_name(pin.required_string("name")?, &pin.path("name"))?;
    let max_age = pin.unsigned("max_age")?.unwrap_or(DEFAULT_PIN_MAX_AGE);
    if max_age == 0 {
        return Err(ConfigError::new(
            pin.path("max_age"),
            "0 would delete the pin at once; want seconds, at least 1",
        ));
    }
    let path = pin.string("path")?.unwrap_or("/");
    if !path.starts_with('/') || path.bytes().any(|b| b < b' ' || b == b';' || b >= 0x7f) {
        return Err(ConfigError::new(
            pin.path("path"),
            format!("{path:?} is not a cookie path (want /..., no ';' or control characters)"),
        ));
    }
    let secure = pin.boolean("secure")?.unwrap_or(true);
    let http_only = pin.boolean("http_only")?.unwrap_or(true);
    let same_site = match pin.string("same_site")? {
        None => SameSite::Lax,
        Some(value) => SameSite::parse(value).ok_or_else(|| {
            ConfigError::new(
                pin.path("same_site"),
                format!("{value:?} is not one of \"Strict\", \"Lax\", \"None\""),
            )
        })?,
    };
    if same_site == SameSite::None && !secure {
        return Err(ConfigError::new(
            pin.path("same_site"),
            "\"None\" needs \"secure\": true (browsers drop the cookie otherwise)",
        ));
    }
    let slot = slots.intern_cookie(&name);
    Ok(PinCookie::new(
        name, slot, max_age, path, secure, http_only, same_site,
    ))
}

/// `decision_header`: a header name (every response carries it), or
/// `{"name": ..., "match": condition}` (only responses to matching requests).
#[inline(never)]
fn compile_decision_header(value: &Value, slots: &mut Slots) -> Result<DecisionHeader> {
    const FIELD: &str = "decision_header";
    if let Value::String(name) = value {
        return Ok(DecisionHeader {
            name: header_name(name, FIELD)?,
            only_for: None,
        });
    }
    if !value.is_object() {
        return Err(ConfigError::new(
            FIELD,
            "want a header name or {\"name\": ..., \"match\": condition}",
        ));
    }
    let object = Object::new(value, FIELD.to_owned(), &["name", "match"])?;
    let name = header_name(object.required_string("name")?, &object.path("name"))?;
    let only_for = object
        .get("match")
        .map(|m| compile_condition(m, object.path("match"), slots))
        .transpose()?;
    Ok(DecisionHeader { name, only_for })
}

/// The `grpc` block: the codes that count as failures, by name (as gRPC spells
/// them) or number. OK cannot be one; an empty list counts no gRPC failure.
fn compile_grpc(grpc: &Object) -> Result<GrpcPolicy> {
    let Some(_) = grpc.get("failure_codes") else {
        return Ok(GrpcPolicy::default());
    };
    let mut codes = Vec::new();
    for (path, value) in grpc.list("failure_codes")? {
        let code = match value {
            Value::String(name) => grpc::code_of(name).ok_or_else(|| {
                ConfigError::new(
                    &path,
                    format!(
                        "unknown gRPC status {name:?}, expected a name such as \"UNAVAILABLE\" \
                         (one of {}) or a number 1 to 16",
                        grpc::CODE_NAMES.join(", ")
                    ),
                )
            })?,
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .filter(|&n| usize::from(n) < grpc::CODE_NAMES.len())
                .ok_or_else(|| {
                    ConfigError::new(
                        &path,
                        "not a gRPC status code: want a whole number from 1 to 16",
                    )
                })?,
            other => return Err(wrong_type(&path, other, "a gRPC status name or number")),
        };
        if code == grpc::OK {
            return Err(ConfigError::new(
                &path,
                "OK (0) is a success and cannot count as a failure",
            ));
        }
        if codes.contains(&code) {
            return Err(ConfigError::new(
                &path,
                format!("{} is listed twice", grpc::code_name(code)),
            ));
        }
        codes.push(code);
    }
    Ok(GrpcPolicy::failing(&codes))
}

/// The `cohort` block: which baggage members carry the bucket and a forced
/// subset, and whether members of those names that arrive are trusted.
#[inline(never)]
fn compile_cohort(cohort: &Object, slots: &mut Slots) -> Result<Cohort> {
    // Baggage keys are HTTP tokens, as header names are.
    let name = |field: &str, default: &str| match cohort.string(field)? {
        Some(given) => header_name(given, &cohort.path(field)),
        None => Ok(default.to_owned()),
    };
    let bucket = name("bucket", DEFAULT_COHORT_BUCKET)?;
    let force = name("force", DEFAULT_COHORT_FORCE)?;
    if bucket == force {
        return Err(ConfigError::new(
            cohort.path("force"),
            "must differ from `bucket`",
        ));
    }
    let trust_incoming = cohort.boolean("trust_incoming")?.unwrap_or(false);
    if !trust_incoming {
        slots.ignore_baggage(bucket.as_bytes());
        slots.ignore_baggage(force.as_bytes());
    }
    slots.intern_baggage(bucket.as_bytes());
    Ok(Cohort {
        bucket,
        force,
        trust_incoming,
    })
}

pub(super) fn cookie_name(name: &str, path: &str) -> Result<String> {
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b <= b' ' || b == b';' || b == b'=' || b >= 0x7f)
    {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid cookie name"),
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn compile_operator(operand: &Object) -> Result<Operator> {
    let op = operand.exactly_one(OPERATORS)?;
    let path = operand.path(op);
    let bytes = |s: &str| s.as_bytes().to_vec().into_boxed_slice();
    Ok(match op {
        "exact" => Operator::Exact(bytes(operand.required_string(op)?)),
        "prefix" => Operator::Prefix(bytes(operand.required_string(op)?)),
        "present" => Operator::Present(operand.boolean(op)?.unwrap_or(true)),
        "contains" => {
            let token = operand.required_string(op)?;
            if token.is_empty() || token.contains([' ', '\t', ',']) {
                return Err(ConfigError::new(
                    path,
                    "want one non-empty token without spaces or commas",
                ));
            }
            Operator::Contains(bytes(token))
        }
        "in" => {
            let list = operand.strings(op)?.unwrap_or_default();
            if list.is_empty() {
                return Err(ConfigError::new(
                    path,
                    "empty list: the rule could never match",
                ));
            }
            Operator::In(list.into_iter().map(bytes).collect())
        }
        _ => {
            let pattern = operand.required_string(op)?;
            let re = crate::rules::compile_regex(pattern).map_err(|e| {
                ConfigError::new(
                    path,
                    format!("invalid regex {pattern:?}: {}", one_line(&e.to_string())),
                )
            })?;
            Operator::Regex(re)
        }
    })
}

fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}
