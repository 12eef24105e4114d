//! Consistent hashing with virtual nodes: which storage nodes are responsible for a key.
//!
//! # The placement function (normative)
//!
//! Reimplementations must place keys exactly like this, so that clients and nodes written in
//! other languages agree on ownership:
//!
//! 1. `h(bytes)` is 64-bit FNV-1a followed by MurmurHash3's 64-bit finalizer: start from
//!    `0xcbf2_9ce4_8422_2325`; for each byte, XOR it in, then multiply by
//!    `0x0000_0100_0000_01b3` modulo 2⁶⁴; then `k ^= k >> 33; k *= 0xff51_afd7_ed55_8ccd;
//!    k ^= k >> 33; k *= 0xc4ce_b9fe_1a85_ec53; k ^= k >> 33` (multiplications modulo 2⁶⁴).
//!    FNV-1a alone leaves the high bits of short, similar strings ("0#1", "0#2", ...) nearly
//!    equal, so virtual nodes would cluster on the ring; the finalizer spreads them.
//! 2. Node `n` with `v` virtual nodes occupies the ring positions `h("{n}#{i}")` for
//!    `i in 0..v`, where `{n}` and `{i}` are decimal ASCII. A position taken by two virtual
//!    nodes belongs to the smaller node id.
//! 3. Key `k` hashes to `h(k)` over its UTF-8 bytes. Its responsible nodes for replication
//!    factor `r` are found by walking the positions clockwise from the first position `≥ h(k)`
//!    (wrapping past the largest to the smallest) and collecting distinct nodes until
//!    `min(r, number of nodes)` are found. The first is the key's *primary*.
//!
//! The walk is total: a factor above the node count yields every node once, and an empty ring
//! yields no node. `impl/src/kvs/testdata/ring.tsv` lists placements for reimplementers to
//! check against.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::NodeId;

/// The ring's hash function: [`fnv1a64`] then MurmurHash3's `fmix64` finalizer.
pub const fn ring_hash(bytes: &[u8]) -> u64 {
    let mut k = fnv1a64(bytes);
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// 64-bit FNV-1a.
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// A ring version: the sum of every known node's [`Status`] rank, so it grows with every
/// membership change and only then. Redirects carry it so that routing information can be
/// ordered by freshness. Two views that each saw a different concurrent change share an epoch;
/// their merge has a larger one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Epoch(pub u64);

/// Where a node is in its life as a ring member. Statuses only advance, in declaration order,
/// so a membership (node → status, merged by taking the later status) is a lattice and views of
/// it converge by gossip without coordination. A node id is never reused: a machine that
/// rejoins after leaving takes a new id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Status {
    /// On the ring: owns keys. Rank 1.
    Member,
    /// Asked to leave: off the ring, handing its keys to their new owners. Rank 2.
    Leaving,
    /// Handed everything off; may be stopped. Rank 3.
    Left,
}

impl Status {
    /// The status's contribution to the [`Epoch`].
    pub fn rank(self) -> u64 {
        match self {
            Self::Member => 1,
            Self::Leaving => 2,
            Self::Left => 3,
        }
    }
}

/// Every node a ring has heard of, with its status: the lattice that ring views gossip.
pub type Membership = BTreeMap<NodeId, Status>;

/// The consistent-hash ring of storage nodes: a [`Membership`] and the positions of its
/// [`Status::Member`] nodes. Serialized as its virtual-node count and membership (positions
/// follow from them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "RingSpec", try_from = "RingSpec")
)]
pub struct Ring {
    virtual_nodes: u32,
    membership: Membership,
    members: BTreeSet<NodeId>,
    positions: BTreeMap<u64, NodeId>,
}

/// What a [`Ring`] is made of, as serialized.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct RingSpec {
    virtual_nodes: u32,
    membership: Membership,
}

