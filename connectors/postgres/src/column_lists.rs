//! Publication column lists (Postgres 15+): a table with `columns = [...]` or `exclude_columns =
//! [...]` is published with only the columns it keeps, so the server never sends the others.
//!
//! Only where it is safe for the source application. Postgres refuses an UPDATE or DELETE on a
//! published table whose column list does not cover its replica identity ("column list used by
//! the publication does not cover the replica identity"): so a table under REPLICA IDENTITY FULL,
//! or whose key (replica identity index) is not wholly kept, gets no list, and the agent drops
//! the columns itself. So do servers before 15 and a publication `FOR ALL TABLES`.
//!
//! `exclude_columns` keeps the columns added to the table later, which a column list would hide:
//! when a Relation message of such a table lacks a column the table now has and the rule keeps,
//! the session widens the list ([`reconcile`]) and asks for a re-copy of the table, whose
//! chunks bring the new column's values of the rows changed before the list was widened.
//!
//! A list has a cost the operator must know: Postgres refuses `ALTER TABLE .. DROP COLUMN` of a
//! listed column (the publication depends on it), and `DROP COLUMN .. CASCADE` takes the whole
//! table out of the publication. `check` says so and gives the statements that drop a column
//! safely; the session sets a removed list again, and puts back a table that left the
//! publication ([`restore_dropped`]).
//!
//! `check` prints the choice per table ([`describe`]); `run` applies it ([`sync`]).

use cdc_core::columns::{rule_for, Selection, TableRule};
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
        let choice = if version < COLUMN_LISTS_SINCE {
            Choice::Agent(format!(
                "dropped in the agent (Postgres {} has no publication column lists; 15 and later do)",
                version / 10_000
            ))
        } else if config.tables.is_empty() {
            Choice::Agent(
                "dropped in the agent (the publication is FOR ALL TABLES, which takes no column lists; list the tables in source.tables)".into(),
            )
        } else {
            choose(catalog, table, rule).await?
        };
        out.push((table.clone(), choice));
    }
    Ok(out)
}

/// The table's replica identity kind (`relreplident`) and its columns in table order.
async fn table_columns(
    catalog: &mut Catalog,
    oid: u32,
) -> Result<(Option<String>, Vec<String>), PipelineError> {
    let r = catalog
        .query(&format!(
            "SELECT c.relreplident, \
             (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns \
             FROM pg_class c WHERE c.oid = {oid}"
        ))
        .await?;
    let columns = r
        .get(0, "columns")
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    Ok((r.get(0, "relreplident").map(str::to_string), columns))
}

/// A column list for `table` if its replica identity is covered by the columns `rule` keeps.
async fn choose(
    catalog: &mut Catalog,
    table: &TableRef,
    rule: &TableRule,
) -> Result<Choice, PipelineError> {
    let (replident, columns) = table_columns(catalog, table.oid).await?;
    let kept: Vec<String> = columns.iter().filter(|c| rule.keeps(c)).cloned().collect();
    if kept.len() == columns.len() && matches!(rule.selection, Selection::Except(_)) {
        // A list of every column would only cost DROP COLUMN its freedom.
        return Ok(Choice::Agent(
            "the table has none of the excluded columns: no column list (one added later is dropped in the agent)".into(),
        ));
    }
    if replident.as_deref() == Some("f") {
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
            "dropped in the agent: its replica identity ({}) is not kept, and a column list that leaves it out would make the source's UPDATE and DELETE fail",
            missing.join(", ")
        )));
    }
    Ok(Choice::Server(kept))
}

