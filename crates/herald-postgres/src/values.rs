//! Column values: from PostgreSQL's text output to the JSON a compatible client expects (numbers,
//! booleans, arrays, json/jsonb objects, timestamps as ISO strings), and to typed keys for filters.

use std::cmp::Ordering;

/// How a column's values are rendered and compared, from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// int2, int4, int8, oid.
    Int,
    /// float4, float8, numeric.
    Float,
    /// bool.
    Bool,
    /// json, jsonb: the text is JSON already.
    Json,
    /// timestamptz.
    TimestampTz,
    /// timestamp.
    Timestamp,
    /// Everything else: a JSON string.
    Text,
}

impl Kind {
    /// The kind of a type, by its `typname`.
    pub fn of(type_name: &str) -> Kind {
        match type_name {
            "int2" | "int4" | "int8" | "oid" => Kind::Int,
            "float4" | "float8" | "numeric" => Kind::Float,
            "bool" => Kind::Bool,
            "json" | "jsonb" => Kind::Json,
            "timestamptz" => Kind::TimestampTz,
            "timestamp" => Kind::Timestamp,
            _ => Kind::Text,
        }
    }
}

/// A column type: its kind, and the element kind when it is an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColumnType {
    /// The scalar kind (of the elements, for an array).
    pub kind: Kind,
    /// True for an array type.
    pub array: bool,
}

impl ColumnType {
    /// The type of a column from its `typname` (arrays are named `_elem`) and, for arrays, the
    /// element's `typname`.
    pub fn new(type_name: &str, element_name: Option<&str>) -> ColumnType {
        match (type_name.strip_prefix('_'), element_name) {
            (_, Some(elem)) if !elem.is_empty() && type_name.starts_with('_') => ColumnType {
                kind: Kind::of(elem),
                array: true,
            },
            (Some(elem), _) => ColumnType {
                kind: Kind::of(elem),
                array: true,
            },
            (None, _) => ColumnType {
                kind: Kind::of(type_name),
                array: false,
            },
        }
    }
}

/// Appends `text` as a JSON string (serde_json's escaping).
pub fn write_json_string(out: &mut String, text: &str) {
    // Serializing a `&str` cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

/// True when `text` is a JSON number as written (PostgreSQL's output of a finite number).
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i = 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    if !digits(&mut i) {
        return false;
    }
    // No leading zeros ("007" is not JSON).
    let int_len = i - usize::from(b.first() == Some(&b'-'));
    if int_len > 1 && b[i - int_len] == b'0' {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// `2026-01-01 10:00:00.5+00` -> `2026-01-01T10:00:00.5+00:00`; `timestamp` without the zone part.
fn iso_timestamp(text: &str, with_zone: bool) -> String {
    let mut s = text.replacen(' ', "T", 1);
    if with_zone {
        // A zone written as +HH or -HH gets its minutes.
        let tail = s.rfind(['+', '-']).filter(|&i| i > 10);
        if let Some(i) = tail
            && s.len() - i == 3
        {
            s.push_str(":00");
        }
    }
    s
}

/// Appends one scalar value as JSON.
pub fn write_scalar(out: &mut String, kind: Kind, text: &str) {
    match kind {
        Kind::Int | Kind::Float if is_json_number(text) => out.push_str(text),
        Kind::Bool if text == "t" || text == "true" => out.push_str("true"),
        Kind::Bool if text == "f" || text == "false" => out.push_str("false"),
        Kind::Json if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            out.push_str(text)
        }
        Kind::TimestampTz => write_json_string(out, &iso_timestamp(text, true)),
        Kind::Timestamp => write_json_string(out, &iso_timestamp(text, false)),
        _ => write_json_string(out, text),
    }
}

/// Appends a column value (NULL as `null`) as JSON.
pub fn write_value(out: &mut String, ty: ColumnType, text: Option<&str>) {
    match text {
        None => out.push_str("null"),
        Some(t) if ty.array => match parse_array(t) {
            Some(items) => write_array(out, ty.kind, &items),
            None => write_json_string(out, t),
        },
        Some(t) => write_scalar(out, ty.kind, t),
    }
}

/// An element of a PostgreSQL array literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayItem {
    /// NULL.
    Null,
    /// A scalar, unquoted and unescaped.
    Value(String),
    /// A nested array.
    Nested(Vec<ArrayItem>),
}

