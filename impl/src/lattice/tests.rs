//! Law tests for every lattice: exhaustive over small carriers, proptest over random values,
//! postcard round trips, Hydro's law checker as a second opinion, and the two defects of the
//! original Anna lattices shown to break the laws.

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;

use super::laws::{LawViolation, check_all};
use super::*;

fn w(n: u64) -> WriterId {
    WriterId(n)
}

fn clock(entries: &[(u64, u64)]) -> VectorClock {
    VectorClock::new(entries.iter().map(|&(writer, n)| (w(writer), n)))
}

/// All subsets of `items`.
fn subsets<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    (0..1u32 << items.len())
        .map(|mask| {
            items
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, x)| x.clone())
                .collect()
        })
        .collect()
}

/// Every value reachable by merging subsets of `atoms`, deduplicated.
fn closure<L: Lattice>(atoms: &[L]) -> Vec<L> {
    let mut seen = Vec::new();
    for subset in subsets(atoms) {
        let value = subset.into_iter().fold(L::default(), L::join);
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

mod carriers {
    use super::*;

    pub(super) fn max() -> Vec<Max<u8>> {
        [0, 1, 2, 3, u8::MAX].into_iter().map(Max::new).collect()
    }

    pub(super) fn min() -> Vec<Min<u8>> {
        [0, 1, 2, 3, u8::MAX].into_iter().map(Min::new).collect()
    }

    pub(super) fn bool_max() -> Vec<Max<bool>> {
        vec![Max::new(false), Max::new(true)]
    }

    pub(super) fn set() -> Vec<SetUnion<u8>> {
        subsets(&[0, 1, 2]).into_iter().map(SetUnion::new).collect()
    }

    pub(super) fn map() -> Vec<MapUnion<u8, SetUnion<u8>>> {
        let values = subsets(&[0u8, 1]);
        let mut maps = Vec::new();
        for a in &values {
            for b in &values {
                maps.push(MapUnion::new([
                    (0, SetUnion::new(a.clone())),
                    (1, SetUnion::new(b.clone())),
                ]));
            }
        }
        maps
    }

    pub(super) fn lww() -> Vec<Lww<u8>> {
        let mut items = vec![Lww::default()];
        for time in 0..3 {
            for writer in 0..2 {
                for value in 0..2 {
                    items.push(Lww::new(Stamp::new(time, w(writer)), value));
                }
                items.push(Lww::deleted(Stamp::new(time, w(writer))));
            }
        }
        items
    }

    pub(super) fn priority() -> Vec<Priority<u8>> {
        let mut items = vec![Priority::default()];
        for priority in 0..3 {
            for writer in 0..2 {
                for value in 0..2 {
                    items.push(Priority::new(priority, w(writer), value));
                }
            }
        }
        items
    }

    /// Counters of two writers, each total in 0..=1 both ways: every combination.
    pub(super) fn pn_counter() -> Vec<PnCounter> {
        let mut atoms = Vec::new();
        for writer in 0..2 {
            atoms.push(PnCounter::new([(w(writer), 1, 0)]));
            atoms.push(PnCounter::new([(w(writer), 0, 1)]));
        }
        atoms.push(PnCounter::new([(w(0), 2, 0)]));
        closure(&atoms)
    }

    pub(super) fn vector_clock() -> Vec<VectorClock> {
        let mut items = Vec::new();
        for a in 0..3 {
            for b in 0..3 {
                items.push(clock(&[(0, a), (1, b)]));
            }
        }
        items
    }

    /// Versions over clocks of two writers (counters 0..=1) and two values: every antichain.
    pub(super) fn single_key_causal() -> Vec<SingleKeyCausal<u8>> {
        let mut atoms = Vec::new();
        for a in 0..2 {
            for b in 0..2 {
                for value in 0..2 {
                    atoms.push(SingleKeyCausal::new(clock(&[(0, a), (1, b)]), value));
                }
            }
        }
        closure(&atoms)
    }

    pub(super) fn multi_key_causal() -> Vec<MultiKeyCausal<u8, u8>> {
        let clocks = [clock(&[(0, 1)]), clock(&[(1, 1)]), clock(&[(0, 1), (1, 1)])];
        let deps = [Dependencies::default(), Dependencies::new([(7, clock(&[(0, 1)]))])];
        let mut atoms = Vec::new();
        for c in &clocks {
            for d in &deps {
                atoms.push(MultiKeyCausal::new(c.clone(), d.clone(), 0));
            }
        }
        atoms.push(MultiKeyCausal::new(clocks[0].clone(), Dependencies::default(), 1));
        closure(&atoms)
    }
}

macro_rules! exhaustive_law_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let items = carriers::$name();
            assert!(items.len() >= 2, "a carrier of one value proves nothing");
            check_all(&items).unwrap();
        }
    )*};
}

