//! Column filters and masks (`[[table]]` sections): no original value of a masked or excluded
//! column reaches a JSON lines file or a Postgres target, from snapshots and streams, in keys
//! and before images too; equal values hash equal; and with `columns = [...]` on Postgres 15 the
//! server itself sends no other column (read off the slot's pgoutput bytes).

mod common;

use std::time::Duration;

use common::mysql::TargetDb;
use common::{Pipeline, TestDb};
use serde_json::Value as Json;

const MASK_KEY: &str = "test-mask-key-0123456789";
/// HMAC-SHA256 with MASK_KEY of `ann@example.com` (Python's hmac module): the same from every
/// source, table and run.
const ANN_HASH: &str = "87d69623c33a455f403b1b0d2e9d4d2e5dc5511933a79f68630a64d4d243caf8";

/// Values that must not appear anywhere in the output.
const SECRETS: &[&str] = &[
    "ann@example.com",
    "bob@example.com",
    "ann2@example.com",
    "123-45-6789",
    "987-65-4321",
    "555-12-3456",
    "111-22-3333",
    "private note",
    "topsecret",
    "a long biography of ann",
    "bob was born in",
    "carol writes",
];

const USERS: &str = "CREATE TABLE users (id bigint PRIMARY KEY, email text, ssn text, notes text,
                         bio varchar(100), secret text, age int);
                     ALTER TABLE users REPLICA IDENTITY FULL;
                     INSERT INTO users VALUES
                       (1, 'ann@example.com', '123-45-6789', 'private note one', 'a long biography of ann', 'topsecret-1', 41),
                       (2, 'bob@example.com', '987-65-4321', 'private note two', 'bob was born in', 'topsecret-2', 52);";

const USERS_CHANGES: &str = "
    INSERT INTO users VALUES (3, 'ann@example.com', '555-12-3456', 'private note three', 'carol writes', 'topsecret-3', 33);
    UPDATE users SET ssn = '111-22-3333', notes = 'private note four', email = 'ann2@example.com' WHERE id = 1;
    DELETE FROM users WHERE id = 2;";

fn users_rule(table: &str) -> String {
    format!(
        "[[table]]\nmatch = \"{table}\"\nexclude_columns = [\"secret\"]\n\
         mask = {{ email = \"hash\", ssn = \"redact\", notes = \"null\", bio = \"truncate:6\" }}\n"
    )
}

/// Adds `agent.mask_key` and the `[[table]]` sections to the pipeline's config.
fn with_rules(p: &Pipeline, sections: &str) {
    let text = std::fs::read_to_string(&p.config).unwrap();
    let text = text.replacen(
        "[agent]\n",
        &format!("[agent]\nmask_key = \"{MASK_KEY}\"\n"),
        1,
    );
    std::fs::write(&p.config, format!("{text}\n{sections}")).unwrap();
}

