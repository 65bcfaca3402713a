//! What message sinks name after a table: subject and topic templates (`{prefix}`, `{db}`,
//! `{schema}`, `{table}` filled in), and the id that names one change across replays.

use crate::event::ChangeEvent;
use crate::name::Name;
use crate::position::Position;

/// The placeholders a subject or topic template may hold.
pub const PLACEHOLDERS: [&str; 4] = ["prefix", "db", "schema", "table"];

/// Checks that every `{...}` in `template` is a known placeholder.
pub fn check_placeholders(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Err(format!("template {template:?}: unclosed {{"));
        };
        let name = &rest[start + 1..start + len];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "template {template:?}: unknown placeholder {{{name}}} (use {{prefix}}, {{db}}, {{schema}}, {{table}})"
            ));
        }
        rest = &rest[start + len + 1..];
    }
    Ok(())
}

/// `template` with its placeholders filled in, each value passed through `clean` first (what
/// one subject token or one topic name may hold differs per broker).
pub fn fill(
    template: &str,
    [prefix, db, schema, table]: [&str; 4],
    clean: fn(&str) -> String,
) -> String {
    template
        .replace("{prefix}", &clean(prefix))
        .replace("{db}", &clean(db))
        .replace("{schema}", &clean(schema))
        .replace("{table}", &clean(table))
}

/// Stable per change across replays: the pipeline, the transaction's position, the ordinal in
/// the transaction. Message sinks send it (NATS `Nats-Msg-Id`, Kafka header `cdc-id`) so that
/// the broker or the consumer drops a change replayed after a crash.
pub fn change_id(pipeline: &str, event: &ChangeEvent) -> String {
    marker_id(pipeline, &event.source.position, event.source.seq)
}

/// The id of a message about a transaction rather than one change (`what`: `BEGIN`, `END`).
pub fn marker_id(pipeline: &str, position: &Position, what: impl std::fmt::Display) -> String {
    match position {
        Position::Postgres { lsn } => format!("{pipeline}:{lsn}:{what}"),
        Position::Mysql { file, pos, .. } => format!("{pipeline}:{file}:{pos}:{what}"),
    }
}

/// The topic or subject of transaction metadata messages: Debezium's `<prefix>.transaction`.
pub fn transaction_channel(prefix: &str) -> String {
    format!("{prefix}.transaction")
}

/// One cached rendering: changes come in runs of one table, and rendering a template per
/// message showed in profiles.
#[derive(Default)]
pub struct LastName {
    table: Option<(Name, Name, Name)>,
    name: String,
}

impl LastName {
    /// The name for the event's table, rendered by `render` only when the table changed.
    pub fn get(
        &mut self,
        event: &ChangeEvent,
        render: impl FnOnce(&str, &str, &str) -> String,
    ) -> &str {
        let source = &event.source;
        let table = (source.db, source.schema, source.table);
        // Interned names: comparing them compares pointers.
        if self.table != Some(table) {
            self.name = render(&source.db, &source.schema, &source.table);
            self.table = Some(table);
        }
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_checked_and_filled() {
        assert!(check_placeholders("{prefix}.{db}.{schema}.{table}").is_ok());
        assert!(check_placeholders("a.{tabel}").is_err());
        assert!(check_placeholders("a.{table").is_err());
        let upper = |s: &str| s.to_uppercase();
        assert_eq!(fill("{prefix}-{table}", ["p", "d", "s", "t"], upper), "P-T");
    }

    #[test]
    fn change_ids_name_the_change() {
        let event = crate::testing::pg_change(crate::Op::Insert, "t", 0x1_0000_0010, 1, 3);
        assert_eq!(change_id("p", &event), "p:1/10:3");
        let mut last = LastName::default();
        assert_eq!(last.get(&event, |_, s, t| format!("{s}.{t}")), "public.t");
        assert_eq!(last.get(&event, |_, _, _| unreachable!()), "public.t");
    }
}
