//! What Herald knows of the database's tables: the tables in the publication, their columns with
//! types and primary key, and whether row-level security is on. Read from the system catalogs.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::GenericClient;

use crate::values::ColumnType;

/// One column of a published table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name.
    pub name: Arc<str>,
    /// The type's `typname` (what clients see in `columns`).
    pub type_name: Arc<str>,
    /// The type as written in SQL (for casts).
    pub sql_type: Arc<str>,
    /// How values are rendered and compared.
    pub ty: ColumnType,
    /// Part of the primary key.
    pub primary_key: bool,
}

/// One published table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Its oid.
    pub oid: u32,
    /// Schema.
    pub schema: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// Columns, by position.
    pub columns: Vec<Column>,
    /// Row-level security is enabled.
    pub rls: bool,
    /// Column positions by name.
    pub positions: HashMap<Arc<str>, usize>,
}

impl Table {
    /// `schema.name` as the logs and recovery requests name it.
    pub fn log_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// A table with its columns (by position).
    pub fn new(
        oid: u32,
        schema: Arc<str>,
        name: Arc<str>,
        columns: Vec<Column>,
        rls: bool,
    ) -> Table {
        let positions = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Table {
            oid,
            schema,
            name,
            columns,
            rls,
            positions,
        }
    }

    /// The position of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }

    /// The table as a quoted SQL name.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The published tables, by schema and name.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    tables: HashMap<(Arc<str>, Arc<str>), Arc<Table>>,
}

impl Catalog {
    /// Reads the tables of `publication`.
    pub async fn load(
        client: &impl GenericClient,
        publication: &str,
    ) -> Result<Catalog, tokio_postgres::Error> {
        let rows = client
            .query(
                "select c.oid, n.nspname::text, c.relname::text, c.relrowsecurity \
                 from pg_publication_tables pt \
                 join pg_namespace n on n.nspname = pt.schemaname \
                 join pg_class c on c.relnamespace = n.oid and c.relname = pt.tablename \
                 where pt.pubname = $1",
                &[&publication],
            )
            .await?;
        let mut tables: HashMap<u32, Table> = HashMap::new();
        for row in rows {
            let oid: u32 = row.get(0);
            let schema: String = row.get(1);
            let name: String = row.get(2);
            tables.insert(
                oid,
                Table::new(
                    oid,
                    Arc::from(schema),
                    Arc::from(name),
                    Vec::new(),
                    row.get(3),
                ),
            );
        }
        let oids: Vec<u32> = tables.keys().copied().collect();
        let cols = client
            .query(
                "select a.attrelid, a.attname::text, t.typname::text, \
                        format_type(a.atttypid, a.atttypmod), coalesce(et.typname::text, ''), \
                        coalesce(a.attnum = any(i.indkey), false) \
                 from pg_attribute a \
                 join pg_type t on t.oid = a.atttypid \
                 left join pg_type et on et.oid = t.typelem and t.typcategory = 'A' \
                 left join pg_index i on i.indrelid = a.attrelid and i.indisprimary \
                 where a.attrelid = any($1) and a.attnum > 0 and not a.attisdropped \
                 order by a.attrelid, a.attnum",
                &[&oids],
            )
            .await?;
        for row in cols {
            let oid: u32 = row.get(0);
            let Some(table) = tables.get_mut(&oid) else {
                continue;
            };
            let type_name: String = row.get(2);
            let elem: String = row.get(4);
            table.columns.push(Column {
                name: Arc::from(row.get::<_, String>(1)),
                ty: ColumnType::new(&type_name, (!elem.is_empty()).then_some(elem.as_str())),
                type_name: Arc::from(type_name),
                sql_type: Arc::from(row.get::<_, String>(3)),
                primary_key: row.get(5),
            });
        }
        Ok(Catalog {
            tables: tables
                .into_values()
                .map(|t| {
                    let t = Table::new(t.oid, t.schema, t.name, t.columns, t.rls);
                    ((t.schema.clone(), t.name.clone()), Arc::new(t))
                })
                .collect(),
        })
    }

    /// A published table.
    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(&(Arc::from(schema), Arc::from(name)))
    }

    /// Published tables matching a binding's schema and table (`*` or absent table: all of the schema;
    /// `*` schema: every schema).
    pub fn matching(&self, schema: &str, table: Option<&str>) -> Vec<Arc<Table>> {
        let mut out: Vec<Arc<Table>> = self
            .tables
            .values()
            .filter(|t| schema == "*" || *t.schema == *schema)
            .filter(|t| match table {
                None | Some("*") => true,
                Some(name) => *t.name == *name,
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        out
    }

    /// Every published table.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// True when nothing is published.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}