mod exhaustive {
    use super::*;

    exhaustive_law_tests!(
        max,
        min,
        bool_max,
        set,
        map,
        lww,
        priority,
        vector_clock,
        pn_counter,
        single_key_causal,
        multi_key_causal,
    );

    #[test]
    fn causal_carriers_are_not_trivial() {
        // The closures must contain real sibling sets, or the causal law tests test little.
        let singles = carriers::single_key_causal();
        assert!(singles.iter().any(|v| v.values().count() >= 3), "{} values", singles.len());
        let multis = carriers::multi_key_causal();
        assert!(multis.iter().any(|v| v.versions().count() >= 2), "{} values", multis.len());
    }
}

mod semantics {
    use super::*;

    #[test]
    fn lww_ties_on_time_are_broken_by_writer() {
        let a = Lww::new(Stamp::new(5, w(1)), "a");
        let b = Lww::new(Stamp::new(5, w(2)), "b");
        assert_eq!(a.clone().join(b.clone()).value(), Some(&"b"));
        assert_eq!(b.join(a).value(), Some(&"b"));
        // The writer decides, not the value: the higher writer wins with the lower value (an
        // order by value before writer is still a lattice, so only this pins the rule).
        let high_value = Lww::new(Stamp::new(5, w(1)), "z");
        let high_writer = Lww::new(Stamp::new(5, w(2)), "a");
        assert_eq!(high_value.clone().join(high_writer.clone()).value(), Some(&"a"));
        assert_eq!(high_writer.clone().join(high_value.clone()).value(), Some(&"a"));
        assert!(high_value < high_writer);
        // And the time decides before either.
        let later = Lww::new(Stamp::new(6, w(0)), "0");
        assert_eq!(high_writer.join(later.clone()), later);
    }

    #[test]
    fn lww_delete_wins_or_loses_by_stamp_like_a_write() {
        let write = Lww::new(Stamp::new(5, w(1)), "v");
        let delete = Lww::deleted(Stamp::new(5, w(2)));
        let rewrite = Lww::new(Stamp::new(6, w(0)), "again");
        // A later delete wins in either order, and reads as missing but is not bottom.
        for joined in [write.clone().join(delete.clone()), delete.clone().join(write.clone())] {
            assert_eq!(joined, delete);
            assert_eq!(joined.value(), None);
            assert!(joined.is_deleted());
            assert!(!joined.is_bottom());
            assert_eq!(joined.stamp(), Some(Stamp::new(5, w(2))));
        }
        // An older write arriving after the delete (a replica that missed it) stays deleted.
        assert!(!delete.clone().merge(write.clone()));
        // A later write brings the key back.
        assert_eq!(delete.clone().join(rewrite.clone()), rewrite);
        assert!(!rewrite.is_deleted());
        // On a reused stamp (a programmer error) the value wins, the same way everywhere.
        let same = Lww::new(Stamp::new(5, w(2)), "same");
        assert_eq!(delete.clone().join(same.clone()), same.clone().join(delete));
    }

    #[test]
    fn priority_lowest_wins_and_writer_breaks_ties() {
        let high = Priority::new(9, w(0), 'h');
        let low = Priority::new(1, w(5), 'l');
        let low_tie = Priority::new(1, w(3), 't');
        assert_eq!(high.clone().join(low.clone()).value(), Some(&'l'));
        assert_eq!(low.clone().join(low_tie.clone()).value(), Some(&'t'));
        assert_eq!(low_tie.join(low).value(), Some(&'t'));
        assert!(Priority::<char>::default() < high);
    }

