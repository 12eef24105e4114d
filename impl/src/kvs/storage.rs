//! The storage node: holds the keys the ring gives it, answers gets and puts, acknowledges
//! puts once enough replicas hold them, and gossips until every replica does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Mutant;
use super::behind::Behind;
use super::msg::{Durability, Key, KvsMsg, KvsTimer, PutError, ReqId};
use super::ring::{Membership, Ring, Status};
use super::subscriptions::Subscriptions;
use crate::base::seeded_defects;
use crate::lattice::{LatticeType, LatticeValue};
use crate::node::{DurableState, Input, Node, NodeId, Outbox, Violation, Within};

type Out = Outbox<StorageNode>;

/// What a storage node keeps on stable storage: its incarnation and every value it took (by
/// a put or by gossip), a lattice — incarnations by max, each key's value by its lattice's
/// join. The node persists each grown value as a delta before anything it sends after taking
/// it, so an acknowledgement (to a client, or of gossip) is never ahead of the disk. Keys
/// handed off to other nodes stay on disk (their values only ever grow); a restarted node
/// gossips them to their owners again and then drops them from memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stored {
    /// The latest incarnation started.
    pub incarnation: u32,
    /// Every key's value.
    pub data: BTreeMap<Key, LatticeValue>,
}

impl Stored {
    /// The delta of one key's value.
    pub fn value(key: &str, value: &LatticeValue) -> Self {
        Self { incarnation: 0, data: BTreeMap::from([(key.to_owned(), value.clone())]) }
    }

    /// The delta of a new incarnation.
    pub fn incarnation(incarnation: u32) -> Self {
        Self { incarnation, data: BTreeMap::new() }
    }
}

impl DurableState for Stored {
    /// A value of another lattice type than the stored one is dropped: a node checks types
    /// before it takes a value, so only a damaged disk could hold two.
    fn merge_delta(&mut self, delta: Self) {
        self.incarnation = self.incarnation.max(delta.incarnation);
        for (key, value) in delta.data {
            match self.data.get_mut(&key) {
                Some(stored) => {
                    let _ = stored.merge(value);
                }
                None => {
                    self.data.insert(key, value);
                }
            }
        }
    }

    /// One record for the incarnation (`i`), one per key (`k` and the key's bytes).
    fn parts(self) -> Vec<(Vec<u8>, Self)> {
        let incarnation =
            (self.incarnation > 0).then(|| (b"i".to_vec(), Self::incarnation(self.incarnation)));
        let keys = self.data.into_iter().map(|(key, value)| {
            let name = [&b"k"[..], key.as_bytes()].concat();
            (name, Self { incarnation: 0, data: BTreeMap::from([(key, value)]) })
        });
        incarnation.into_iter().chain(keys).collect()
    }

    /// Every key is gone; the incarnation, kept apart and synced at every start, survives, so
    /// the next start still announces a new incarnation and peers send their keys again.
    fn lose_data(&mut self) {
        self.data.clear();
    }
}

/// A role that persists only an incarnation, hosted beside storage nodes.
impl Within<Stored> for u32 {
    fn into_world(self) -> Stored {
        Stored::incarnation(self)
    }

    fn from_world(world: Stored) -> Option<u32> {
        Some(world.incarnation)
    }
}

/// A role that persists nothing, hosted beside storage nodes.
impl Within<Stored> for () {
    fn into_world(self) -> Stored {
        Stored::default()
    }

    fn from_world(_: Stored) -> Option<()> {
        Some(())
    }
}

/// How a storage node is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StorageConfig {
    /// This node.
    pub id: NodeId,
    /// The ring at start: which nodes store which keys.
    pub ring: Ring,
    /// How many replicas every key has (capped by the number of nodes).
    pub replication: usize,
    /// Declared lattice types by key prefix: a key takes the type of its longest declared
    /// prefix, and every replica rejects puts of another type, even for keys it does not hold
    /// yet. Keys without a declared prefix take the type of the first write a replica sees,
    /// which concurrent first writes of different types can make differ between replicas.
    pub schema: BTreeMap<String, LatticeType>,
    /// How often replicas that are behind are re-sent gossip.
    pub gossip_period: Duration,
    /// How often a restarted node re-sends `Hello` to peers that have not acknowledged it.
    pub hello_period: Duration,
    /// How often a node whose membership view changed re-sends it to peers that have not
    /// acknowledged it.
    pub ring_period: Duration,
    /// Whether this node starts by joining `ring` (which need not list it) rather than as one
    /// of its members.
    pub join: bool,
    /// The push flush period: a key that grows is pushed to its subscribers this long after
    /// (batched with every other key that grew meanwhile), and re-sent each period until
    /// acknowledged.
    pub push_period: Duration,
    /// How often leases are checked: a cache that did not renew between two checks is
    /// dropped, so a lease lasts between one and two periods after its last renewal. `None`:
    /// subscriptions never lapse — only for a network that loses nothing, whose caches need
    /// not renew (a model checking other things).
    pub lease_period: Option<Duration>,
    /// The most keys this node stores; puts creating more are rejected.
    pub max_keys: u32,
    /// The most unacknowledged puts this node tracks; more are rejected as overloaded.
    pub max_pending: u32,
    /// The most keys one gossip message to one replica carries: a replica behind on more
    /// gets them a batch at a time, the next batch as soon as it acknowledges the last one
    /// (and each gossip tick otherwise).
    pub gossip_batch: usize,
    /// The most bytes of keys and payloads one gossip message to one replica carries beyond
    /// its first key (so that it fits in a frame).
    pub gossip_batch_bytes: usize,
    /// The most gossip ticks between two batches to a replica that acknowledges none: after
    /// each unanswered batch the wait doubles up to this (`1`: a batch every tick). A silent
    /// replica is also left out of the gossip a put sends at once: it is probed, not flooded.
    pub gossip_backoff: u32,
    /// The seeded defect this node carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl StorageConfig {
    /// A correct node `id` of `ring` with default periods and bounds.
    pub fn new(id: NodeId, ring: Ring, replication: usize) -> Self {
        Self {
            id,
            ring,
            replication,
            schema: BTreeMap::new(),
            gossip_period: Duration::from_millis(10),
            hello_period: Duration::from_millis(100),
            ring_period: Duration::from_millis(100),
            join: false,
            push_period: Duration::from_millis(5),
            lease_period: Some(Duration::from_secs(3)),
            max_keys: 1_000_000,
            max_pending: 10_000,
            gossip_batch: 1024,
            gossip_batch_bytes: 1 << 20,
            gossip_backoff: 1,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// The declared type of `key`: that of its longest declared prefix.
    pub fn declared_type(&self, key: &str) -> Option<LatticeType> {
        self.schema
            .iter()
            .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, lattice)| *lattice)
    }
}

