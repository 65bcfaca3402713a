//! Durations written as people write them: `"90s"`, `"15m"`, `"6h"`, `"1d"`, `"1h30m"` (a
//! number and a unit, `s`, `m`, `h` or `d`, repeated).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration from the config, kept with the text it was written as (for messages and logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    text: String,
    duration: Duration,
}

impl Interval {
    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn parse(text: &str) -> Result<Interval, String> {
        let bad = || {
            format!(
                "`{text}` is not a duration: write a number and a unit, s, m, h or d (e.g. \"6h\", \"90s\", \"1h30m\")"
            )
        };
        let mut seconds: u64 = 0;
        let mut number = String::new();
        let mut parts = 0;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            let n: u64 = number.parse().map_err(|_| bad())?;
            seconds = n
                .checked_mul(unit)
                .and_then(|s| seconds.checked_add(s))
                .ok_or_else(bad)?;
            number.clear();
            parts += 1;
        }
        if !number.is_empty() || parts == 0 {
            return Err(bad());
        }
        Ok(Interval {
            text: text.trim().to_string(),
            duration: Duration::from_secs(seconds),
        })
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = super::EnvString::deserialize(d)?;
        Interval::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up_and_anything_else_is_refused() {
        let secs = |t: &str| Interval::parse(t).map(|i| i.duration().as_secs());
        assert_eq!(secs("6h"), Ok(21_600));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs(" 2d "), Ok(172_800));
        assert_eq!(secs("0s"), Ok(0));
        for bad in [
            "",
            "6",
            "h",
            "6x",
            "1.5h",
            "-1h",
            "6 h",
            "99999999999999999999d",
        ] {
            let err = Interval::parse(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }
}