#[cfg(feature = "serde")]
impl From<Ring> for RingSpec {
    fn from(ring: Ring) -> Self {
        Self { virtual_nodes: ring.virtual_nodes, membership: ring.membership }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<RingSpec> for Ring {
    type Error = &'static str;

    fn try_from(spec: RingSpec) -> Result<Self, Self::Error> {
        if spec.virtual_nodes == 0 {
            return Err("a ring needs at least one virtual node per member");
        }
        let mut ring = Ring::new(spec.virtual_nodes);
        ring.merge(&spec.membership);
        Ok(ring)
    }
}

impl Ring {
    /// An empty ring at epoch 0 whose members each take `virtual_nodes` positions.
    ///
    /// # Panics
    /// If `virtual_nodes` is zero: a member without positions could never own a key.
    pub fn new(virtual_nodes: u32) -> Self {
        assert!(virtual_nodes > 0, "a ring needs at least one virtual node per member");
        Self {
            virtual_nodes,
            membership: Membership::new(),
            members: BTreeSet::new(),
            positions: BTreeMap::new(),
        }
    }

    /// A ring holding `members`, at the epoch `members.len()` (rank 1 each).
    pub fn with_members(virtual_nodes: u32, members: impl IntoIterator<Item = NodeId>) -> Self {
        let mut ring = Self::new(virtual_nodes);
        for member in members {
            ring.join(member);
        }
        ring
    }

    /// The ring's epoch: the sum of its nodes' status ranks.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.membership.values().map(|s| s.rank()).sum())
    }

    /// The nodes on the ring (status [`Status::Member`]), in id order.
    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    /// Every node this ring has heard of, with its status.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// `node`'s status, if the ring has heard of it.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.membership.get(&node).copied()
    }

    /// Adds `node` as a member; returns whether it was unknown (only then does anything
    /// change: a node that left cannot rejoin under its old id).
    pub fn join(&mut self, node: NodeId) -> bool {
        self.advance(node, Status::Member)
    }

    /// Takes member `node` off the ring ([`Status::Leaving`]); returns whether it was a member.
    pub fn leave(&mut self, node: NodeId) -> bool {
        self.status(node) == Some(Status::Member) && self.advance(node, Status::Leaving)
    }

    /// Records that leaving `node` handed everything off ([`Status::Left`]); returns whether it
    /// was leaving.
    pub fn depart(&mut self, node: NodeId) -> bool {
        self.status(node) == Some(Status::Leaving) && self.advance(node, Status::Left)
    }

    /// Merges another view of the membership into this one: every node takes the later of its
    /// two statuses. Returns whether this view changed.
    pub fn merge(&mut self, other: &Membership) -> bool {
        let mut changed = false;
        for (&node, &status) in other {
            if self.status(node).is_none_or(|mine| mine < status) {
                self.membership.insert(node, status);
                changed = true;
            }
        }
        if changed {
            self.rebuild();
        }
        changed
    }

    /// Whether this view knows everything `other` does.
    pub fn covers(&self, other: &Membership) -> bool {
        other.iter().all(|(node, status)| self.status(*node).is_some_and(|mine| mine >= *status))
    }

    fn advance(&mut self, node: NodeId, status: Status) -> bool {
        self.merge(&Membership::from([(node, status)]))
    }

    /// Recomputes every position from the members.
    fn rebuild(&mut self) {
        self.members = self
            .membership
            .iter()
            .filter(|(_, status)| **status == Status::Member)
            .map(|(node, _)| *node)
            .collect();
        self.positions.clear();
        for &node in &self.members {
            for i in 0..self.virtual_nodes {
                let position = ring_hash(format!("{}#{i}", node.0).as_bytes());
                // Members are visited in id order, so the smaller id keeps a shared position.
                self.positions.entry(position).or_insert(node);
            }
        }
    }

    /// The nodes responsible for `key` at replication factor `factor`: distinct, primary
    /// first, `min(factor, members)` of them.
    pub fn responsible(&self, key: &str, factor: usize) -> Vec<NodeId> {
        let wanted = factor.min(self.members.len());
        let mut found = Vec::with_capacity(wanted);
        let start = ring_hash(key.as_bytes());
        let clockwise = self.positions.range(start..).chain(self.positions.range(..start));
        for (_, node) in clockwise {
            if found.len() == wanted {
                break;
            }
            if !found.contains(node) {
                found.push(*node);
            }
        }
        found
    }

    /// Whether `node` is one of the `factor` nodes responsible for `key`.
    pub fn is_responsible(&self, node: NodeId, key: &str, factor: usize) -> bool {
        self.responsible(key, factor).contains(&node)
    }
}
