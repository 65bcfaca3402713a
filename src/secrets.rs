//! Secrets kept out of everything the agent prints: the log, `status` and `/status`, `/metrics`,
//! `check` and error messages.
//!
//! ```text
//!  config load ── Secret values (a URL's password, a ${NAME} / ${file:...} value) ──▶ register
//!  log line / error / status / admin answer ──▶ scrub: each registered secret → ***
//! ```
//!
//! Not printing a secret is the first line of defence (URLs are `Secret`, whose `Debug` is
//! `***`), but a driver's error message may quote what it was given. Scrubbing at every exit
//! covers what no reviewer can list. A secret shorter than [`MIN_SECRET_CHARS`] is not scrubbed:
//! replacing every "ab" in a log would make it unreadable, and a secret that short is no secret.

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

/// Characters a secret needs before it is scrubbed from output.
pub const MIN_SECRET_CHARS: usize = 4;

const MASK: &str = "***";

static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds a secret value to scrub from everything printed from now on.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    let Ok(mut known) = KNOWN.write() else {
        return;
    };
    if !known.iter().any(|k| k == secret) {
        known.push(secret.to_string());
        // Longest first, so that a secret containing another is masked whole.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Registers what is secret in a connection URL: the password (as written and percent-decoded),
/// a NATS token (a user name without a password), and query parameters that carry secrets.
/// Returns false when `value` is not a URL.
pub fn register_url_secrets(value: &str) -> bool {
    let Ok(url) = url::Url::parse(value) else {
        return false;
    };
    if let Some(password) = url.password() {
        register_with_decoded(password);
    } else if url.scheme().starts_with("nats") || url.scheme() == "tls" {
        // nats://TOKEN@host: the user name is the token.
        register_with_decoded(url.username());
    }
    for (name, secret) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        if ["password", "token", "secret"]
            .iter()
            .any(|word| name.contains(word))
        {
            register(&secret);
        }
    }
    true
}

fn register_with_decoded(raw: &str) {
    register(raw);
    if let Ok(decoded) = percent_decode(raw) {
        register(&decoded);
    }
}

fn percent_decode(raw: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let Ok(known) = KNOWN.read() else {
        return Cow::Borrowed(text);
    };
    let mut out = Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Standard error with secrets scrubbed: the log's writer. The formatter hands over one event
/// per write, so a secret is never split across two writes.
pub struct ScrubbedStderr;

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_scrubbed_and_short_ones_are_not() {
        register("s3cr3t-pass");
        register("ab");
        assert_eq!(
            scrub("login failed for s3cr3t-pass at ab"),
            "login failed for *** at ab"
        );
    }

    #[test]
    fn a_urls_password_decoded_and_a_nats_token_are_secrets() {
        assert!(register_url_secrets(
            "postgres://repl:p%40ss-w0rd@db:5432/app?sslpassword=keypass99"
        ));
        assert_eq!(
            scrub("p@ss-w0rd p%40ss-w0rd keypass99 repl db"),
            "*** *** *** repl db"
        );
        assert!(register_url_secrets("nats://t0ken-abc@broker:4222"));
        assert_eq!(scrub("auth t0ken-abc"), "auth ***");
        assert!(!register_url_secrets("not a url"));
    }
}
