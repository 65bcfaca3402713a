//! Publication column lists (Postgres 15+): a table with `columns = [...]` is published with
//! only those columns, so the server never sends the others.
//!
//! Only where it is safe for the source application. Postgres refuses an UPDATE or DELETE on a
//! published table whose column list does not cover its replica identity ("column list used by
//! the publication does not cover the replica identity"): so a table under REPLICA IDENTITY FULL,
//! or whose key (replica identity index) is not wholly in `columns`, gets no list, and the agent
//! drops the columns itself. Everything else falls back the same way: servers before 15, a
//! publication `FOR ALL TABLES`, and `exclude_columns` (a column list would also hide the
//! columns added to the table later, which `exclude_columns` means to keep).
//!
//! `check` prints the choice per table ([`describe`]); `run` applies it ([`sync`]).

use cdc_core::columns::{rule_for, TableRule};
use cdc_core::{CheckOutcome, PipelineError};

use crate::schema::{identity_columns, quote_ident, quote_literal, Catalog};
use crate::setup::{PostgresConfig, TableRef};

/// Where a table's filtered columns are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The publication lists these columns (in table order): the server sends no other.
    Server(Vec<String>),
    /// The server sends every column; the agent drops the filtered ones. Why, for `check`.
    Agent(String),
}

/// The first Postgres with publication column lists.
const COLUMN_LISTS_SINCE: u32 = 150_000;

/// The choice for each configured table that has a column filter (`columns` or
/// `exclude_columns`), in the order of `tables`.
pub async fn plan(
    catalog: &mut Catalog,
    config: &PostgresConfig,
    tables: &[TableRef],
) -> Result<Vec<(TableRef, Choice)>, PipelineError> {
    let mut filtered: Vec<(&TableRef, &TableRule)> = Vec::new();
    for table in tables {
        let rule = rule_for(&config.table_rules, &table.schema, &table.name)
            .map_err(|e| PipelineError::definite("config", e))?;
        if let Some(rule) = rule {
            if rule.selection != cdc_core::columns::Selection::All {
                filtered.push((table, rule));
            }
        }
    }
    if filtered.is_empty() {
        return Ok(Vec::new());
    }
    let version = server_version(catalog).await?;
    let mut out = Vec::with_capacity(filtered.len());
    for (table, rule) in filtered {
        let choice = match rule.server_column_list() {
            None => Choice::Agent(
                "exclude_columns: dropped in the agent (a publication column list would also hide columns added to the table later)".into(),
            ),
            Some(_) if version < COLUMN_LISTS_SINCE => Choice::Agent(format!(
                "dropped in the agent (Postgres {} has no publication column lists; 15 and later do)",
                version / 10_000
            )),
            Some(_) if config.tables.is_empty() => Choice::Agent(
                "dropped in the agent (the publication is FOR ALL TABLES, which takes no column lists; list the tables in source.tables)".into(),
            ),
            Some(listed) => choose(catalog, table, listed).await?,
        };
        out.push((table.clone(), choice));
    }
    Ok(out)
}

/// A column list for `table` if its replica identity is covered by `listed`.
async fn choose(
    catalog: &mut Catalog,
    table: &TableRef,
    listed: &[String],
) -> Result<Choice, PipelineError> {
    let r = catalog
        .query(&format!(
            "SELECT c.relreplident, \
             (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns \
             FROM pg_class c WHERE c.oid = {}",
            table.oid
        ))
        .await?;
    let columns: Vec<String> = r
        .get(0, "columns")
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let kept: Vec<String> = columns
        .iter()
        .filter(|c| listed.contains(c))
        .cloned()
        .collect();
    if r.get(0, "relreplident") == Some("f") {
        if kept.len() == columns.len() {
            return Ok(Choice::Agent("nothing to leave out".into()));
        }
        return Ok(Choice::Agent(
            "dropped in the agent: the table has REPLICA IDENTITY FULL, and a column list that leaves a column out would make the source's UPDATE and DELETE fail".into(),
        ));
    }
    let identity = identity_columns(catalog, table.oid).await?;
    let missing: Vec<&String> = identity.iter().filter(|c| !kept.contains(c)).collect();
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|c| c.as_str()).collect();
        return Ok(Choice::Agent(format!(
            "dropped in the agent: its replica identity ({}) is not in `columns`, and a column list that leaves it out would make the source's UPDATE and DELETE fail",
            missing.join(", ")
        )));
    }
    Ok(Choice::Server(kept))
}