fn write_array(out: &mut String, kind: Kind, items: &[ArrayItem]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            ArrayItem::Null => out.push_str("null"),
            ArrayItem::Value(v) => write_scalar(out, kind, v),
            ArrayItem::Nested(inner) => write_array(out, kind, inner),
        }
    }
    out.push(']');
}

/// Parses an array literal such as `{1,2,NULL}`, `{"a b","c\"d"}` or `{{1,2},{3,4}}` (an optional
/// `[1:2]=` dimension prefix is skipped). `None` when the text is not an array literal.
pub fn parse_array(text: &str) -> Option<Vec<ArrayItem>> {
    let text = match text.find("={") {
        Some(i) if text.starts_with('[') => &text[i + 1..],
        _ => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let items = parse_level(&chars, &mut pos)?;
    (pos == chars.len()).then_some(items)
}

fn parse_level(c: &[char], pos: &mut usize) -> Option<Vec<ArrayItem>> {
    if c.get(*pos) != Some(&'{') {
        return None;
    }
    *pos += 1;
    let mut items = Vec::new();
    if c.get(*pos) == Some(&'}') {
        *pos += 1;
        return Some(items);
    }
    loop {
        match c.get(*pos)? {
            '{' => items.push(ArrayItem::Nested(parse_level(c, pos)?)),
            '"' => {
                *pos += 1;
                let mut s = String::new();
                loop {
                    match c.get(*pos)? {
                        '\\' => {
                            s.push(*c.get(*pos + 1)?);
                            *pos += 2;
                        }
                        '"' => {
                            *pos += 1;
                            break;
                        }
                        ch => {
                            s.push(*ch);
                            *pos += 1;
                        }
                    }
                }
                items.push(ArrayItem::Value(s));
            }
            _ => {
                let start = *pos;
                while let Some(ch) = c.get(*pos) {
                    if *ch == ',' || *ch == '}' {
                        break;
                    }
                    *pos += 1;
                }
                let raw: String = c[start..*pos].iter().collect();
                let raw = raw.trim();
                if raw.eq_ignore_ascii_case("NULL") {
                    items.push(ArrayItem::Null);
                } else {
                    items.push(ArrayItem::Value(raw.to_owned()));
                }
            }
        }
        match c.get(*pos)? {
            ',' => *pos += 1,
            '}' => {
                *pos += 1;
                return Some(items);
            }
            _ => return None,
        }
    }
}

/// A value as filters compare it.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// An integer.
    Int(i128),
    /// Any other number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A point in time, in microseconds since the Unix epoch.
    Time(i64),
    /// Text (and everything else), compared bytewise.
    Text(String),
}

