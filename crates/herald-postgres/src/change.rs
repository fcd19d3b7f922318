//! Herald's own model of a row change, independent of the replication library: the table, the kind,
//! the old and new rows as PostgreSQL's text values, and the commit time. Rendered as the compatible
//! `postgres_changes` payload, and stored in (and read back from) a table's log for recovery.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::Table;
use crate::values::{Typed, write_json_string, write_value};

/// INSERT, UPDATE or DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
}

impl Kind {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Insert => "INSERT",
            Kind::Update => "UPDATE",
            Kind::Delete => "DELETE",
        }
    }

    /// Index 0..3.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One column of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Not sent (an unchanged TOASTed value, or not part of the replica identity).
    Absent,
    /// SQL NULL.
    Null,
    /// The value as PostgreSQL prints it.
    Text(Box<str>),
}

impl Cell {
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// A row, one cell per table column.
pub type Row = Vec<Cell>;

/// Builds a row from (column name, value) pairs, by the table's column order.
pub fn row_from_pairs<'a>(
    table: &Table,
    pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Row {
    let mut row = vec![Cell::Absent; table.columns.len()];
    for (name, value) in pairs {
        if let Some(i) = table.column(name) {
            row[i] = match value {
                None => Cell::Null,
                Some(v) => Cell::Text(v.into()),
            };
        }
    }
    row
}

/// One committed row change.
#[derive(Debug, Clone)]
pub struct Change {
    /// The table, as the catalog knew it when the change was read.
    pub table: Arc<Table>,
    /// What happened.
    pub kind: Kind,
    /// The new row (INSERT, UPDATE).
    pub new: Option<Row>,
    /// The old row (UPDATE, DELETE): the replica identity columns, or the whole row with `REPLICA
    /// IDENTITY FULL`.
    pub old: Option<Row>,
    /// Commit time, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub commit_timestamp: Arc<str>,
    /// Columns of the new row that were not sent (unchanged TOAST) and could not be filled from the
    /// old row.
    pub unchanged_toast: Vec<usize>,
}

impl Change {
    /// Fills unchanged TOAST values of the new row from the old row where it has them, and notes the
    /// others.
    pub fn fill_unchanged(&mut self) {
        let Some(new) = self.new.as_mut() else {
            return;
        };
        for (i, cell) in new.iter_mut().enumerate() {
            if *cell == Cell::Absent {
                match self.old.as_ref().map(|o| &o[i]) {
                    Some(c @ (Cell::Null | Cell::Text(_))) => *cell = c.clone(),
                    _ => self.unchanged_toast.push(i),
                }
            }
        }
    }

    /// The row filters are evaluated on: the new row, or the old one for a DELETE.
    pub fn filter_row(&self) -> Option<&Row> {
        match self.kind {
            Kind::Delete => self.old.as_ref(),
            _ => self.new.as_ref(),
        }
    }

    /// A column's cell in the filtered row.
    pub fn cell(&self, column: usize) -> Option<&Cell> {
        self.filter_row()?.get(column)
    }

    /// The typed value of a column in the filtered row.
    pub fn typed(&self, column: usize) -> Option<Typed> {
        let row = self.filter_row()?;
        let text = row.get(column)?.text()?;
        Typed::parse(self.table.columns.get(column)?.ty.kind, text)
    }

    /// The primary key values of the changed row (as text), when every key column is known.
    pub fn primary_key(&self) -> Option<Vec<&str>> {
        let row = self.filter_row()?;
        let mut key = Vec::new();
        for (i, col) in self.table.columns.iter().enumerate() {
            if col.primary_key {
                key.push(row.get(i)?.text()?);
            }
        }
        (!key.is_empty()).then_some(key)
    }