    #[test]
    fn vector_clocks_order_by_happened_before() {
        let mut a = clock(&[(0, 1)]);
        let b = clock(&[(1, 1)]);
        assert!(a.concurrent(&b));
        assert!(
            !a.concurrent(&a.clone().join(b.clone())),
            "a clock is not concurrent with its join"
        );
        assert!(!a.concurrent(&a), "nor with itself");
        a.increment(w(0));
        assert_eq!(a.get(w(0)), 2);
        assert!(clock(&[(0, 1)]) < a);
        assert_eq!(clock(&[(0, 0), (1, 1)]), b, "zero counters are absent counters");
    }

    #[test]
    fn single_key_causal_keeps_concurrent_siblings_and_drops_dominated_ones() {
        let x = SingleKeyCausal::new(clock(&[(0, 1)]), 'x');
        let y = SingleKeyCausal::new(clock(&[(1, 1)]), 'y');
        let both = x.clone().join(y.clone());
        assert_eq!(both.values().collect::<Vec<_>>(), [&'x', &'y']);
        assert_eq!(both.clock(), clock(&[(0, 1), (1, 1)]));
        // A write that saw both siblings replaces them.
        let mut successor_clock = both.clock();
        successor_clock.increment(w(0));
        let z = SingleKeyCausal::new(successor_clock, 'z');
        assert_eq!(both.join(z.clone()), z);
    }

    #[test]
    fn multi_key_causal_joins_dependencies_of_siblings() {
        let x =
            MultiKeyCausal::new(clock(&[(0, 1)]), Dependencies::new([("k", clock(&[(0, 1)]))]), 1);
        let y =
            MultiKeyCausal::new(clock(&[(1, 1)]), Dependencies::new([("k", clock(&[(1, 2)]))]), 2);
        let both = x.join(y);
        assert_eq!(both.values().count(), 2);
        assert_eq!(both.dependencies().get(&"k"), Some(&clock(&[(0, 1), (1, 2)])));
    }

    #[test]
    fn map_union_never_stores_bottom() {
        let map = MapUnion::new([(1, SetUnion::<u8>::default()), (2, SetUnion::singleton(3))]);
        assert_eq!(map.len(), 1);
        assert_eq!(map, MapUnion::new([(2, SetUnion::singleton(3))]));
    }
}

/// What the accessors return, and that each storage order (`Ord`) agrees with `PartialOrd`.
mod accessors {
    use super::*;

    #[test]
    fn registers_report_their_winning_write() {
        let lww = Lww::new(Stamp::new(3, w(2)), 'v');
        assert_eq!(lww.write(), Some((Stamp::new(3, w(2)), Some(&'v'))));
        assert_eq!(
            Lww::<char>::deleted(Stamp::new(4, w(1))).write(),
            Some((Stamp::new(4, w(1)), None))
        );
        assert_eq!(Lww::<char>::default().write(), None);
        let priority = Priority::new(7, w(1), 'p');
        assert_eq!(priority.priority(), Some(7));
        assert_eq!(Priority::<char>::default().priority(), None);
    }

    #[test]
    fn sets_and_maps_report_their_contents() {
        let mut set = SetUnion::singleton(1u8);
        assert!(set.insert(2), "a new element grows the set");
        assert!(!set.insert(2), "a present one does not");
        assert_eq!(set.as_set(), &BTreeSet::from([1, 2]));
        let map = MapUnion::new([(1u8, SetUnion::singleton(1u8)), (2, SetUnion::singleton(2))]);
        assert_eq!((map.len(), map.is_empty()), (2, false));
        let empty = MapUnion::<u8, SetUnion<u8>>::default();
        assert_eq!((empty.len(), empty.is_empty()), (0, true));
    }

    #[test]
    fn causal_registers_list_their_sibling_versions() {
        let x = SingleKeyCausal::new(clock(&[(0, 1)]), 'x');
        let y = SingleKeyCausal::new(clock(&[(1, 1)]), 'y');
        let both = x.join(y);
        let versions: Vec<(VectorClock, char)> =
            both.versions().map(|v| (v.clock.clone(), v.payload)).collect();
        assert_eq!(versions, [(clock(&[(0, 1)]), 'x'), (clock(&[(1, 1)]), 'y')]);
    }

