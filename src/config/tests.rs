//! Config parsing and validation: defaults, errors naming the key, each sink's keys.

use super::*;

const GOOD: &str = r#"
[agent]
name = "orders"

[source]
type = "postgres"
url = "postgres://repl@localhost/app"
tables = ["public.orders"]

[sink]
type = "jsonl"
path = "out.jsonl"
"#;

#[test]
fn a_good_config_parses_with_defaults() {
    let c = Config::parse(GOOD, Path::new("a.toml")).unwrap();
    assert_eq!(&*c.agent.state_dir, DEFAULT_STATE_DIR);
    assert_eq!(c.slot_name(), "cdc_orders");
    assert_eq!(c.source.snapshot, SnapshotMode::Initial);
    assert_eq!(format!("{:?}", c.source.url), "Secret(***)");
}

#[test]
fn unknown_keys_are_errors_with_line_and_column() {
    let text = GOOD.replace("tables =", "tabels =");
    let err = Config::parse(&text, Path::new("a.toml")).unwrap_err().0;
    assert!(err.starts_with("invalid config a.toml:8:1:"), "{err}");
    assert!(err.contains("tabels"), "{err}");
}

#[test]
fn unset_environment_variables_are_errors_not_empty_strings() {
    let text = GOOD.replace("repl@", "repl:${CDC_TEST_SURELY_UNSET_VAR}@");
    let err = Config::parse(&text, Path::new("a.toml")).unwrap_err().0;
    assert!(err.contains("CDC_TEST_SURELY_UNSET_VAR"), "{err}");
    assert!(err.contains("a.toml:7:"), "{err}");
}

#[test]
fn interpolation_replaces_every_reference() {
    let env = |n: &str| (n == "A").then(|| "x".to_string());
    assert_eq!(interpolate("a${A}b${A}", env).unwrap(), "axbx");
    assert!(interpolate("${A", env).is_err());
    assert!(interpolate("${B}", env).is_err());
}

#[test]
fn a_mysql_sink_needs_a_url_and_a_database() {
    let sink = |lines: &str| {
        GOOD.replace(
            "type = \"jsonl\"\npath = \"out.jsonl\"",
            &format!("type = \"mysql\"\n{lines}"),
        )
    };
    let parse = |text: String| Config::parse(&text, Path::new("a.toml"));
    assert!(parse(sink("url = \"mysql://u:p@h:3306/app\"")).is_ok());
    assert!(parse(sink("url = \"mysql://u:p@h:3306\"\nschema = \"app\"")).is_ok());
    let err = parse(sink("url = \"mysql://u:p@h:3306\"")).unwrap_err().0;
    assert!(err.contains("sink.schema"), "{err}");
    let err = parse(sink("schema = \"app\"")).unwrap_err().0;
    assert!(err.contains("sink.url"), "{err}");
    let err = parse(sink("url = \"mysql://u:p@h/app\"\npath = \"x\""))
        .unwrap_err()
        .0;
    assert!(err.contains("sink.path"), "{err}");
    let err = parse(sink("url = \"postgres://u:secret@h/app\""))
        .unwrap_err()
        .0;
    assert!(err.contains("sink.url") && !err.contains("secret"), "{err}");
}

