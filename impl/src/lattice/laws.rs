//! Brute-force checks of the lattice laws over a sample of values.
//!
//! [`check_all`] is the ground truth every lattice here is tested against: exhaustively over
//! small carriers and with proptest over random values. It is public so that later protocol
//! crates can check their own lattices the same way.

use std::hash::BuildHasher;

use super::Lattice;

/// A law that failed, with the values that broke it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{law} violated: {detail}")]
pub struct LawViolation {
    /// The law's name, e.g. `"commutativity"`.
    pub law: &'static str,
    /// The values involved, formatted with `Debug`.
    pub detail: String,
}

fn violation(law: &'static str, detail: String) -> Result<(), LawViolation> {
    Err(LawViolation { law, detail })
}

/// `a <= b`, spelled so that incomparable values read as "not below".
fn le<L: Lattice>(a: &L, b: &L) -> bool {
    matches!(a.partial_cmp(b), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal))
}

fn join<L: Lattice>(a: &L, b: &L) -> L {
    a.clone().join(b.clone())
}

/// Checks every law on `items`: bottom, idempotence, the return value of `merge`, equality
/// and hashing, commutativity and the order on all pairs, associativity on all triples. Cost is
/// cubic in `items.len()`; keep samples to a few dozen values.
pub fn check_all<L: Lattice>(items: &[L]) -> Result<(), LawViolation> {
    for a in items {
        check_one(a)?;
    }
    for a in items {
        for b in items {
            check_pair(a, b)?;
        }
    }
    for a in items {
        for b in items {
            let ab = join(a, b);
            for c in items {
                if join(&ab, c) != join(a, &join(b, c)) {
                    return violation("associativity", format!("{a:?} ⊔ {b:?} ⊔ {c:?}"));
                }
            }
        }
    }
    Ok(())
}

fn check_one<L: Lattice>(a: &L) -> Result<(), LawViolation> {
    let bottom = L::default();
    if a.is_bottom() != (*a == bottom) {
        return violation("is_bottom agrees with Default", format!("{a:?}"));
    }
    if join(&bottom, a) != *a || join(a, &bottom) != *a {
        return violation("bottom is identity", format!("{a:?}"));
    }
    if !le(&bottom, a) {
        return violation("bottom is least", format!("{a:?}"));
    }
    let mut twice = a.clone();
    if twice.merge(a.clone()) || twice != *a {
        return violation("idempotence", format!("{a:?}"));
    }
    Ok(())
}

fn check_pair<L: Lattice>(a: &L, b: &L) -> Result<(), LawViolation> {
    let ab = join(a, b);
    if ab != join(b, a) {
        return violation("commutativity", format!("{a:?} ⊔ {b:?}"));
    }
    let mut grown = a.clone();
    if grown.merge(b.clone()) != (grown != *a) {
        return violation("merge returns whether the value changed", format!("{a:?} ⊔ {b:?}"));
    }
    if !(le(a, &ab) && le(b, &ab)) {
        return violation("join is an upper bound", format!("{a:?} ⊔ {b:?} = {ab:?}"));
    }
    if le(a, b) != (ab == *b) {
        return violation("order consistent with merge", format!("{a:?} <= {b:?}"));
    }
    if (a == b) != (a.partial_cmp(b) == Some(std::cmp::Ordering::Equal)) {
        return violation("order consistent with equality", format!("{a:?}, {b:?}"));
    }
    if a.partial_cmp(b) != b.partial_cmp(a).map(std::cmp::Ordering::reverse) {
        return violation("order duality", format!("{a:?}, {b:?}"));
    }
    // `a ⊔ b` and `b ⊔ a` are equal values built in different orders: a representation that
    // depended on insertion order would hash them differently.
    let hasher = std::collections::hash_map::RandomState::new();
    if hasher.hash_one(&ab) != hasher.hash_one(join(b, a)) {
        return violation("canonical representation", format!("{a:?} ⊔ {b:?}"));
    }
    Ok(())
}
