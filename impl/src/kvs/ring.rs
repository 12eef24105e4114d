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

/// A ring version: bumped on every membership change, carried by redirects so that routing
/// information can be ordered by freshness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Epoch(pub u64);

/// The consistent-hash ring of storage nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ring {
    virtual_nodes: u32,
    epoch: Epoch,
    members: BTreeSet<NodeId>,
    positions: BTreeMap<u64, NodeId>,
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
            epoch: Epoch(0),
            members: BTreeSet::new(),
            positions: BTreeMap::new(),
        }
    }

    /// A ring holding `members`, at the epoch `members.len()` (one bump per join).
    pub fn with_members(virtual_nodes: u32, members: impl IntoIterator<Item = NodeId>) -> Self {
        let mut ring = Self::new(virtual_nodes);
        for member in members {
            ring.join(member);
        }
        ring
    }

    /// The ring's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The members, in id order.
    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    /// Adds `node`; returns whether it was new (the epoch advances only then).
    pub fn join(&mut self, node: NodeId) -> bool {
        let new = self.members.insert(node);
        if new {
            self.rebuild();
        }
        new
    }

    /// Removes `node`; returns whether it was a member (the epoch advances only then).
    pub fn leave(&mut self, node: NodeId) -> bool {
        let was_member = self.members.remove(&node);
        if was_member {
            self.rebuild();
        }
        was_member
    }

    /// Recomputes every position from the members and advances the epoch.
    fn rebuild(&mut self) {
        self.positions.clear();
        for &node in &self.members {
            for i in 0..self.virtual_nodes {
                let position = ring_hash(format!("{}#{i}", node.0).as_bytes());
                // Members are visited in id order, so the smaller id keeps a shared position.
                self.positions.entry(position).or_insert(node);
            }
        }
        self.epoch.0 += 1;
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
