//! Interned names: of columns, tables, schemas and databases.
//!
//! Every value of every row carries its column's name, and every change its table's. As `Arc<str>`
//! each copy was an atomic increment and each drop a decrement, on counters that the thread
//! decoding rows and the thread writing them both touched: cache lines bouncing between cores on
//! every value. A [`Name`] is a pointer to text interned once for the life of the process, copied
//! for free; it also holds its JSON string, so the record writer copies a name rather than
//! escaping it for every value. Names come from catalogs (a bounded set: the columns of the
//! replicated tables, and of their past versions), so what is interned stays small.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name interned for the life of the process: `Copy`, compared and hashed as its text.
#[derive(Clone, Copy)]
pub struct Name(&'static Interned);

/// A name's text, and the JSON string of it (quoted and escaped): the record writer copies
/// that instead of escaping the name again for every value.
struct Interned {
    text: Box<str>,
    json: Box<[u8]>,
}

fn interned() -> &'static Mutex<HashMap<&'static str, &'static Interned>> {
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static Interned>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

impl Name {
    /// The interned copy of `text` (interned on first use).
    pub fn new(text: &str) -> Name {
        // A poisoned lock only means another thread panicked while inserting: the map is intact.
        let mut names = interned()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&name) = names.get(text) {
            return Name(name);
        }
        let mut json = Vec::with_capacity(text.len() + 2);
        crate::json::write_str(text, &mut json);
        let name: &'static Interned = Box::leak(Box::new(Interned {
            text: text.into(),
            json: json.into_boxed_slice(),
        }));
        names.insert(&name.text, name);
        Name(name)
    }

    pub fn as_str(&self) -> &'static str {
        &self.0.text
    }

    /// The name as a JSON string: quoted, escaped as [`crate::json::write_str`] escapes.
    pub fn json(&self) -> &'static [u8] {
        &self.0.json
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        // Interned: the same text is the same pointer.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the text hashes, so that `Borrow<str>` lookups find it.
        self.as_str().hash(state)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::new(text)
    }
}

impl From<&String> for Name {
    fn from(text: &String) -> Name {
        Name::new(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name::new(&text)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Name::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_one_name() {
        let a = Name::new("customer_id");
        let b = Name::from(String::from("customer_id"));
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(a, b);
        assert_ne!(a, Name::new("customer_id2"));
        assert_eq!(a, "customer_id");
        let set: std::collections::HashSet<Name> = [a].into_iter().collect();
        assert!(set.contains("customer_id"));
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"customer_id\"");
        let back: Name = serde_json::from_str("\"customer_id\"").unwrap();
        assert_eq!(back, a);
        assert_eq!(Name::new("a\"b\\c").json(), b"\"a\\\"b\\\\c\"");
    }
}
