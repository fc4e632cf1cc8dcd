//! A JSON reader that builds `serde_json::Value`s, written out for the .wasm.
//!
//! serde_json's own reader goes through serde's generic `Deserializer` and
//! `Visitor` machinery: with it the module is 257.7 KB instead of 237.7 KB, over
//! its 250 KiB budget (`tests/wasm_exports.rs` holds the budget); this one does
//! the same work directly. It keeps serde_json's exact behavior, because users see it: the same
//! values (numbers as `u64`/`i64` when they are integers, floats through the same
//! non-round-trip decimal conversion, the last of duplicate keys wins), the same
//! errors with the same text and position (`EOF while parsing a list at line 1
//! column 13`), the same recursion limit (128). `tests` at the bottom compare it
//! with `serde_json::from_slice` on edge cases and on every fuzz corpus input.

use std::fmt;

use serde_json::{Map, Number, Value};

pub mod walk;

/// A syntax error, printed as serde_json prints it. Boxed, like serde_json's:
/// every `Result<Value>` stays as small as a `Value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<Position>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    code: &'static str,
    line: usize,
    column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { code, line, column } = &*self.0;
        write!(f, "{code} at line {line} column {column}")
    }
}

/// A number as JSON would print it: integers without a fraction.
pub(crate) fn number_text(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        format!("{}", n as i64)
    } else {
        // serde_json's shortest float printer: the core one adds ~13 KiB of .wasm.
        serde_json::Number::from_f64(n).map_or_else(|| "null".to_owned(), |n| n.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const EOF_VALUE: &str = "EOF while parsing a value";
const EXPECTED_COLON: &str = "expected `:`";
const EXPECTED_LIST_COMMA_OR_END: &str = "expected `,` or `]`";
const EXPECTED_OBJECT_COMMA_OR_END: &str = "expected `,` or `}`";
const EXPECTED_IDENT: &str = "expected ident";
const EXPECTED_VALUE: &str = "expected value";
const INVALID_ESCAPE: &str = "invalid escape";
const INVALID_NUMBER: &str = "invalid number";
const NUMBER_OUT_OF_RANGE: &str = "number out of range";
const INVALID_UNICODE: &str = "invalid unicode code point";
const CONTROL_CHARACTER: &str = "control character (\\u0000-\\u001F) found while parsing a string";
const KEY_MUST_BE_A_STRING: &str = "key must be a string";
const LONE_LEADING_SURROGATE: &str = "lone leading surrogate in hex escape";
const TRAILING_COMMA: &str = "trailing comma";
const TRAILING_CHARACTERS: &str = "trailing characters";
const UNEXPECTED_END_OF_HEX_ESCAPE: &str = "unexpected end of hex escape";
const RECURSION_LIMIT: &str = "recursion limit exceeded";

/// Parse one JSON value that fills `input` (whitespace aside), like
/// `serde_json::from_slice::<Value>`.
pub fn from_slice(input: &[u8]) -> Result<Value> {
    let mut reader = Reader {
        input,
        index: 0,
        remaining_depth: 128,
    };
    let value = reader.value()?;
    match reader.whitespace() {
        Some(_) => Err(reader.peek_error(TRAILING_CHARACTERS)),
        None => Ok(value),
    }
}

#[cfg(any(test, feature = "internals"))]
/// Whether [`from_slice`] reads `input` as an object: [`walk::check_object`],
/// which also indexes its members (tests compare the two).
pub fn is_object(input: &[u8]) -> bool {
    walk::check_object(input).is_some()
}

/// Just after the number that starts at `at` (at its `-` or first digit), or
/// `None` where [`from_slice`] fails on it: bad grammar, or out of `f64`'s range.
pub(crate) fn number_end(input: &[u8], at: usize) -> Option<usize> {
    let mut reader = Reader {
        input,
        index: at,
        remaining_depth: 128,
    };
    let positive = reader.peek() != Some(b'-');
    reader.index += usize::from(!positive);
    reader.integer(positive).ok()?;
    Some(reader.index)
}

/// A parsed number before it becomes a `Value`.
enum Parsed {
    U64(u64),
    I64(i64),
    F64(f64),
}

struct Reader<'a> {
    input: &'a [u8],
    /// The next byte to read.
    index: usize,
    remaining_depth: u8,
}

/// `a * 10 + b` would exceed `max`.
fn overflows(a: u64, b: u64, max: u64) -> bool {
    a >= max / 10 && (a > max / 10 || b > max % 10)
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.index).copied()
    }

    fn peek_or_null(&self) -> u8 {
        self.peek().unwrap_or(0)
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.index += 1;
        Some(byte)
    }

    /// An error at byte `at` (1-based line, column = bytes since the line start).
    fn error_at(&self, code: &'static str, at: usize) -> Error {
        let before = self.input.get(..at).unwrap_or(self.input);
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Error(Box::new(Position {
            code,
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            column: at - line_start,
        }))
    }

    /// An error caused by the byte just read.
    fn error(&self, code: &'static str) -> Error {
        self.error_at(code, self.index)
    }

    /// An error caused by the byte about to be read.
    fn peek_error(&self, code: &'static str) -> Error {
        self.error_at(code, self.input.len().min(self.index + 1))
    }

    /// The next byte that is not whitespace, not consumed.
    fn whitespace(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.index += 1;
        }
        self.peek()
    }

    fn value(&mut self) -> Result<Value> {
        let Some(peek) = self.whitespace() else {
            return Err(self.peek_error(EOF_VALUE));
        };
        match peek {
            b'n' => {
                self.index += 1;
                self.ident(b"ull")?;
                Ok(Value::Null)
            }
            b't' => {
                self.index += 1;
                self.ident(b"rue")?;
                Ok(Value::Bool(true))
            }
            b'f' => {
                self.index += 1;
                self.ident(b"alse")?;
                Ok(Value::Bool(false))
            }
            b'-' => {
                self.index += 1;
                self.integer(false).map(number_value)
            }
            b'0'..=b'9' => self.integer(true).map(number_value),
            b'"' => {
                self.index += 1;
                self.string().map(Value::String)
            }
            b'[' | b'{' => {
                self.remaining_depth -= 1;
                if self.remaining_depth == 0 {
                    return Err(self.peek_error(RECURSION_LIMIT));
                }
                self.index += 1;
                let value = if peek == b'[' {
                    self.list()
                } else {
                    self.object()
                };
                self.remaining_depth += 1;
                value
            }
            _ => Err(self.peek_error(EXPECTED_VALUE)),
        }
    }

    fn ident(&mut self, rest: &[u8]) -> Result<()> {
        for &expected in rest {
            match self.next() {
                None => return Err(self.error(EOF_VALUE)),
                Some(b) if b != expected => return Err(self.error(EXPECTED_IDENT)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// After `[`: the elements and the closing `]`.
    fn list(&mut self) -> Result<Value> {
        let mut items = Vec::new();
        loop {
            let Some(peek) = self.whitespace() else {
                return Err(self.peek_error(EOF_LIST));
            };
            if peek == b']' {
                self.index += 1;
                return Ok(Value::Array(items));
            }
            if !items.is_empty() {
                if peek != b',' {
                    return Err(self.peek_error(EXPECTED_LIST_COMMA_OR_END));
                }
                self.index += 1;
                match self.whitespace() {
                    Some(b']') => return Err(self.peek_error(TRAILING_COMMA)),
                    Some(_) => {}
                    None => return Err(self.peek_error(EOF_VALUE)),
                }
            }
            items.push(self.value()?);
        }
    }

    /// After `{`: the members and the closing `}`.
    fn object(&mut self) -> Result<Value> {
        let mut map = Map::new();
        let mut first = true;
        loop {
            let Some(peek) = self.whitespace() else {
                return Err(self.peek_error(EOF_OBJECT));
            };
            if peek == b'}' {
                self.index += 1;
                return Ok(Value::Object(map));
            }
            if first {
                first = false;
                if peek != b'"' {
                    return Err(self.peek_error(KEY_MUST_BE_A_STRING));
                }
            } else if peek == b',' {
                self.index += 1;
                match self.whitespace() {
                    Some(b'"') => {}
                    Some(b'}') => return Err(self.peek_error(TRAILING_COMMA)),
                    Some(_) => return Err(self.peek_error(KEY_MUST_BE_A_STRING)),
                    None => return Err(self.peek_error(EOF_VALUE)),
                }
            } else {
                return Err(self.peek_error(EXPECTED_OBJECT_COMMA_OR_END));
            }
            self.index += 1;
            let key = self.string()?;
            match self.whitespace() {
                Some(b':') => self.index += 1,
                Some(_) => return Err(self.peek_error(EXPECTED_COLON)),
                None => return Err(self.peek_error(EOF_OBJECT)),
            }
            let value = self.value()?;
            // As a `BTreeMap`: a repeated key keeps its last value.
            map.insert(key, value);
        }
    }

    /// After the opening `"`: the string up to and including the closing `"`.
    fn string(&mut self) -> Result<String> {
        let mut bytes = Vec::new();
        let mut start = self.index;
        loop {
            let rest = self.input.get(self.index..).unwrap_or_default();
            self.index += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            let chunk = self.input.get(start..self.index).unwrap_or_default();
            match self.peek() {
                None => return Err(self.error(EOF_STRING)),
                Some(b'"') => {
                    bytes.extend_from_slice(chunk);
                    self.index += 1;
                    return String::from_utf8(bytes).map_err(|e| {
                        // At the first invalid byte, counted back from the quote.
                        let invalid = e.as_bytes().len() - e.utf8_error().valid_up_to();
                        let mut error = self.error(INVALID_UNICODE);
                        error.0.column = error.0.column.saturating_sub(invalid);
                        error
                    });
                }
                Some(b'\\') => {
                    bytes.extend_from_slice(chunk);
                    self.index += 1;
                    self.escape(&mut bytes)?;
                    start = self.index;
                }
                Some(_) => {
                    self.index += 1;
                    return Err(self.error(CONTROL_CHARACTER));
                }
            }
        }
    }

    /// After a `\` in a string.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Some(escaped) = self.next() else {
            return Err(self.error(EOF_STRING));
        };
        out.push(match escaped {
            b'"' | b'\\' | b'/' => escaped,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(out),
            _ => return Err(self.error(INVALID_ESCAPE)),
        });
        Ok(())
    }

    /// After `\u`: one code point, a surrogate pair as one.
    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let first = self.hex4()?;
        let code = match first {
            0xDC00..=0xDFFF => return Err(self.error(LONE_LEADING_SURROGATE)),
            0xD800..=0xDBFF => {
                for expected in [b'\\', b'u'] {
                    let Some(b) = self.peek() else {
                        return Err(self.error(EOF_STRING));
                    };
                    self.index += 1;
                    if b != expected {
                        return Err(self.error(UNEXPECTED_END_OF_HEX_ESCAPE));
                    }
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error(LONE_LEADING_SURROGATE));
                }
                ((u32::from(first - 0xD800) << 10) | u32::from(second - 0xDC00)) + 0x1_0000
            }
            _ => u32::from(first),
        };
        let mut buf = [0u8; 4];
        // Not a surrogate (excluded above), so always a char.
        if let Some(c) = char::from_u32(code) {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16> {
        let Some(digits) = self.input.get(self.index..self.index + 4) else {
            self.index = self.input.len();
            return Err(self.error(EOF_STRING));
        };
        self.index += 4;
        let mut n = 0u16;
        for &d in digits {
            let Some(v) = char::from(d).to_digit(16) else {
                return Err(self.error(INVALID_ESCAPE));
            };
            n = (n << 4) | v as u16;
        }
        Ok(n)
    }

    /// After an optional `-`: serde_json's `parse_integer`.
    fn integer(&mut self, positive: bool) -> Result<Parsed> {
        let Some(first) = self.next() else {
            return Err(self.error(EOF_VALUE));
        };
        match first {
            b'0' => {
                // There can be only one leading '0'.
                if self.peek_or_null().is_ascii_digit() {
                    return Err(self.peek_error(INVALID_NUMBER));
                }
                self.number(positive, 0)
            }
            b'1'..=b'9' => {
                let mut significand = u64::from(first - b'0');
                loop {
                    let c = self.peek_or_null();
                    if !c.is_ascii_digit() {
                        return self.number(positive, significand);
                    }
                    let digit = u64::from(c - b'0');
                    if overflows(significand, digit, u64::MAX) {
                        return Ok(Parsed::F64(self.long_integer(positive, significand)?));
                    }
                    self.index += 1;
                    significand = significand * 10 + digit;
                }
            }
            _ => Err(self.error(INVALID_NUMBER)),
        }
    }

    fn number(&mut self, positive: bool, significand: u64) -> Result<Parsed> {
        Ok(match self.peek_or_null() {
            b'.' => Parsed::F64(self.decimal(positive, significand, 0)?),
            b'e' | b'E' => Parsed::F64(self.exponent(positive, significand, 0)?),
            _ if positive => Parsed::U64(significand),
            _ => {
                let negative = (significand as i64).wrapping_neg();
                // A float on underflow, or for `-0`.
                if negative >= 0 {
                    Parsed::F64(-(significand as f64))
                } else {
                    Parsed::I64(negative)
                }
            }
        })
    }

    fn decimal(
        &mut self,
        positive: bool,
        mut significand: u64,
        exponent_before: i32,
    ) -> Result<f64> {
        self.index += 1;
        let mut exponent_after = 0i32;
        while let c @ b'0'..=b'9' = self.peek_or_null() {
            let digit = u64::from(c - b'0');
            if overflows(significand, digit, u64::MAX) {
                // Further digits are ignored.
                while self.peek_or_null().is_ascii_digit() {
                    self.index += 1;
                }
                return self.exponent_or_end(
                    positive,
                    significand,
                    exponent_before + exponent_after,
                );
            }
            self.index += 1;
            significand = significand * 10 + digit;
            exponent_after -= 1;
        }
        // At least one digit after the decimal point.
        if exponent_after == 0 {
            return Err(match self.peek() {
                Some(_) => self.peek_error(INVALID_NUMBER),
                None => self.peek_error(EOF_VALUE),
            });
        }
        self.exponent_or_end(positive, significand, exponent_before + exponent_after)
    }

    fn exponent_or_end(&mut self, positive: bool, significand: u64, exponent: i32) -> Result<f64> {
        match self.peek_or_null() {
            b'e' | b'E' => self.exponent(positive, significand, exponent),
            _ => self.f64_from_parts(positive, significand, exponent),
        }
    }

    fn exponent(&mut self, positive: bool, significand: u64, starting: i32) -> Result<f64> {
        self.index += 1;
        let positive_exp = match self.peek_or_null() {
            b'+' => {
                self.index += 1;
                true
            }
            b'-' => {
                self.index += 1;
                false
            }
            _ => true,
        };
        let mut exp = match self.next() {
            None => return Err(self.error(EOF_VALUE)),
            Some(c @ b'0'..=b'9') => i32::from(c - b'0'),
            Some(_) => return Err(self.error(INVALID_NUMBER)),
        };
        while let c @ b'0'..=b'9' = self.peek_or_null() {
            self.index += 1;
            let digit = i32::from(c - b'0');
            if overflows(exp as u64, digit as u64, i32::MAX as u64) {
                // Infinity is an error; zero stays zero.
                if significand != 0 && positive_exp {
                    return Err(self.error(NUMBER_OUT_OF_RANGE));
                }
                while self.peek_or_null().is_ascii_digit() {
                    self.index += 1;
                }
                return Ok(if positive { 0.0 } else { -0.0 });
            }
            exp = exp * 10 + digit;
        }
        let exponent = if positive_exp {
            starting.saturating_add(exp)
        } else {
            starting.saturating_sub(exp)
        };
        self.f64_from_parts(positive, significand, exponent)
    }

    /// More digits than a `u64` holds: the rest only scale it.
    fn long_integer(&mut self, positive: bool, significand: u64) -> Result<f64> {
        let mut exponent = 0i32;
        loop {
            match self.peek_or_null() {
                b'0'..=b'9' => {
                    self.index += 1;
                    exponent += 1;
                }
                b'.' => return self.decimal(positive, significand, exponent),
                b'e' | b'E' => return self.exponent(positive, significand, exponent),
                _ => return self.f64_from_parts(positive, significand, exponent),
            }
        }
    }

    /// serde_json's conversion (without its `float_roundtrip` feature): the
    /// significand scaled by a power of ten from the table.
    fn f64_from_parts(
        &mut self,
        positive: bool,
        significand: u64,
        mut exponent: i32,
    ) -> Result<f64> {
        let mut f = significand as f64;
        loop {
            match POW10.get(exponent.wrapping_abs() as usize) {
                Some(&pow) => {
                    if exponent >= 0 {
                        f *= pow;
                        if f.is_infinite() {
                            return Err(self.error(NUMBER_OUT_OF_RANGE));
                        }
                    } else {
                        f /= pow;
                    }
                    break;
                }
                None => {
                    if f == 0.0 {
                        break;
                    }
                    if exponent >= 0 {
                        return Err(self.error(NUMBER_OUT_OF_RANGE));
                    }
                    f /= 1e308;
                    exponent += 308;
                }
            }
        }
        Ok(if positive { f } else { -f })
    }
}

fn number_value(n: Parsed) -> Value {
    match n {
        Parsed::U64(n) => Value::Number(n.into()),
        Parsed::I64(n) => Value::Number(n.into()),
        Parsed::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}

#[rustfmt::skip]
static POW10: [f64; 309] = [
    1e000, 1e001, 1e002, 1e003, 1e004, 1e005, 1e006, 1e007, 1e008, 1e009, //
    1e010, 1e011, 1e012, 1e013, 1e014, 1e015, 1e016, 1e017, 1e018, 1e019, //
    1e020, 1e021, 1e022, 1e023, 1e024, 1e025, 1e026, 1e027, 1e028, 1e029, //
    1e030, 1e031, 1e032, 1e033, 1e034, 1e035, 1e036, 1e037, 1e038, 1e039, //
    1e040, 1e041, 1e042, 1e043, 1e044, 1e045, 1e046, 1e047, 1e048, 1e049, //
    1e050, 1e051, 1e052, 1e053, 1e054, 1e055, 1e056, 1e057, 1e058, 1e059, //
    1e060, 1e061, 1e062, 1e063, 1e064, 1e065, 1e066, 1e067, 1e068, 1e069, //
    1e070, 1e071, 1e072, 1e073, 1e074, 1e075, 1e076, 1e077, 1e078, 1e079, //
    1e080, 1e081, 1e082, 1e083, 1e084, 1e085, 1e086, 1e087, 1e088, 1e089, //
    1e090, 1e091, 1e092, 1e093, 1e094, 1e095, 1e096, 1e097, 1e098, 1e099, //
    1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107, 1e108, 1e109, //
    1e110, 1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119, //
    1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129, //
    1e130, 1e131, 1e132, 1e133, 1e134, 1e135, 1e136, 1e137, 1e138, 1e139, //
    1e140, 1e141, 1e142, 1e143, 1e144, 1e145, 1e146, 1e147, 1e148, 1e149, //
    1e150, 1e151, 1e152, 1e153, 1e154, 1e155, 1e156, 1e157, 1e158, 1e159, //
    1e160, 1e161, 1e162, 1e163, 1e164, 1e165, 1e166, 1e167, 1e168, 1e169, //
    1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177, 1e178, 1e179, //
    1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, //
    1e190, 1e191, 1e192, 1e193, 1e194, 1e195, 1e196, 1e197, 1e198, 1e199, //
    1e200, 1e201, 1e202, 1e203, 1e204, 1e205, 1e206, 1e207, 1e208, 1e209, //
    1e210, 1e211, 1e212, 1e213, 1e214, 1e215, 1e216, 1e217, 1e218, 1e219, //
    1e220, 1e221, 1e222, 1e223, 1e224, 1e225, 1e226, 1e227, 1e228, 1e229, //
    1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239, //
    1e240, 1e241, 1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, //
    1e250, 1e251, 1e252, 1e253, 1e254, 1e255, 1e256, 1e257, 1e258, 1e259, //
    1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266, 1e267, 1e268, 1e269, //
    1e270, 1e271, 1e272, 1e273, 1e274, 1e275, 1e276, 1e277, 1e278, 1e279, //
    1e280, 1e281, 1e282, 1e283, 1e284, 1e285, 1e286, 1e287, 1e288, 1e289, //
    1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, //
    1e300, 1e301, 1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

#[cfg(test)]
mod tests;