/// Runs `p` through the users table's snapshot (2 rows) into streaming, then `changes` (3 more
/// records); returns the 5 records once the agent stopped cleanly and no original value of a
/// masked column is in its JSON lines file.
async fn snapshot_then_stream_users(
    p: &Pipeline,
    changes: impl std::future::Future<Output = ()>,
) -> Vec<Json> {
    let agent = p.start();
    p.wait_records(2, Duration::from_secs(60));
    p.wait_state("streaming", Duration::from_secs(60));
    changes.await;
    let records = p.wait_records(5, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    assert_no_secret(
        "the JSON lines file",
        &std::fs::read_to_string(&p.output).unwrap(),
    );
    records
}

fn assert_no_secret(what: &str, bytes: &str) {
    for secret in SECRETS {
        assert!(!bytes.contains(secret), "{what} holds `{secret}`:\n{bytes}");
    }
}

/// The users records of a pipeline: every image masked, `secret` absent, equal emails hashed
/// equal (snapshot and stream alike), before images of the update and delete masked too.
fn assert_users_masked(records: &[Json]) {
    let by = |op: &str, id: i64| {
        records
            .iter()
            .find(|r| r["op"] == op && r["key"]["id"] == id)
            .unwrap_or_else(|| panic!("no {op} of {id} in {records:?}"))
    };
    for r in records {
        for image in ["before", "after"] {
            let row = &r[image];
            if row.is_null() {
                continue;
            }
            assert!(row.get("secret").is_none(), "excluded column in {r}");
            assert_eq!(row["ssn"], "[redacted]", "{r}");
            assert!(row["notes"].is_null(), "{r}");
            assert_eq!(
                row["bio"].as_str().map(|b| b.chars().count()),
                Some(6),
                "{r}"
            );
            let hash = row["email"].as_str().unwrap();
            assert_eq!(hash.len(), 64, "{r}");
            assert!(hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
    let ann = by("insert", 1);
    assert_eq!(ann["source"]["snapshot"], true);
    assert_eq!(ann["after"]["email"], ANN_HASH);
    assert_eq!(
        by("insert", 3)["after"]["email"],
        ANN_HASH,
        "equal inputs, equal hashes"
    );
    let update = by("update", 1);
    assert_eq!(update["before"]["email"], ANN_HASH);
    assert_ne!(update["after"]["email"], ANN_HASH);
    assert_eq!(
        by("delete", 2)["before"]["email"],
        by("insert", 2)["after"]["email"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_snapshot_and_stream_into_json_lines_are_masked() {
    let db = TestDb::new("maskjs").await;
    db.exec(USERS).await;
    let p = Pipeline::new(&db.url, &db.name, &["public.users"], "");
    with_rules(&p, &users_rule("public.users"));
    let records = snapshot_then_stream_users(&p, db.exec(USERS_CHANGES)).await;
    assert_users_masked(&records);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_snapshot_and_stream_into_json_lines_are_masked() {
    let db = TargetDb::new("maskmy");
    db.exec(&USERS.replace("ALTER TABLE users REPLICA IDENTITY FULL;", ""))
        .await;
    let port = common::env().var("CDC_TEST_MYSQL_PORT");
    let url = format!("mysql://cdc:secret-pw@127.0.0.1:{port}/{}", db.name);
    let table = format!("{}.users", db.name);
    let p = Pipeline::new(&url, &db.name, &[&table], "");
    with_rules(&p, &users_rule(&table));
    // `check` says what the section does to the table, and refuses a mask that does not fit it.
    let said = String::from_utf8_lossy(&p.run_cmd(&["check"]).stdout).to_string();
    assert!(
        said.contains(&format!(
            "column filter: {table}: in the agent (the binlog carries every column): left out: \
             secret; masked: email (hash), ssn (redact), notes (null), bio (truncate:6)"
        )),
        "{said}"
    );
    let misfit = Pipeline::new(&url, &db.name, &[&table], "");
    with_rules(
        &misfit,
        &format!("[[table]]\nmatch = \"{table}\"\nmask = {{ age = \"truncate:2\" }}\n"),
    );
    let out = misfit.run_cmd(&["check"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("FAIL column filter:") && said.contains("truncate is for text columns"),
        "{said}"
    );
    let records = snapshot_then_stream_users(&p, db.exec(USERS_CHANGES)).await;
    // The same key gives MySQL's rows the same hashes as Postgres' (binlog_row_image=FULL: the
    // before images are whole rows, masked too).
    assert_users_masked(&records);
    db.drop().await;
}

/// Every row of every table in the target schema, as text.
async fn dump_schema(client: &tokio_postgres::Client, schema: &str) -> String {
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap();
    let mut out = String::new();
    for t in tables {
        let name: String = t.get(0);
        for row in client
            .query(&format!("SELECT t::text FROM {schema}.{name} t"), &[])
            .await
            .unwrap()
        {
            out.push_str(&format!("{name}: {}\n", row.get::<_, String>(0)));
        }
    }
    out
}

async fn target_columns(client: &tokio_postgres::Client, table: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'replica' AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_target_gets_masked_rows_and_only_the_kept_columns() {
    let src = TestDb::new("masksrc").await;
    let dst = TestDb::new("maskdst").await;
    src.exec(USERS).await;
    src.exec(
        "CREATE TABLE accounts (email text PRIMARY KEY, plan text);
         INSERT INTO accounts VALUES ('ann@example.com', 'free'), ('bob@example.com', 'free');
         CREATE TABLE orders (id bigint PRIMARY KEY, total numeric, card text);
         INSERT INTO orders VALUES (1, 10.5, 'topsecret-card-1');",
    )
    .await;
    let sink = format!(
        "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
        dst.url
    );
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.users", "public.accounts", "public.orders"],
        "",
        Some(&sink),
    );
    with_rules(
        &p,
        &format!(
            "{}\n[[table]]\nmatch = \"public.accounts\"\nmask = {{ email = \"hash\" }}\n\n\
             [[table]]\nmatch = \"public.orders\"\ncolumns = [\"id\", \"total\"]\n",
            users_rule("public.users")
        ),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    src.exec(USERS_CHANGES).await;
    // A masked key: the update and delete find their rows by the hash.
    src.exec(
        "UPDATE accounts SET plan = 'pro' WHERE email = 'ann@example.com';
         DELETE FROM accounts WHERE email = 'bob@example.com';
         INSERT INTO accounts VALUES ('ann2@example.com', 'free');
         ALTER TABLE orders ADD COLUMN extra text;
         INSERT INTO orders VALUES (2, 20, 'topsecret-card-2', 'topsecret-extra');",
    )
    .await;
    let target = dst.client().await;
    common::wait_until(
        "the target to catch up",
        Duration::from_secs(60),
        || async {
            let n = |sql: &'static str| {
                let target = &target;
                async move {
                    target
                        .query_one(sql, &[])
                        .await
                        .map(|r| r.get::<_, i64>(0))
                        .unwrap_or(-1)
                }
            };
            n("SELECT count(*) FROM replica.orders").await == 2
                && n("SELECT count(*) FROM replica.users").await == 2
                && n("SELECT count(*) FROM replica.accounts WHERE plan = 'pro'").await == 1
                && n("SELECT count(*) FROM replica.accounts").await == 2
        },
    )
    .await;
    assert_eq!(agent.stop(), 0);
    let dump = dump_schema(&target, "replica").await;
    assert_no_secret("the target", &dump);
    let ann: String = target
        .query_one(
            "SELECT plan FROM replica.accounts WHERE email = $1",
            &[&ANN_HASH],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ann, "pro", "the upsert found the row by its hashed key");
    let users = target_columns(&target, "users").await;
    let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["id", "email", "ssn", "notes", "bio", "age"]);
    assert_eq!(users[1].1, "text", "a hashed column is text");
    let orders = target_columns(&target, "orders").await;
    let names: Vec<&str> = orders.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["id", "total"],
        "a column added later is left out too"
    );
    let user3: String = target
        .query_one("SELECT t::text FROM replica.users t WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        user3.contains(ANN_HASH) && user3.contains("[redacted]"),
        "{user3}"
    );
    // verify compares the columns that reach the target unmasked, and says so; a table whose
    // key is hashed cannot be matched row by row.
    let verify = |tables: &[&str]| {
        let mut args = vec!["verify", "--json"];
        args.extend_from_slice(tables);
        let out = p.run_cmd(&args);
        let report: Json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, report) = verify(&["public.users", "public.orders"]);
    assert_eq!(code, Some(0), "{report:#}");
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(t["status"], "equal", "{t:#}");
        assert!(t["notes"].to_string().contains("not compared"), "{t:#}");
    }
    let (code, report) = verify(&["public.accounts"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        report["tables"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("key column email is masked"),
        "{report:#}"
    );
    src.drop().await;
    dst.drop().await;
}

/// The pgoutput bytes the server sends for the publication while `writes` run: read through a
/// slot of the test's own, created before and dropped after. (Synchronous commit: the SQL peek
/// decodes only WAL already flushed, and the test server commits asynchronously.)
async fn wire_of(db: &TestDb, publication: &str, writes: &str) -> Vec<u8> {
    let client = db.client().await;
    let slot = format!("peek_{}", db.name);
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap();
    db.exec(&format!("SET synchronous_commit = on; {writes}"))
        .await;
    let wire = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2)",
            &[&slot, &publication],
        )
        .await
        .unwrap()
        .iter()
        .flat_map(|r| r.get::<_, Vec<u8>>(0))
        .collect();
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    wire
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_list_keeps_left_out_columns_off_the_wire_where_the_identity_allows() {
    let db = TestDb::new("maskwire").await;
    db.exec(
        "CREATE TABLE cards (id bigint PRIMARY KEY, holder text, pan text);
         CREATE TABLE full_t (id bigint PRIMARY KEY, a text, b text);
         ALTER TABLE full_t REPLICA IDENTITY FULL;",
    )
    .await;
    let p = Pipeline::new(
        &db.url,
        &db.name,
        &["public.cards", "public.full_t"],
        "snapshot = \"never\"",
    );
    with_rules(
        &p,
        "[[table]]\nmatch = \"public.cards\"\ncolumns = [\"id\", \"holder\"]\n\n\
         [[table]]\nmatch = \"public.full_t\"\ncolumns = [\"id\", \"a\"]\n",
    );
    let check = p.run_cmd(&["check"]);
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        said.contains("column filter: public.cards: publication column list (id, holder)"),
        "{said}"
    );
    assert!(
        said.contains("column filter: public.full_t: dropped in the agent: the table has REPLICA IDENTITY FULL"),
        "{said}"
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let client = db.client().await;
    let publication = format!("cdc_{}", db.name);
    let listed: Vec<(String, String)> = client
        .query(
            "SELECT tablename::text, array_to_string(attnames, ',') FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY tablename",
            &[&publication],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        listed,
        [
            ("cards".to_string(), "id,holder".to_string()),
            ("full_t".to_string(), "id,a,b".to_string())
        ]
    );
    // The source application's writes keep working on both tables.
    let wire = wire_of(
        &db,
        &publication,
        "INSERT INTO cards VALUES (1, 'Ann Holder', '4111111111111111');
         UPDATE cards SET pan = '4222222222222222', holder = 'Ann H.' WHERE id = 1;
         INSERT INTO full_t VALUES (1, 'kept-a', 'left-out-b');
         UPDATE full_t SET b = 'left-out-b2' WHERE id = 1;
         DELETE FROM full_t WHERE id = 1;
         DELETE FROM cards WHERE id = 1;",
    )
    .await;
    assert!(contains(&wire, b"Ann Holder"), "the peek reads the changes");
    assert!(
        contains(&wire, b"holder\0"),
        "the relation message names the kept column"
    );
    assert!(
        !contains(&wire, b"pan\0"),
        "the relation message leaves `pan` out"
    );
    assert!(!contains(&wire, b"4111111111111111") && !contains(&wire, b"4222222222222222"));
    // full_t has no list: the server sends b, the agent drops it.
    assert!(contains(&wire, b"left-out-b"));
    let records = p.wait_records(6, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    let text = std::fs::read_to_string(&p.output).unwrap();
    assert!(
        !text.contains("left-out-b") && !text.contains("4111"),
        "{text}"
    );
    assert!(records.iter().all(|r| r["after"].get("b").is_none()
        && r["before"].get("b").is_none()
        && r["after"].get("pan").is_none()));
    // Someone turns cards to REPLICA IDENTITY FULL while the agent is stopped: the list no
    // longer covers the identity, Postgres refuses the application's UPDATEs, `check` says so,
    // and the next start removes the list.
    db.exec("ALTER TABLE cards REPLICA IDENTITY FULL; INSERT INTO cards VALUES (2, 'Bo', '4333')")
        .await;
    let refused = client
        .batch_execute("UPDATE cards SET holder = 'B.' WHERE id = 2")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("replica identity")
            || format!("{refused:?}").contains("replica identity"),
        "{refused:?}"
    );
    let said = String::from_utf8_lossy(&p.run_cmd(&["check"]).stdout).to_string();
    assert!(
        said.contains("FAIL column filter: public.cards: publication")
            && said.contains("does not cover the table's replica identity"),
        "{said}"
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec("UPDATE cards SET holder = 'B.' WHERE id = 2").await;
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// The columns the publication sends of `table`, comma-separated ("" when it is not published).
async fn published_columns(
    client: &tokio_postgres::Client,
    publication: &str,
    table: &str,
) -> String {
    client
        .query(
            "SELECT array_to_string(attnames, ',') FROM pg_publication_tables \
             WHERE pubname = $1 AND tablename = $2",
            &[&publication, &table],
        )
        .await
        .unwrap()
        .first()
        .map(|r| r.get(0))
        .unwrap_or_default()
}

/// `SELECT <columns> FROM <table> ORDER BY id` as text rows.
async fn rows_text(client: &tokio_postgres::Client, columns: &str, table: &str) -> Vec<String> {
    client
        .query(
            &format!("SELECT ({columns})::text FROM {table} t ORDER BY id"),
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn exclude_columns_get_a_column_list_that_follows_the_tables_columns() {
    let src = TestDb::new("exclsrc").await;
    let dst = TestDb::new("excldst").await;
    src.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text, ssn text, note text);
         INSERT INTO people VALUES (1, 'Ann', '123-45-6789', 'n1'), (2, 'Bob', '987-65-4321', 'n2');",
    )
    .await;
    let sink = format!(
        "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
        dst.url
    );
    let p = Pipeline::with_sink(&src.url, &src.name, &["public.people"], "", Some(&sink));
    with_rules(
        &p,
        "[[table]]\nmatch = \"public.people\"\nexclude_columns = [\"ssn\"]\n",
    );
    let said = String::from_utf8_lossy(&p.run_cmd(&["check"]).stdout).to_string();
    assert!(
        said.contains(
            "column filter: public.people: publication column list (id, name, note): the server \
             sends no other column (a column added later is added to the list); Postgres refuses \
             DROP COLUMN"
        ),
        "{said}"
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let client = src.client().await;
    let target = dst.client().await;
    let publication = format!("cdc_{}", src.name);
    assert_eq!(
        published_columns(&client, &publication, "people").await,
        "id,name,note"
    );

    // The excluded column is not on the wire.
    let wire = wire_of(
        &src,
        &publication,
        "INSERT INTO people VALUES (3, 'Cy', '555-12-3456', 'n3');
         UPDATE people SET ssn = '111-22-3333' WHERE id = 1;",
    )
    .await;
    assert!(contains(&wire, b"Cy"), "the peek reads the changes");
    assert!(!contains(&wire, b"ssn\0") && !contains(&wire, b"555-12-3456"));
    assert!(!contains(&wire, b"111-22-3333"));

    // A column added, and rows changed at once, before the agent has seen the column: the list
    // is widened and the table re-copied, so the target gets every row's value.
    src.exec(
        "ALTER TABLE people ADD COLUMN city text;
         UPDATE people SET city = 'city-' || id;
         INSERT INTO people VALUES (4, 'Di', '000-11-2222', 'n4', 'Paris');",
    )
    .await;
    let source_rows = rows_text(&client, "id, name, note, city", "people").await;
    common::wait_until(
        "the target to have the added column's values",
        Duration::from_secs(90),
        || async {
            rows_text(&target, "id, name, note, city", "replica.people").await == source_rows
        },
    )
    .await;
    assert_eq!(
        published_columns(&client, &publication, "people").await,
        "id,name,note,city"
    );

    // A listed column dropped the way `check` says (the list off in the same transaction): the
    // agent sets the list again.
    src.exec(&format!(
        "BEGIN; ALTER PUBLICATION {publication} DROP TABLE people;
         ALTER TABLE people DROP COLUMN note;
         ALTER PUBLICATION {publication} ADD TABLE people; COMMIT;
         INSERT INTO people VALUES (5, 'Ed', '222-33-4444', 'Rome');"
    ))
    .await;
    common::wait_until(
        "the agent to set the column list again",
        Duration::from_secs(60),
        || async {
            published_columns(&client, &publication, "people").await == "id,name,city"
                && rows_text(&target, "id", "replica.people").await.len() == 5
        },
    )
    .await;

    // DROP COLUMN .. CASCADE takes the table out of the publication: the agent puts it back
    // and re-copies it, so a change made meanwhile arrives.
    src.exec(
        "ALTER TABLE people DROP COLUMN name CASCADE;
         INSERT INTO people VALUES (6, '333-44-5555', 'Oslo');
         UPDATE people SET city = 'Lima' WHERE id = 1;",
    )
    .await;
    let source_rows = rows_text(&client, "id, city", "people").await;
    common::wait_until(
        "the table back in the publication and re-copied",
        Duration::from_secs(90),
        || async { rows_text(&target, "id, city", "replica.people").await == source_rows },
    )
    .await;
    assert_eq!(
        published_columns(&client, &publication, "people").await,
        "id,city"
    );
    assert_eq!(agent.stop(), 0);
    let dump = dump_schema(&target, "replica").await;
    for ssn in [
        "123-45-6789",
        "555-12-3456",
        "111-22-3333",
        "000-11-2222",
        "222-33-4444",
        "333-44-5555",
    ] {
        assert!(!dump.contains(ssn), "the target holds {ssn}:\n{dump}");
    }
    let columns = target_columns(&target, "people").await;
    assert!(columns.iter().all(|(n, _)| n != "ssn"), "{columns:?}");
    src.drop().await;
    dst.drop().await;
}
