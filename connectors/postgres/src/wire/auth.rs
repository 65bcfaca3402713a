//! Connection startup: the startup packet with its parameters, then authentication (trust,
//! cleartext password, MD5 and SCRAM-SHA-256 without channel binding) until the server is ready
//! for queries. Runs once, from [`Connection::connect`].

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

use super::error::{encode_error, protocol};
use super::messages::{parse_error_fields, BodyReader};
use super::{ConnectParams, Connection, State, WireError};

impl Connection {
    pub(super) async fn startup(
        &mut self,
        params: &ConnectParams,
        replication: bool,
        options: &[(&str, &str)],
    ) -> Result<(), WireError> {
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
        ];
        if !params.application_name.is_empty() {
            startup.push(("application_name", params.application_name.as_str()));
        }
        if !options
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("client_encoding"))
        {
            startup.push(("client_encoding", "UTF8"));
        }
        if replication {
            startup.push(("replication", "database"));
        }
        startup.extend_from_slice(options);
        frontend::startup_message(startup, &mut self.write_buf)
            .map_err(|e| encode_error("startup parameters", e))?;
        self.flush().await?;

        self.authenticate(params).await?;

        // After AuthenticationOk: ParameterStatus (handled in read_message), BackendKeyData,
        // then ReadyForQuery — or an ErrorResponse (e.g. no REPLICATION privilege).
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'K' => {
                    let mut r = BodyReader::new(&body);
                    self.backend_pid = r.i32()?;
                    // The secret key is only needed for CancelRequest, which this client
                    // does not send: replication is stopped with CopyDone instead.
                }
                b'Z' => {
                    self.state = State::Idle;
                    return Ok(());
                }
                b'E' => return Err(WireError::Server(parse_error_fields(&body)?)),
                // NegotiateProtocolVersion: only sent when we ask for a newer minor version
                // or _pq_ options, which we do not; harmless to ignore.
                b'v' => {}
                other => {
                    return Err(protocol(format!(
                        "unexpected message {:?} during connection startup",
                        other as char
                    )))
                }
            }
        }
    }

    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), WireError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {}
                b'E' => return Err(WireError::Server(parse_error_fields(&body)?)),
                b'v' => continue,
                other => {
                    return Err(protocol(format!(
                        "unexpected message {:?} during authentication",
                        other as char
                    )))
                }
            }
            let mut r = BodyReader::new(&body);
            match r.i32()? {
                0 => return Ok(()),
                3 => {
                    let password = require_password(params, "cleartext password")?;
                    frontend::password_message(password.as_bytes(), &mut self.write_buf)
                        .map_err(|e| encode_error("password", e))?;
                    self.flush().await?;
                }
                5 => {
                    let password = require_password(params, "MD5 password")?;
                    let s = r.take(4)?;
                    let salt = [s[0], s[1], s[2], s[3]];
                    let hash = md5_hash(params.user.as_bytes(), password.as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| encode_error("password", e))?;
                    self.flush().await?;
                }
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = r.cstr()?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(String::from_utf8_lossy(m).into_owned());
                    }
                    // The list may also offer SCRAM-SHA-256-PLUS (channel binding, only over
                    // TLS); plain SCRAM is enough and works on every transport.
                    if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(WireError::Auth(format!(
                            "server offers SASL mechanisms {mechanisms:?}, none of which is \
                             supported (only SCRAM-SHA-256)"
                        )));
                    }
                    let password = require_password(params, "SCRAM-SHA-256")?;
                    // unsupported() = "n,,": the client does not do channel binding. (Not
                    // unrequested(): that claims the server offered none, which a server
                    // listing -PLUS treats as a downgrade attack.)
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        "SCRAM-SHA-256",
                        s.message(),
                        &mut self.write_buf,
                    )
                    .map_err(|e| encode_error("SASL message", e))?;
                    self.flush().await?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASLContinue without SASL start"))?;
                    s.update(r.rest())
                        .map_err(|e| WireError::Auth(format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)
                        .map_err(|e| encode_error("SASL message", e))?;
                    self.flush().await?;
                }
                12 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASLFinal without SASL start"))?;
                    // Checks the server's signature: proves the server knows the password too.
                    s.finish(r.rest()).map_err(|e| {
                        WireError::Auth(format!("server failed SCRAM verification: {e}"))
                    })?;
                }
                2 => return Err(WireError::Auth("Kerberos V5 is not supported".into())),
                7 | 8 => return Err(WireError::Auth("GSSAPI is not supported".into())),
                9 => return Err(WireError::Auth("SSPI is not supported".into())),
                other => {
                    return Err(WireError::Auth(format!(
                        "unsupported authentication request {other}"
                    )))
                }
            }
        }
    }
}

fn require_password<'a>(params: &'a ConnectParams, method: &str) -> Result<&'a str, WireError> {
    params.password.as_deref().ok_or_else(|| {
        WireError::Auth(format!(
            "server requires {method} authentication for user {:?} but no password is \
             configured; put it in source.url (postgres://USER:PASSWORD@HOST/DB)",
            params.user
        ))
    })
}