impl Typed {
    /// Parses `text` as a value of `kind`; `None` when it is not one.
    pub fn parse(kind: Kind, text: &str) -> Option<Typed> {
        match kind {
            Kind::Int => text.trim().parse::<i128>().ok().map(Typed::Int),
            Kind::Float => {
                let t = text.trim();
                match t.parse::<i128>() {
                    Ok(i) => Some(Typed::Int(i)),
                    Err(_) => t.parse::<f64>().ok().map(Typed::Float),
                }
            }
            Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "yes" | "on" | "1" => Some(Typed::Bool(true)),
                "f" | "false" | "no" | "off" | "0" => Some(Typed::Bool(false)),
                _ => None,
            },
            Kind::TimestampTz | Kind::Timestamp => parse_time(text)
                .map(Typed::Time)
                .or_else(|| Some(Typed::Text(text.to_owned()))),
            Kind::Json | Kind::Text => Some(Typed::Text(text.to_owned())),
        }
    }

    /// A normalized form for equality lookups: equal values give equal keys.
    pub fn key(&self) -> String {
        match self {
            Typed::Int(i) => format!("i{i}"),
            Typed::Float(f) if f.fract() == 0.0 && f.abs() < 1e30 => format!("i{}", *f as i128),
            Typed::Float(f) => format!("f{f}"),
            Typed::Bool(b) => format!("b{b}"),
            Typed::Time(t) => format!("t{t}"),
            Typed::Text(s) => format!("s{s}"),
        }
    }

    /// Compares two values of the same column.
    pub fn compare(&self, other: &Typed) -> Option<Ordering> {
        match (self, other) {
            (Typed::Int(a), Typed::Int(b)) => Some(a.cmp(b)),
            (Typed::Int(a), Typed::Float(b)) => (*a as f64).partial_cmp(b),
            (Typed::Float(a), Typed::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Typed::Float(a), Typed::Float(b)) => a.partial_cmp(b),
            (Typed::Bool(a), Typed::Bool(b)) => Some(a.cmp(b)),
            (Typed::Time(a), Typed::Time(b)) => Some(a.cmp(b)),
            (Typed::Text(a), Typed::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

fn parse_time(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let t = text.trim();
    let iso = iso_timestamp(t, true);
    if let Ok(d) = DateTime::parse_from_rfc3339(&iso) {
        return Some(d.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(&iso, fmt) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(ty: ColumnType, text: Option<&str>) -> serde_json::Value {
        let mut s = String::new();
        write_value(&mut s, ty, text);
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn scalars_become_typed_json() {
        let t = |n| ColumnType::new(n, None);
        assert_eq!(
            json(t("int8"), Some("9007199254740993")).to_string(),
            "9007199254740993"
        );
        assert_eq!(json(t("int4"), Some("-5")), serde_json::json!(-5));
        assert_eq!(json(t("numeric"), Some("12.50")), serde_json::json!(12.5));
        assert_eq!(json(t("float8"), Some("NaN")), serde_json::json!("NaN"));
        assert_eq!(json(t("bool"), Some("t")), serde_json::json!(true));
        assert_eq!(
            json(t("jsonb"), Some(r#"{"a": [1]}"#)),
            serde_json::json!({"a": [1]})
        );
        assert_eq!(
            json(t("timestamptz"), Some("2026-01-02 03:04:05.678+00")),
            serde_json::json!("2026-01-02T03:04:05.678+00:00")
        );
        assert_eq!(
            json(t("timestamp"), Some("2026-01-02 03:04:05")),
            serde_json::json!("2026-01-02T03:04:05")
        );
        assert_eq!(json(t("text"), Some("a\"b\n")), serde_json::json!("a\"b\n"));
        assert_eq!(json(t("text"), None), serde_json::Value::Null);
    }

    #[test]
    fn arrays_become_json_arrays() {
        let ints = ColumnType::new("_int4", Some("int4"));
        assert_eq!(
            json(ints, Some("{1,2,NULL}")),
            serde_json::json!([1, 2, null])
        );
        assert_eq!(
            json(ints, Some("{{1,2},{3,4}}")),
            serde_json::json!([[1, 2], [3, 4]])
        );
        assert_eq!(json(ints, Some("{}")), serde_json::json!([]));
        let texts = ColumnType::new("_text", Some("text"));
        assert_eq!(
            json(texts, Some(r#"{plain,"with space","q\"uote",NULL}"#)),
            serde_json::json!(["plain", "with space", "q\"uote", null])
        );
        assert_eq!(
            json(texts, Some("not an array")),
            serde_json::json!("not an array")
        );
    }

    #[test]
    fn typed_comparison_and_keys() {
        let a = Typed::parse(Kind::Int, "10").unwrap();
        let b = Typed::parse(Kind::Int, "9").unwrap();
        assert_eq!(a.compare(&b), Some(Ordering::Greater));
        assert_eq!(
            Typed::parse(Kind::Float, "1.0").unwrap().key(),
            Typed::parse(Kind::Float, "1").unwrap().key()
        );
        let t1 = Typed::parse(Kind::TimestampTz, "2026-01-01 00:00:00+00").unwrap();
        let t2 = Typed::parse(Kind::TimestampTz, "2026-01-01T01:00:00+01:00").unwrap();
        assert_eq!(t1, t2);
        assert!(Typed::parse(Kind::Int, "x").is_none());
    }
}