    /// `Ord` and `PartialOrd` agree (`partial_cmp` is `Some(cmp)`) on `values`, and `cmp` is
    /// a total order consistent with equality.
    fn total_and_agreeing<T: Ord + Debug>(values: &[T]) {
        for a in values {
            for b in values {
                assert_eq!(a.partial_cmp(b), Some(a.cmp(b)), "{a:?} vs {b:?}");
                assert_eq!(a.cmp(b) == std::cmp::Ordering::Equal, a == b, "{a:?} vs {b:?}");
                assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn storage_orders_are_total_and_agree_with_partial_cmp() {
        let versions: Vec<Version<u8>> = [(&[(0, 1)][..], 1), (&[(0, 1)], 2), (&[(1, 1)], 1)]
            .into_iter()
            .map(|(entries, payload)| Version { clock: clock(entries), payload })
            .collect();
        total_and_agreeing(&versions);
        let deps = [
            Dependencies::<&str>::default(),
            Dependencies::new([("a", clock(&[(0, 1)]))]),
            Dependencies::new([("a", clock(&[(0, 2)]))]),
            Dependencies::new([("a", clock(&[(0, 1)])), ("b", clock(&[(0, 1)]))]),
            Dependencies::new([("b", clock(&[(0, 1)]))]),
        ];
        total_and_agreeing(&deps);
        // Keys first, then clocks, then length: the order is lexicographic.
        assert!(deps[0] < deps[1] && deps[1] < deps[2] && deps[1] < deps[3] && deps[3] < deps[4]);
        let bytes = Bytes::from_static(b"v");
        let values = [
            LatticeValue::Lww(Lww::new(Stamp::new(1, w(1)), bytes.clone())),
            LatticeValue::Lww(Lww::new(Stamp::new(2, w(1)), bytes.clone())),
            LatticeValue::Set(SetUnion::singleton(bytes)),
            LatticeValue::Max(Max::new(3)),
            LatticeValue::PnCounter(PnCounter::new([(w(1), 1, 0)])),
            LatticeValue::PnCounter(PnCounter::new([(w(1), 1, 1)])),
        ];
        total_and_agreeing(&values);
    }

    #[test]
    fn lattice_types_parse_from_their_names_only() {
        for lattice in LatticeType::ALL {
            assert_eq!(lattice.name().parse::<LatticeType>(), Ok(lattice));
        }
        assert_eq!("lwww".parse::<LatticeType>(), Err(UnknownLatticeType("lwww".into())));
    }
}

/// The law checker rejects a type breaking each law, naming that law: a checker that could
/// not fail would make every law test above vacuous.
mod law_checker {
    use std::cmp::Ordering;

    use super::*;

    /// A `Max<u8>` whose merge is broken as `DEFECT` says.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    struct Broken<const DEFECT: u8>(u8);

    /// Only a left identity: `x ⊔ ⊥` is `x + 1`.
    const RIGHT_BOTTOM: u8 = 0;
    /// Self-merge grows the value and says it did not.
    const NOT_IDEMPOTENT: u8 = 1;
    /// Values above bottom join to the smaller one (commutative, but not an upper bound).
    const NOT_UPPER_BOUND: u8 = 2;

    impl<const DEFECT: u8> Merge for Broken<DEFECT> {
        fn merge(&mut self, other: Self) -> bool {
            let before = self.0;
            self.0 = match DEFECT {
                RIGHT_BOTTOM if other.0 == 0 && self.0 != 0 => self.0.saturating_add(1),
                NOT_IDEMPOTENT if other.0 == self.0 && self.0 != 0 => {
                    self.0 = self.0.saturating_add(1);
                    return false;
                }
                NOT_UPPER_BOUND if self.0 != 0 && other.0 != 0 => self.0.min(other.0),
                _ => self.0.max(other.0),
            };
            self.0 != before
        }
    }

    impl<const DEFECT: u8> PartialOrd for Broken<DEFECT> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.0.cmp(&other.0))
        }
    }

    fn law_broken<const DEFECT: u8>() -> &'static str {
        let items: Vec<Broken<DEFECT>> = (0..4).map(Broken).collect();
        check_all(&items).expect_err("the checker accepted a broken lattice").law
    }

    #[test]
    fn each_broken_law_is_reported_by_name() {
        assert_eq!(law_broken::<RIGHT_BOTTOM>(), "bottom is identity");
        assert_eq!(law_broken::<NOT_IDEMPOTENT>(), "idempotence");
        assert_eq!(law_broken::<NOT_UPPER_BOUND>(), "join is an upper bound");
        // The same values with a sound merge pass.
        assert_eq!(check_all(&(0..4).map(Max::new).collect::<Vec<Max<u8>>>()), Ok(()));
    }
}