/// A put waiting for enough replicas to hold its value. How many is "enough" is worked out
/// from the current ring each time, so a ring change that shrinks the replica set cannot leave
/// the put waiting for ever.
///
/// A replica holds the put once it is known to hold a value at or above the put's own value,
/// not necessarily the key's latest one: under a stream of writes to one key, acknowledgements
/// always lag the latest value, and a put that waited for replicas to catch up with the
/// latest would wait until the writes paused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PendingPut {
    durability: Durability,
    /// The value the client wrote.
    value: LatticeValue,
    /// Other replicas known (in their current incarnation) to hold `value` or more.
    holders: BTreeSet<NodeId>,
}

/// How gossip to one lagging replica goes ([`StorageConfig::gossip_batch`] and
/// [`StorageConfig::gossip_backoff`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Lag {
    /// Where its next batch starts: after this key (the last batch stopped part way).
    after: Option<Key>,
    /// The last key of a batch that stopped part way, until acknowledged: its
    /// acknowledgement sends the next batch at once.
    awaiting: Option<Key>,
    /// Whether a batch went since it last acknowledged gossip (tracked only with a backoff).
    unanswered: bool,
    /// Ticks in a row its batches went unanswered.
    silent: u32,
    /// Ticks to let pass before its next batch.
    wait: u32,
}

/// A storage node's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorageNode {
    /// How many times this node has started, persisted across crashes. Peers ignore
    /// acknowledgements from earlier incarnations: those replicas' data died with them.
    incarnation: u32,
    ring: Ring,
    store: BTreeMap<Key, LatticeValue>,
    /// Per key, the other replicas not known to hold this node's current value.
    behind: Behind,
    /// How gossip to each lagging replica goes, where that is not the default (a batch every
    /// tick, from the first key).
    lag: BTreeMap<NodeId, Lag>,
    /// The latest incarnation heard from each peer (1 until heard otherwise).
    peers: BTreeMap<NodeId, u32>,
    /// Peers that have not acknowledged this incarnation's `Hello`.
    hello_unacked: BTreeSet<NodeId>,
    /// Unacknowledged puts by key, then by `(client, request)`: each input settles only the
    /// keys it touched. Never holds an empty inner map.
    pending: BTreeMap<Key, BTreeMap<(NodeId, ReqId), PendingPut>>,
    /// Peers not known to hold this node's membership view.
    ring_unacked: BTreeSet<NodeId>,
    /// `Leave` requests to answer once this node has left, by `(operator, request)`.
    leave_waiters: BTreeSet<(NodeId, ReqId)>,
    /// The caches subscribed to this node's keys.
    subs: Subscriptions,
}

impl StorageNode {
    /// See [`Node::init`].
    fn start(cfg: &StorageConfig, persisted: &Stored, out: &mut Out) -> Self {
        let incarnation = persisted.incarnation + 1;
        out.persist(Stored::incarnation(incarnation));
        let store =
            if cfg.has(Mutant::RestartEmpty) { BTreeMap::new() } else { persisted.data.clone() };
        let mut ring = cfg.ring.clone();
        let joined = cfg.join && ring.join(cfg.id);
        let peers: BTreeMap<NodeId, u32> =
            ring.membership().keys().filter(|n| **n != cfg.id).map(|n| (*n, 1)).collect();
        let mut node = Self {
            incarnation,
            ring,
            store,
            behind: Behind::default(),
            lag: BTreeMap::new(),
            peers,
            hello_unacked: BTreeSet::new(),
            pending: BTreeMap::new(),
            ring_unacked: BTreeSet::new(),
            leave_waiters: BTreeSet::new(),
            subs: Subscriptions::default(),
        };
        if incarnation > 1 {
            node.hello_unacked = node.ring_peers(cfg).collect();
        }
        if joined {
            node.ring_unacked = node.ring_peers(cfg).collect();
        }
        // What the disk held may be more than the peers hold (a put taken just before the
        // crash) or belong to others now (handed off): every key goes out to its replicas.
        let keys: Vec<Key> = node.store.keys().cloned().collect();
        for key in &keys {
            node.mark_behind(cfg, key);
        }
        node.arm_gossip(cfg, false, out);
        node.say_hello(cfg, out);
        node.send_ring(cfg, out);
        node
    }

    /// The peers that take part in membership gossip: every node heard of except this one and
    /// those that have left.
    fn ring_peers<'a>(&'a self, cfg: &'a StorageConfig) -> impl Iterator<Item = NodeId> + 'a {
        self.ring
            .membership()
            .iter()
            .filter(move |(node, status)| **node != cfg.id && **status != Status::Left)
            .map(|(node, _)| *node)
    }

    /// Whether this node has left the ring and every peer knows: it may be stopped.
    pub fn has_left(&self, cfg: &StorageConfig) -> bool {
        self.ring.status(cfg.id) == Some(Status::Left) && self.ring_unacked.is_empty()
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The stored keys and values.
    pub fn store(&self) -> &BTreeMap<Key, LatticeValue> {
        &self.store
    }

    /// The node's view of the ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Whether nothing is left to do: no replica behind, no `Hello` or membership view
    /// unacknowledged, no put waiting, no `Leave` request unanswered.
    pub fn is_idle(&self) -> bool {
        self.behind.is_empty()
            && self.hello_unacked.is_empty()
            && self.pending.is_empty()
            && self.ring_unacked.is_empty()
            && self.leave_waiters.is_empty()
            && self.subs.is_settled()
    }

    /// The caches subscribed to this node's keys.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subs
    }

    /// The other replicas of `key`.
    fn others(&self, cfg: &StorageConfig, key: &str) -> Vec<NodeId> {
        others_in(&self.ring, cfg, key)
    }