#[test]
fn a_duckdb_sink_needs_a_path_and_the_feature() {
    let text = GOOD.replace("type = \"jsonl\"", "type = \"duckdb\"");
    let parsed = Config::parse(&text, Path::new("a.toml"));
    if cfg!(feature = "duckdb") {
        assert!(parsed.is_ok(), "{parsed:?}");
        let err = Config::parse(
            &text.replace("path = \"out.jsonl\"", ""),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .0;
        assert!(err.contains("sink.path"), "{err}");
    } else {
        let err = parsed.unwrap_err().0;
        assert!(
            err.contains("built without DuckDB; build with --features duckdb"),
            "{err}"
        );
    }
}

#[test]
fn a_nats_sink_checks_url_subject_and_stream() {
    let sink = |lines: &str| {
        GOOD.replace(
            "type = \"jsonl\"\npath = \"out.jsonl\"",
            &format!("type = \"nats\"\n{lines}"),
        )
    };
    let parse = |text: String| Config::parse(&text, Path::new("a.toml"));
    let c = parse(sink("url = \"nats://h:4222\"")).unwrap();
    assert_eq!(nats_stream_name(&c), "CDC_ORDERS");
    assert_eq!(message_prefix(&c), "orders");
    assert_eq!(c.sink.format.unwrap_or_default(), MessageFormat::Native);
    let c = parse(sink(
        "url = \"nats://h:4222\"\nformat = \"debezium\"\nstream = \"S-1\"\nsubject = \"cdc.{schema}.{table}\"",
    ))
    .unwrap();
    assert_eq!(c.sink.format, Some(MessageFormat::Debezium));
    assert_eq!(nats_stream_name(&c), "S-1");
    for (lines, key) in [
        ("", "sink.url"),
        ("url = \"http://h:4222\"", "sink.url"),
        (
            "url = \"nats://h\"\nsubject = \"a.{tabel}\"",
            "sink.subject",
        ),
        ("url = \"nats://h\"\nsubject = \"a.>\"", "sink.subject"),
        ("url = \"nats://h\"\nstream = \"a.b\"", "sink.stream"),
        (
            "url = \"nats://h\"\nsubject_prefix = \"a.b\"",
            "sink.subject_prefix",
        ),
        (
            "url = \"nats://h\"\nduplicate_window_s = 0",
            "sink.duplicate_window_s",
        ),
        ("url = \"nats://h\"\npath = \"x\"", "sink.path"),
    ] {
        let err = parse(sink(lines)).unwrap_err().0;
        assert!(err.contains(key), "{lines}: {err}");
    }
    let err = parse(sink("url = \"nats://h\"\nformat = \"avro\""))
        .unwrap_err()
        .0;
    // The line and column point at the value; the message names the choices.
    assert!(
        err.contains("a.toml:13:10") && err.contains("`native` or `debezium`"),
        "{err}"
    );
}

#[test]
fn a_kafka_sink_checks_brokers_topic_and_properties() {
    let sink = |lines: &str| {
        GOOD.replace(
            "type = \"jsonl\"\npath = \"out.jsonl\"",
            &format!("type = \"kafka\"\n{lines}"),
        )
    };
    let parse = |text: String| Config::parse(&text, Path::new("a.toml"));
    let c = parse(sink("brokers = \"k1:9092,k2:9092\"")).unwrap();
    assert_eq!(message_prefix(&c), "orders");
    let kafka = crate::wiring::kafka_sink_config(&c).unwrap();
    assert_eq!(kafka.compression, cdc_sink_kafka::Compression::Lz4);
    assert!(
        !kafka.tombstones,
        "native records: no tombstones unless asked"
    );
    let c = parse(sink(
        "brokers = \"k:9092\"\nformat = \"debezium\"\ntopic = \"cdc-{db}.{table}\"\ntopic_prefix = \"shop\"\ncompression = \"zstd\"\nproperties = { \"linger.ms\" = \"20\" }",
    ))
    .unwrap();
    let kafka = crate::wiring::kafka_sink_config(&c).unwrap();
    assert!(
        kafka.tombstones,
        "debezium: tombstones on delete by default"
    );
    assert_eq!(kafka.prefix, "shop");
    assert_eq!(
        kafka.properties,
        [("linger.ms".to_string(), "20".to_string())]
    );
    for (lines, key) in [
        ("", "sink.brokers"),
        ("brokers = \"kafka://k:9092\"", "sink.brokers"),
        ("brokers = \"k:9092\"\ntopic = \"a/{table}\"", "sink.topic"),
        (
            "brokers = \"k:9092\"\ntopic_prefix = \"a b\"",
            "sink.topic_prefix",
        ),
        ("brokers = \"k:9092\"\nurl = \"k:9092\"", "sink.url"),
        ("brokers = \"k:9092\"\nstream = \"S\"", "sink.subject"),
        (
            "brokers = \"k:9092\"\nproperties = { acks = \"1\" }",
            "sink.properties.\"acks\"",
        ),
        (
            "brokers = \"k:9092\"\ntopic_partitions = 0",
            "sink.topic_partitions",
        ),
        (
            "brokers = \"k:9092\"\ntopic_partitions = 3\ntopic_replication = 0",
            "sink.topic_replication",
        ),
        (
            "brokers = \"k:9092\"\ntopic_replication = 3",
            "set sink.topic_partitions too",
        ),
    ] {
        let err = parse(sink(lines)).unwrap_err().0;
        assert!(err.contains(key), "{lines}: {err}");
    }
    let err = parse(sink("brokers = \"k:9092\"\ncompression = \"brotli\""))
        .unwrap_err()
        .0;
    assert!(err.contains("`lz4`"), "{err}");
    let err = parse(GOOD.replace("path = \"out.jsonl\"", "path = \"o\"\ntopic = \"t\""))
        .unwrap_err()
        .0;
    assert!(err.contains("for the kafka sink"), "{err}");
    let err = parse(GOOD.replace(
        "path = \"out.jsonl\"",
        "path = \"o\"\ntransaction_metadata = true",
    ))
    .unwrap_err()
    .0;
    assert!(err.contains("sink.transaction_metadata"), "{err}");
    let c = parse(sink(
        "brokers = \"k:9092\"\ntopic_partitions = 6\ntopic_config = { \"cleanup.policy\" = \"compact\" }",
    ))
    .unwrap();
    assert_eq!(
        crate::wiring::kafka_sink_config(&c).unwrap().topic_creation,
        Some(cdc_sink_kafka::TopicCreation {
            partitions: 6,
            replication: None,
            config: vec![("cleanup.policy".into(), "compact".into())],
        })
    );
    let c = parse(sink("brokers = \"k:9092\"\ntransaction_metadata = true")).unwrap();
    assert!(
        crate::wiring::kafka_sink_config(&c)
            .unwrap()
            .transaction_metadata
    );
}

#[test]
fn a_sink_without_its_required_key_names_the_key() {
    let text = GOOD.replace("path = \"out.jsonl\"", "");
    let err = Config::parse(&text, Path::new("a.toml")).unwrap_err().0;
    assert!(err.contains("sink.path"), "{err}");
}

#[test]
fn on_error_defaults_to_stop_and_dlq_is_for_sinks_that_set_changes_aside() {
    let c = Config::parse(GOOD, Path::new("a.toml")).unwrap();
    assert_eq!(c.sink.on_error, OnError::Stop);
    assert_eq!(c.sink.dlq_max_records, DEFAULT_DLQ_MAX_RECORDS);
    let jsonl = GOOD.replace(
        "path = \"out.jsonl\"",
        "path = \"out.jsonl\"\non_error = \"dlq\"",
    );
    let err = Config::parse(&jsonl, Path::new("a.toml")).unwrap_err().0;
    assert!(err.contains("sink.on_error"), "{err}");
    let pg = GOOD.replace(
        "type = \"jsonl\"\npath = \"out.jsonl\"",
        "type = \"postgres\"\nurl = \"postgres://w@h/db\"\non_error = \"dlq\"\ndlq_max_records = 10",
    );
    let c = Config::parse(&pg, Path::new("a.toml")).unwrap();
    assert_eq!(
        (c.sink.on_error, c.sink.dlq_max_records),
        (OnError::Dlq, 10)
    );
    let zero = pg.replace("dlq_max_records = 10", "dlq_max_records = 0");
    assert!(Config::parse(&zero, Path::new("a.toml")).is_err());
    let wrong = pg.replace("\"dlq\"", "\"skip\"");
    assert!(Config::parse(&wrong, Path::new("a.toml")).is_err());
}

#[test]
fn secret_files_are_read_without_their_final_newline_and_scrubbed_from_output() {
    let dir = std::env::temp_dir().join(format!("cdc-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgpass");
    std::fs::write(&file, "fr0m-a-f1le\n").unwrap();
    let text = GOOD.replace("repl@", &format!("repl:${{file:{}}}@", file.display()));
    let c = Config::parse(&text, Path::new("a.toml")).unwrap();
    assert_eq!(
        c.source.url.expose(),
        "postgres://repl:fr0m-a-f1le@localhost/app"
    );
    assert_eq!(
        crate::secrets::scrub("password authentication failed: fr0m-a-f1le"),
        "password authentication failed: ***"
    );

    let missing = GOOD.replace("repl@", "repl:${file:/surely/not/there}@");
    let err = Config::parse(&missing, Path::new("a.toml")).unwrap_err().0;
    assert!(
        err.contains("/surely/not/there") && err.contains("secret file"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_interval_is_a_duration_for_warehouse_sinks_and_max_rows_samples_it() {
    let warehouse = |agent: &str| {
        GOOD.replace("name = \"orders\"", &format!("name = \"orders\"\n{agent}"))
            .replace(
                "type = \"jsonl\"\npath = \"out.jsonl\"",
                "type = \"postgres\"\nurl = \"postgres://w@localhost/dw\"",
            )
    };
    let parse = |text: String| Config::parse(&text, Path::new("a.toml"));
    let c = parse(warehouse(
        "verify_interval = \"6h\"\nverify_max_rows = 5000",
    ))
    .unwrap();
    let interval = c.agent.verify_interval.unwrap();
    assert_eq!(interval.duration().as_secs(), 21_600);
    assert_eq!(c.agent.verify_max_rows, Some(5000));
    assert!(parse(GOOD.to_string())
        .unwrap()
        .agent
        .verify_interval
        .is_none());
    let err = parse(warehouse("verify_interval = \"6 hours\""))
        .unwrap_err()
        .0;
    assert!(
        err.contains("a.toml:4:") && err.contains("not a duration"),
        "{err}"
    );
    let err = parse(warehouse("verify_interval = \"0s\"")).unwrap_err().0;
    assert!(
        err.contains("`agent.verify_interval` must be at least 1s"),
        "{err}"
    );
    let err = parse(warehouse("verify_max_rows = 10")).unwrap_err().0;
    assert!(err.contains("set agent.verify_interval too"), "{err}");
    let err = parse(warehouse("verify_interval = \"1m\"\nverify_max_rows = 0"))
        .unwrap_err()
        .0;
    assert!(
        err.contains("`agent.verify_max_rows` must be at least 1"),
        "{err}"
    );
    let jsonl = GOOD.replace(
        "name = \"orders\"",
        "name = \"orders\"\nverify_interval = \"1h\"",
    );
    let err = parse(jsonl).unwrap_err().0;
    assert!(err.contains("is for warehouse sinks"), "{err}");
}
