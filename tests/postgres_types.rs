//! Every value type of the spec's table, through a real Postgres and the real binary, into JSON
//! lines: the `after` image must be exactly the spec's JSON.

mod common;

use std::time::Duration;

use common::{Pipeline, TestDb};
use serde_json::json;

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE all_types (
    id int PRIMARY KEY,
    c_bool boolean, c_int2 smallint, c_int4 integer, c_int8 bigint,
    c_float4 real, c_float8 double precision, c_numeric numeric, c_numeric_big numeric(45, 21),
    c_text text, c_varchar varchar(20), c_char char(3), c_uuid uuid,
    c_inet inet, c_cidr cidr, c_macaddr macaddr,
    c_json json, c_jsonb jsonb, c_bytea bytea,
    c_date date, c_time time, c_timestamp timestamp, c_timestamptz timestamptz, c_interval interval,
    c_enum mood, c_domain posint,
    c_int_array int[], c_text_array text[], c_2d int[][], c_point point
);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_value_type_becomes_the_spec_json() {
    let db = TestDb::new("types").await;
    db.exec(SCHEMA).await;
    let p = Pipeline::new(
        &db.url,
        &db.name,
        &["public.all_types"],
        "snapshot = \"never\"",
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec(
        r#"
INSERT INTO all_types VALUES (1,
    true, -32768, 2147483647, -9223372036854775808,
    'NaN', '-Infinity', 129.90, 123456789012345678901234.123456789012345678901,
    'héllo wörld ✓ 𝄞 "quoted" \back', 'abc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
    '{"a": [1, 2.5, "x"]}', '{"b": {"c": null}}', '\x000102ff',
    '2026-11-26', '13:45:00.123456', '2026-11-26 13:45:00.123456', '2026-11-26 13:45:00.123456+01',
    '1 year 2 months 3 days 4 hours 5 minutes 6.5 seconds',
    'happy', 42,
    '{1,NULL,3}', '{"a b","c\"d",NULL}', '{{1,2},{3,4}}', '(1,2)');
INSERT INTO all_types (id, c_float4, c_float8, c_numeric, c_date, c_timestamp, c_timestamptz, c_interval)
    VALUES (2, 'Infinity', 1.5e300, 'NaN', 'infinity', '-infinity', 'infinity', '0 seconds');
INSERT INTO all_types (id, c_text) VALUES (3, repeat('toasted-', 131072));
UPDATE all_types SET c_int4 = 7 WHERE id = 3;
"#,
    )
    .await;
    let records = p.wait_records(4, Duration::from_secs(30));
    assert_eq!(agent.stop(), 0, "clean shutdown exits 0");

    assert_eq!(
        records[0]["after"],
        json!({
            "id": 1, "c_bool": true, "c_int2": -32768, "c_int4": 2147483647,
            "c_int8": -9223372036854775808i64,
            "c_float4": "NaN", "c_float8": "-Infinity", "c_numeric": "129.90",
            "c_numeric_big": "123456789012345678901234.123456789012345678901",
            "c_text": "héllo wörld ✓ 𝄞 \"quoted\" \\back", "c_varchar": "abc", "c_char": "ab ",
            "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "c_inet": "192.168.0.1/24", "c_cidr": "10.0.0.0/8", "c_macaddr": "08:00:2b:01:02:03",
            "c_json": {"a": [1, 2.5, "x"]}, "c_jsonb": {"b": {"c": null}}, "c_bytea": "AAEC/w==",
            "c_date": "2026-11-26", "c_time": "13:45:00.123456",
            "c_timestamp": "2026-11-26T13:45:00.123456",
            "c_timestamptz": "2026-11-26T12:45:00.123456Z",
            "c_interval": "P1Y2M3DT4H5M6.5S",
            "c_enum": "happy", "c_domain": 42,
            "c_int_array": [1, null, 3], "c_text_array": ["a b", "c\"d", null],
            "c_2d": [[1, 2], [3, 4]], "c_point": "(1,2)"
        })
    );
    let second = &records[1]["after"];
    assert_eq!(second["c_float4"], json!("Infinity"));
    assert_eq!(second["c_float8"], json!(1.5e300));
    assert_eq!(second["c_numeric"], json!("NaN"));
    assert_eq!(second["c_date"], json!("infinity"));
    assert_eq!(second["c_timestamp"], json!("-infinity"));
    assert_eq!(second["c_timestamptz"], json!("infinity"));
    assert_eq!(second["c_interval"], json!("PT0S"));
    assert_eq!(second["c_bool"], json!(null));
    assert_eq!(second["c_int_array"], json!(null));

    // The 1 MB value arrives whole on insert...
    assert_eq!(
        records[2]["after"]["c_text"].as_str().unwrap().len(),
        8 * 131072
    );
    // ...and an update that leaves it alone says so instead of sending null.
    let update = &records[3];
    assert_eq!(update["op"], json!("update"));
    assert_eq!(update["unchanged"], json!(["c_text"]));
    assert!(
        update["after"].get("c_text").is_none(),
        "unchanged TOAST must not appear in after"
    );
    assert_eq!(update["after"]["c_int4"], json!(7));
    // Commit timestamps are UTC with a Z, transaction ids and LSNs present.
    let source = &records[0]["source"];
    assert!(source["commit_ts"].as_str().unwrap().ends_with('Z'));
    assert!(source["tx_id"].as_u64().is_some());
    assert_eq!(source["schema"], json!("public"));
    assert_eq!(source["table"], json!("all_types"));
    assert_eq!(source["db"], json!(db.name));
    db.drop().await;
}

/// Values a JSON Lines reader or a strict ISO 8601 parser would trip on: `json` documents kept
/// as written, line breaks and tabs included, and years outside 0001–9999 (BC ones, five
/// digits); and the representational limits the README's value table states (bit strings as
/// text, JSON `null` as `null`, array lower bounds dropped). The columns are their text, exactly
/// as Postgres takes it.
const EDGE_TABLE: &str = "CREATE TABLE edges (id int PRIMARY KEY, j json, ja json[], d date,
    d2 date, ts timestamp, ts2 timestamp, tz timestamptz, tz2 timestamptz, da date[],
    b bit(3), vb varbit(5), jn jsonb, lb int[])";
