//! Claims read in place from JSON text (`JsonObject`) against the way they were
//! read before it: the payload parsed into a map by `json::from_slice`, then
//! looked up in the map. The same claims, or none, from the same header value,
//! for payloads written to hit the edges, random ones (repeated keys, escapes,
//! numbers of every shape, whitespace), byte-level mutations of those, and every
//! fuzz input kept in the repository.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::*;
use crate::formats::jwt::{base64url_decode, base64url_encode};
use crate::rng::SplitMix64;

/// The claims of a `payload_header` value as they were read before: decoded,
/// parsed into a map (`None`: no claims), each claim looked up in the map.
fn map_payload(value: &[u8]) -> Option<Map<String, Value>> {
    match crate::json::from_slice(&base64url_decode(value)?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The map lookup as it was (`lookup_ref` on the map, then `to_claim`).
fn map_claim(map: &Map<String, Value>, path: &ClaimPath) -> Option<Claim> {
    let (first, rest) = path.split_first()?;
    let mut value = map.get(first)?;
    for segment in rest {
        value = value.as_object()?.get(segment)?;
    }
    let text = |value: &Value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Null => None,
        Value::Array(items) => Some(Claim::List(items.iter().filter_map(text).collect())),
        Value::Object(_) => Some(Claim::Object),
        scalar => text(scalar).map(Claim::Scalar),
    }
}

/// A claim read in place, with its exact bytes (which must be UTF-8).
fn exact(claim: ClaimRef<'_>) -> Claim {
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    match claim {
        ClaimRef::Scalar(s) => Claim::Scalar(text(&s)),
        ClaimRef::List(list) => Claim::List(list.items().map(|i| text(&i)).collect()),
        ClaimRef::Object => Claim::Object,
    }
}

const PATHS: &[&str] = &[
    "sub",
    "groups",
    "realm_access.roles",
    "realm_access",
    "a",
    "a.b",
    "a.b.c",
    "b.a",
    "",
    "é",
    "x\"y",
    "/",
    "roles.a",
    // Keys written with escapes, as a path names them literally (never equal).
    r"s\u0075b",
    r"a\\b",
    r#"x\"y"#,
];

/// The paths to compare on one payload: the fixed ones, and every key path of
/// up to three levels that the map holds.
fn paths(map: Option<&Map<String, Value>>) -> Vec<Vec<String>> {
    let mut paths: Vec<Vec<String>> = PATHS
        .iter()
        .map(|p| p.split('.').map(str::to_owned).collect())
        .collect();
    fn walk(map: &Map<String, Value>, prefix: &[String], paths: &mut Vec<Vec<String>>) {
        for (key, value) in map {
            let mut path = prefix.to_vec();
            path.push(key.clone());
            if let (Value::Object(inner), true) = (value, path.len() < 3) {
                walk(inner, &path, paths);
            }
            paths.push(path);
        }
    }
    if let Some(map) = map {
        walk(map, &[], &mut paths);
    }
    paths
}

/// Both readings of the header `value` agree; returns whether it has claims.
fn same(value: &[u8]) -> bool {
    let map = map_payload(value);
    let object = forwarded_payload(value);
    assert_eq!(
        object.is_some(),
        map.is_some(),
        "claims or not: {:?}",
        base64url_decode(value).map(|d| String::from_utf8_lossy(&d).into_owned())
    );
    for path in paths(map.as_ref()) {
        let old = map.as_ref().and_then(|m| map_claim(m, &path));
        let new = object.as_ref().and_then(|o| o.claim_ref(&path)).map(exact);
        assert_eq!(
            new,
            old,
            "{path:?} in {:?}",
            object
                .as_ref()
                .map(|o| String::from_utf8_lossy(o.as_bytes()))
        );
    }
    map.is_some()
}

/// Both readings agree on `text` as the payload, padded or not.
fn same_text(text: &[u8]) -> bool {
    let mut value = base64url_encode(text).into_bytes();
    let claims = same(&value);
    while value.len() % 4 != 0 {
        value.push(b'=');
    }
    assert_eq!(same(&value), claims);
    claims
}

#[test]
fn edge_payloads_read_the_same() {
    let cases: &[&str] = &[
        // Repeated keys: the last one wins, at the top and inside, whatever the
        // kinds; a path does not merge the objects of a repeated key.
        r#"{"sub":"a","sub":"b"}"#,
        r#"{"sub":"a","x":1,"sub":null}"#,
        r#"{"sub":null,"sub":"c"}"#,
        r#"{"sub":{"a":1},"sub":["l"]}"#,
        r#"{"realm_access":{"roles":["a"]},"realm_access":{"x":1}}"#,
        r#"{"realm_access":{"roles":["a"],"roles":"b"}}"#,
        r#"{"realm_access":{"roles":["a"]},"realm_access":{"roles":["b"]}}"#,
        r#"{"a":{"b":{"c":1}},"a":{"b":{"d":2}}}"#,
        // Escaped keys compare unescaped; a key that only looks equal does not.
        r#"{"s\u0075b":"esc"}"#,
        r#"{"sub":"plain","s\u0075b":"esc"}"#,
        r#"{"s\u0075b":"esc","sub":"plain"}"#,
        r#"{"x\"y":1,"\/":2,"\u00e9":3,"é":4}"#,
        r#"{"a\\b":1,"a\\\\b":2}"#,
        r#"{"gr\u006fups":["e"],"realm_access":{"r\u006fles":"r"}}"#,
        r#"{"su":"short","subb":"long","su\u0062":"esc"}"#,
        // Strings: escapes of every kind, raw UTF-8, empty.
        r#"{"sub":"a\nb\t\"\\\/\b\f\r","a":""}"#,
        r#"{"sub":"\u00e9\u4e2d\ud83d\ude00","a":"é中😀"}"#,
        r#"{"sub":"\u0000","a":"x\u001fy"}"#,
        // Numbers as the map's value prints them.
        r#"{"a":0,"b":-0,"sub":1.0,"groups":1e3}"#,
        r#"{"a":-0.0,"b":0.0,"sub":1E+3,"groups":-1.5e-3}"#,
        r#"{"a":18446744073709551615,"b":18446744073709551616}"#,
        r#"{"a":-9223372036854775808,"b":-9223372036854775809}"#,
        r#"{"a":9999999999999999999,"b":99999999999999999999}"#,
        r#"{"a":-999999999999999999,"b":-9999999999999999999}"#,
        r#"{"a":123456789012345678901234567890,"b":0.1,"sub":1e308}"#,
        r#"{"a":1.5e-400,"b":4102444800,"sub":3.0e0,"groups":2.5E2}"#,
        r#"{"a":0e2147483648,"b":1e-2147483648}"#,
        r#"{"a":[1.0,-0,1e3,18446744073709551616,7]}"#,
        // Lists: scalars kept in order, null, lists and objects skipped.
        r#"{"groups":["a",2,false,null,{},[],["x"],{"k":"v"},"z"]}"#,
        r#"{"groups":[],"a":[null],"b":[[]]}"#,
        r#"{"groups":["]","}",",","[","{","\"]"]}"#,
        // Booleans, null, objects, paths into non-objects.
        r#"{"a":true,"b":false,"sub":null,"groups":{}}"#,
        r#"{"a":{"b":[{"c":1}]},"sub":"x"}"#,
        r#"{"":"empty key","a":{"":1}}"#,
        // Whitespace everywhere.
        " \t\r\n{ \"sub\" :\n\"a\" ,\r\n\"groups\"\t: [ \"x\" , 1 ] , \"a\" : { \"b\" : 2 } }\n ",
    ];
    for case in cases {
        assert!(same_text(case.as_bytes()), "{case}");
    }
    // Not a claims object: malformed, or not an object.
    let malformed: &[&str] = &[
        "",
        " ",
        "[]",
        "null",
        r#""sub""#,
        "{",
        "}",
        r#"{"sub":"a",}"#,
        r#"{"sub":"a" "b":1}"#,
        r#"{"sub":"a"} x"#,
        r#"{"sub":"a"}{}"#,
        r#"{"sub":01}"#,
        r#"{"sub":1.}"#,
        r#"{"sub":1e400}"#,
        r#"{"a":1e2147483648}"#,
        r#"{"sub":-1e400}"#,
        r#"{"sub":"\x"}"#,
        r#"{"sub":"\ud83d"}"#,
        r#"{"sub":"\ude00"}"#,
        r#"{"sub":"\u12"}"#,
        "{\"sub\":\"a\tb\"}",
        r#"{"sub":tru}"#,
        r#"{"sub":nul}"#,
        r#"{sub:"a"}"#,
        r#"{"sub":"a","groups":[1,]}"#,
        r#"{"sub":"a","groups":[1 2]}"#,
        "\u{feff}{\"sub\":\"a\"}",
    ];
    for case in malformed {
        assert!(!same_text(case.as_bytes()), "{case}");
    }
    // Invalid UTF-8 in strings, keys and outside them.
    for text in [
        &b"{\"sub\":\"\xff\"}"[..],
        b"{\"sub\":\"ab\xc3\"}",
        b"{\"\xe4\xb8\":1}",
        b"{\"sub\":\"a\\n\xff\"}",
        b"{\"sub\":\"\xed\xa0\x80\"}",
        b"{\"sub\":1}\xff",
        b"\xff{\"sub\":1}",
        b"{\"sub\":\"\xc0\xaf\"}",
    ] {
        assert!(!same_text(text));
    }
    // The depth limit: 127 levels are read, 128 are not (no claims at all).
    for depth in [126, 127, 128, 300] {
        let text = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert_eq!(same_text(text.as_bytes()), depth < 128, "{depth}");
        let text = format!(
            "{{\"sub\":\"x\",\"l\":{}1{}}}",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        );
        assert_eq!(same_text(text.as_bytes()), depth < 128, "{depth}");
    }
}

#[test]
fn members_past_the_index_read_the_same() {
    for n in [14, 15, 16, 17, 40] {
        // `sub` early, `groups` on both sides of the index's end, `a` only late.
        let mut members: Vec<String> = (0..n).map(|i| format!("\"k{}\":{i}", i % 20)).collect();
        members.insert(1, r#""sub":"first""#.into());
        members.insert(members.len().min(15), r#""groups":["x"]"#.into());
        members.push(r#""groups":["y"],"a":{"b":1}"#.into());
        members.push(r#""s\u0075b":"last""#.into());
        let text = format!("{{{}}}", members.join(","));
        assert!(same_text(text.as_bytes()), "{text}");
    }
}

#[test]
fn scalars_are_borrowed_unless_they_must_be_rewritten() {
    let object = JsonObject::new(
        br#"{"s":"alice","i":42,"n":-7,"t":true,"e":"a\nb","f":1.0,"z":-0}"#.to_vec(),
    )
    .unwrap();
    let borrowed = |name: &str| {
        matches!(
            object.claim_ref(&[name.to_owned()]),
            Some(ClaimRef::Scalar(Cow::Borrowed(_)))
        )
    };
    for name in ["s", "i", "n", "t"] {
        assert!(borrowed(name), "{name}");
    }
    for name in ["e", "f", "z"] {
        assert!(!borrowed(name), "{name}");
    }
    let list = JsonObject::new(br#"{"l":["a","b\"c",3]}"#.to_vec()).unwrap();
    let Some(ClaimRef::List(items)) = list.claim_ref(&["l".to_owned()]) else {
        panic!("a list");
    };
    let items: Vec<Cow<'_, [u8]>> = items.items().collect();
    assert!(matches!(items[0], Cow::Borrowed(b"a")));
    assert_eq!(&*items[1], b"b\"c");
    assert!(matches!(items[2], Cow::Borrowed(b"3")));
}

/// Random text, edited: a byte inserted, removed or replaced, 1 to 3 times.
fn mutate(rng: &mut SplitMix64, text: &[u8]) -> Vec<u8> {
    const BYTES: &[u8] = b"{}[]:,\"\\-.eE0159 \nnutfu\x00\x1f\xff";
    let mut mutated = text.to_vec();
    for _ in 0..1 + rng.next_u64() % 3 {
        let at = (rng.next_u64() % (mutated.len() as u64 + 1)) as usize;
        let byte = BYTES[(rng.next_u64() % BYTES.len() as u64) as usize];
        match rng.next_u64() % 3 {
            0 => mutated.insert(at, byte),
            1 if at < mutated.len() => {
                mutated.remove(at);
            }
            _ if at < mutated.len() => mutated[at] = byte,
            _ => mutated.push(byte),
        }
    }
    mutated
}

/// A random JSON object as text: few distinct keys (so repeats are common),
/// keys and strings with escapes, numbers of every shape, random spacing.
struct Gen(SplitMix64);

impl Gen {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.0.next_u64() % from.len() as u64) as usize]
    }

    fn space(&mut self, out: &mut String) {
        out.push_str(self.pick(&["", "", "", " ", "\n", "\t ", "\r\n  "]));
    }

    fn value(&mut self, depth: u32, out: &mut String) {
        let kinds = if depth == 0 { 4 } else { 6 };
        match self.0.next_u64() % kinds {
            0 => {
                out.push('"');
                out.push_str(self.pick(&[
                    "alice",
                    "staff",
                    "dev",
                    "",
                    "a\\nb",
                    "\\u00e9",
                    "é",
                    "\\ud83d\\ude00",
                    "\\\"q\\\"",
                    "\\/",
                    "ops",
                    "x y",
                ]));
                out.push('"');
            }
            1 => out.push_str(self.pick(&[
                "0",
                "-0",
                "1",
                "-1",
                "42",
                "1.0",
                "1e3",
                "1E+3",
                "-1.5e-3",
                "0.1",
                "4102444800",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "-9223372036854775809",
                "9999999999999999999",
                "99999999999999999999",
                "123456789012345678901234567890",
                "1e308",
                "2.5e-400",
                "3.0e0",
            ])),
            2 => out.push_str(self.pick(&["true", "false", "null"])),
            3 | 4 => {
                out.push('[');
                for i in 0..self.0.next_u64() % 4 {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    self.value(depth.saturating_sub(1), out);
                    self.space(out);
                }
                out.push(']');
            }
            _ => self.object(depth - 1, 5, out),
        }
    }

    fn object(&mut self, depth: u32, most: u64, out: &mut String) {
        out.push('{');
        for i in 0..self.0.next_u64() % most {
            if i > 0 {
                out.push(',');
            }
            self.space(out);
            out.push('"');
            out.push_str(self.pick(&[
                "sub",
                "groups",
                "realm_access",
                "roles",
                "a",
                "b",
                "",
                "s\\u0075b",
                "r\\u006fles",
                "x\\\"y",
                "\\/",
                "é",
                "\\u00e9",
            ]));
            out.push('"');
            self.space(out);
            out.push(':');
            self.space(out);
            self.value(depth, out);
            self.space(out);
        }
        out.push('}');
    }
}

#[test]
fn random_and_mutated_payloads_read_the_same() {
    let mut gen = Gen(SplitMix64::new(5));
    let mut rng = SplitMix64::new(6);
    let (mut with_claims, mut mutated_with_claims) = (0, 0);
    for _ in 0..20_000 {
        let mut text = String::new();
        gen.space(&mut text);
        // Now and then more members than the index holds.
        let most = if rng.next_u64() % 8 == 0 { 40 } else { 5 };
        gen.object(2, most, &mut text);
        gen.space(&mut text);
        assert!(same_text(text.as_bytes()), "{text}");
        with_claims += 1;
        for _ in 0..4 {
            mutated_with_claims += usize::from(same_text(&mutate(&mut rng, text.as_bytes())));
        }
    }
    // The mutations hit both sides of validity.
    assert!(
        mutated_with_claims > 10_000 && mutated_with_claims < 4 * with_claims - 10_000,
        "{mutated_with_claims} of {} mutated payloads have claims",
        4 * with_claims
    );
}

/// Every stored fuzz input (configs, tokens, cookies, requests): as a payload's
/// text, as a header value, as a bearer token; raw and mutated.
#[test]
fn fuzz_inputs_read_the_same() {
    let mut rng = SplitMix64::new(8);
    let (mut files, mut with_claims) = (0, 0);
    for data in crate::test_inputs::stored_fuzz_inputs() {
        files += 1;
        with_claims += usize::from(same_text(&data));
        same(&data);
        // A bearer token's middle segment, a `path\npayload` jwt input.
        for part in data.split(|&b| b == b'.' || b == b'\n') {
            same(part);
            if let Some(decoded) = base64url_decode(part) {
                same_text(&decoded);
            }
        }
        for _ in 0..4 {
            same_text(&mutate(&mut rng, &data));
        }
    }
    assert!(
        files > 1000 && with_claims > 100,
        "{files} files, {with_claims} with claims"
    );
}