mod tagged {
    use super::*;

    fn samples() -> Vec<LatticeValue> {
        let bytes = Bytes::from_static(b"v");
        vec![
            LatticeValue::Lww(Lww::new(Stamp::new(1, w(1)), bytes.clone())),
            LatticeValue::Set(SetUnion::singleton(bytes.clone())),
            LatticeValue::Max(Max::new(3)),
            LatticeValue::Min(Min::new(3)),
            LatticeValue::Priority(Priority::new(1, w(1), bytes.clone())),
            LatticeValue::SingleKeyCausal(SingleKeyCausal::new(clock(&[(1, 1)]), bytes.clone())),
            LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
                clock(&[(1, 1)]),
                Dependencies::new([("k".to_owned(), clock(&[(2, 1)]))]),
                bytes,
            )),
            LatticeValue::PnCounter(PnCounter::new([(w(1), 2, 1)])),
        ]
    }

    #[test]
    fn merging_a_different_lattice_type_is_a_typed_error_and_changes_nothing() {
        for stored in samples() {
            for incoming in samples() {
                let mut value = stored.clone();
                let result = value.merge(incoming.clone());
                if stored.lattice_type() == incoming.lattice_type() {
                    assert_eq!(result, Ok(false), "{stored:?} merged with itself");
                } else {
                    let expected = TypeMismatch {
                        stored: stored.lattice_type(),
                        incoming: incoming.lattice_type(),
                    };
                    assert_eq!(result, Err(expected));
                    assert_eq!(value, stored, "a rejected merge must not change the value");
                    assert!(!value.lattice_le(&incoming) && !incoming.lattice_le(&value));
                }
            }
        }
    }

    #[test]
    fn every_type_has_a_bottom_below_its_values() {
        for value in samples() {
            let mut bottom = LatticeValue::bottom(value.lattice_type());
            assert_eq!(bottom.lattice_type(), value.lattice_type());
            assert!(bottom.lattice_le(&value));
            assert_eq!(bottom.merge(value.clone()), Ok(true));
            assert_eq!(bottom, value);
        }
    }

    #[test]
    fn mismatch_error_names_both_types() {
        let error = TypeMismatch { stored: LatticeType::Set, incoming: LatticeType::Lww };
        assert_eq!(error.to_string(), "cannot merge a lww value into a key that holds set");
    }

    #[test]
    fn postcard_round_trip_preserves_every_tagged_value() {
        for value in samples() {
            let bytes = postcard::to_allocvec(&value).unwrap();
            assert_eq!(postcard::from_bytes::<LatticeValue>(&bytes).unwrap(), value);
        }
    }
}

/// The original Anna lattices, reconstructed, and shown to break the laws our types keep.
mod anna_defects {
    use super::*;

    /// Anna's LWW: the incoming write wins when its time is at least the stored one.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
    struct AnnaLww(Lww<u8>);

    impl Merge for AnnaLww {
        fn merge(&mut self, other: Self) -> bool {
            self.0.merge_ignoring_writer(other.0)
        }
    }

