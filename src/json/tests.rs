//! `json::from_slice` against `serde_json::from_slice`: the same value (compared
//! through its JSON text too, so `-0.0` and `0` differ) or the same error text.
//! And `json::is_object` against `from_slice`: true exactly when it reads an object.

use super::{from_slice, is_object};
use crate::rng::SplitMix64;

/// Both readers agree on `input`, and `is_object` with them; returns whether it
/// parsed.
fn same(input: &[u8]) -> bool {
    let ours = from_slice(input);
    let theirs = serde_json::from_slice::<serde_json::Value>(input);
    assert_eq!(
        is_object(input),
        matches!(ours, Ok(serde_json::Value::Object(_))),
        "is_object({:?})",
        String::from_utf8_lossy(input)
    );
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "value of {:?}", String::from_utf8_lossy(input));
            assert_eq!(a.to_string(), b.to_string(), "text of {input:?}");
            true
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "error for {input:?}");
            false
        }
        _ => panic!("{input:?}: ours {ours:?}, serde_json {theirs:?}"),
    }
}

#[test]
fn values_and_errors_match_serde_json() {
    let cases: &[&str] = &[
        "",
        " ",
        "\n\n  ",
        "null",
        "nul",
        "nulL",
        "true",
        "tru",
        "false",
        "fals",
        "x",
        "n",
        "t",
        "f",
        "[]",
        "[",
        "]",
        "[1,]",
        "[1 2]",
        "[,1]",
        "[1,,2]",
        "[1,",
        "[1",
        "{}",
        "{",
        "}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{\"a\"}",
        "{a:1}",
        "{1:1}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":1,",
        "{\"a\":1,\"",
        "{\"a\":1,x}",
        "{\"a\"",
        "{\"a\":",
        "{,}",
        "{\"a\":1,\"a\":2}",
        "{\"b\":1,\"a\":[true,false,null,{\"c\":{}}]}",
        "[1] x",
        "1 2",
        "\"abc\"",
        "\"",
        "\"abc",
        "\"a\\\"b\"",
        "\"\\\\ \\/ \\b \\f \\n \\r \\t\"",
        "\"\\x\"",
        "\"\\",
        "\"\\u\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\u00e9\\u4e2d\"",
        "\"\\uD83D\\uDE00\"",
        "\"\\uD83D\"",
        "\"\\uD83Dx\"",
        "\"\\uD83D\\n\"",
        "\"\\uD83D\\u0041\"",
        "\"\\uDE00\"",
        "\"\\uD83D\\uD83D\"",
        "\"\\uD83D",
        "\"\\uD83D\\",
        "\"\\u0000\"",
        "\"a\tb\"",
        "\"a\nb\"",
        "\"\u{7f}\"",
        "\"é中😀\"",
        "0",
        "-0",
        "-",
        "--1",
        "+1",
        "01",
        "00",
        "-01",
        "1.",
        "1.e5",
        "1.5",
        "-1.5",
        ".5",
        "1e",
        "1e+",
        "1e-",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "1.5e3",
        "-0.0",
        "0.0",
        "1e308",
        "1e309",
        "-1e309",
        "1e-400",
        "2e-324",
        "4.9e-324",
        "1.7976931348623157e308",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999",
        "123456789012345678901234567890.5e3",
        "0.1",
        "0.3",
        "3.14159265358979323846264338327950288",
        "1e2147483647",
        "1e2147483648",
        "0e2147483648",
        "1e-2147483648",
        "-1e99999999999",
        "1.0e-99999999999",
        "1x",
        "1.5x",
        "[1.5e]",
        "{\"w\":9.995}",
        "123abc",
        "[-]",
        "[1e400]",
        "\n\n  [1,\n  2,]",
        "{\"subsets\": [",
        "not json",
        "{\"subsets\":[{\"name\":\"v1\",\"weight\":100}]} x",
    ];
    for case in cases {
        same(case.as_bytes());
        // The same text as a member's value, in a list, and as a key: what
        // `is_object` must check inside an object.
        for wrapped in [
            format!("{{\"k\":{case}}}"),
            format!("{{\"k\":[{case}],\"l\":2}}"),
            format!(" {{ {case} : 1 }} "),
            format!("{{\"k\":{{\"j\":{case}}}}}"),
        ] {
            same(wrapped.as_bytes());
        }
    }
    // Invalid UTF-8 inside and outside strings.
    for bytes in [
        &b"\"\xff\""[..],
        b"\"ab\xc3\"",
        b"\"\xe4\xb8\"  ",
        b"\"a\\n\xff\"",
        b"\n\"x\xf0\x9f\x98\"",
        b"\xff",
        b"[\"\xc0\xaf\"]",
        b"\"\xed\xa0\x80\"",
        // The control characters' edges, raw in a string.
        b"\"a\x1fb\"",
        b"\"\x00\"",
        b"\"\x20\x7f\"",
    ] {
        same(bytes);
        let mut member = b"{\"k\":".to_vec();
        member.extend_from_slice(bytes);
        member.push(b'}');
        same(&member);
        let mut key = b"{".to_vec();
        key.extend_from_slice(bytes);
        key.extend_from_slice(b":1}");
        same(&key);
    }
}

