//! Tests of [`Connection`]'s framing and state machine against a fake server on a Unix socket
//! pair: no Postgres needed.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::transport::Stream;
use super::{ConnectParams, Connection, State, WireError, READ_RESERVE};

/// Compile-time check: the connector spawns these futures onto the multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(params: &ConnectParams, conn: &mut Connection) {
    fn is_send<T: Send>(_: T) {}
    is_send(Connection::connect(params, true, &[]));
    is_send(conn.simple_query(""));
    is_send(conn.start_copy_both(""));
    is_send(conn.read_copy_data());
    is_send(conn.flush());
    is_send(conn.end_copy());
}

#[tokio::test]
async fn nul_in_query_is_not_a_connection_error() {
    let (mut conn, _server) = fake_connection(State::Idle);
    let e = conn.simple_query("SELECT '\0'").await.unwrap_err();
    assert!(
        matches!(e, WireError::Config(_)) && !e.is_connection_error(),
        "{e:?}"
    );
}

#[tokio::test]
async fn fatal_then_eof_reports_the_server_error() {
    let (mut conn, mut server) = fake_connection(State::Idle);
    let fatal = backend_msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0");
    server.write_all(&fatal).await.unwrap();
    drop(server);
    let e = conn.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("57P01"), "{e:?}");
    assert!(e.is_connection_error());
}

// ---- framing, against a fake server on a socket pair ----------------------------------

fn fake_connection(state: State) -> (Connection, UnixStream) {
    let (client, server) = UnixStream::pair().unwrap();
    let conn = Connection {
        stream: Stream::Unix(client),
        read_buf: BytesMut::with_capacity(READ_RESERVE),
        write_buf: BytesMut::new(),
        parameters: HashMap::new(),
        backend_pid: 7,
        state,
        deferred_error: None,
    };
    (conn, server)
}

fn backend_msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[tokio::test]
async fn read_copy_data_survives_cancellation_mid_message() {
    let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = backend_msg(b'S', b"TimeZone\0UTC\0");
    wire.extend(backend_msg(b'd', b"small"));
    wire.extend(backend_msg(b'N', b"SNOTICE\0C00000\0Mhello\0\0"));
    wire.extend(backend_msg(b'd', &big));
    wire.extend(backend_msg(b'd', b""));
    wire.extend(backend_msg(b'c', b""));
    // Odd-sized pieces with pauses, so that reads are cancelled with half a message
    // (even half a header) in the buffer.
    let writer = tokio::spawn(async move {
        for chunk in wire.chunks(7919) {
            server.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server
    });
    let (mut got, mut cancelled) = (Vec::new(), 0);
    loop {
        tokio::select! {
            m = conn.read_copy_data() => match m.unwrap() {
                Some(p) => got.push(p),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(1)) => cancelled += 1,
        }
    }
    assert!(cancelled > 0, "the test must actually cancel reads");
    assert_eq!(got.len(), 3);
    assert_eq!(&got[0][..], b"small");
    assert_eq!(&got[1][..], &big[..]);
    assert!(got[2].is_empty());
    assert_eq!(conn.server_parameter("TimeZone"), Some("UTC"));
    assert_eq!(conn.state, State::AfterCopy);
    // After the copy ended, further reads just say so.
    assert!(conn.read_copy_data().await.unwrap().is_none());
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn queue_flush_and_end_copy() {
    let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
    conn.queue_copy_data(b"r-one");
    conn.queue_copy_data(b"");
    assert!(conn.write_buf.len() > 5, "queued, not yet sent");
    conn.flush().await.unwrap();
    assert!(conn.write_buf.is_empty());
    let mut sent = vec![0u8; 2 * 5 + 5];
    server.read_exact(&mut sent).await.unwrap();
    assert_eq!(
        sent,
        [backend_msg(b'd', b"r-one"), backend_msg(b'd', b"")].concat()
    );

    // end_copy: sends CopyDone, skips in-flight data, waits for ReadyForQuery.
    let mut reply = backend_msg(b'd', b"in flight");
    reply.extend(backend_msg(b'c', b""));
    reply.extend(backend_msg(b'C', b"COPY 0\0"));
    reply.extend(backend_msg(b'Z', b"I"));
    server.write_all(&reply).await.unwrap();
    conn.end_copy().await.unwrap();
    assert_eq!(conn.state, State::Idle);
    let mut done = [0u8; 5];
    server.read_exact(&mut done).await.unwrap();
    assert_eq!(done.to_vec(), backend_msg(b'c', b""));
    conn.end_copy().await.unwrap(); // no-op when idle
}

#[tokio::test]
async fn copy_error_then_ready_keeps_connection_usable() {
    let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
    let mut wire = backend_msg(b'E', b"SERROR\0VERROR\0C55006\0Mslot is active\0\0");
    wire.extend(backend_msg(b'Z', b"I"));
    // The next query's answer.
    wire.extend(backend_msg(
        b'T',
        b"\0\x01x\0\0\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
    ));
    wire.extend(backend_msg(b'D', b"\0\x01\0\0\0\x02ok"));
    wire.extend(backend_msg(b'C', b"SELECT 1\0"));
    wire.extend(backend_msg(b'Z', b"I"));
    server.write_all(&wire).await.unwrap();
    let e = conn.read_copy_data().await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("55006"));
    let r = conn.simple_query("SELECT 'ok' AS x").await.unwrap();
    assert_eq!(r.get(0, "x"), Some("ok"));
}

#[tokio::test]
async fn eof_and_garbage_are_errors() {
    let (mut conn, server) = fake_connection(State::CopyBoth { sent_done: false });
    drop(server);
    let e = conn.read_copy_data().await.unwrap_err();
    assert!(
        matches!(e, WireError::Io(_)) && e.is_connection_error(),
        "{e:?}"
    );

    let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
    server.write_all(&[b'd', 0, 0, 0, 2]).await.unwrap();
    let e = conn.read_copy_data().await.unwrap_err();
    assert!(matches!(e, WireError::Protocol(_)), "{e:?}");
}