    impl PartialOrd for AnnaLww {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            self.0.partial_cmp(&other.0)
        }
    }

    #[test]
    fn lww_without_the_writer_tie_break_is_not_commutative() {
        let a = AnnaLww(Lww::new(Stamp::new(1, w(1)), 10));
        let b = AnnaLww(Lww::new(Stamp::new(1, w(2)), 20));
        assert_ne!(a.clone().join(b.clone()), b.clone().join(a.clone()));
        let violation = check_all(&[AnnaLww::default(), a, b]).unwrap_err();
        assert_eq!(violation.law, "commutativity");
    }

    /// Anna's single-key causal lattice: one clock and a set of values; replace when the
    /// incoming clock dominates or equals, union when concurrent.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
    struct AnnaCausal {
        clock: VectorClock,
        values: BTreeSet<u8>,
    }

    impl Merge for AnnaCausal {
        fn merge(&mut self, other: Self) -> bool {
            let before = self.clone();
            let joined = self.clock.clone().join(other.clock.clone());
            if joined == other.clock {
                *self = other;
            } else if joined != self.clock {
                self.clock = joined;
                self.values.extend(other.values);
            }
            *self != before
        }
    }

    impl PartialOrd for AnnaCausal {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            partial_cmp_by_le(self, other, |a, b| a.clone().join(b.clone()) == *b)
        }
    }

    #[test]
    fn annas_causal_merge_is_not_associative() {
        // Writer 0 wrote x, then z having seen x; writer 1 wrote y concurrently with both.
        let x = AnnaCausal { clock: clock(&[(0, 1)]), values: BTreeSet::from([1]) };
        let y = AnnaCausal { clock: clock(&[(1, 1)]), values: BTreeSet::from([2]) };
        let z = AnnaCausal { clock: clock(&[(0, 2)]), values: BTreeSet::from([3]) };
        // z overwrote x, so x must be gone however the three meet. Merging x and y first gives
        // a clock that z does not dominate, and the union keeps x alive.
        let left = x.clone().join(y.clone()).join(z.clone());
        let right = x.clone().join(y.clone().join(z.clone()));
        assert_eq!(left.values, BTreeSet::from([1, 2, 3]));
        assert_eq!(right.values, BTreeSet::from([2, 3]));
        let violation: LawViolation = check_all(&[AnnaCausal::default(), x, y, z]).unwrap_err();
        assert_eq!(violation.law, "associativity");
    }

    #[test]
    fn squalls_causal_merge_is_associative_on_the_same_writes() {
        let x = SingleKeyCausal::new(clock(&[(0, 1)]), 1);
        let y = SingleKeyCausal::new(clock(&[(1, 1)]), 2);
        let z = SingleKeyCausal::new(clock(&[(0, 2)]), 3);
        let left = x.clone().join(y.clone()).join(z.clone());
        assert_eq!(left, x.join(y.clone().join(z.clone())));
        assert_eq!(left, y.join(z), "x was overwritten by z");
    }

    /// Hydro's checker must reject the defect too, or its verdicts on our types mean nothing.
    #[test]
    fn hydro_checker_rejects_annas_lww() {
        let a = AnnaLww(Lww::new(Stamp::new(1, w(1)), 10));
        let b = AnnaLww(Lww::new(Stamp::new(1, w(2)), 20));
        let items = [AnnaLww::default(), a, b];
        let panic = std::panic::catch_unwind(|| lattices::test::check_lattice_properties(&items))
            .expect_err("Hydro's checker must reject Anna's LWW");
        let message = panic.downcast_ref::<String>().expect("an assertion message");
        // It must fail on the tied pair, not on something unrelated.
        assert!(
            message.contains("Lww(10 @ t1.w1)") && message.contains("Lww(20 @ t1.w2)"),
            "{message}"
        );
    }

    hydro_impls!(AnnaLww);
}

/// Implements Hydro's lattice traits for our types, so its law checker can judge them.
/// `Type => top` also tells Hydro the type's top element, so its top checks run.
macro_rules! hydro_impls {
    ($($ty:ty $(=> $top:expr)?),* $(,)?) => {$(
        impl lattices::Merge<$ty> for $ty {
            fn merge(&mut self, other: $ty) -> bool {
                super::Merge::merge(self, other)
            }
        }
        impl lattices::LatticeOrd for $ty {}
        impl lattices::IsBot for $ty {
            fn is_bot(&self) -> bool {
                super::Lattice::is_bottom(self)
            }
        }
        impl lattices::IsTop for $ty {
            fn is_top(&self) -> bool {
                false $(|| *self == $top)?
            }
        }
    )*};
}
use hydro_impls;

/// Hydro's `lattices` law checker, run on our carriers.
mod hydro {
    use super::*;

    hydro_impls!(
        Max<u8> => Max::new(u8::MAX),
        Min<u8> => Min::new(u8::MIN),
        SetUnion<u8>,
        MapUnion<u8, SetUnion<u8>>,
        Lww<u8>,
        Priority<u8>,
        VectorClock,
        PnCounter,
        SingleKeyCausal<u8>,
        MultiKeyCausal<u8, u8>,
    );

    #[test]
    fn hydro_law_checker_accepts_every_type() {
        lattices::test::check_all(&carriers::max());
        lattices::test::check_all(&carriers::min());
        lattices::test::check_all(&carriers::set());
        lattices::test::check_all(&carriers::map());
        lattices::test::check_all(&carriers::lww());
        lattices::test::check_all(&carriers::priority());
        lattices::test::check_all(&carriers::vector_clock());
        lattices::test::check_all(&carriers::pn_counter());
        lattices::test::check_all(&carriers::single_key_causal());
        lattices::test::check_all(&carriers::multi_key_causal());
    }
}