#[test]
fn nesting_limit_matches_serde_json() {
    for depth in [126, 127, 128, 129, 300] {
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            same(doc.as_bytes());
            let doc = format!("{}1", open.repeat(depth));
            same(doc.as_bytes());
        }
    }
}

#[test]
fn random_numbers_match_serde_json() {
    let mut rng = SplitMix64::new(42);
    let alphabet = b"0123456789012345678901234567890123456789.eE+-";
    for _ in 0..200_000 {
        let len = 1 + (rng.next_u64() % 40) as usize;
        let mut text: Vec<u8> = (0..len)
            .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
            .collect();
        // Mostly plausible numbers: a sign, digits, a fraction, an exponent.
        if rng.next_u64() % 2 == 0 {
            let int = (rng.next_u64() % 10_u64.pow(1 + (rng.next_u64() % 19) as u32)).to_string();
            let frac = rng.next_u64().to_string();
            let exp = (rng.next_u64() % 700) as i64 - 350;
            text = match rng.next_u64() % 4 {
                0 => format!("{int}.{frac}"),
                1 => format!("-{int}e{exp}"),
                2 => format!("{int}.{}E{exp}", &frac[..frac.len() / 2]),
                _ => format!("-{int}{frac}{frac}"),
            }
            .into_bytes();
        }
        same(&text);
        let mut in_list = b"[".to_vec();
        in_list.extend_from_slice(&text);
        in_list.push(b']');
        same(&in_list);
        let mut in_object = b"{\"n\":".to_vec();
        in_object.extend_from_slice(&text);
        in_object.push(b'}');
        same(&in_object);
    }
}

/// Every stored fuzz input (configs, tokens, cookies, requests), raw and with a
/// few random bytes changed.
#[test]
fn fuzz_inputs_match_serde_json() {
    let mut rng = SplitMix64::new(7);
    let mut parsed = 0;
    let mut files = 0;
    for data in crate::test_inputs::stored_fuzz_inputs() {
        files += 1;
        parsed += usize::from(same(&data));
        if let Some(token) = crate::formats::jwt::base64url_decode(&data) {
            same(&token);
        }
        for _ in 0..8 {
            let mut mutated = data.clone();
            let edits = 1 + rng.next_u64() % 3;
            for _ in 0..edits {
                let at = (rng.next_u64() % (mutated.len() as u64 + 1)) as usize;
                const BYTES: &[u8] = b"{}[]:,\"\\-.eE0159 \nnutf\x00\xff";
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
            same(&mutated);
        }
    }
    assert!(
        files > 1000 && parsed > 100,
        "{files} files, {parsed} parsed"
    );
}