    fn is_responsible(&self, cfg: &StorageConfig, key: &str) -> bool {
        self.ring.is_responsible(cfg.id, key, cfg.replication)
    }

    /// See [`Node::handle`].
    fn step(&mut self, cfg: &StorageConfig, input: Input<Self>, out: &mut Out) {
        match input {
            Input::Receive { from, msg: KvsMsg::Get { req, key } } => {
                self.get(cfg, from, req, key, out)
            }
            Input::Receive { from, msg: KvsMsg::Put { req, key, value, durability } } => {
                self.put(cfg, from, req, key, value, durability, out);
            }
            Input::Receive { from, msg: KvsMsg::Gossip { incarnation, entries } }
                if self.peers.contains_key(&from) =>
            {
                self.gossip(cfg, from, incarnation, entries, out);
            }
            Input::Receive { from, msg: KvsMsg::GossipAck { incarnation, entries } }
                if self.peers.contains_key(&from) =>
            {
                self.gossip_ack(cfg, from, incarnation, entries, out);
            }
            Input::Receive { from, msg: KvsMsg::Hello { incarnation } }
                if self.peers.contains_key(&from) =>
            {
                self.hello(cfg, from, incarnation, out);
            }
            Input::Receive { from, msg: KvsMsg::HelloAck { incarnation, members } }
                if incarnation == self.incarnation && self.peers.contains_key(&from) =>
            {
                self.hello_ack(cfg, from, &members, out);
            }
            // Membership views are accepted from any node: they only ever add knowledge.
            // A view is taken from a known peer, or from a node introducing itself as a member.
            Input::Receive { from, msg: KvsMsg::RingUpdate { incarnation, members } }
                if self.peers.contains_key(&from)
                    || members.get(&from) == Some(&Status::Member) =>
            {
                self.ring_update(cfg, from, incarnation, &members, out);
            }
            Input::Receive { from, msg: KvsMsg::RingAck { incarnation, members } }
                if self.peers.contains_key(&from) =>
            {
                self.ring_ack(cfg, from, incarnation, &members, out);
            }
            Input::Receive { from, msg: KvsMsg::Leave { req } } => self.leave(cfg, from, req, out),
            Input::Receive {
                from,
                msg:
                    KvsMsg::Subscribe { incarnation, .. }
                    | KvsMsg::Fetch { incarnation, .. }
                    | KvsMsg::Unsubscribe { incarnation, .. }
                    | KvsMsg::PushAck { incarnation, .. },
            } if !self.subs.current(from, incarnation) => {
                out.ignore("a message from an earlier incarnation of the cache");
            }
            Input::Receive { from, msg: KvsMsg::Subscribe { keys, .. } } => {
                self.subscribe(cfg, from, keys, None, out);
            }
            Input::Receive { from, msg: KvsMsg::Fetch { keys, epoch, .. } } => {
                self.subscribe(cfg, from, keys, Some(epoch), out);
            }
            Input::Receive { from, msg: KvsMsg::Unsubscribe { keys, .. } } => {
                for key in keys {
                    self.subs.unsubscribe(from, &key);
                }
            }
            Input::Receive { from, msg: KvsMsg::PushAck { entries, .. } } => {
                self.push_ack(from, entries, out);
            }
            Input::Receive { .. } => out.ignore("message a storage node does not expect"),
            Input::Timeout(KvsTimer::Gossip) => self.gossip_tick(cfg, out),
            Input::Timeout(KvsTimer::Hello) => self.say_hello(cfg, out),
            Input::Timeout(KvsTimer::Ring) => self.send_ring(cfg, out),
            Input::Timeout(KvsTimer::Push) => self.send_pushes(cfg, out),
            Input::Timeout(KvsTimer::Lease) => self.lease(cfg, out),
            Input::Timeout(timer) => out.ignore(match timer {
                KvsTimer::Attempt(_) | KvsTimer::Renew | KvsTimer::WriteRetry => {
                    "another role's timer"
                }
                _ => unreachable!("storage timers are matched above"),
            }),
        }
    }

    /// A peer acknowledged gossip: the replicas it now holds are recorded, and the keys it
    /// acknowledged may settle puts, stop being behind, or be released after a handoff.
    fn gossip_ack(
        &mut self,
        cfg: &StorageConfig,
        from: NodeId,
        incarnation: u32,
        entries: BTreeMap<Key, LatticeValue>,
        out: &mut Out,
    ) {
        // Only the acknowledged keys can stop being behind, so only they can become
        // releasable (every other key this node does not own is still behind: see
        // `release_handed_off`). Scanning the whole store on every acknowledgement made each
        // one cost a ring lookup per stored key.
        let acked: Vec<Key> = entries.keys().cloned().collect();
        if self.observe(cfg, from, incarnation, out) && !cfg.has(Mutant::AcksNeverRecorded) {
            for (key, theirs) in entries {
                self.note_holds(from, &key, &theirs);
            }
            self.answered(cfg, from, &acked, out);
        }
        self.settle_keys(cfg, &acked, out);
        self.release_handed_off_among(cfg, &acked);
        self.check_left(cfg, out);
        self.disarm_if_done(out);
    }

    /// A restarted peer introduced itself: note its incarnation, answer with this view.
    fn hello(&mut self, cfg: &StorageConfig, from: NodeId, incarnation: u32, out: &mut Out) {
        self.observe(cfg, from, incarnation, out);
        let members = self.ring.membership().clone();
        out.send(from, KvsMsg::HelloAck { incarnation, members });
    }

    /// A peer answered this incarnation's `Hello` with its view.
    fn hello_ack(
        &mut self,
        cfg: &StorageConfig,
        from: NodeId,
        members: &Membership,
        out: &mut Out,
    ) {
        if self.hello_unacked.remove(&from) && self.hello_unacked.is_empty() {
            out.cancel_timer(KvsTimer::Hello);
        }
        // What a restarted node learns, it spreads: the view's creator may be the node that
        // crashed (this one) and never finished spreading it.
        self.adopt(cfg, members, Spread::Always, out);
    }

    /// A membership view from a peer (or a node introducing itself as a member): merged, and
    /// acknowledged with the merged view.
    fn ring_update(
        &mut self,
        cfg: &StorageConfig,
        from: NodeId,
        incarnation: u32,
        members: &Membership,
        out: &mut Out,
    ) {
        self.adopt(cfg, members, Spread::IfNew, out);
        self.observe(cfg, from, incarnation, out);
        let members = self.ring.membership().clone();
        out.send(from, KvsMsg::RingAck { incarnation: self.incarnation, members });
    }

