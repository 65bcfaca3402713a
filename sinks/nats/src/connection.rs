//! `sink.url`: where the NATS servers are, whether TLS is required, and who the agent is.
//!
//! ```text
//!  tls://user:pass@host:4222?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem
//!  nats://host:4222?token=...   nats://host:4222?nkey=/seed.nk   nats://host:4222?creds=/u.creds
//! ```
//!
//! `tls://` (or any `tls_*` parameter) requires TLS, verified like every NATS client does: the
//! chain against `tls_ca` (default: the OS store) and the host name. Credentials go to the
//! client options, never into a message: errors name the servers as `host:port` only.

use std::path::PathBuf;
use std::time::Duration;

use cdc_core::PipelineError;
use cdc_tls::{Roots, TlsOptions, Verify, Vocabulary};
use tokio::io::AsyncBufReadExt;

pub const VOCABULARY: Vocabulary = Vocabulary {
    ca: "tls_ca",
    cert: "tls_cert",
    key: "tls_key",
    mode: None,
    chain_only: None,
};

/// How the agent proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A file holding an nkey seed (`SU...`).
    NkeySeed(PathBuf),
    /// A `.creds` file (a user JWT and its nkey seed).
    Creds(PathBuf),
}

impl Auth {
    /// For `check`: the method, never the secret.
    pub fn describe(&self) -> String {
        match self {
            Auth::None => "no authentication".into(),
            Auth::UserPassword { user, .. } => format!("user {user} with a password"),
            Auth::Token(_) => "a token".into(),
            Auth::NkeySeed(path) => format!("the nkey seed in {}", path.display()),
            Auth::Creds(path) => format!("the credentials file {}", path.display()),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `sink.url`, parsed.
#[derive(Clone, Debug)]
pub struct NatsUrl {
    /// `scheme://host:port[,...]`: no credentials, no parameters.
    pub servers: String,
    /// `host:port[, ...]`, for messages.
    pub display: String,
    /// `(host, port)` of each server, for the TLS probe.
    pub addresses: Vec<(String, u16)>,
    pub tls_required: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub auth: Auth,
}

/// The URL parameters taken.
pub const PARAMETERS: &str = "tls_ca, tls_cert, tls_key, token, nkey, creds";

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses `sink.url` (one or more comma-separated `nats://` / `tls://` URLs). Messages never
/// repeat the URL (it may hold a password or a token).
pub fn parse_url(url: &str) -> Result<NatsUrl, String> {
    let mut parsed = NatsUrl {
        servers: String::new(),
        display: String::new(),
        addresses: Vec::new(),
        tls_required: false,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        auth: Auth::None,
    };
    let mut servers = Vec::new();
    let mut auths = Vec::new();
    for one in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let u = url::Url::parse(one).map_err(|e| format!("not a NATS URL ({e})"))?;
        match u.scheme() {
            "nats" => {}
            "tls" => parsed.tls_required = true,
            other => {
                return Err(format!(
                    "scheme {other}:// is not supported: use nats://host:4222 or tls://host:4222"
                ))
            }
        }
        let host = u
            .host_str()
            .ok_or("a NATS URL needs a host: nats://host:4222")?
            .to_string();
        let port = u.port().unwrap_or(4222);
        if !u.username().is_empty() {
            let user = decode(u.username());
            auths.push(match u.password() {
                Some(password) => Auth::UserPassword {
                    user,
                    password: decode(password),
                },
                // nats://TOKEN@host, as the NATS tools take it.
                None => Auth::Token(user),
            });
        }
        for pair in u.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value);
            match decode(key).as_str() {
                "tls_ca" => parsed.tls_ca = Some(value.into()),
                "tls_cert" => parsed.tls_cert = Some(value.into()),
                "tls_key" => parsed.tls_key = Some(value.into()),
                "token" => auths.push(Auth::Token(value)),
                "nkey" => auths.push(Auth::NkeySeed(value.into())),
                "creds" => auths.push(Auth::Creds(value.into())),
                other => {
                    return Err(format!(
                        "unknown URL parameter {other:?} (supported: {PARAMETERS})"
                    ))
                }
            }
        }
        // An IPv6 host comes bracketed from the URL already.
        let shown = format!("{host}:{port}");
        servers.push(format!("{}://{shown}", u.scheme()));
        parsed.display = if parsed.display.is_empty() {
            shown
        } else {
            format!("{}, {shown}", parsed.display)
        };
        parsed
            .addresses
            .push((host.trim_matches(['[', ']']).to_string(), port));
    }
    if servers.is_empty() {
        return Err("no server: write nats://host:4222".into());
    }
    auths.dedup();
    if auths.len() > 1 {
        return Err(
            "more than one way to authenticate (user:password, token, nkey, creds): keep one"
                .into(),
        );
    }
    parsed.auth = auths.pop().unwrap_or(Auth::None);
    cdc_tls::identity_of(parsed.tls_cert.clone(), parsed.tls_key.clone(), &VOCABULARY)
        .map_err(|e| e.to_string())?;
    if parsed.tls_ca.is_some() || parsed.tls_cert.is_some() {
        parsed.tls_required = true;
    }
    parsed.servers = servers.join(",");
    Ok(parsed)
}

impl NatsUrl {
    fn tls_options(&self) -> Result<TlsOptions, cdc_tls::TlsError> {
        Ok(TlsOptions {
            verify: Verify::ChainAndName,
            roots: self.tls_ca.clone().map_or(Roots::System, Roots::File),
            identity: cdc_tls::identity_of(
                self.tls_cert.clone(),
                self.tls_key.clone(),
                &VOCABULARY,
            )?,
            alpn: Vec::new(),
            vocabulary: VOCABULARY,
        })
    }

