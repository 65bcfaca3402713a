//! A database of its own on the private MariaDB of `scripts/testenv.sh`.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// A fresh `cdc_<unique>` database name on the private MariaDB; the sink creates it.
pub struct TargetDb {
    pub name: String,
    /// What the sink connects with: the `cdc` user (all privileges on `cdc_%` only).
    pub url: String,
    /// Root, for the test's own queries.
    pub admin_url: String,
}

impl TargetDb {
    pub fn new(prefix: &str) -> TargetDb {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cdc_{prefix}_{}_{n}", std::process::id());
        let port = super::env().var("CDC_TEST_MYSQL_PORT");
        TargetDb {
            url: format!("mysql://cdc:secret-pw@127.0.0.1:{port}/{name}"),
            admin_url: format!("mysql://root@127.0.0.1:{port}/?prefer_socket=false"),
            name,
        }
    }

    pub async fn conn(&self) -> Conn {
        let mut conn = Conn::from_url(&self.admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to MariaDB: {e}"));
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", self.name))
            .await
            .unwrap();
        conn.query_drop(format!("USE {}", self.name)).await.unwrap();
        conn
    }

    pub async fn drop(self) {
        let mut conn = Conn::from_url(&self.admin_url).await.unwrap();
        let _ = conn
            .query_drop(format!("DROP DATABASE IF EXISTS {}", self.name))
            .await;
    }

    /// Runs statements as root in this database.
    pub async fn exec(&self, sql: &str) {
        let mut conn = self.conn().await;
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.disconnect().await;
    }
}

/// Every row of a query, each column as text (the text protocol sends every value as text); an
/// error (the table is not there yet) reads as no rows.
pub async fn text_rows(conn: &mut Conn, query: &str) -> Vec<Vec<Option<String>>> {
    let rows: Vec<mysql_async::Row> = conn.query(query).await.unwrap_or_default();
    rows.into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(other.as_sql(true)),
                })
                .collect()
        })
        .collect()
}