    /// A peer acknowledged a view: merged, and the peer holds this view if the two are equal.
    fn ring_ack(
        &mut self,
        cfg: &StorageConfig,
        from: NodeId,
        incarnation: u32,
        members: &Membership,
        out: &mut Out,
    ) {
        self.adopt(cfg, members, Spread::IfNew, out);
        self.observe(cfg, from, incarnation, out);
        // After the merge this view covers theirs; they hold it if the two are equal.
        if members == self.ring.membership()
            && !cfg.has(Mutant::RingAcksIgnored)
            && self.ring_unacked.remove(&from)
            && self.ring_unacked.is_empty()
        {
            out.cancel_timer(KvsTimer::Ring);
            self.check_left(cfg, out);
        }
    }

    /// A request that this node leave the cluster: refused if its keys would have nowhere to
    /// go; otherwise answered once the ring without it is spread and its keys handed off.
    fn leave(&mut self, cfg: &StorageConfig, from: NodeId, req: ReqId, out: &mut Out) {
        let mut ring = self.ring.clone();
        let leaving = ring.leave(cfg.id);
        if leaving && ring.members().is_empty() {
            return out.send(from, KvsMsg::LeaveRefused { req });
        }
        self.leave_waiters.insert((from, req));
        if leaving {
            self.change_ring(cfg, ring, true, out);
        }
        self.check_left(cfg, out);
    }

    /// A cache acknowledged pushes: the keys it now holds (or never will) stop being pushed.
    fn push_ack(&mut self, from: NodeId, entries: BTreeMap<Key, LatticeValue>, out: &mut Out) {
        for (key, theirs) in entries {
            // A cache holding another type (keys outside the schema can differ between
            // replicas) will never hold this one: stop pushing it.
            let covered = self.store.get(&key).is_none_or(|mine| {
                mine.lattice_le(&theirs) || mine.lattice_type() != theirs.lattice_type()
            });
            if covered {
                self.subs.holds(from, &key);
            }
        }
        if self.subs.is_settled() {
            out.cancel_timer(KvsTimer::Push);
        }
    }

    /// The subscription lease ticks: subscribers that missed two renewals lapse.
    fn lease(&mut self, cfg: &StorageConfig, out: &mut Out) {
        if self.subs.tick(cfg.has(Mutant::KeepLapsedSubscribers))
            && let Some(period) = cfg.lease_period
        {
            out.set_timer(KvsTimer::Lease, period);
        }
    }

    fn redirect(&self, cfg: &StorageConfig, client: NodeId, req: ReqId, key: Key, out: &mut Out) {
        let owners = self.ring.responsible(&key, cfg.replication);
        out.send(client, KvsMsg::Redirect { req, key, epoch: self.ring.epoch(), owners });
    }

    fn get(&self, cfg: &StorageConfig, client: NodeId, req: ReqId, key: Key, out: &mut Out) {
        if !self.is_responsible(cfg, &key) {
            return self.redirect(cfg, client, req, key, out);
        }
        let mut value = self.store.get(&key).cloned();
        if value.is_none() && cfg.has(Mutant::MissingAsBottom) {
            value = cfg.declared_type(&key).map(LatticeValue::bottom);
        }
        out.send(client, KvsMsg::GetOk { req, value });
    }

    #[allow(clippy::too_many_arguments)] // The fields of one `Put` message.
    fn put(
        &mut self,
        cfg: &StorageConfig,
        client: NodeId,
        req: ReqId,
        key: Key,
        value: LatticeValue,
        durability: Durability,
        out: &mut Out,
    ) {
        if !self.is_responsible(cfg, &key) {
            return self.redirect(cfg, client, req, key, out);
        }
        match self.admit(cfg, (client, req), &key, &value) {
            Err(error) if !cfg.has(Mutant::AcceptMismatch) => {
                if cfg.has(Mutant::RollbackOnReject) {
                    self.store.remove(&key);
                    self.behind.remove(&key);
                }
                return out.send(client, KvsMsg::PutRejected { req, error });
            }
            Err(_) => return out.send(client, KvsMsg::PutOk { req }),
            Ok(()) => {}
        }
        let written = value.clone();
        let grew = match self.store.get_mut(&key) {
            None => {
                self.store.insert(key.clone(), value);
                true
            }
            Some(stored) => stored.merge(value).expect("admit checked the type"),
        };
        if grew {
            if !cfg.has(Mutant::AckBeforePersist) {
                self.persist(&key, out);
            }
            let was_behind = !self.behind.is_empty();
            self.mark_behind(cfg, &key);
            self.send_gossip_of(&key, out);
            self.arm_gossip(cfg, was_behind, out);
            self.push_grown(cfg, &key, out);
        }
        let put = PendingPut { durability, value: written, holders: BTreeSet::new() };
        self.pending.entry(key.clone()).or_default().insert((client, req), put);
        self.settle_keys(cfg, &[key], out);
    }

    /// Checks a put against the schema, the stored type and the bounds, before touching state.
    ///
    /// A put this node already took (a duplicate of a pending request) or whose value it
    /// already holds costs nothing, so the bounds do not apply: rejecting it would tell the
    /// client "it did not happen" about a write that did.
    fn admit(
        &self,
        cfg: &StorageConfig,
        request: (NodeId, ReqId),
        key: &str,
        value: &LatticeValue,
    ) -> Result<(), PutError> {
        let incoming = value.lattice_type();
        let stored =
            cfg.declared_type(key).or_else(|| self.store.get(key).map(LatticeValue::lattice_type));
        match stored {
            Some(stored) if stored != incoming => return Err(PutError::mismatch(stored, incoming)),
            _ => {}
        }
        let held = self.store.get(key).is_some_and(|stored| value.lattice_le(stored));
        let duplicate = self.pending.get(key).is_some_and(|puts| puts.contains_key(&request));
        if duplicate || held {
            return Ok(());
        }
        if !self.store.contains_key(key) && self.store.len() >= cfg.max_keys as usize {
            return Err(PutError::StoreFull { max_keys: cfg.max_keys });
        }
        if self.pending.values().map(BTreeMap::len).sum::<usize>() >= cfg.max_pending as usize {
            return Err(PutError::Overloaded);
        }
        Ok(())
    }

