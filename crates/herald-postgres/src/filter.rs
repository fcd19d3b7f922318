//! Row filters of `postgres_changes` bindings: `column=op.value` with `eq, neq, lt, lte, gt, gte, in`
//! (`in.(a,b,c)`, at most 100 values), parsed once, checked against the table's columns, compared
//! with the column's type.

use std::cmp::Ordering;

use thiserror::Error;

use crate::catalog::Table;
use crate::values::Typed;

/// Most values an `in` filter may list.
pub const MAX_IN_VALUES: usize = 100;

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
}

/// Why a filter was refused; the text goes to the client in a `system` error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// Not `column=op.value`.
    #[error("Error parsing `filter` params: expected column=op.value, got `{0}`")]
    Syntax(String),
    /// An operator Herald does not know.
    #[error(
        "Error parsing `filter` params: unknown operator `{0}` (use eq, neq, lt, lte, gt, gte, in)"
    )]
    Operator(String),
    /// Too many `in` values.
    #[error("too many values for `in` filter. Maximum {MAX_IN_VALUES}")]
    TooMany,
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
}

/// A parsed filter, not yet bound to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFilter {
    /// Column name.
    pub column: String,
    /// Operator.
    pub op: Op,
    /// Values (one, or the `in` list).
    pub values: Vec<String>,
}

/// Parses `column=op.value`.
pub fn parse(text: &str) -> Result<ParsedFilter, FilterError> {
    let (column, rest) = text
        .split_once('=')
        .ok_or_else(|| FilterError::Syntax(text.to_owned()))?;
    let (op, value) = rest
        .split_once('.')
        .ok_or_else(|| FilterError::Syntax(text.to_owned()))?;
    let column = column.trim();
    if column.is_empty() {
        return Err(FilterError::Syntax(text.to_owned()));
    }
    let op = match op {
        "eq" => Op::Eq,
        "neq" => Op::Neq,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "in" => Op::In,
        other => return Err(FilterError::Operator(other.to_owned())),
    };
    let values = if op == Op::In {
        let inner = value
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(|| FilterError::Syntax(text.to_owned()))?;
        let values = split_list(inner);
        if values.len() > MAX_IN_VALUES {
            return Err(FilterError::TooMany);
        }
        values
    } else {
        vec![unquote(value)]
    };
    Ok(ParsedFilter {
        column: column.to_owned(),
        op,
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

/// A filter bound to a table column, with typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Column position in the table.
    pub column: usize,
    /// Operator.
    pub op: Op,
    /// Typed values.
    pub values: Vec<Typed>,
}

impl Filter {
    /// Binds a parsed filter to a table.
    pub fn bind(parsed: &ParsedFilter, table: &Table) -> Result<Filter, FilterError> {
        let column = table
            .column(&parsed.column)
            .ok_or_else(|| FilterError::Column {
                column: parsed.column.clone(),
                table: table.log_name(),
            })?;
        let col = &table.columns[column];
        let values = parsed
            .values
            .iter()
            .map(|v| {
                Typed::parse(col.ty.kind, v).ok_or_else(|| FilterError::Value {
                    value: v.clone(),
                    column: parsed.column.clone(),
                    type_name: col.type_name.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter {
            column,
            op: parsed.op,
            values,
        })
    }

    /// True when `value` (the column's typed value in the row) passes.
    pub fn matches(&self, value: &Typed) -> bool {
        let cmp = |v: &Typed| value.compare(v);
        match self.op {
            Op::Eq => self.values.first().is_some_and(|v| value.key() == v.key()),
            Op::Neq => self.values.first().is_some_and(|v| value.key() != v.key()),
            Op::In => self.values.iter().any(|v| value.key() == v.key()),
            Op::Lt => self.values.first().and_then(cmp) == Some(Ordering::Less),
            Op::Lte => matches!(
                self.values.first().and_then(cmp),
                Some(Ordering::Less | Ordering::Equal)
            ),
            Op::Gt => self.values.first().and_then(cmp) == Some(Ordering::Greater),
            Op::Gte => matches!(
                self.values.first().and_then(cmp),
                Some(Ordering::Greater | Ordering::Equal)
            ),
        }
    }

    /// The equality keys an index can look this filter up by (`eq` and `in`), if any.
    pub fn index_keys(&self) -> Option<Vec<String>> {
        matches!(self.op, Op::Eq | Op::In).then(|| self.values.iter().map(Typed::key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Kind;

    #[test]
    fn parses_the_grammar() {
        assert_eq!(
            parse("id=eq.1").unwrap(),
            ParsedFilter {
                column: "id".into(),
                op: Op::Eq,
                values: vec!["1".into()]
            }
        );
        assert_eq!(
            parse(r#"name=in.(a,"b,c",d)"#).unwrap().values,
            vec!["a", "b,c", "d"]
        );
        assert_eq!(parse("body=eq.a.b").unwrap().values, vec!["a.b"]);
        assert!(matches!(parse("id"), Err(FilterError::Syntax(_))));
        assert!(matches!(parse("id=like.x"), Err(FilterError::Operator(_))));
        let many = format!(
            "id=in.({})",
            (0..101)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse(&many), Err(FilterError::TooMany));
    }

    #[test]
    fn compares_with_the_column_type() {
        let f = Filter {
            column: 0,
            op: Op::Gt,
            values: vec![Typed::parse(Kind::Int, "9").unwrap()],
        };
        assert!(f.matches(&Typed::parse(Kind::Int, "10").unwrap()));
        assert!(!f.matches(&Typed::parse(Kind::Int, "9").unwrap()));
        let f = Filter {
            column: 0,
            op: Op::In,
            values: vec![Typed::Int(1), Typed::Int(3)],
        };
        assert!(f.matches(&Typed::Int(3)) && !f.matches(&Typed::Int(2)));
    }
}