mod random {
    use super::*;

    fn small_clock() -> impl Strategy<Value = VectorClock> {
        prop::collection::btree_map(0u64..4, 0u64..4, 0..4).prop_map(|entries| {
            VectorClock::new(entries.into_iter().map(|(k, v)| (WriterId(k), v)))
        })
    }

    fn pn_counter() -> impl Strategy<Value = PnCounter> {
        prop::collection::btree_map(0u64..4, (0u64..4, 0u64..4), 0..4).prop_map(|totals| {
            PnCounter::new(totals.into_iter().map(|(wr, (up, down))| (WriterId(wr), up, down)))
        })
    }

    fn lww() -> impl Strategy<Value = Lww<u8>> {
        prop_oneof![
            Just(Lww::default()),
            (0u64..4, 0u64..3, any::<u8>())
                .prop_map(|(t, wr, v)| Lww::new(Stamp::new(t, WriterId(wr)), v)),
            (0u64..4, 0u64..3).prop_map(|(t, wr)| Lww::deleted(Stamp::new(t, WriterId(wr)))),
        ]
    }

    fn priority() -> impl Strategy<Value = Priority<u8>> {
        prop_oneof![
            Just(Priority::default()),
            (0u64..4, 0u64..3, any::<u8>()).prop_map(|(p, wr, v)| Priority::new(
                p,
                WriterId(wr),
                v
            )),
        ]
    }

    fn set() -> impl Strategy<Value = SetUnion<u8>> {
        prop::collection::btree_set(0u8..8, 0..5).prop_map(SetUnion::new)
    }

    fn map() -> impl Strategy<Value = MapUnion<u8, SetUnion<u8>>> {
        prop::collection::btree_map(0u8..4, set(), 0..4).prop_map(MapUnion::new)
    }

    fn single_key_causal() -> impl Strategy<Value = SingleKeyCausal<u8>> {
        prop::collection::vec((small_clock(), 0u8..4), 0..4).prop_map(|versions| {
            versions.into_iter().fold(SingleKeyCausal::default(), |acc, (c, v)| {
                acc.join(SingleKeyCausal::new(c, v))
            })
        })
    }

    fn multi_key_causal() -> impl Strategy<Value = MultiKeyCausal<u8, u8>> {
        let deps =
            prop::collection::btree_map(0u8..3, small_clock(), 0..3).prop_map(Dependencies::new);
        prop::collection::vec((small_clock(), deps, 0u8..4), 0..4).prop_map(|versions| {
            versions.into_iter().fold(MultiKeyCausal::default(), |acc, (c, d, v)| {
                acc.join(MultiKeyCausal::new(c, d, v))
            })
        })
    }

    macro_rules! random_law_tests {
        ($($name:ident: $ty:ty = $strategy:expr;)*) => {$(
            proptest! {
                #[test]
                fn $name(a in $strategy, b in $strategy, c in $strategy) {
                    let items: [$ty; 3] = [a, b, c];
                    prop_assert_eq!(check_all(&items), Ok(()));
                    for item in &items {
                        let bytes = postcard::to_allocvec(item).unwrap();
                        prop_assert_eq!(&postcard::from_bytes::<$ty>(&bytes).unwrap(), item);
                    }
                }
            }
        )*};
    }

    random_law_tests! {
        max: Max<u64> = any::<u64>().prop_map(Max::new);
        min: Min<u64> = any::<u64>().prop_map(Min::new);
        set_union: SetUnion<u8> = set();
        map_union: MapUnion<u8, SetUnion<u8>> = map();
        lww_register: Lww<u8> = lww();
        priority_register: Priority<u8> = priority();
        vector_clock: VectorClock = small_clock();
        pn_counter_totals: PnCounter = pn_counter();
        single_key: SingleKeyCausal<u8> = single_key_causal();
        multi_key: MultiKeyCausal<u8, u8> = multi_key_causal();
    }