    fn gossip(
        &mut self,
        cfg: &StorageConfig,
        from: NodeId,
        incarnation: u32,
        entries: BTreeMap<Key, LatticeValue>,
        out: &mut Out,
    ) {
        // Values are real writes whatever the sender's incarnation, so they are always merged;
        // only a current incarnation's gossip also tells what the sender holds.
        let was_behind = !self.behind.is_empty();
        let current = self.observe(cfg, from, incarnation, out);
        let mut reply = BTreeMap::new();
        let mut grew = false;
        let touched: Vec<Key> = entries.keys().cloned().collect();
        for (key, theirs) in entries {
            if !self.is_responsible(cfg, &key) {
                out.ignore("gossip for a key this node does not own");
                continue;
            }
            match self.absorb(cfg, &key, theirs.clone()) {
                Err(_) => out.ignore("gossip of another lattice type"),
                Ok(key_grew) => {
                    if key_grew {
                        if !cfg.has(Mutant::GossipAckBeforePersist) {
                            self.persist(&key, out);
                        }
                        self.mark_behind(cfg, &key);
                        self.push_grown(cfg, &key, out);
                        grew = true;
                    }
                    if current && !cfg.has(Mutant::AcksNeverRecorded) {
                        self.note_holds(from, &key, &theirs);
                    }
                    reply.insert(key.clone(), self.store[&key].clone());
                }
            }
        }
        if !reply.is_empty() {
            out.send(from, KvsMsg::GossipAck { incarnation: self.incarnation, entries: reply });
        }
        if grew {
            self.arm_gossip(cfg, was_behind, out);
        }
        self.settle_keys(cfg, &touched, out);
        self.disarm_if_done(out);
    }

    /// Arms the gossip timer when replicas have just fallen behind. The timer is armed exactly
    /// while some replica is behind, and never pushed back: re-arming it on every put would
    /// postpone the re-sending of lost gossip for as long as writes keep coming.
    fn arm_gossip(&self, cfg: &StorageConfig, was_behind: bool, out: &mut Out) {
        if !was_behind && !self.behind.is_empty() {
            out.set_timer(KvsTimer::Gossip, cfg.gossip_period);
        }
    }

    /// Merges gossip into a key; returns whether it grew.
    fn absorb(
        &mut self,
        cfg: &StorageConfig,
        key: &str,
        theirs: LatticeValue,
    ) -> Result<bool, PutError> {
        if let Some(declared) = cfg.declared_type(key)
            && declared != theirs.lattice_type()
        {
            return Err(PutError::mismatch(declared, theirs.lattice_type()));
        }
        match self.store.get_mut(key) {
            None => {
                self.store.insert(key.to_owned(), theirs);
                Ok(true)
            }
            Some(mine) if cfg.has(Mutant::OverwriteMerge) => {
                let changed = *mine != theirs;
                *mine = theirs;
                Ok(changed)
            }
            Some(mine) => Ok(mine.merge(theirs)?),
        }
    }

    /// Records the latest incarnation of `peer`; returns whether `incarnation` is current. A
    /// newer incarnation means the peer restarted empty: everything it is responsible for is
    /// behind again.
    fn observe(
        &mut self,
        cfg: &StorageConfig,
        peer: NodeId,
        incarnation: u32,
        out: &mut Out,
    ) -> bool {
        let known = self.peers.get(&peer).copied().unwrap_or(1);
        if incarnation < known {
            out.ignore("message from an earlier incarnation");
            return false;
        }
        if incarnation > known {
            self.peers.insert(peer, incarnation);
            // What the peer held died with its previous incarnation.
            for put in self.pending.values_mut().flat_map(BTreeMap::values_mut) {
                put.holders.remove(&peer);
            }
            if !cfg.has(Mutant::IgnoreIncarnation) {
                let was_behind = !self.behind.is_empty();
                let keys: Vec<Key> = self.store.keys().cloned().collect();
                for key in keys {
                    if self.others(cfg, &key).contains(&peer) {
                        self.behind.add(key, peer);
                    }
                }
                // A fresh start: gossip to it from the first key, at once.
                self.lag.remove(&peer);
                self.arm_gossip(cfg, was_behind, out);
            }
        }
        true
    }

    /// Every other replica of `key` is behind its new value.
    fn mark_behind(&mut self, cfg: &StorageConfig, key: &str) {
        let others: BTreeSet<NodeId> = self.others(cfg, key).into_iter().collect();
        self.behind.set(key.to_owned(), others);
    }

    /// `peer` holds `theirs` for `key`: it is no longer behind if that covers this node's value,
    /// and it holds every pending put of the key whose value `theirs` covers.
    fn note_holds(&mut self, peer: NodeId, key: &str, theirs: &LatticeValue) {
        for put in self.pending.get_mut(key).into_iter().flat_map(BTreeMap::values_mut) {
            if put.value.lattice_le(theirs) {
                put.holders.insert(peer);
            }
        }
        let covered = self.store.get(key).is_some_and(|mine| mine.lattice_le(theirs));
        if covered {
            self.behind.clear(key, peer);
        }
    }

    /// How many replicas are known to hold this node's value of `key`, this node included.
    fn holders(&self, cfg: &StorageConfig, key: &str) -> usize {
        let lagging = self.behind.get(key).map_or(0, BTreeSet::len);
        let replicas = self.ring.responsible(key, cfg.replication).len();
        replicas.saturating_sub(lagging).max(1)
    }

    /// Acknowledges every pending put now held by enough replicas.
    fn settle(&mut self, cfg: &StorageConfig, out: &mut Out) {
        let keys: Vec<Key> = self.pending.keys().cloned().collect();
        self.settle_keys(cfg, &keys, out);
    }

