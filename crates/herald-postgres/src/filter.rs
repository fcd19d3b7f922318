//! Row filters of `postgres_changes` bindings, in Supabase Realtime's grammar: conditions
//! `column=op.value` joined by commas (all must hold; a comma inside a value is written `\,`), the
//! operators `eq neq lt lte gt gte in like ilike match imatch is isdistinct`, each of which may be
//! preceded by `not.`. `in.(a,"b,c")` lists at most 100 values; `is` takes `null`, `true` or `false`.
//! Filters are parsed once, bound to the table's columns (a column that does not exist, or a value
//! that does not parse as the column's type, refuses the binding), and compared by the column's
//! type. A comparison with SQL NULL, or with a value the change does not carry, does not pass: a
//! filter Herald cannot evaluate never lets a change through.

use std::cmp::Ordering;

use thiserror::Error;

use crate::catalog::Table;
use crate::change::{Cell, Change};
use crate::values::{Kind, Typed};

/// Most values an `in` filter may list.
pub const MAX_IN_VALUES: usize = 100;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 16;
/// Largest compiled `match`/`imatch` pattern, in bytes.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `eq`
    Eq,
    /// `neq`
    Neq,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `in`
    In,
    /// `like` (`%` any run, `_` one character; `*` is taken as `%`)
    Like,
    /// `ilike`, `like` ignoring case
    Ilike,
    /// `match`, a regular expression
    Match,
    /// `imatch`, a regular expression ignoring case
    Imatch,
    /// `is` (`null`, `true`, `false`)
    Is,
    /// `isdistinct`: differs, with NULL as a value of its own
    IsDistinct,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            "match" => Op::Match,
            "imatch" => Op::Imatch,
            "is" => Op::Is,
            "isdistinct" => Op::IsDistinct,
            _ => return None,
        })
    }
}

/// Why a filter was refused; the text goes to the client in a `system` error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// Not `column=op.value`.
    #[error("Error parsing `filter` params: expected column=op.value, got `{0}`")]
    Syntax(String),
    /// An operator Herald does not know.
    #[error(
        "Error parsing `filter` params: unknown operator `{0}` (use eq, neq, lt, lte, gt, gte, in, like, ilike, match, imatch, is, isdistinct, each optionally after not.)"
    )]
    Operator(String),
    /// Too many `in` values.
    #[error("too many values for `in` filter. Maximum {MAX_IN_VALUES}")]
    TooMany,
    /// Too many conditions.
    #[error("Error parsing `filter` params: more than {MAX_CONDITIONS} conditions")]
    TooManyConditions,
    /// The column does not exist.
    #[error("Error parsing `filter` params: column `{column}` does not exist in {table}")]
    Column {
        /// Column.
        column: String,
        /// `schema.table`.
        table: String,
    },
    /// The value is not of the column's type.
    #[error(
        "Error parsing `filter` params: `{value}` is not a valid {type_name} for column `{column}`"
    )]
    Value {
        /// Value.
        value: String,
        /// Column.
        column: String,
        /// Its type.
        type_name: String,
    },
    /// `is` with something else than null, true or false.
    #[error("Error parsing `filter` params: `is` takes null, true or false, not `{0}`")]
    IsValue(String),
    /// A regular expression that does not compile.
    #[error("Error parsing `filter` params: invalid regular expression `{0}`")]
    Pattern(String),
}

/// One parsed condition, not yet bound to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCondition {
    /// Column name.
    pub column: String,
    /// Operator.
    pub op: Op,
    /// `not.` in front of the operator.
    pub negate: bool,
    /// Values (one, or the `in` list).
    pub values: Vec<String>,
}

/// A parsed filter: its conditions, all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFilter {
    /// The conditions, in the order written.
    pub conditions: Vec<ParsedCondition>,
}

/// Parses a filter: conditions joined by commas.
pub fn parse(text: &str) -> Result<ParsedFilter, FilterError> {
    let parts = split_conditions(text);
    if parts.len() > MAX_CONDITIONS {
        return Err(FilterError::TooManyConditions);
    }
    let conditions = parts
        .iter()
        .map(|p| parse_condition(p))
        .collect::<Result<Vec<_>, _>>()?;
    if conditions.is_empty() {
        return Err(FilterError::Syntax(text.to_owned()));
    }
    Ok(ParsedFilter { conditions })
}

