//! `cdc-agent check` for the mysql sink: can it connect, and may it create and write the target
//! tables. Read-only: nothing is created.
//!
//! Privileges are read from `information_schema.USER_PRIVILEGES` and `SCHEMA_PRIVILEGES` for
//! `CURRENT_USER()`; a database-level grant may name a `LIKE` pattern (`cdc\_%`). Privileges that
//! come through roles are not seen there: the check then fails with the grant to add, which does
//! no harm when it is already in effect.

use cdc_core::CheckOutcome;
use mysql_async::prelude::Queryable;

use crate::apply::text_at;
use crate::{connect_tls, MysqlSinkConfig};

/// What the sink does in the target database.
const NEEDED: &[&str] = &["CREATE", "ALTER", "SELECT", "INSERT", "UPDATE", "DELETE"];

pub async fn check(config: &MysqlSinkConfig) -> CheckOutcome {
    let (mut conn, tls) = match connect_tls(&config.url, "connecting to the target").await {
        Ok(c) => c,
        Err(e) => {
            return CheckOutcome::fail(
                "sink",
                e.message,
                e.hint.unwrap_or_else(|| "check sink.url".into()),
            )
        }
    };
    let probe = async {
        let version: Option<mysql_async::Row> = conn.query_first("SELECT VERSION()").await?;
        let user: Option<mysql_async::Row> = conn.query_first("SELECT CURRENT_USER()").await?;
        let user = user.as_ref().and_then(|r| text_at(r, 0)).unwrap_or_default();
        let grantee = match user.rsplit_once('@') {
            Some((name, host)) => format!("'{name}'@'{host}'"),
            None => format!("'{user}'"),
        };
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                "SELECT PRIVILEGE_TYPE, '*' FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ? \
                 UNION ALL SELECT PRIVILEGE_TYPE, TABLE_SCHEMA FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ?",
                (grantee.clone(), grantee),
            )
            .await?;
        let cipher = cdc_tls::mysql::session_cipher(&mut conn).await?;
        Ok::<_, mysql_async::Error>((
            version.as_ref().and_then(|r| text_at(r, 0)).unwrap_or_default(),
            user,
            rows,
            tls.describe(&cipher),
        ))
    }
    .await;
    let _ = conn.disconnect().await;
    let (version, user, rows, tls) = match probe {
        Ok(p) => p,
        Err(e) => {
            let e = crate::sink_error(e, "checking privileges on the target");
            return CheckOutcome::fail(
                "sink",
                e.message,
                e.hint.unwrap_or_else(|| "check sink.url".into()),
            );
        }
    };
    let granted: Vec<(String, String)> = rows
        .iter()
        .filter_map(|r| Some((text_at(r, 0)?.to_ascii_uppercase(), text_at(r, 1)?)))
        .collect();
    let missing = missing_privileges(&granted, &config.database);
    if missing.is_empty() {
        CheckOutcome::ok(
            "sink",
            format!(
                "mysql target reachable ({version}); database {} can be written; {tls}",
                config.database
            ),
        )
    } else {
        CheckOutcome::fail(
            "sink",
            format!(
                "the target user {user} lacks {} on database {}",
                missing.join(", "),
                config.database
            ),
            format!(
                "GRANT {} ON `{}`.* TO the sink.url user",
                NEEDED.join(", "),
                config.database
            ),
        )
    }
}

/// The needed privileges that no grant covers: global (`*`) or a database-level grant whose
/// name pattern matches `database`.
fn missing_privileges(granted: &[(String, String)], database: &str) -> Vec<&'static str> {
    NEEDED
        .iter()
        .copied()
        .filter(|needed| {
            !granted.iter().any(|(privilege, scope)| {
                (privilege == needed || privilege == "ALL PRIVILEGES")
                    && (scope == "*" || like(scope, database))
            })
        })
        .collect()
}

/// SQL `LIKE` with `\` escapes, as grants spell database patterns (`cdc\_%`).
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                t.first() == Some(&rest[0]) && go(&rest[1..], &t[1..])
            }
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_patterns_match_like_mysql_does() {
        assert!(like("cdc\\_%", "cdc_orders"));
        assert!(!like("cdc\\_%", "cdcxorders"));
        assert!(like("app", "app"));
        assert!(!like("app", "apps"));
        assert!(like("a_p", "app"));
    }

    #[test]
    fn missing_privileges_are_named() {
        let g = |p: &str, s: &str| (p.to_string(), s.to_string());
        assert!(missing_privileges(&[g("ALL PRIVILEGES", "cdc\\_%")], "cdc_x").is_empty());
        assert!(missing_privileges(&[g("ALL PRIVILEGES", "*")], "anything").is_empty());
        assert_eq!(
            missing_privileges(&[g("SELECT", "*"), g("INSERT", "app")], "app"),
            ["CREATE", "ALTER", "UPDATE", "DELETE"]
        );
    }
}