    /// Acknowledges the pending puts of `keys` now held by enough replicas. An input changes
    /// what replicas are known to hold only for the keys it carries (a restarted peer only
    /// takes holders away), so handlers settle just those; ring changes settle every key.
    fn settle_keys(&mut self, cfg: &StorageConfig, keys: &[Key], out: &mut Out) {
        for key in keys {
            let Some(puts) = self.pending.get(key) else { continue };
            let responsible = self.ring.responsible(key, cfg.replication);
            let replicas = responsible.len();
            let others = self.others(cfg, key);
            let latest = self.holders(cfg, key);
            // This node holds every put it took, but counts only while it is a replica.
            let own = usize::from(responsible.contains(&cfg.id));
            let done: Vec<(NodeId, ReqId)> = puts
                .iter()
                .filter(|(_, put)| {
                    let needed = if cfg.has(Mutant::AckBeforeReplicas) {
                        1
                    } else {
                        put.durability.replicas_needed(replicas)
                    };
                    let known = own + put.holders.iter().filter(|n| others.contains(n)).count();
                    latest.max(known) >= needed
                })
                .map(|(id, _)| *id)
                .collect();
            if done.is_empty() {
                continue;
            }
            let puts = self.pending.get_mut(key).expect("present");
            for id in &done {
                puts.remove(id);
            }
            if puts.is_empty() {
                self.pending.remove(key);
            }
            for (client, req) in done {
                out.send(client, KvsMsg::PutOk { req });
            }
        }
    }

    /// Sends the new value of `key` at once to its lagging replicas, so a waiting put is not
    /// delayed by a timer period — except to replicas that acknowledged none of the last
    /// batches (see [`StorageConfig::gossip_backoff`]).
    fn send_gossip_of(&self, key: &str, out: &mut Out) {
        let Some(value) = self.store.get(key) else { return };
        let silent = |peer: &&NodeId| self.lag.get(peer).is_some_and(|lag| lag.silent > 0);
        for peer in self.behind.get(key).into_iter().flatten().filter(|p| !silent(p)) {
            let entries = BTreeMap::from([(key.to_owned(), value.clone())]);
            out.send(*peer, KvsMsg::Gossip { incarnation: self.incarnation, entries });
        }
    }

    /// Persists `key`'s value (grown just now) before anything sent after it.
    fn persist(&self, key: &str, out: &mut Out) {
        out.persist(Stored::value(key, &self.store[key]));
    }

    /// The gossip tick: each replica that is behind and due gets a batch of the keys it lags
    /// on; one that acknowledged none since its last batch waits twice as long before the
    /// next, up to `gossip_backoff` ticks. Re-arms the timer.
    fn gossip_tick(&mut self, cfg: &StorageConfig, out: &mut Out) {
        if cfg.has(Mutant::AckBeforePersist) || cfg.has(Mutant::GossipAckBeforePersist) {
            // The defective node writes behind: what it took reaches the disk only here.
            out.persist(Stored { incarnation: 0, data: self.store.clone() });
        }
        if self.behind.is_empty() {
            return out.ignore("gossip timer with every replica up to date");
        }
        let peers: Vec<NodeId> = self.behind.peers().collect();
        for peer in peers {
            let lag = self.lag.entry(peer).or_default();
            if lag.wait > 0 {
                lag.wait -= 1;
                continue;
            }
            if lag.unanswered {
                lag.silent = lag.silent.saturating_add(1);
                let gap = 1u32.checked_shl(lag.silent).unwrap_or(u32::MAX);
                lag.wait = gap.min(cfg.gossip_backoff).saturating_sub(1);
            }
            self.send_batch(cfg, peer, out);
        }
        let behind = &self.behind;
        self.lag.retain(|peer, _| behind.lags(*peer));
        out.set_timer(KvsTimer::Gossip, cfg.gossip_period);
    }

    /// Sends every lagging replica a batch now (a ring change), whatever its backoff, and
    /// re-arms the timer.
    fn gossip_now(&mut self, cfg: &StorageConfig, out: &mut Out) {
        let peers: Vec<NodeId> = self.behind.peers().collect();
        for peer in peers {
            self.send_batch(cfg, peer, out);
        }
        out.set_timer(KvsTimer::Gossip, cfg.gossip_period);
    }

    /// Sends `peer` the next batch of the keys it lags on: at most `gossip_batch` keys and,
    /// beyond the first, `gossip_batch_bytes` of keys and payloads. A silent replica gets a
    /// probe instead, a batch of one key: what a paused replica has not read piles up in its
    /// connections, and it should find probes there when it resumes, not the store many times
    /// over (its acknowledgement of a probe brings the next full batch at once).
    fn send_batch(&mut self, cfg: &StorageConfig, peer: NodeId, out: &mut Out) {
        let lag = self.lag.get(&peer);
        let after = lag.and_then(|lag| lag.after.clone());
        let silent = lag.is_some_and(|lag| lag.silent > 0);
        let batch = if silent { 1 } else { cfg.gossip_batch.max(1) };
        let (mut keys, mut next) =
            self.behind.batch(peer, after.as_ref(), batch, batch.saturating_mul(4));
        let mut bytes = 0;
        let over = keys.iter().position(|key| {
            bytes += key.len() + self.store[key].payload_len();
            bytes > cfg.gossip_batch_bytes
        });
        if let Some(cut) = over.map(|cut| cut.max(1)).filter(|cut| *cut < keys.len()) {
            keys.truncate(cut);
            next = keys.last().cloned();
        }
        let lag = self.lag.entry(peer).or_default();
        lag.awaiting = next.as_ref().and(keys.last().cloned());
        lag.after = next;
        lag.unanswered = cfg.gossip_backoff > 1;
        if *lag == Lag::default() {
            self.lag.remove(&peer);
        }
        if keys.is_empty() {
            return;
        }
        let entries = keys.into_iter().map(|key| (key.clone(), self.store[&key].clone())).collect();
        out.send(peer, KvsMsg::Gossip { incarnation: self.incarnation, entries });
    }

    /// `peer` acknowledged gossip of `acked` (sorted): it is not silent; if that answers a
    /// batch that stopped part way, the next batch goes at once.
    fn answered(&mut self, cfg: &StorageConfig, peer: NodeId, acked: &[Key], out: &mut Out) {
        let Some(lag) = self.lag.get_mut(&peer) else { return };
        let continues = lag.awaiting.as_ref().is_some_and(|key| acked.binary_search(key).is_ok());
        lag.unanswered = false;
        lag.silent = 0;
        lag.wait = 0;
        if continues {
            lag.awaiting = None;
            if self.behind.lags(peer) {
                self.send_batch(cfg, peer, out);
            }
        }
        if self.lag.get(&peer) == Some(&Lag::default()) {
            self.lag.remove(&peer);
        }
    }