    /// The `data` object of a `postgres_changes` frame, with only the columns `visible` allows (all
    /// when `None`), and `old_record` reduced to the primary key when `old_key_only`.
    pub fn render(&self, visible: Option<&[bool]>, old_key_only: bool, extra: &str) -> String {
        let t = &self.table;
        let shown = |i: usize| visible.is_none_or(|v| v.get(i).copied().unwrap_or(false));
        let mut s = String::with_capacity(256);
        s.push_str("{\"schema\":");
        write_json_string(&mut s, &t.schema);
        s.push_str(",\"table\":");
        write_json_string(&mut s, &t.name);
        s.push_str(",\"commit_timestamp\":");
        write_json_string(&mut s, &self.commit_timestamp);
        s.push_str(",\"type\":\"");
        s.push_str(self.kind.as_str());
        s.push_str("\",\"columns\":[");
        let mut first = true;
        for (i, c) in t.columns.iter().enumerate() {
            if !shown(i) {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str("{\"name\":");
            write_json_string(&mut s, &c.name);
            s.push_str(",\"type\":");
            write_json_string(&mut s, &c.type_name);
            s.push('}');
        }
        s.push(']');
        let write_row = |s: &mut String, row: &Row, key_only: bool| {
            s.push('{');
            let mut first = true;
            for (i, cell) in row.iter().enumerate() {
                let col = &t.columns[i];
                if !shown(i) || (key_only && !col.primary_key) {
                    continue;
                }
                let text = match cell {
                    Cell::Absent => continue,
                    Cell::Null => None,
                    Cell::Text(v) => Some(&**v),
                };
                if !first {
                    s.push(',');
                }
                first = false;
                write_json_string(s, &col.name);
                s.push(':');
                write_value(s, col.ty, text);
            }
            s.push('}');
        };
        if let Some(new) = &self.new {
            s.push_str(",\"record\":");
            write_row(&mut s, new, false);
        }
        if let Some(old) = &self.old {
            s.push_str(",\"old_record\":");
            write_row(&mut s, old, old_key_only);
        }
        if self.unchanged_toast.iter().any(|&i| shown(i)) {
            s.push_str(",\"unchanged_toast\":[");
            let names: Vec<_> = self.unchanged_toast.iter().filter(|&&i| shown(i)).collect();
            for (n, &&i) in names.iter().enumerate() {
                if n > 0 {
                    s.push(',');
                }
                write_json_string(&mut s, &t.columns[i].name);
            }
            s.push(']');
        }
        s.push_str(",\"errors\":null");
        s.push_str(extra);
        s.push('}');
        s
    }

    /// The change as stored in its table's log.
    pub fn to_stored(&self) -> Vec<u8> {
        let row = |r: &Row| {
            let mut m = Map::new();
            for (i, cell) in r.iter().enumerate() {
                let v = match cell {
                    Cell::Absent => continue,
                    Cell::Null => Value::Null,
                    Cell::Text(t) => Value::String(t.to_string()),
                };
                m.insert(self.table.columns[i].name.to_string(), v);
            }
            m
        };
        let stored = Stored {
            kind: self.kind,
            ts: self.commit_timestamp.to_string(),
            new: self.new.as_ref().map(row),
            old: self.old.as_ref().map(row),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// A change read back from its table's log (`None` when the bytes are not a stored change).
    pub fn from_stored(table: Arc<Table>, bytes: &[u8]) -> Option<Change> {
        let stored: Stored = serde_json::from_slice(bytes).ok()?;
        let row = |m: &Map<String, Value>| {
            row_from_pairs(&table, m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        };
        let mut change = Change {
            kind: stored.kind,
            new: stored.new.as_ref().map(row),
            old: stored.old.as_ref().map(row),
            commit_timestamp: Arc::from(stored.ts),
            unchanged_toast: Vec::new(),
            table: table.clone(),
        };
        change.fill_unchanged();
        Some(change)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "k")]
    kind: Kind,
    ts: String,
    #[serde(rename = "n", skip_serializing_if = "Option::is_none", default)]
    new: Option<Map<String, Value>>,
    #[serde(rename = "o", skip_serializing_if = "Option::is_none", default)]
    old: Option<Map<String, Value>>,
}

/// Formats a commit time the way clients expect: UTC with milliseconds and `Z`.
pub fn format_commit_time(t: chrono::DateTime<chrono::Utc>) -> Arc<str> {
    Arc::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;
    use crate::values::ColumnType;

    fn table() -> Arc<Table> {
        let col = |name: &str, ty: &str, pk: bool| Column {
            name: Arc::from(name),
            type_name: Arc::from(ty),
            sql_type: Arc::from(ty),
            ty: ColumnType::new(ty, None),
            primary_key: pk,
        };
        Arc::new(Table::new(
            1,
            Arc::from("public"),
            Arc::from("todos"),
            vec![
                col("id", "int8", true),
                col("done", "bool", false),
                col("body", "text", false),
            ],
            false,
        ))
    }

    #[test]
    fn renders_the_compatible_payload() {
        let t = table();
        let mut c = Change {
            table: t.clone(),
            kind: Kind::Update,
            new: Some(row_from_pairs(
                &t,
                [("id", Some("7")), ("done", Some("t"))].into_iter(),
            )),
            old: Some(row_from_pairs(
                &t,
                [("id", Some("7")), ("body", Some("x"))].into_iter(),
            )),
            commit_timestamp: Arc::from("2026-01-01T00:00:00.000Z"),
            unchanged_toast: Vec::new(),
        };
        c.fill_unchanged();
        let v: Value = serde_json::from_str(&c.render(None, true, "")).unwrap();
        assert_eq!(
            v["record"],
            serde_json::json!({"id": 7, "done": true, "body": "x"})
        );
        assert_eq!(v["old_record"], serde_json::json!({"id": 7}));
        assert_eq!(
            v["columns"][1],
            serde_json::json!({"name": "done", "type": "bool"})
        );
        assert_eq!(v["errors"], Value::Null);
        let hidden: Value =
            serde_json::from_str(&c.render(Some(&[true, false, true]), false, "")).unwrap();
        assert_eq!(hidden["record"], serde_json::json!({"id": 7, "body": "x"}));
        let back = Change::from_stored(t, &c.to_stored()).unwrap();
        assert_eq!(back.new, c.new);
        assert_eq!(back.kind, Kind::Update);
    }
}
