//! What every protocol shares: keys, request numbers, incarnations, and the mechanism of
//! seeded defects.
//!
//! Every other module may import this one; it imports nothing of theirs. The protocols sit
//! above it in one order — `kvs`, then `cache`, then `session`, then `worker` — and a module
//! only ever imports those below it.

/// A key: any UTF-8 string. Placement hashes its bytes (see [`crate::kvs::ring`]).
pub type Key = String;

/// A request number. Whoever sends requests (a client, a cache, a worker, an application
/// calling a client) numbers them in increasing order; a number is never reused for another
/// request by the same sender.
pub type ReqId = u64;

/// How many times a node has started: persisted, and one more at every start, so messages
/// and acknowledgements from an earlier life of the node can be told apart and ignored.
pub type Incarnation = u32;

/// Declares a protocol's seeded defects as an enum whose every variant has a command-line
/// name, and derives the list of them (`ALL`), `name` and `from_name` — so no list is kept in
/// step by hand.
///
/// ```text
/// mutants! {
///     /// Seeded defects of the gossip protocol.
///     pub enum Mutant {
///         /// A replica replaces its value with incoming gossip.
///         OverwriteMerge => "overwrite-merge",
///     }
/// }
/// ```
macro_rules! mutants {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $cli:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// Every mutant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The mutant's command-line name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $cli),+
                }
            }

            /// The mutant whose command-line name is `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|mutant| mutant.name() == name)
            }
        }
    };
}
pub(crate) use mutants;

/// Gives a configuration type `has(mutant)`: whether it carries that seeded defect of type
/// `$mutant` (always false without the `mutants` feature, where the configuration's `mutant`
/// field does not exist, so production builds cannot carry one).
macro_rules! seeded_defects {
    ($config:ty, $mutant:ty) => {
        impl $config {
            #[cfg(feature = "mutants")]
            #[allow(dead_code)] // A role may consult no defect of its own in some builds.
            pub(crate) fn has(&self, mutant: $mutant) -> bool {
                self.mutant == Some(mutant)
            }

            #[cfg(not(feature = "mutants"))]
            #[allow(dead_code)]
            pub(crate) fn has(&self, _: $mutant) -> bool {
                false
            }
        }
    };
}
pub(crate) use seeded_defects;

#[cfg(test)]
#[allow(unreachable_pub)] // The macro makes the derived items public.
mod tests {
    mutants! {
        /// Two defects, for the derived list and names.
        enum Example {
            /// The first.
            First => "first",
            /// The second.
            Second => "second-one",
        }
    }

    #[test]
    fn the_mutant_list_and_names_are_derived_from_the_declaration() {
        assert_eq!(Example::ALL, [Example::First, Example::Second]);
        assert_eq!(Example::Second.name(), "second-one");
        assert_eq!(Example::from_name("first"), Some(Example::First));
        assert_eq!(Example::from_name("third"), None);
    }
}