/// Splits on commas that are not escaped (`\,`), not inside quotes and not inside an `in` list.
fn split_conditions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut depth) = (false, 0usize);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(',') if !quoted && depth == 0 => cur.push(','),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            ')' if !quoted => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if !quoted && depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_condition(text: &str) -> Result<ParsedCondition, FilterError> {
    let syntax = || FilterError::Syntax(text.to_owned());
    let (column, rest) = text.split_once('=').ok_or_else(syntax)?;
    let column = column.trim();
    if column.is_empty() {
        return Err(syntax());
    }
    let (negate, rest) = match rest.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (op_name, value) = rest.split_once('.').ok_or_else(syntax)?;
    let op = Op::parse(op_name).ok_or_else(|| FilterError::Operator(op_name.to_owned()))?;
    let values = if op == Op::In {
        let inner = value
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(syntax)?;
        let values = split_list(inner);
        if values.len() > MAX_IN_VALUES {
            return Err(FilterError::TooMany);
        }
        values
    } else {
        vec![unquote(value)]
    };
    Ok(ParsedCondition {
        column: column.to_owned(),
        op,
        negate,
        values,
    })
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_owned(),
    }
}

/// Splits `a,"b,c",d` on commas outside quotes.
fn split_list(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(unquote(&std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(unquote(&cur));
    }
    out
}

/// What a bound condition compares with.
#[derive(Debug, Clone)]
enum Test {
    /// `eq neq lt lte gt gte in isdistinct`: typed values.
    Values(Vec<Typed>),
    /// `like ilike match imatch`: a pattern over the value's text.
    Pattern(regex::Regex),
    /// `is`: NULL, or a boolean.
    Is(Option<bool>),
}

/// A condition bound to a table column.
#[derive(Debug, Clone)]
pub struct Condition {
    column: usize,
    op: Op,
    negate: bool,
    test: Test,
}

/// A filter bound to a table.
#[derive(Debug, Clone)]
pub struct Filter {
    conditions: Vec<Condition>,
    /// The same for every binding of the same filter on the same table: a change is checked once
    /// per distinct filter, however many bindings share it.
    key: std::sync::Arc<str>,
}

#[cfg(test)]
thread_local! {
    /// Filters evaluated on this thread, for the index's tests.
    pub static EVALUATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A LIKE pattern as a regular expression: `%` (and `*`) any run, `_` one character, `\` escapes.
fn like_regex(pattern: &str) -> String {
    let mut out = String::from("(?s)^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' | '*' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push_str(&regex::escape(&n.to_string()));
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

impl Filter {
    /// Binds a parsed filter to a table.
    pub fn bind(parsed: &ParsedFilter, table: &Table) -> Result<Filter, FilterError> {
        let conditions = parsed
            .conditions
            .iter()
            .map(|c| Condition::bind(c, table))
            .collect::<Result<Vec<_>, _>>()?;
        let key = format!("{}:{:?}", table.oid, parsed.conditions).into();
        Ok(Filter { conditions, key })
    }

    /// What identifies the filter: equal for equal filters on the same table.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The column and equality keys an index can look this filter up by: those of its first
    /// `eq` or `in` condition without `not.`.
    pub fn index(&self) -> Option<(usize, Vec<String>)> {
        self.conditions
            .iter()
            .find_map(|c| match (&c.test, c.op, c.negate) {
                (Test::Values(v), Op::Eq | Op::In, false) => {
                    Some((c.column, v.iter().map(Typed::key).collect()))
                }
                _ => None,
            })
    }

    /// True when conditions beyond the [`Filter::index`] one must be checked for a change found
    /// through the index.
    pub fn beyond_index(&self) -> bool {
        self.conditions.len() > 1
    }

    /// True when the change passes every condition.
    pub fn matches(&self, change: &Change) -> bool {
        #[cfg(test)]
        EVALUATED.with(|n| n.set(n.get() + 1));
        self.conditions.iter().all(|c| c.matches(change))
    }
}

impl Condition {
    fn bind(parsed: &ParsedCondition, table: &Table) -> Result<Condition, FilterError> {
        let column = table
            .column(&parsed.column)
            .ok_or_else(|| FilterError::Column {
                column: parsed.column.clone(),
                table: table.log_name(),
            })?;
        let col = &table.columns[column];
        let first = parsed.values.first().cloned().unwrap_or_default();
        let test = match parsed.op {
            Op::Is => match first.to_ascii_lowercase().as_str() {
                "null" => Test::Is(None),
                "true" => Test::Is(Some(true)),
                "false" => Test::Is(Some(false)),
                _ => return Err(FilterError::IsValue(first)),
            },
            Op::Like | Op::Ilike | Op::Match | Op::Imatch => {
                let source = match parsed.op {
                    Op::Like | Op::Ilike => like_regex(&first),
                    _ => first.clone(),
                };
                let pattern = regex::RegexBuilder::new(&source)
                    .case_insensitive(matches!(parsed.op, Op::Ilike | Op::Imatch))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|_| FilterError::Pattern(first.clone()))?;
                Test::Pattern(pattern)
            }
            _ => Test::Values(
                parsed
                    .values
                    .iter()
                    .map(|v| {
                        Typed::parse(col.ty.kind, v).ok_or_else(|| FilterError::Value {
                            value: v.clone(),
                            column: parsed.column.clone(),
                            type_name: col.type_name.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if let (Test::Is(Some(_)), false) = (&test, col.ty.kind == Kind::Bool) {
            return Err(FilterError::Value {
                value: first,
                column: parsed.column.clone(),
                type_name: col.type_name.to_string(),
            });
        }
        Ok(Condition {
            column,
            op: parsed.op,
            negate: parsed.negate,
            test,
        })
    }

    /// SQL's three-valued logic, with "unknown" (NULL, or a value the change does not carry)
    /// never passing, negated or not; `is` and `isdistinct` are never unknown for a carried value.
    fn matches(&self, change: &Change) -> bool {
        let Some(cell) = change.cell(self.column) else {
            return false;
        };
        let text = match cell {
            Cell::Absent => return false,
            Cell::Null => None,
            Cell::Text(t) => Some(&**t),
        };
        let kind = change
            .table
            .columns
            .get(self.column)
            .map_or(Kind::Text, |c| c.ty.kind);
        let outcome = match (&self.test, text) {
            (Test::Is(None), t) => Some(t.is_none()),
            (Test::Is(Some(want)), t) => {
                Some(t.and_then(|t| Typed::parse(kind, t)) == Some(Typed::Bool(*want)))
            }
            (Test::Values(values), None) if self.op == Op::IsDistinct => Some(!values.is_empty()),
            (_, None) => None,
            (Test::Pattern(p), Some(t)) => Some(p.is_match(t)),
            (Test::Values(values), Some(t)) => {
                let Some(value) = Typed::parse(kind, t) else {
                    return false;
                };
                compare(self.op, &value, values)
            }
        };
        match outcome {
            Some(pass) => pass != self.negate,
            None => false,
        }
    }
}

/// `value op values`; `None` when the comparison is unknown (values of different kinds).
fn compare(op: Op, value: &Typed, values: &[Typed]) -> Option<bool> {
    let first = values.first()?;
    let ord = || value.compare(first);
    Some(match op {
        Op::Eq => value.key() == first.key(),
        Op::Neq | Op::IsDistinct => value.key() != first.key(),
        Op::In => values.iter().any(|v| value.key() == v.key()),
        Op::Lt => ord()? == Ordering::Less,
        Op::Lte => ord()? != Ordering::Greater,
        Op::Gt => ord()? == Ordering::Greater,
        Op::Gte => ord()? != Ordering::Less,
        Op::Like | Op::Ilike | Op::Match | Op::Imatch | Op::Is => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        assert_eq!(
            parse("id=eq.1").unwrap().conditions,
            vec![ParsedCondition {
                column: "id".into(),
                op: Op::Eq,
                negate: false,
                values: vec!["1".into()]
            }]
        );
        assert_eq!(
            parse(r#"name=in.(a,"b,c",d)"#).unwrap().conditions[0].values,
            vec!["a", "b,c", "d"]
        );
        assert_eq!(
            parse("body=eq.a.b").unwrap().conditions[0].values,
            vec!["a.b"]
        );
        let several =
            parse(r"status=in.(open,closed),title=not.ilike.%a\,b%,done=is.false").unwrap();
        let c = &several.conditions;
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].values, vec!["open", "closed"]);
        assert_eq!((c[1].op, c[1].negate), (Op::Ilike, true));
        assert_eq!(c[1].values, vec!["%a,b%"]);
        assert_eq!((c[2].op, c[2].values[0].as_str()), (Op::Is, "false"));
        assert!(matches!(parse("id"), Err(FilterError::Syntax(_))));
        assert!(matches!(parse("id=eq.1,"), Err(FilterError::Syntax(_))));
        assert!(matches!(parse("id=near.x"), Err(FilterError::Operator(_))));
        assert!(matches!(
            parse("id=not.near.x"),
            Err(FilterError::Operator(_))
        ));
        let many = format!(
            "id=in.({})",
            (0..101)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse(&many), Err(FilterError::TooMany));
        let hundred = many.replacen("0,", "", 1);
        assert_eq!(parse(&hundred).unwrap().conditions[0].values.len(), 100);
        let long = vec!["id=eq.1"; MAX_CONDITIONS + 1].join(",");
        assert_eq!(parse(&long), Err(FilterError::TooManyConditions));
    }

    #[test]
    fn like_patterns_become_anchored_expressions() {
        let r = |p: &str| regex::Regex::new(&like_regex(p)).unwrap();
        assert!(r("%urgent%").is_match("very urgent task"));
        assert!(!r("urgent%").is_match("very urgent"));
        assert!(r("a_c").is_match("abc") && !r("a_c").is_match("abbc"));
        assert!(r("100\\%").is_match("100%") && !r("100\\%").is_match("1000"));
        assert!(r("a.b*").is_match("a.bcd") && !r("a.b").is_match("axb"));
    }
}
