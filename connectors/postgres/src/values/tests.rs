//! Tests of decoding through the public entry points, [`builtin_kind`] and [`decode_text`], for
//! every kind, arrays included.

use super::*;

fn d(kind: ValueKind, text: &str) -> Value {
    decode_text(&kind, text)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn kind(oid: u32) -> ValueKind {
    builtin_kind(oid).unwrap_or_else(|| panic!("oid {oid} has no kind"))
}

fn array_of(element: ValueKind) -> ValueKind {
    ValueKind::Array {
        element: Box::new(element),
        delimiter: b',',
    }
}

fn ints(items: &[i64]) -> Value {
    Value::Array(items.iter().map(|&i| Value::Int(i)).collect())
}

#[test]
fn scalar_oids_map_to_their_kinds() {
    assert_eq!(kind(16), ValueKind::Bool);
    for oid in [21, 23, 20, 26, 28, 5069] {
        assert_eq!(kind(oid), ValueKind::Int, "oid {oid}");
    }
    assert_eq!(kind(700), ValueKind::Float);
    assert_eq!(kind(701), ValueKind::Float);
    assert_eq!(kind(1700), ValueKind::Numeric);
    for oid in [
        25, 1043, 1042, 19, 18, 2950, 869, 650, 829, 774, 142, 790, 1560, 1562, 1266, 3614, 3615,
        603,
    ] {
        assert_eq!(kind(oid), ValueKind::Text, "oid {oid}");
    }
    assert_eq!(kind(114), ValueKind::Json);
    assert_eq!(kind(3802), ValueKind::Json);
    assert_eq!(kind(17), ValueKind::Bytea);
    assert_eq!(kind(1082), ValueKind::Date);
    assert_eq!(kind(1083), ValueKind::Time);
    assert_eq!(kind(1114), ValueKind::Timestamp);
    assert_eq!(kind(1184), ValueKind::TimestampTz);
    assert_eq!(kind(1186), ValueKind::Interval);
}

#[test]
fn array_oids_map_to_their_element_kinds() {
    let cases = [
        (1000, ValueKind::Bool),
        (1005, ValueKind::Int),
        (1007, ValueKind::Int),
        (1016, ValueKind::Int),
        (1028, ValueKind::Int),
        (1021, ValueKind::Float),
        (1022, ValueKind::Float),
        (1231, ValueKind::Numeric),
        (1009, ValueKind::Text),
        (1015, ValueKind::Text),
        (1014, ValueKind::Text),
        (1003, ValueKind::Text),
        (2951, ValueKind::Text),
        (1041, ValueKind::Text),
        (651, ValueKind::Text),
        (1040, ValueKind::Text),
        (199, ValueKind::Json),
        (3807, ValueKind::Json),
        (1001, ValueKind::Bytea),
        (1182, ValueKind::Date),
        (1183, ValueKind::Time),
        (1115, ValueKind::Timestamp),
        (1185, ValueKind::TimestampTz),
        (1187, ValueKind::Interval),
        (1270, ValueKind::Text),
        (791, ValueKind::Text),
        (143, ValueKind::Text),
    ];
    for (oid, element) in cases {
        assert_eq!(kind(oid), array_of(element), "oid {oid}");
    }
    assert_eq!(
        kind(1020),
        ValueKind::Array {
            element: Box::new(ValueKind::Text),
            delimiter: b';'
        }
    );
}

#[test]
fn unknown_oids_have_no_kind() {
    assert_eq!(builtin_kind(0), None);
    assert_eq!(builtin_kind(16_385), None); // a user-defined enum, say
    assert_eq!(builtin_kind(u32::MAX), None);
}

#[test]
fn booleans() {
    assert_eq!(d(ValueKind::Bool, "t"), Value::Bool(true));
    assert_eq!(d(ValueKind::Bool, "f"), Value::Bool(false));
    assert_eq!(d(ValueKind::Bool, "yes"), text("yes"));
    assert_eq!(d(ValueKind::Bool, ""), text(""));
}

#[test]
fn integers_exact_to_both_ends() {
    assert_eq!(d(ValueKind::Int, "0"), Value::Int(0));
    assert_eq!(d(ValueKind::Int, "-42"), Value::Int(-42));
    assert_eq!(d(ValueKind::Int, "-32768"), Value::Int(-32768));
    assert_eq!(
        d(ValueKind::Int, "-9223372036854775808"),
        Value::Int(i64::MIN)
    );
    assert_eq!(
        d(ValueKind::Int, "9223372036854775807"),
        Value::Int(i64::MAX)
    );
    // xid8 past i64::MAX
    assert_eq!(
        d(ValueKind::Int, "9223372036854775808"),
        Value::UInt(9_223_372_036_854_775_808)
    );
    assert_eq!(
        d(ValueKind::Int, "18446744073709551615"),
        Value::UInt(u64::MAX)
    );
    assert_eq!(
        d(ValueKind::Int, "18446744073709551616"),
        text("18446744073709551616")
    );
    assert_eq!(
        d(ValueKind::Int, "-9223372036854775809"),
        text("-9223372036854775809")
    );
    assert_eq!(d(ValueKind::Int, "4294967295"), Value::Int(4_294_967_295)); // max oid/xid
    assert_eq!(d(ValueKind::Int, "12a"), text("12a"));
    assert_eq!(d(ValueKind::Int, ""), text(""));
}

#[test]
fn floats_and_their_specials() {
    assert_eq!(d(ValueKind::Float, "1.5"), Value::Float(1.5));
    assert_eq!(d(ValueKind::Float, "-0.25"), Value::Float(-0.25));
    assert_eq!(d(ValueKind::Float, "1e-300"), Value::Float(1e-300));
    assert_eq!(
        d(ValueKind::Float, "1.7976931348623157e+308"),
        Value::Float(f64::MAX)
    );
    // extra_float_digits=3 prints enough digits to round-trip exactly.
    assert_eq!(
        d(ValueKind::Float, "0.30000000000000004"),
        Value::Float(0.1 + 0.2)
    );
    match d(ValueKind::Float, "NaN") {
        Value::Float(f) => assert!(f.is_nan()),
        other => panic!("{other:?}"),
    }
    assert_eq!(d(ValueKind::Float, "Infinity"), Value::Float(f64::INFINITY));
    assert_eq!(
        d(ValueKind::Float, "-Infinity"),
        Value::Float(f64::NEG_INFINITY)
    );
    assert_eq!(d(ValueKind::Float, "one"), text("one"));
}

#[test]
fn numerics_keep_every_digit() {
    for s in [
        "129.90",
        "0",
        "-0.001",
        "12345678901234567890123456789.000000000000000001",
        "NaN",
        "Infinity",
        "-Infinity",
    ] {
        assert_eq!(d(ValueKind::Numeric, s), Value::Decimal(s.to_owned()));
    }
    assert_eq!(d(ValueKind::Numeric, "1.2.3"), text("1.2.3"));
    assert_eq!(d(ValueKind::Numeric, "-"), text("-"));
    assert_eq!(d(ValueKind::Numeric, ""), text(""));
}

#[test]
fn text_as_given() {
    assert_eq!(
        d(ValueKind::Text, "héllo ✓ 日本語 😀"),
        text("héllo ✓ 日本語 😀")
    );
    assert_eq!(d(ValueKind::Text, ""), text(""));
    assert_eq!(d(ValueKind::Text, "NULL"), text("NULL"));
    assert_eq!(
        d(kind(2950), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(d(kind(1266), "13:45:00+05:30"), text("13:45:00+05:30"));
}

#[test]
fn json_is_the_document_itself() {
    let v = d(ValueKind::Json, r#"{"a": [1, 2], "b": "ü"}"#);
    assert_eq!(
        serde_json::to_string(&v).ok().as_deref(),
        Some(r#"{"a": [1, 2], "b": "ü"}"#)
    );
    assert!(matches!(d(ValueKind::Json, "42"), Value::Json(_)));
    assert!(matches!(d(ValueKind::Json, "null"), Value::Json(_)));
    assert_eq!(d(ValueKind::Json, "{oops"), text("{oops"));
}

#[test]
fn bytea_hex_and_escape_formats() {
    assert_eq!(d(ValueKind::Bytea, r"\x"), Value::Bytes(vec![]));
    assert_eq!(
        d(ValueKind::Bytea, r"\x00ff10"),
        Value::Bytes(vec![0, 255, 16])
    );
    assert_eq!(
        d(ValueKind::Bytea, r"\xDEADbeef"),
        Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])
    );
    assert_eq!(d(ValueKind::Bytea, r"\x0"), text(r"\x0"));
    assert_eq!(d(ValueKind::Bytea, r"\xzz"), text(r"\xzz"));
    // Legacy escape format.
    assert_eq!(d(ValueKind::Bytea, ""), Value::Bytes(vec![]));
    assert_eq!(
        d(ValueKind::Bytea, r"ab\000\377\\"),
        Value::Bytes(vec![b'a', b'b', 0, 255, b'\\'])
    );
    assert_eq!(
        d(ValueKind::Bytea, r"\\\\x"),
        Value::Bytes(vec![b'\\', b'\\', b'x'])
    );
    assert_eq!(d(ValueKind::Bytea, r"bad\9"), text(r"bad\9"));
    assert_eq!(d(ValueKind::Bytea, r"end\"), text(r"end\"));
}

#[test]
fn dates() {
    for s in [
        "2026-11-26",
        "0001-01-01",
        "9999-12-31",
        "infinity",
        "-infinity",
    ] {
        assert_eq!(d(ValueKind::Date, s), Value::Date(s.to_owned()));
    }
    // Outside 0001–9999: ISO 8601's expanded years, numbered astronomically (1 BC is 0).
    for (postgres, iso) in [
        ("0044-03-15 BC", "-000043-03-15"),
        ("0001-12-31 BC", "+000000-12-31"),
        ("4713-01-01 BC", "-004712-01-01"),
        ("10000-01-01", "+010000-01-01"),
        ("21016-11-04", "+021016-11-04"),
        ("5874897-12-31", "+5874897-12-31"),
    ] {
        assert_eq!(d(ValueKind::Date, postgres), Value::Date(iso.to_owned()));
    }
    assert_eq!(d(ValueKind::Date, "0000-01-01 BC"), text("0000-01-01 BC"));
    assert_eq!(d(ValueKind::Date, "11/26/2026"), text("11/26/2026"));
    assert_eq!(d(ValueKind::Date, "2026-11-26x"), text("2026-11-26x"));
}

#[test]
fn times() {
    for s in ["13:45:00", "13:45:00.123456", "24:00:00"] {
        assert_eq!(d(ValueKind::Time, s), Value::Time(s.to_owned()));
    }
    assert_eq!(d(ValueKind::Time, "13:45"), text("13:45"));
    assert_eq!(d(ValueKind::Time, "13:45:00."), text("13:45:00."));
}

#[test]
fn timestamps_get_the_iso_separator() {
    let ts = |s: &str| Value::Timestamp(s.to_owned());
    assert_eq!(
        d(ValueKind::Timestamp, "2026-11-26 13:45:00.123456"),
        ts("2026-11-26T13:45:00.123456")
    );
    assert_eq!(
        d(ValueKind::Timestamp, "2026-11-26 13:45:00"),
        ts("2026-11-26T13:45:00")
    );
    assert_eq!(
        d(ValueKind::Timestamp, "10000-01-01 00:00:00"),
        ts("+010000-01-01T00:00:00")
    );
    assert_eq!(
        d(ValueKind::Timestamp, "21016-11-04 13:51:30.123456"),
        ts("+021016-11-04T13:51:30.123456")
    );
    assert_eq!(d(ValueKind::Timestamp, "infinity"), ts("infinity"));
    assert_eq!(d(ValueKind::Timestamp, "-infinity"), ts("-infinity"));
    assert_eq!(
        d(ValueKind::Timestamp, "0044-03-15 12:00:00 BC"),
        ts("-000043-03-15T12:00:00")
    );
    assert_eq!(
        d(ValueKind::Timestamp, "4713-12-31 23:59:59.999999 BC"),
        ts("-004712-12-31T23:59:59.999999")
    );
    assert_eq!(d(ValueKind::Timestamp, "2026-11-26"), text("2026-11-26"));
    assert_eq!(
        d(ValueKind::Timestamp, "2026-11-26 13:45:00+00"),
        text("2026-11-26 13:45:00+00")
    );
}

#[test]
fn timestamptz_in_utc() {
    let tz = |s: &str| Value::TimestampTz(s.to_owned());
    let k = ValueKind::TimestampTz;
    assert_eq!(
        d(k.clone(), "2026-11-26 12:45:00.123456+00"),
        tz("2026-11-26T12:45:00.123456Z")
    );
    assert_eq!(
        d(k.clone(), "2026-11-26 12:45:00+00"),
        tz("2026-11-26T12:45:00Z")
    );
    assert_eq!(
        d(k.clone(), "2026-11-26 12:45:00.5+00:00"),
        tz("2026-11-26T12:45:00.5Z")
    );
    assert_eq!(
        d(k.clone(), "2026-11-26 12:45:00-00:00:00"),
        tz("2026-11-26T12:45:00Z")
    );
    assert_eq!(d(k.clone(), "infinity"), tz("infinity"));
    assert_eq!(d(k.clone(), "-infinity"), tz("-infinity"));
    assert_eq!(
        d(k.clone(), "0044-03-15 12:00:00+00 BC"),
        tz("-000043-03-15T12:00:00Z")
    );
    assert_eq!(
        d(k.clone(), "4713-12-31 23:59:59.999999+00 BC"),
        tz("-004712-12-31T23:59:59.999999Z")
    );
    assert_eq!(
        d(k.clone(), "21016-11-04 13:51:30.123456+00"),
        tz("+021016-11-04T13:51:30.123456Z")
    );
    // An offset moves a BC instant like any other.
    assert_eq!(
        d(k.clone(), "0001-01-01 01:00:00+02 BC"),
        tz("-000001-12-31T23:00:00Z")
    );
}

#[test]
fn timestamptz_with_other_offsets_is_converted_to_utc() {
    let tz = |s: &str| Value::TimestampTz(s.to_owned());
    let k = ValueKind::TimestampTz;
    assert_eq!(
        d(k.clone(), "2026-11-26 18:15:00.123456+05:30"),
        tz("2026-11-26T12:45:00.123456Z")
    );
    assert_eq!(
        d(k.clone(), "2026-11-26 18:15:00+0530"),
        tz("2026-11-26T12:45:00Z")
    );
    // Back across a year boundary.
    assert_eq!(
        d(k.clone(), "2026-01-01 02:00:00+05:30"),
        tz("2025-12-31T20:30:00Z")
    );
    // Forward across a month boundary.
    assert_eq!(
        d(k.clone(), "2026-04-30 20:00:00.25-08"),
        tz("2026-05-01T04:00:00.25Z")
    );
    // Leap days, and a century that is not a leap year.
    assert_eq!(
        d(k.clone(), "2024-03-01 01:00:00+02"),
        tz("2024-02-29T23:00:00Z")
    );
    assert_eq!(
        d(k.clone(), "2000-02-28 23:00:00-02"),
        tz("2000-02-29T01:00:00Z")
    );
    assert_eq!(
        d(k.clone(), "2100-03-01 00:30:00+01"),
        tz("2100-02-28T23:30:00Z")
    );
    // Historic offsets carry seconds (LMT).
    assert_eq!(
        d(k.clone(), "1850-06-01 12:00:00+00:53:28"),
        tz("1850-06-01T11:06:32Z")
    );
    assert_eq!(
        d(k.clone(), "1970-01-01 00:00:00+01"),
        tz("1969-12-31T23:00:00Z")
    );
}

/// The byte-by-byte path for `YYYY-MM-DD HH:MM:SS[.f]+00` gives what the general one gives, and
/// leaves everything else to it.
#[test]
fn the_common_timestamptz_form_matches_the_general_path() {
    for s in [
        "2026-11-26 12:45:00+00",
        "2026-11-26 12:45:00.1+00",
        "2026-11-26 12:45:00.123456+00",
        "0001-01-01 00:00:00+00",
    ] {
        let fast = super::temporal::utc_four_digit_year(s).expect(s);
        let (date, time) = s.split_once(' ').unwrap();
        assert_eq!(
            fast,
            format!("{date}T{}Z", time.strip_suffix("+00").unwrap())
        );
    }
    for s in [
        "2026-11-26 12:45:00.+00",
        "2026-11-26 12:45:00+01",
        "2026-11-26 12:45:00+00:30",
        "12026-11-26 12:45:00+00",
        "2026-11-26T12:45:00+00",
        "2026-11-26 12:45:0x+00",
        "0044-03-15 12:00:00+00 BC",
        "+00",
        "",
    ] {
        assert_eq!(super::temporal::utc_four_digit_year(s), None, "{s:?}");
    }
    assert_eq!(
        d(ValueKind::TimestampTz, "12026-11-26 12:45:00+00"),
        Value::TimestampTz("+012026-11-26T12:45:00Z".into()),
        "five-digit years take the general path"
    );
}

#[test]
fn malformed_timestamptz_is_text() {
    for s in [
        "2026-11-26 12:45:00.+00",
        "2026-11-26 12:45:00",
        "2026-11-26 12:45:00+5",
        "2026-11-26 12:45:00+00:0",
        "2026-11-26T12:45:00Z",
        "2026-13-26 12:45:00+01",
        "2026-11-26 12:45:00+99",
        "",
    ] {
        assert_eq!(d(ValueKind::TimestampTz, s), text(s), "{s:?}");
    }
}

#[test]
fn intervals() {
    for s in [
        "P1Y2M3DT4H5M6.5S",
        "PT0S",
        "P-1Y-2M",
        "PT-0.000001S",
        "infinity",
    ] {
        assert_eq!(d(ValueKind::Interval, s), Value::Interval(s.to_owned()));
    }
    assert_eq!(
        d(ValueKind::Interval, "1 year 2 mons"),
        text("1 year 2 mons")
    );
}

#[test]
fn flat_arrays_with_nulls() {
    let k = kind(1007);
    assert_eq!(
        d(k.clone(), "{1,2,NULL}"),
        Value::Array(vec![Value::Int(1), Value::Int(2), Value::Null])
    );
    assert_eq!(d(k.clone(), "{}"), Value::Array(vec![]));
    assert_eq!(d(k.clone(), " { 1 , 2 } "), ints(&[1, 2]));
    assert_eq!(d(k.clone(), "{null}"), Value::Array(vec![Value::Null]));
    assert_eq!(
        d(kind(1016), "{-9223372036854775808,9223372036854775807}"),
        ints(&[i64::MIN, i64::MAX])
    );
    assert_eq!(
        d(kind(1000), "{t,f,NULL}"),
        Value::Array(vec![Value::Bool(true), Value::Bool(false), Value::Null])
    );
}

#[test]
fn nested_arrays() {
    let k = kind(1007);
    assert_eq!(
        d(k.clone(), "{{1,2},{3,4}}"),
        Value::Array(vec![ints(&[1, 2]), ints(&[3, 4])])
    );
    assert_eq!(
        d(k.clone(), "{{{1},{2}},{{3},{NULL}}}"),
        Value::Array(vec![
            Value::Array(vec![ints(&[1]), ints(&[2])]),
            Value::Array(vec![ints(&[3]), Value::Array(vec![Value::Null])]),
        ])
    );
    let text_k = kind(1009);
    assert_eq!(
        d(text_k, r#"{{"a,b",NULL},{"}","{"}}"#),
        Value::Array(vec![
            Value::Array(vec![text("a,b"), Value::Null]),
            Value::Array(vec![text("}"), text("{")]),
        ])
    );
}

#[test]
fn quoted_elements_and_escapes() {
    let k = kind(1009);
    assert_eq!(
        d(k.clone(), r#"{"a b","c\"d",NULL,"NULL"}"#),
        Value::Array(vec![text("a b"), text("c\"d"), Value::Null, text("NULL")])
    );
    assert_eq!(
        d(k.clone(), r#"{"back\\slash","","  padded  "}"#),
        Value::Array(vec![text(r"back\slash"), text(""), text("  padded  ")])
    );
    assert_eq!(
        d(k.clone(), r#"{héllo,"日本 語","\😀x",ü\ }"#),
        Value::Array(vec![
            text("héllo"),
            text("日本 語"),
            text("😀x"),
            text("ü "),
        ])
    );
    assert_eq!(
        d(k.clone(), r"{a\,b,c\\d  }"),
        Value::Array(vec![text("a,b"), text(r"c\d")])
    );
}

#[test]
fn arrays_decode_elements_with_the_element_kind() {
    assert_eq!(
        d(
            kind(1115),
            r#"{"2026-11-26 13:45:00.123456","2026-11-27 00:00:00",infinity}"#
        ),
        Value::Array(vec![
            Value::Timestamp("2026-11-26T13:45:00.123456".into()),
            Value::Timestamp("2026-11-27T00:00:00".into()),
            Value::Timestamp("infinity".into()),
        ])
    );
    assert_eq!(
        d(kind(1185), r#"{"2026-11-26 12:45:00+00",NULL}"#),
        Value::Array(vec![
            Value::TimestampTz("2026-11-26T12:45:00Z".into()),
            Value::Null
        ])
    );
    assert_eq!(
        d(kind(1001), r#"{"\\x0102","\\x"}"#),
        Value::Array(vec![Value::Bytes(vec![1, 2]), Value::Bytes(vec![])])
    );
    assert_eq!(
        d(kind(1231), "{1.50,NaN,-Infinity}"),
        Value::Array(vec![
            Value::Decimal("1.50".into()),
            Value::Decimal("NaN".into()),
            Value::Decimal("-Infinity".into()),
        ])
    );
    let floats = d(kind(1022), "{1.5,NaN,-Infinity}");
    assert_eq!(
        floats,
        Value::Array(vec![
            Value::Float(1.5),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
        ])
    );
    let json = d(kind(3807), r#"{"{\"a\": 1}",NULL,"[1, 2]"}"#);
    assert_eq!(
        serde_json::to_string(&json).ok().as_deref(),
        Some(r#"[{"a": 1},null,[1, 2]]"#)
    );
    assert_eq!(
        d(kind(1187), "{P1D,PT0S}"),
        Value::Array(vec![
            Value::Interval("P1D".into()),
            Value::Interval("PT0S".into())
        ])
    );
}

#[test]
fn box_arrays_split_on_semicolons() {
    assert_eq!(
        d(kind(1020), "{(1,1),(0,0);(3,3),(2,2)}"),
        Value::Array(vec![text("(1,1),(0,0)"), text("(3,3),(2,2)")])
    );
}

#[test]
fn dimension_prefixes_are_skipped() {
    let k = kind(1007);
    assert_eq!(d(k.clone(), "[0:1]={1,2}"), ints(&[1, 2]));
    assert_eq!(d(k.clone(), "[-2:-1]={1,2}"), ints(&[1, 2]));
    assert_eq!(
        d(k.clone(), "[1:2][1:1]={{1},{2}}"),
        Value::Array(vec![ints(&[1]), ints(&[2])])
    );
}

#[test]
fn malformed_arrays_are_text() {
    let k = kind(1007);
    for s in [
        "",
        "1,2",
        "{1,2",
        "{1,,2}",
        "{,}",
        "{1,2}x",
        r#"{"abc}"#,
        r#"{"a\"}"#,
        "{{1,2}",
        "[0:1]{1,2}",
        "[0:1={1,2}",
        r"{1\",
    ] {
        assert_eq!(d(k.clone(), s), text(s), "{s:?}");
    }
    let too_deep = format!("{}{}", "{".repeat(64), "}".repeat(64));
    assert_eq!(d(k, &too_deep), text(&too_deep));
}

#[test]
fn unparseable_elements_stay_text_inside_the_array() {
    assert_eq!(
        d(kind(1007), "{1,x,99999999999999999999}"),
        Value::Array(vec![Value::Int(1), text("x"), text("99999999999999999999"),])
    );
}
