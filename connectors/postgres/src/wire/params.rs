//! Connection settings: [`ConnectParams`], libpq's [`SslMode`], and the parsing of libpq-style
//! `postgres://` URLs into them. Everything the connection needs to know before it dials.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::WireError;

/// Used when the URL has no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Used when the URL has no `application_name`.
pub const DEFAULT_APPLICATION_NAME: &str = "cdc-agent";

use cdc_tls::postgres::PgTls;
pub use cdc_tls::postgres::SslMode;

/// Where and how to connect. Build it with [`ConnectParams::from_url`] or by hand.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectParams {
    /// Host name or IP address; a value starting with `/` is a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// Ignored for Unix sockets (as in libpq).
    pub sslmode: SslMode,
    /// PEM file of trusted roots for verify-ca/verify-full; `system` means the OS store.
    /// Default: `~/.postgresql/root.crt` if it exists, else the OS store.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate and its key (PEM; both or neither).
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: String,
    /// For the whole connect (TCP, TLS, authentication); zero means no limit.
    pub connect_timeout: Duration,
}

// Hand-written so that the password never reaches a log line.
impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectParams {
    /// Parses a libpq-style URL: `postgres[ql]://[user[:password]@][host][:port][/dbname][?k=v&…]`.
    ///
    /// Query parameters: `host` (a leading `/` makes it a Unix socket directory), `port`, `user`,
    /// `password`, `dbname`, `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `application_name`,
    /// `connect_timeout` (seconds). They win over the same setting in the URL's authority/path.
    /// Defaults: host `localhost`, port 5432, dbname = user, sslmode `prefer`. Unknown parameters
    /// are rejected rather than ignored, so that a typo or an unsupported option does not
    /// silently change what is connected to.
    ///
    /// Error messages never include the URL itself: it may carry a password.
    pub fn from_url(url: &str) -> Result<Self, WireError> {
        let config = |msg: String| WireError::Config(msg);
        let url = with_placeholder_host(url);
        let parsed = url::Url::parse(&url).map_err(|e| config(format!("not a valid URL ({e})")))?;
        match parsed.scheme() {
            "postgres" | "postgresql" => {}
            other => {
                return Err(config(format!(
                    "URL scheme must be postgres:// or postgresql://, not {other}://"
                )))
            }
        }

        let mut host = match parsed.host() {
            Some(url::Host::Domain(d)) => percent_decode(d, "host")?,
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => String::new(),
        };
        let mut port = parsed.port();
        let mut user = percent_decode(parsed.username(), "user name")?;
        let mut password = parsed
            .password()
            .map(|p| percent_decode(p, "password"))
            .transpose()?;
        let mut dbname = percent_decode(parsed.path().trim_start_matches('/'), "database name")?;
        let mut tls = PgTls::default();
        let mut application_name = DEFAULT_APPLICATION_NAME.to_string();
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;

        // Split the query ourselves: form-urlencoding would turn '+' into a space, which libpq
        // does not do (and paths such as sslrootcert may contain '+').
        for pair in parsed
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key, "query parameter name")?;
            let value = percent_decode(value, &key)?;
            if tls.take_param(&key, &value).map_err(tls_config)? {
                continue;
            }
            match key.as_str() {
                "host" => host = value,
                "port" => {
                    port = Some(value.parse().map_err(|_| {
                        config(format!(
                            "port must be a number from 1 to 65535, not {value:?}"
                        ))
                    })?)
                }
                "user" => user = value,
                "password" => password = Some(value),
                "dbname" => dbname = value,
                "application_name" => application_name = value,
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        config(format!(
                            "connect_timeout must be a whole number of seconds, not {value:?}"
                        ))
                    })?;
                    connect_timeout = Duration::from_secs(secs);
                }
                other => {
                    return Err(config(format!(
                        "unsupported URL parameter {other:?} (supported: host, port, user, \
                         password, dbname, sslmode, sslrootcert, sslcert, sslkey, application_name, \
                         connect_timeout)"
                    )))
                }
            }
        }

        if user.is_empty() {
            return Err(config(
                "no user name: write postgres://USER@HOST/DB or add ?user=USER".into(),
            ));
        }
        if host.is_empty() {
            host = "localhost".into();
        }
        let port = port.unwrap_or(5432);
        if port == 0 {
            return Err(config(
                "port must be a number from 1 to 65535, not 0".into(),
            ));
        }
        if dbname.is_empty() {
            dbname = user.clone();
        }
        tls.validate().map_err(tls_config)?;
        let PgTls {
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
        } = tls;
        Ok(ConnectParams {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            application_name,
            connect_timeout,
        })
    }

    /// The TLS settings, in the vocabulary shared with the Postgres sink.
    pub fn tls(&self) -> PgTls {
        PgTls {
            sslmode: self.sslmode,
            sslrootcert: self.sslrootcert.clone(),
            sslcert: self.sslcert.clone(),
            sslkey: self.sslkey.clone(),
        }
    }

    pub(super) fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

fn tls_config(e: cdc_tls::TlsError) -> WireError {
    WireError::Config(e.to_string())
}

