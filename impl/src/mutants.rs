//! Every seeded defect of every protocol, by its command-line name: what the model checker and
//! the simulator take as `--mutant`.
//!
//! Each protocol declares its own defects (`gossip::Mutant`, `kvs::Mutant`, `cache::Mutant`,
//! `session::Mutant`); this module, above them all, lists them together.

use std::fmt;

use crate::{cache, gossip, kvs, session};

/// A seeded defect of any protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutant {
    /// A defect of the gossip protocol.
    Gossip(gossip::Mutant),
    /// A defect of storage nodes or clients.
    Kvs(kvs::Mutant),
    /// A defect of the cache.
    Cache(cache::Mutant),
    /// A defect of the session protocols.
    Session(session::Mutant),
}

impl Mutant {
    /// Every seeded defect of every protocol.
    pub fn all() -> Vec<Mutant> {
        let gossip = gossip::Mutant::ALL.iter().copied().map(Mutant::Gossip);
        let kvs = kvs::Mutant::ALL.iter().copied().map(Mutant::Kvs);
        let cache = cache::Mutant::ALL.iter().copied().map(Mutant::Cache);
        let session = session::Mutant::ALL.iter().copied().map(Mutant::Session);
        gossip.chain(kvs).chain(cache).chain(session).collect()
    }

    /// The protocol's own name for it.
    pub fn bare_name(self) -> &'static str {
        match self {
            Mutant::Gossip(m) => m.name(),
            Mutant::Kvs(m) => m.name(),
            Mutant::Cache(m) => m.name(),
            Mutant::Session(m) => m.name(),
        }
    }

    /// The protocol the defect belongs to.
    pub fn protocol(self) -> &'static str {
        match self {
            Mutant::Gossip(_) => "gossip",
            Mutant::Kvs(_) => "kvs",
            Mutant::Cache(_) => "cache",
            Mutant::Session(_) => "session",
        }
    }

    /// The command-line name: the protocol's own, prefixed by the protocol (`kvs/…`) where two
    /// protocols use the same name.
    pub fn name(self) -> String {
        let ambiguous =
            Self::all().iter().filter(|m| m.bare_name() == self.bare_name()).count() > 1;
        if ambiguous {
            format!("{}/{}", self.protocol(), self.bare_name())
        } else {
            self.bare_name().to_owned()
        }
    }

    /// The defect called `name` (as [`Mutant::name`] prints it).
    pub fn parse(name: &str) -> Result<Mutant, UnknownMutant> {
        Self::all().into_iter().find(|m| m.name() == name).ok_or_else(|| UnknownMutant {
            name: name.to_owned(),
            known: Self::all().into_iter().map(Mutant::name).collect::<Vec<_>>().join(", "),
        })
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A mutant name no protocol knows.
#[derive(Debug, thiserror::Error)]
#[error("unknown mutant `{name}`; the mutants are: {known}")]
pub struct UnknownMutant {
    name: String,
    known: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_shared_names_are_prefixed() {
        for mutant in Mutant::all() {
            assert_eq!(Mutant::parse(&mutant.name()).ok(), Some(mutant));
        }
        let shared = Mutant::Kvs(kvs::Mutant::OverwriteMerge);
        assert_eq!(shared.name(), "kvs/overwrite-merge");
        assert_eq!(Mutant::Gossip(gossip::Mutant::OverwriteMerge).name(), "gossip/overwrite-merge");
        assert!(Mutant::parse("overwrite-merge").is_err(), "an ambiguous bare name");
        assert_eq!(Mutant::Cache(cache::Mutant::IgnorePushes).name(), "ignore-pushes");
    }
}