const EDGE_VALUES: &str = r#"E'{"a" :\n [1, 2],\t"b":\r\n"x"}', ARRAY[E'[1,\n2]'::json, '{}'],
    '4713-12-31 BC', '21016-11-04', '4713-12-31 23:59:59.999999 BC', '21016-11-04 13:51:30.123456',
    '21016-11-04 13:51:30.123456+00', '0001-01-01 00:00:00+00 BC',
    ARRAY['0044-03-15 BC'::date, '21016-11-04'], B'101', B'0010', 'null', '[0:1]={7,8}'"#;

/// The spec's JSON of [`EDGE_VALUES`]: documents as values, years in ISO 8601's expanded form
/// (astronomical numbering: 4713 BC is -004712, 1 BC is +000000).
fn edge_json(id: i64) -> serde_json::Value {
    json!({
        "id": id, "j": {"a": [1, 2], "b": "x"}, "ja": [[1, 2], {}],
        "d": "-004712-12-31", "d2": "+021016-11-04",
        "ts": "-004712-12-31T23:59:59.999999", "ts2": "+021016-11-04T13:51:30.123456",
        "tz": "+021016-11-04T13:51:30.123456Z", "tz2": "+000000-01-01T00:00:00Z",
        "da": ["-000043-03-15", "+021016-11-04"],
        "b": "101", "vb": "0010", "jn": null, "lb": [7, 8]
    })
}

/// Every line of the output is one whole record: no record spans two lines.
fn assert_one_record_per_line(p: &Pipeline, records: usize) {
    let text = std::fs::read_to_string(&p.output).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a line that is not a record ({e}): {line:?}"));
        assert!(record["op"].is_string(), "{line}");
    }
    assert_eq!(lines.len(), records, "{text}");
}

/// Through each snapshot method and the stream, the edge values arrive as the spec says, one
/// record per line; and the agent restarts cleanly when such a record is the file's last line
/// (the sink reads it back to resume).
#[tokio::test(flavor = "multi_thread")]
async fn json_with_line_breaks_and_far_years_arrive_one_record_per_line() {
    for method in ["watermark", "transaction"] {
        let db = TestDb::new("edges").await;
        db.exec(EDGE_TABLE).await;
        db.exec(&format!("INSERT INTO edges VALUES (1, {EDGE_VALUES})"))
            .await;
        let p = Pipeline::new(
            &db.url,
            &db.name,
            &["public.edges"],
            &format!("snapshot_method = \"{method}\""),
        );
        let agent = p.start();
        p.wait_state("streaming", Duration::from_secs(60));
        p.wait_records(1, Duration::from_secs(30));
        db.exec(&format!("INSERT INTO edges VALUES (2, {EDGE_VALUES})"))
            .await;
        let records = p.wait_records(2, Duration::from_secs(30));
        assert_one_record_per_line(&p, 2);
        assert_eq!(records[0]["source"]["snapshot"], json!(true), "{method}");
        assert_eq!(records[0]["after"], edge_json(1), "{method} snapshot");
        assert_eq!(records[1]["after"], edge_json(2), "{method} stream");
        assert_eq!(agent.stop(), 0, "clean shutdown exits 0");

        // The last line is the one with the document's line breaks: the restart reads it back.
        let agent = p.start();
        p.wait_state("streaming", Duration::from_secs(60));
        db.exec(&format!("INSERT INTO edges VALUES (3, {EDGE_VALUES})"))
            .await;
        let records = p.wait_records(3, Duration::from_secs(30));
        assert_eq!(
            records[2]["after"],
            edge_json(3),
            "{method} after the restart"
        );
        assert_eq!(agent.stop(), 0, "clean shutdown exits 0\n{}", p.log());
        assert_one_record_per_line(&p, 3);
        db.drop().await;
    }
}
