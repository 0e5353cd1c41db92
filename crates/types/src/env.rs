//! `EnvSource`: configuration reads environment variables through a trait, so tests never
//! mutate the process environment.

use std::collections::HashMap;

/// Where configuration reads environment variables from. Binaries use
/// [`ProcessEnv`]; tests use [`MapEnv`] and never touch the process environment.
pub trait EnvSource {
    /// The value of `key`, if set and not empty.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment, for binaries; tests pass a [`MapEnv`] and never touch it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

/// A fixed map, for tests.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl EnvSource for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }
}
