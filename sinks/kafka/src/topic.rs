//! Topic names from a template: `{prefix}`, `{db}`, `{schema}` and `{table}` filled in, each value
//! cleaned to what a Kafka topic name may hold (letters, digits, `.`, `_`, `-`; anything else
//! becomes `_`). The default, `{prefix}.{schema}.{table}`, is Debezium's topic naming.

/// A topic template such as `{prefix}.{schema}.{table}`.
#[derive(Clone, Debug)]
pub struct TopicTemplate(String);

pub const DEFAULT_TOPIC: &str = "{prefix}.{schema}.{table}";

/// Kafka's limit on a topic name's length.
pub const MAX_TOPIC_LEN: usize = 249;

impl TopicTemplate {
    /// Checks the template: known placeholders, and only legal characters around them.
    pub fn parse(template: &str) -> Result<Self, String> {
        cdc_core::naming::check_placeholders(template).map_err(|e| format!("topic {e}"))?;
        let literal = cdc_core::naming::fill(template, ["", "", "", ""], |s| s.to_string());
        if let Some(bad) = literal.chars().find(|c| !is_topic_char(*c)) {
            return Err(format!(
                "topic template {template:?} holds {bad:?}: a Kafka topic name may hold only letters, digits, '.', '_' and '-'"
            ));
        }
        if template.is_empty() {
            return Err("the topic template is empty".into());
        }
        Ok(TopicTemplate(template.to_string()))
    }

    pub fn render(&self, prefix: &str, db: &str, schema: &str, table: &str) -> String {
        cdc_core::naming::fill(&self.0, [prefix, db, schema, table], clean)
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A value as part of a topic name.
pub(crate) fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| if is_topic_char(c) { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_rendered_with_legal_characters() {
        let t = TopicTemplate::parse(DEFAULT_TOPIC).unwrap();
        assert_eq!(
            t.render("shop", "app", "public", "orders"),
            "shop.public.orders"
        );
        assert_eq!(
            t.render("shop", "app", "my schema", "ä/b"),
            "shop.my_schema.__b"
        );
        let t = TopicTemplate::parse("cdc-{db}_{table}").unwrap();
        assert_eq!(t.render("p", "d", "s", "t"), "cdc-d_t");
        assert!(TopicTemplate::parse("a/{table}").is_err());
        assert!(TopicTemplate::parse("a.{tabel}").is_err());
        assert!(TopicTemplate::parse("").is_err());
    }
}