    /// Merges a peer's membership view into this node's; see [`Self::change_ring`].
    ///
    /// Every view is spread by the node that created it: the node where a join, leave or
    /// departure happened, or where a merge produced a view no peer sent. A view received
    /// whole is already being spread by its creator, which re-sends it until every peer has
    /// acknowledged it, so passing it on again would only multiply messages.
    fn adopt(&mut self, cfg: &StorageConfig, members: &Membership, spread: Spread, out: &mut Out) {
        if self.ring.covers(members) {
            return;
        }
        let mut ring = self.ring.clone();
        ring.merge(members);
        let created = ring.membership() != members;
        self.change_ring(cfg, ring, created || spread == Spread::Always, out);
    }

    /// Moves to a grown membership view, telling every peer if `announce`, and hands each
    /// stored key to the replicas the new ring gives it. A new replica of a key is behind
    /// until it acknowledges this node's value; a key this node no longer owns is deleted only
    /// once every new replica has acknowledged it.
    fn change_ring(&mut self, cfg: &StorageConfig, ring: Ring, announce: bool, out: &mut Out) {
        let old = std::mem::replace(&mut self.ring, ring);
        for node in self.ring.membership().keys() {
            if *node != cfg.id {
                self.peers.entry(*node).or_insert(1);
            }
        }
        if announce {
            self.ring_unacked = self.ring_peers(cfg).collect();
            self.send_ring(cfg, out);
        } else {
            let ring = &self.ring;
            self.ring_unacked.retain(|peer| ring.status(*peer) != Some(Status::Left));
            if self.ring_unacked.is_empty() {
                out.cancel_timer(KvsTimer::Ring);
            }
        }
        let keys: Vec<Key> = self.store.keys().cloned().collect();
        for key in keys {
            let before: BTreeSet<NodeId> = others_in(&old, cfg, &key).into_iter().collect();
            let after: BTreeSet<NodeId> = self.others(cfg, &key).into_iter().collect();
            let mut lagging = self.behind.remove(&key).unwrap_or_default();
            lagging.retain(|n| after.contains(n));
            if !cfg.has(Mutant::ForgetNewOwner) {
                lagging.extend(after.difference(&before));
            }
            self.behind.set(key, lagging);
        }
        // A replica that is new for a key may have held it before, handed it off and deleted
        // it: what it said it held no longer counts for pending puts, as it is behind again.
        for (key, puts) in &mut self.pending {
            let before: BTreeSet<NodeId> = others_in(&old, cfg, key).into_iter().collect();
            let after = others_in(&self.ring, cfg, key);
            for put in puts.values_mut() {
                put.holders.retain(|n| before.contains(n) || !after.contains(n));
            }
        }
        if !self.behind.is_empty() {
            self.gossip_now(cfg, out);
        }
        if cfg.has(Mutant::DeleteBeforeHandoffAck) {
            let id = cfg.id;
            let ring = &self.ring;
            self.store.retain(|key, _| ring.is_responsible(id, key, cfg.replication));
            self.behind.retain_keys(|key| ring.is_responsible(id, key, cfg.replication));
        }
        self.settle(cfg, out);
        self.release_handed_off(cfg);
        // Caches subscribed to keys that moved away learn the view, and subscribe at the
        // keys' new replicas.
        let (id, ring) = (cfg.id, &self.ring);
        let moved = self.subs.retain_keys(|key| ring.is_responsible(id, key, cfg.replication));
        for cache in moved {
            let members = self.ring.membership().clone();
            out.send(cache, KvsMsg::RingUpdate { incarnation: self.incarnation, members });
        }
        self.check_left(cfg, out);
        self.disarm_if_done(out);
    }

    /// Subscribes `cache` to the keys this node owns among `keys` (renewing those it has), and
    /// pushes the value of each new one, or of every one for a fetch (of epoch `fetch`, noted
    /// per key: every later push of the key carries it).
    fn subscribe(
        &mut self,
        cfg: &StorageConfig,
        cache: NodeId,
        keys: BTreeSet<Key>,
        fetch: Option<u64>,
        out: &mut Out,
    ) {
        let had_subscriptions = !self.subs.is_empty();
        let was_settled = self.subs.is_settled();
        let mut entries = BTreeMap::new();
        let mut misrouted = false;
        for key in keys {
            if !self.is_responsible(cfg, &key) {
                misrouted = true;
                continue;
            }
            let new = self.subs.subscribe(cache, &key, fetch);
            if !new && fetch.is_none() && cfg.has(Mutant::RenewalClearsPushes) {
                self.subs.holds(cache, &key);
            }
            if new || fetch.is_some() {
                let value = self.store.get(&key).cloned();
                if value.is_some() {
                    self.subs.mark_behind(cache, &key);
                }
                entries.insert(key, value);
            }
        }
        if !entries.is_empty() {
            let incarnation = self.subs.incarnation(cache);
            let epochs = self.subs.epochs(cache, entries.keys());
            out.send(cache, KvsMsg::Push { incarnation, entries, epochs });
        }
        if misrouted {
            // The cache routes by an older view: send it ours.
            let members = self.ring.membership().clone();
            out.send(cache, KvsMsg::RingUpdate { incarnation: self.incarnation, members });
        }
        if was_settled && !self.subs.is_settled() {
            out.set_timer(KvsTimer::Push, cfg.push_period);
        }
        if !had_subscriptions
            && !self.subs.is_empty()
            && let Some(period) = cfg.lease_period
        {
            out.set_timer(KvsTimer::Lease, period);
        }
    }

    /// Marks every subscriber of `key` behind its new value. Pushes go out batched on the
    /// `Push` timer (`push_period`, a few milliseconds): one message per cache carries every
    /// key that grew meanwhile, and the same timer re-sends what is not acknowledged.
    fn push_grown(&mut self, cfg: &StorageConfig, key: &str, out: &mut Out) {
        let was_settled = self.subs.is_settled();
        let caches = self.subs.grew(key);
        // Armed only when pushes start waiting: re-arming on every growth would postpone
        // the flush for as long as writes keep coming.
        if was_settled && !caches.is_empty() {
            out.set_timer(KvsTimer::Push, cfg.push_period);
        }
    }