async fn server_version(catalog: &mut Catalog) -> Result<u32, PipelineError> {
    let r = catalog.query("SHOW server_version_num").await?;
    Ok(r.get(0, "server_version_num")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// `schema.table (a, b)` for a publication: with its column list when the choice is one.
pub fn publication_entry(table: &TableRef, choice: Option<&Choice>) -> String {
    match choice {
        Some(Choice::Server(columns)) => format!(
            "{} ({})",
            table.sql_name(),
            columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => table.sql_name(),
    }
}

/// Makes the publication's column lists match the plan, for the tables of the plan (other
/// tables are left as they are). Run after the publication exists with every table in it.
pub async fn sync(
    catalog: &mut Catalog,
    publication: &str,
    plan: &[(TableRef, Choice)],
) -> Result<(), PipelineError> {
    if plan.is_empty() || server_version(catalog).await? < COLUMN_LISTS_SINCE {
        return Ok(());
    }
    let lists = current_lists(catalog, publication).await?;
    for (table, choice) in plan {
        let Some((_, current)) = lists.iter().find(|(oid, _)| *oid == table.oid) else {
            // Not listed in pg_publication_rel: published through its schema (FOR TABLES IN
            // SCHEMA), which takes no column list; the agent drops the columns.
            continue;
        };
        let current = current.clone();
        let wanted = match choice {
            Choice::Server(columns) => Some(columns.clone()),
            Choice::Agent(_) => None,
        };
        if current == wanted {
            continue;
        }
        tracing::info!(publication, table = %table.qualified(), columns = ?wanted, "setting the publication's column list");
        // One simple query is one (implicit) transaction: the table is never out of the
        // publication for a change to miss, and a failure leaves nothing half done.
        catalog
            .query(&format!(
                "ALTER PUBLICATION {pub_} DROP TABLE {name}; ALTER PUBLICATION {pub_} ADD TABLE {entry}",
                pub_ = quote_ident(publication),
                name = table.sql_name(),
                entry = publication_entry(table, Some(choice)),
            ))
            .await?;
    }
    Ok(())
}

/// The tables of the publication by oid, with their column list (`None`: every column).
async fn current_lists(
    catalog: &mut Catalog,
    publication: &str,
) -> Result<Vec<(u32, Option<Vec<String>>)>, PipelineError> {
    let r = catalog
        .query(&format!(
            "SELECT pr.prrelid::int8 AS oid, \
             (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a \
              WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs::int2[])) AS list \
             FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid \
             WHERE p.pubname = {}",
            quote_literal(publication)
        ))
        .await?;
    Ok((0..r.rows.len())
        .filter_map(|i| {
            let oid = r.get(i, "oid")?.parse().ok()?;
            let list = r
                .get(i, "list")
                .map(|l| l.split(',').map(str::to_string).collect());
            Some((oid, list))
        })
        .collect())
}

/// `check`'s lines: per filtered table, where its columns are dropped; and a FAIL for a table
/// whose column list in the publication no longer covers its replica identity (someone turned
/// it to REPLICA IDENTITY FULL, say): the source's UPDATEs and DELETEs fail until it is gone.
pub async fn describe(
    catalog: &mut Catalog,
    config: &PostgresConfig,
    tables: &[TableRef],
) -> Vec<CheckOutcome> {
    let lists = match server_version(catalog).await {
        Ok(v) if v >= COLUMN_LISTS_SINCE => current_lists(catalog, &config.publication)
            .await
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    match plan(catalog, config, tables).await {
        Ok(plan) => plan
            .into_iter()
            .map(|(table, choice)| {
                let listed = lists
                    .iter()
                    .find(|(oid, _)| *oid == table.oid)
                    .and_then(|(_, list)| list.as_ref());
                match (choice, listed) {
                    (Choice::Server(columns), _) => CheckOutcome::ok(
                        "column filter",
                        format!(
                            "{}: publication column list ({}): the server sends no other column",
                            table.qualified(),
                            columns.join(", ")
                        ),
                    ),
                    (Choice::Agent(why), Some(list)) if why.contains("UPDATE and DELETE fail") => {
                        CheckOutcome::fail(
                            "column filter",
                            format!(
                                "{}: publication {} lists only ({}), which does not cover the table's replica identity: the source's UPDATE and DELETE on it fail now",
                                table.qualified(),
                                config.publication,
                                list.join(", ")
                            ),
                            format!(
                                "start the agent (it removes the list), or ALTER PUBLICATION {pub_} DROP TABLE {t}; ALTER PUBLICATION {pub_} ADD TABLE {t};",
                                pub_ = quote_ident(&config.publication),
                                t = table.sql_name()
                            ),
                        )
                    }
                    (Choice::Agent(why), _) => {
                        CheckOutcome::ok("column filter", format!("{}: {why}", table.qualified()))
                    }
                }
            })
            .collect(),
        Err(e) => vec![CheckOutcome::fail(
            "column filter",
            e.message,
            e.hint.unwrap_or_else(|| "see the message".into()),
        )],
    }
}
