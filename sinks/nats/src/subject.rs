//! Subjects from a template: `{prefix}`, `{db}`, `{schema}` and `{table}` filled in, each value
//! made a valid NATS token (`.`, spaces and wildcards become `_`).

/// A subject template such as `{prefix}.{schema}.{table}`.
#[derive(Clone, Debug)]
pub struct SubjectTemplate(String);

pub const DEFAULT_SUBJECT: &str = "{prefix}.{schema}.{table}";

impl SubjectTemplate {
    /// Checks the template: non-empty tokens, no wildcards of its own, known placeholders.
    pub fn parse(template: &str) -> Result<Self, String> {
        for token in template.split('.') {
            if token.is_empty() {
                return Err(format!("subject template {template:?} has an empty token"));
            }
            if token.contains(['*', '>', ' ']) {
                return Err(format!(
                    "subject template {template:?}: token {token:?} holds a wildcard or a space"
                ));
            }
        }
        cdc_core::naming::check_placeholders(template).map_err(|e| format!("subject {e}"))?;
        Ok(SubjectTemplate(template.to_string()))
    }

    pub fn render(&self, prefix: &str, db: &str, schema: &str, table: &str) -> String {
        cdc_core::naming::fill(&self.0, [prefix, db, schema, table], token)
    }

    /// The subjects filter of a stream that stores every subject the template renders: the
    /// prefix filled in, every token with a per-table placeholder a `*`.
    pub fn stream_filter(&self, prefix: &str) -> String {
        self.0
            .replace("{prefix}", &token(prefix))
            .split('.')
            .map(|t| if t.contains('{') { "*" } else { t })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// A value as one subject token.
pub(crate) fn token(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_rendered_and_filtered() {
        let t = SubjectTemplate::parse(DEFAULT_SUBJECT).unwrap();
        assert_eq!(
            t.render("shop", "app", "public", "orders"),
            "shop.public.orders"
        );
        assert_eq!(
            t.render("shop", "app", "my schema", "a.b"),
            "shop.my_schema.a_b"
        );
        assert_eq!(t.stream_filter("shop"), "shop.*.*");
        let t = SubjectTemplate::parse("cdc.{db}_{schema}.x").unwrap();
        assert_eq!(t.render("p", "d", "s", "t"), "cdc.d_s.x");
        assert_eq!(t.stream_filter("p"), "cdc.*.x");
        assert!(SubjectTemplate::parse("a..b").is_err());
        assert!(SubjectTemplate::parse("a.>").is_err());
        assert!(SubjectTemplate::parse("a.{tabel}").is_err());
    }
}