    /// Sends every unacknowledged push, one batch per cache, and re-arms.
    fn send_pushes(&self, cfg: &StorageConfig, out: &mut Out) {
        let batches = self.subs.behind_by_cache();
        if batches.is_empty() {
            return out.ignore("push timer with every cache up to date");
        }
        for (cache, keys) in batches {
            let incarnation = self.subs.incarnation(cache);
            let epochs = self.subs.epochs(cache, &keys);
            let entries = keys.iter().map(|k| (k.clone(), self.store.get(k).cloned())).collect();
            out.send(cache, KvsMsg::Push { incarnation, entries, epochs });
        }
        out.set_timer(KvsTimer::Push, cfg.push_period);
    }

    /// Deletes the keys this node no longer owns once every new replica holds its value.
    ///
    /// After it runs, every key the node holds but does not own is behind at some replica;
    /// that stays true between ring changes (gossip and puts only add keys the node owns), so
    /// later only keys that stop being behind need a look ([`Self::release_handed_off_among`]).
    fn release_handed_off(&mut self, cfg: &StorageConfig) {
        if cfg.has(Mutant::KeepHandedOff) {
            return;
        }
        let (id, ring, behind) = (cfg.id, &self.ring, &self.behind);
        self.store.retain(|key, _| {
            let owners = ring.responsible(key, cfg.replication);
            // With no owner at all (the last member is leaving) the key stays put.
            let owned = owners.contains(&id) && !cfg.has(Mutant::ReleaseOwnedKeys);
            owned || owners.is_empty() || behind.contains_key(key)
        });
    }

    /// [`Self::release_handed_off`] restricted to `keys`.
    fn release_handed_off_among(&mut self, cfg: &StorageConfig, keys: &[Key]) {
        if cfg.has(Mutant::KeepHandedOff) {
            return;
        }
        for key in keys {
            if self.behind.contains_key(key) || !self.store.contains_key(key) {
                continue;
            }
            let owners = self.ring.responsible(key, cfg.replication);
            let owned = owners.contains(&cfg.id) && !cfg.has(Mutant::ReleaseOwnedKeys);
            if !owned && !owners.is_empty() {
                self.store.remove(key);
            }
        }
    }

    /// A leaving node leaves once it holds nothing and waits for nothing; it answers its
    /// `Leave` requests once every peer knows.
    fn check_left(&mut self, cfg: &StorageConfig, out: &mut Out) {
        if self.ring.status(cfg.id) == Some(Status::Leaving)
            && self.store.is_empty()
            && self.pending.is_empty()
        {
            let mut ring = self.ring.clone();
            ring.depart(cfg.id);
            return self.change_ring(cfg, ring, !cfg.has(Mutant::SilentDeparture), out);
        }
        if self.has_left(cfg) {
            for (operator, req) in std::mem::take(&mut self.leave_waiters) {
                out.send(operator, KvsMsg::LeaveOk { req });
            }
        }
    }

    /// Sends this node's membership view to every peer that has not acknowledged it.
    fn send_ring(&self, cfg: &StorageConfig, out: &mut Out) {
        if self.ring_unacked.is_empty() {
            return;
        }
        for peer in &self.ring_unacked {
            let members = self.ring.membership().clone();
            out.send(*peer, KvsMsg::RingUpdate { incarnation: self.incarnation, members });
        }
        out.set_timer(KvsTimer::Ring, cfg.ring_period);
    }

    fn say_hello(&self, cfg: &StorageConfig, out: &mut Out) {
        if self.hello_unacked.is_empty() {
            return;
        }
        for peer in &self.hello_unacked {
            out.send(*peer, KvsMsg::Hello { incarnation: self.incarnation });
        }
        out.set_timer(KvsTimer::Hello, cfg.hello_period);
    }

    fn disarm_if_done(&mut self, out: &mut Out) {
        if self.behind.is_empty() {
            self.lag.clear();
            out.cancel_timer(KvsTimer::Gossip);
        }
    }

    /// See [`Node::check_step`].
    fn monotone(cfg: &StorageConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        for (key, old) in &before.store {
            match after.store.get(key) {
                Some(new) if old.lattice_le(new) => {}
                None if !after.ring.is_responsible(cfg.id, key, cfg.replication) => {}
                new => {
                    return Err(Violation {
                        id: super::invariants::MONOTONE,
                        detail: format!("{key}: {old:?} became {new:?}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// When a node passes on a membership view it merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spread {
    /// Only if the merge created a view the peer did not send.
    IfNew,
    /// Whenever the view grew.
    Always,
}

/// The replicas of `key` under `ring` other than this node.
fn others_in(ring: &Ring, cfg: &StorageConfig, key: &str) -> Vec<NodeId> {
    let mut others = ring.responsible(key, cfg.replication);
    others.retain(|n| *n != cfg.id);
    if cfg.has(Mutant::GossipSkipsReplica) {
        others.pop();
    }
    others
}

seeded_defects!(StorageConfig, Mutant);

impl Node for StorageNode {
    type Config = StorageConfig;
    type Msg = KvsMsg;
    type Timer = KvsTimer;
    /// The node's incarnation and values.
    type Durable = Stored;

    /// Starts (or restarts, with what it persisted) a node: a restarted node comes back with
    /// the values it persisted, gossips them to their replicas, and says `Hello` to its peers
    /// so they send it what it missed.
    ///
    /// A node configured to join adds itself to its ring and sends the new view to every peer;
    /// the peers then hand it the keys it now owns.
    fn init(cfg: &StorageConfig, persisted: &Stored, out: &mut Out) -> Self {
        Self::start(cfg, persisted, out)
    }

    fn handle(&mut self, cfg: &StorageConfig, input: Input<Self>, out: &mut Out) {
        self.step(cfg, input, out);
    }

    /// KVS-I3: within one incarnation, no value shrinks, and no key disappears from a node
    /// that still owns it.
    fn check_step(cfg: &StorageConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        Self::monotone(cfg, before, after)
    }

    /// No replica behind, no `Hello` or membership view unacknowledged, no put waiting, no
    /// `Leave` request unanswered, no push unacknowledged.
    fn is_idle(&self, _: &StorageConfig) -> bool {
        self.is_idle()
    }
}