/// libpq accepts a user with an empty host (`postgres://user@/db?host=/run/pg`), the url crate
/// does not: put `localhost` there, which is also what an absent host means here.
fn with_placeholder_host(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return url.into();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match authority.rfind('@') {
        Some(at) if authority[at + 1..].is_empty() || authority[at + 1..].starts_with(':') => {
            let at = authority_start + at + 1;
            format!("{}localhost{}", &url[..at], &url[at..]).into()
        }
        _ => url.into(),
    }
}

/// Decodes `%XX` escapes (only those: unlike form encoding, `+` stays `+`).
fn percent_decode(s: &str, what: &str) -> Result<String, WireError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| WireError::Config(format!("bad percent-encoding in {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| WireError::Config(format!("{what} is not valid UTF-8 after percent-decoding")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_defaults() {
        let p = ConnectParams::from_url("postgres://alice@db.example").unwrap();
        assert_eq!(p.host, "db.example");
        assert_eq!(p.port, 5432);
        assert_eq!(p.user, "alice");
        assert_eq!(p.password, None);
        assert_eq!(p.dbname, "alice");
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert_eq!(p.sslrootcert, None);
        assert_eq!(p.application_name, DEFAULT_APPLICATION_NAME);
        assert_eq!(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn from_url_full() {
        let p = ConnectParams::from_url(
            "postgresql://bob:pw@127.0.0.1:6543/sales?sslmode=verify-full\
             &sslrootcert=/etc/ca%20dir/root+1.crt&application_name=my%20app&connect_timeout=7",
        )
        .unwrap();
        assert_eq!(p.host, "127.0.0.1");
        assert_eq!(p.port, 6543);
        assert_eq!(p.user, "bob");
        assert_eq!(p.password.as_deref(), Some("pw"));
        assert_eq!(p.dbname, "sales");
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        // '+' is not a space in libpq URLs.
        assert_eq!(p.sslrootcert, Some(PathBuf::from("/etc/ca dir/root+1.crt")));
        assert_eq!(p.application_name, "my app");
        assert_eq!(p.connect_timeout, Duration::from_secs(7));
    }

    #[test]
    fn from_url_percent_encoding() {
        let p =
            ConnectParams::from_url("postgres://us%40er:p%3Aw%2F%40%25x@h/d%C3%A9b%2F1").unwrap();
        assert_eq!(p.user, "us@er");
        assert_eq!(p.password.as_deref(), Some("p:w/@%x"));
        assert_eq!(p.dbname, "déb/1");
    }

    #[test]
    fn from_url_ipv6_and_sslmodes() {
        let p = ConnectParams::from_url("postgres://u@[::1]:5433/d?sslmode=disable").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.port, 5433);
        assert_eq!(p.sslmode, SslMode::Disable);
        for (s, m) in [
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let p = ConnectParams::from_url(&format!("postgres://u@h/d?sslmode={s}")).unwrap();
            assert_eq!(p.sslmode, m);
            assert_eq!(m.to_string(), s);
        }
    }

    #[test]
    fn from_url_unix_socket() {
        let p =
            ConnectParams::from_url("postgres://u@/d?host=/var/run/postgresql&port=5433").unwrap();
        assert_eq!(p.host, "/var/run/postgresql");
        assert!(p.is_unix_socket());
        assert_eq!(p.port, 5433);
        let p = ConnectParams::from_url("postgres://u@%2Ftmp%2Fpg/d").unwrap();
        assert_eq!(p.host, "/tmp/pg");
        assert!(p.is_unix_socket());
        let p = ConnectParams::from_url("postgres:///d?user=u&host=%2Fsock").unwrap();
        assert_eq!(
            (p.host.as_str(), p.user.as_str(), p.dbname.as_str()),
            ("/sock", "u", "d")
        );
    }

    #[test]
    fn from_url_no_host_means_localhost() {
        let p = ConnectParams::from_url("postgres://u@/d").unwrap();
        assert_eq!(p.host, "localhost");
    }

    #[test]
    fn from_url_errors() {
        for bad in [
            "not a url",
            "http://u@h/d",
            "mysql://u@h/d",
            "postgres://h/d",         // no user
            "postgres://u@h:99999/d", // port out of range
            "postgres://u@h/d?port=abc",
            "postgres://u@h/d?sslmode=bogus",
            "postgres://u@h/d?sslmode=allow",
            "postgres://u@h/d?connect_timeout=-1",
            "postgres://u@h/d?sslcert=/c.pem",
            "postgres://u@h/d?frobnicate=1",
            "postgres://u:p%zz@h/d", // bad escape
            "postgres://u@h/%FF",    // not UTF-8
        ] {
            match ConnectParams::from_url(bad) {
                Err(WireError::Config(msg)) => {
                    assert!(!msg.contains("p%zz"), "error must not echo the URL: {msg}")
                }
                other => panic!("{bad}: expected a Config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn client_certificate_and_key() {
        let p = ConnectParams::from_url(
            "postgres://u@h/d?sslmode=verify-full&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(p.sslcert, Some(PathBuf::from("/c.pem")));
        assert_eq!(p.sslkey, Some(PathBuf::from("/k.pem")));
        assert_eq!(p.tls().sslmode, SslMode::VerifyFull);
    }

    #[test]
    fn debug_redacts_password() {
        let p = ConnectParams::from_url("postgres://u:hunter2@h/d").unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }
}
