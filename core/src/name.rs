//! Interned names: of columns, tables, schemas and databases.
//!
//! Every value of every row carries its column's name, and every change its table's. As `Arc<str>`
//! each copy was an atomic increment and each drop a decrement, on counters that the thread
//! decoding rows and the thread writing them both touched: cache lines bouncing between cores on
//! every value. A [`Name`] is a pointer to text interned once for the life of the process, copied
//! for free. Names come from catalogs (a bounded set: the columns of the replicated tables, and
//! of their past versions), so what is interned stays small.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name interned for the life of the process: `Copy`, compared and hashed as its text.
#[derive(Clone, Copy)]
pub struct Name(&'static str);

fn interned() -> &'static Mutex<HashSet<&'static str>> {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

impl Name {
    /// The interned copy of `text` (interned on first use).
    pub fn new(text: &str) -> Name {
        // A poisoned lock only means another thread panicked while inserting: the set is intact.
        let mut names = interned()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&name) = names.get(text) {
            return Name(name);
        }
        let name: &'static str = Box::leak(text.to_owned().into_boxed_str());
        names.insert(name);
        Name(name)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.0
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
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the text hashes, so that `Borrow<str>` lookups find it.
        self.0.hash(state)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
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

impl From<Arc<str>> for Name {
    fn from(text: Arc<str>) -> Name {
        Name::new(&text)
    }
}

impl From<&Arc<str>> for Name {
    fn from(text: &Arc<str>) -> Name {
        Name::new(text)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0.to_string()
    }
}

impl From<Name> for Arc<str> {
    fn from(name: Name) -> Arc<str> {
        Arc::from(name.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
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
        let set: HashSet<Name> = [a].into_iter().collect();
        assert!(set.contains("customer_id"));
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"customer_id\"");
        let back: Name = serde_json::from_str("\"customer_id\"").unwrap();
        assert_eq!(back, a);
    }
}