    proptest! {
        /// Deserializing a non-canonical encoding (a dominated version, a zero counter) yields
        /// the canonical value, so equal values stay equal after a round trip from any peer.
        #[test]
        fn decoding_normalizes(versions in prop::collection::vec((small_clock(), 0u8..4), 0..5)) {
            let raw: BTreeSet<Version<u8>> =
                versions.iter().map(|(c, v)| Version { clock: c.clone(), payload: *v }).collect();
            let decoded: SingleKeyCausal<u8> =
                postcard::from_bytes(&postcard::to_allocvec(&raw).unwrap()).unwrap();
            let merged = versions
                .into_iter()
                .fold(SingleKeyCausal::default(), |acc, (c, v)| acc.join(SingleKeyCausal::new(c, v)));
            prop_assert_eq!(decoded, merged);
        }
    }
}

/// Decoding normalizes every non-canonical encoding a peer could send, so equal values stay
/// equal (and hash equally) whatever produced their bytes.
mod normalization {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_zero_clock_counter_decodes_as_absent() {
        let raw: BTreeMap<WriterId, u64> = BTreeMap::from([(w(0), 0), (w(1), 2)]);
        let decoded: VectorClock =
            postcard::from_bytes(&postcard::to_allocvec(&raw).unwrap()).unwrap();
        assert_eq!(decoded, clock(&[(1, 2)]));
        assert_eq!(decoded.iter().count(), 1);
    }

    #[test]
    fn a_bottom_map_entry_decodes_as_absent() {
        let raw: BTreeMap<u8, SetUnion<u8>> =
            BTreeMap::from([(0, SetUnion::default()), (1, SetUnion::singleton(7))]);
        let decoded: MapUnion<u8, SetUnion<u8>> =
            postcard::from_bytes(&postcard::to_allocvec(&raw).unwrap()).unwrap();
        assert_eq!(decoded, MapUnion::new([(1, SetUnion::singleton(7))]));
        assert_eq!(decoded.len(), 1);
    }
}

/// The counter's own behaviour, beyond the laws.
mod counter {
    use super::*;

    #[test]
    fn adds_move_the_value_by_exactly_their_amount() {
        let mut counter = PnCounter::default();
        counter.add(w(1), 5).unwrap();
        counter.add(w(1), -2).unwrap();
        counter.add(w(2), -4).unwrap();
        assert_eq!(counter.value(), -1);
        assert_eq!(counter.totals(w(1)), (5, 2));
        assert_eq!(counter.totals(w(2)), (0, 4));
        let entries: Vec<_> = counter.iter().collect();
        assert_eq!(entries, [(w(1), 5, 2), (w(2), 0, 4)]);
    }

    #[test]
    fn concurrent_writers_lose_nothing_in_any_merge_order() {
        // Three writers increment apart, each from its own last write; every order and
        // repetition of the merges gives the sum (an LWW register keeps one of them).
        let writes: Vec<PnCounter> = (1..=3)
            .map(|writer| {
                let mut counter = PnCounter::default();
                for _ in 0..writer {
                    counter.add(w(writer), 1).unwrap();
                }
                counter
            })
            .collect();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let mut replica = PnCounter::default();
            for &i in order.iter().chain(&order) {
                replica.merge(writes[i].clone());
            }
            assert_eq!(replica.value(), 6);
        }
    }

    #[test]
    fn an_older_state_of_a_writer_changes_nothing() {
        let mut old = PnCounter::default();
        old.add(w(1), 1).unwrap();
        let mut new = old.clone();
        new.add(w(1), 1).unwrap();
        let mut replica = new.clone();
        assert!(!replica.merge(old));
        assert_eq!(replica.value(), 2);
    }

    #[test]
    fn overflowing_a_total_is_an_error_that_changes_nothing() {
        let mut counter = PnCounter::new([(w(1), u64::MAX, 0)]);
        let before = counter.clone();
        assert_eq!(counter.add(w(1), 1), Err(CounterOverflow));
        assert_eq!(counter, before);
        // The other direction has its own total.
        counter.add(w(1), i64::MIN).unwrap();
        assert_eq!(counter.value(), i128::from(u64::MAX) - (1i128 << 63));
    }

    #[test]
    fn zero_totals_are_bottom_and_not_stored() {
        assert_eq!(PnCounter::new([(w(1), 0, 0)]), PnCounter::default());
        assert!(PnCounter::new([(w(1), 0, 0)]).is_bottom());
        let mut counter = PnCounter::default();
        counter.add(w(1), 0).unwrap();
        assert_eq!(counter, PnCounter::default());
    }
}
