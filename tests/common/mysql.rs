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