    /// For `check`: TLS on or off on a connection, and what was verified.
    pub fn describe_tls(&self, server_requires_tls: bool) -> String {
        if !(self.tls_required || server_requires_tls) {
            return "TLS off (nats://; use tls:// to require it)".into();
        }
        let ca = self
            .tls_ca
            .clone()
            .map_or(Roots::System, Roots::File)
            .describe();
        let mut text = format!("TLS on, {} (CA {ca}", Verify::ChainAndName.describe());
        if let Some(cert) = &self.tls_cert {
            text.push_str(&format!(", client certificate {}", cert.display()));
        }
        text.push(')');
        text
    }

    /// The client options: TLS and authentication.
    pub async fn options(&self, name: String) -> Result<async_nats::ConnectOptions, PipelineError> {
        let settings = |e: String| {
            PipelineError::definite("config", format!("sink.url: {e}"))
                .with_hint(format!("fix {PARAMETERS} in sink.url"))
        };
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(10));
        if self.tls_required {
            let config = self
                .tls_options()
                .and_then(|o| cdc_tls::client_config(&o))
                .map_err(|e| settings(e.to_string()))?;
            options = options.require_tls(true).tls_client_config(config);
        }
        options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => options.token(token.clone()),
            Auth::NkeySeed(path) => {
                let seed = std::fs::read_to_string(path).map_err(|e| {
                    settings(format!("cannot read the nkey seed {}: {e}", path.display()))
                })?;
                options.nkey(seed.trim().to_string())
            }
            Auth::Creds(path) => options.credentials_file(path).await.map_err(|e| {
                settings(format!(
                    "cannot use the credentials file {}: {e}",
                    path.display()
                ))
            })?,
        };
        Ok(options)
    }

    /// Connects; a refused TLS handshake or login is definite, named with its fix.
    pub async fn connect(&self, name: String) -> Result<async_nats::Client, PipelineError> {
        let options = self.options(name).await?;
        match options.connect(self.servers.as_str()).await {
            Ok(client) => Ok(client),
            Err(e) => Err(self.connect_error(&e).await),
        }
    }

    async fn connect_error(&self, e: &async_nats::ConnectError) -> PipelineError {
        use async_nats::ConnectErrorKind;
        let text = e.to_string();
        let at = format!("NATS at {}", self.display);
        if let Some(refusal) = cdc_tls::refusal(&text, &VOCABULARY, "sink.url") {
            return PipelineError::definite(
                "connection",
                format!("{}: {at}: {text}", refusal.what),
            )
            .with_hint(refusal.hint);
        }
        if matches!(
            e.kind(),
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
        ) {
            return PipelineError::definite(
                "auth",
                format!("{at} refused the login ({}): {text}", self.auth.describe()),
            )
            .with_hint("check the user and password, token, nkey or creds file in sink.url");
        }
        if self.tls_required && self.server_lacks_tls().await {
            let refusal =
                cdc_tls::refusal("does not offer TLS", &VOCABULARY, "sink.url").expect("a refusal");
            return PipelineError::definite(
                "connection",
                format!("{}: {at} (its INFO says so): {text}", refusal.what),
            )
            .with_hint("enable TLS on the server (tls { cert_file, key_file }), or use nats:// on a network you trust");
        }
        PipelineError::transient("connection", format!("cannot connect to {at}: {text}"))
            .with_hint("check sink.url (nats://host:4222) and that the server runs")
    }

    /// Whether the first server answers in plaintext with an INFO that offers no TLS (a server
    /// with TLS says `tls_required` or `tls_available`).
    async fn server_lacks_tls(&self) -> bool {
        let Some((host, port)) = self.addresses.first() else {
            return false;
        };
        let probe = async {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .ok()?;
            let mut line = String::new();
            tokio::io::BufReader::new(stream)
                .read_line(&mut line)
                .await
                .ok()?;
            let info = line.strip_prefix("INFO ")?;
            Some(
                !info.contains("\"tls_required\":true") && !info.contains("\"tls_available\":true"),
            )
        };
        tokio::time::timeout(Duration::from_secs(3), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_tls_are_taken_out() {
        let u = parse_url("tls://agent:s3cret@nats.example:4443?tls_ca=/ca.pem").unwrap();
        assert_eq!(u.servers, "tls://nats.example:4443");
        assert_eq!(u.display, "nats.example:4443");
        assert!(u.tls_required);
        assert_eq!(
            u.auth,
            Auth::UserPassword {
                user: "agent".into(),
                password: "s3cret".into()
            }
        );
        assert!(!format!("{u:?}").contains("s3cret"));

        let u = parse_url("nats://t0ken@h").unwrap();
        assert_eq!(u.auth, Auth::Token("t0ken".into()));
        assert!(!u.tls_required);
        assert_eq!(u.servers, "nats://h:4222");
        let u = parse_url("nats://h:1?creds=/x.creds").unwrap();
        assert_eq!(u.auth, Auth::Creds("/x.creds".into()));
    }

    #[test]
    fn bad_urls_are_named_without_secrets() {
        for (url, named) in [
            ("nats://h?tls_verify=0", "tls_verify"),
            ("nats://u:p@h?token=x", "more than one"),
            ("http://h", "http"),
            ("tls://h?tls_cert=/c.pem", "tls_key"),
        ] {
            let message = parse_url(url).unwrap_err();
            assert!(message.contains(named), "{url}: {message}");
        }
    }
}