/// For a table published with a column list, after a Relation message that sent the columns
/// `sent`: sets the list again if the message does not match what the rule asks for now, and
/// returns the columns the table has, the rule keeps, and the message lacked.
///
/// - A column added to a table with `exclude_columns` (or a `columns` entry the table gained):
///   the list is widened, so changes after this statement carry it; the changes before it lack
///   it, which the caller makes up for with a re-copy of the table. A column added after the
///   point in the stream the message comes from counts as missing too (the catalog is read now,
///   not as of the message): a re-copy more than needed, never fewer.
/// - A column the rule leaves out, sent: someone removed the list (to drop a listed column, see
///   `check`); it is set again. The agent drops the column meanwhile, as without a list.
pub async fn reconcile(
    catalog: &mut Catalog,
    config: &PostgresConfig,
    table: &TableRef,
    sent: &[&str],
) -> Result<Vec<String>, PipelineError> {
    let Some(rule) = rule_for(&config.table_rules, &table.schema, &table.name)
        .map_err(|e| PipelineError::definite("config", e))?
    else {
        return Ok(Vec::new());
    };
    let (_, columns) = table_columns(catalog, table.oid).await?;
    let missing: Vec<String> = columns
        .iter()
        .filter(|c| rule.keeps(c) && !sent.contains(&c.as_str()))
        .cloned()
        .collect();
    let unwanted = sent
        .iter()
        .any(|c| !rule.keeps(c) && columns.iter().any(|t| t == c));
    if missing.is_empty() && !unwanted {
        return Ok(missing);
    }
    let choice = choose(catalog, table, rule).await?;
    sync(catalog, &config.publication, &[(table.clone(), choice)]).await?;
    Ok(missing)
}

/// The tables of `listed` the publication no longer has and that still exist, added back with
/// their column list.
/// `ALTER TABLE .. DROP COLUMN .. CASCADE` of a listed column takes the table out of the
/// publication (the list depends on the column), and from then on the server sends none of
/// its changes: the caller re-copies the tables returned.
pub async fn restore_dropped(
    catalog: &mut Catalog,
    config: &PostgresConfig,
    listed: &[TableRef],
) -> Result<Vec<TableRef>, PipelineError> {
    // By oid: a table renamed since is still published.
    let r = catalog
        .query(&format!(
            "SELECT c.oid::int8 AS oid FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = {}",
            quote_literal(&config.publication)
        ))
        .await?;
    let published: Vec<u32> = (0..r.rows.len())
        .filter_map(|i| r.get(i, "oid")?.parse().ok())
        .collect();
    let gone: Vec<TableRef> = listed
        .iter()
        .filter(|t| !published.contains(&t.oid))
        .cloned()
        .collect();
    let mut restored = Vec::with_capacity(gone.len());
    for table in gone {
        let Ok(Some(rule)) = rule_for(&config.table_rules, &table.schema, &table.name) else {
            continue;
        };
        if table_columns(catalog, table.oid).await?.0.is_none() {
            continue; // dropped (or dropped and created again: a new table for the next start)
        }
        let choice = choose(catalog, &table, rule).await?;
        catalog
            .query(&format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(&config.publication),
                publication_entry(&table, Some(&choice))
            ))
            .await?;
        restored.push(table);
    }
    Ok(restored)
}

/// Does the table's rule leave columns out by name (`exclude_columns`)?
fn excludes(config: &PostgresConfig, table: &TableRef) -> bool {
    matches!(
        rule_for(&config.table_rules, &table.schema, &table.name),
        Ok(Some(rule)) if matches!(rule.selection, Selection::Except(_))
    )
}

pub(crate) async fn server_version(catalog: &mut Catalog) -> Result<u32, PipelineError> {
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
                            "{}: publication column list ({}): the server sends no other column{}; Postgres refuses DROP COLUMN of a listed column while the list is there: drop one in a transaction with the list taken off, BEGIN; ALTER PUBLICATION {pub_} DROP TABLE {t}; ALTER TABLE {t} DROP COLUMN ..; ALTER PUBLICATION {pub_} ADD TABLE {t}; COMMIT; (the agent sets the list again)",
                            table.qualified(),
                            columns.join(", "),
                            if excludes(config, &table) {
                                " (a column added later is added to the list)"
                            } else {
                                ""
                            },
                            pub_ = quote_ident(&config.publication),
                            t = table.sql_name(),
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
