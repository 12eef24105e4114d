//! DAGs of functions: validated once, with what each function's successors may read.

use std::collections::BTreeSet;

use crate::base::Key;

/// A function's index in its DAG.
pub type FnId = u32;

/// One function of a DAG: the keys it reads and the functions it triggers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Function {
    /// Its name, for traces and errors.
    pub name: String,
    /// The keys it reads, each once, all before it finishes.
    pub reads: Vec<Key>,
    /// The functions it triggers when it finishes.
    pub next: Vec<FnId>,
}

impl Function {
    /// A function `name` reading `reads` and triggering `next`.
    pub fn new(name: &str, reads: &[&str], next: &[FnId]) -> Self {
        Self {
            name: name.to_owned(),
            reads: reads.iter().map(|k| (*k).to_owned()).collect(),
            next: next.to_vec(),
        }
    }
}

/// Why a DAG was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// It has no function.
    #[error("a DAG needs at least one function")]
    Empty,
    /// A function triggers one that does not exist.
    #[error("function `{function}` triggers function {next}, but the DAG has {len} functions")]
    UnknownSuccessor {
        /// The function.
        function: String,
        /// The missing successor.
        next: FnId,
        /// How many functions the DAG has.
        len: usize,
    },
    /// Following triggers from a function leads back to it.
    #[error("the DAG has a cycle through function `{function}`")]
    Cyclic {
        /// A function on the cycle.
        function: String,
    },
    /// It has more than one function without successors: the result must come from one sink.
    #[error("a DAG needs exactly one sink (a function triggering nothing); it has {sinks:?}")]
    Sinks {
        /// The functions without successors.
        sinks: Vec<String>,
    },
}

/// A validated DAG: acyclic, one sink, every successor known. Serialized as its list of
/// functions, and validated again when read back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "Vec<Function>", try_from = "Vec<Function>")
)]
pub struct Dag {
    functions: Vec<Function>,
    preds: Vec<BTreeSet<FnId>>,
    /// For each function, its transitive successors.
    below: Vec<BTreeSet<FnId>>,
    sink: FnId,
}

impl From<Dag> for Vec<Function> {
    fn from(dag: Dag) -> Self {
        dag.functions
    }
}

impl TryFrom<Vec<Function>> for Dag {
    type Error = DagError;

    fn try_from(functions: Vec<Function>) -> Result<Self, DagError> {
        Dag::new(functions)
    }
}

impl Dag {
    /// Validates `functions` (indexed by [`FnId`]) as a DAG.
    pub fn new(functions: Vec<Function>) -> Result<Self, DagError> {
        let len = functions.len();
        if len == 0 {
            return Err(DagError::Empty);
        }
        let mut preds = vec![BTreeSet::new(); len];
        for (id, function) in functions.iter().enumerate() {
            for &next in &function.next {
                let slot = preds.get_mut(next as usize).ok_or_else(|| {
                    DagError::UnknownSuccessor { function: function.name.clone(), next, len }
                })?;
                slot.insert(id as FnId);
            }
        }
        // Kahn's algorithm: whatever is never freed of predecessors lies on a cycle.
        let mut waiting: Vec<usize> = preds.iter().map(BTreeSet::len).collect();
        let mut ready: Vec<usize> = (0..len).filter(|&f| waiting[f] == 0).collect();
        let mut order = Vec::with_capacity(len);
        while let Some(f) = ready.pop() {
            order.push(f);
            for &next in &functions[f].next {
                waiting[next as usize] -= 1;
                if waiting[next as usize] == 0 {
                    ready.push(next as usize);
                }
            }
        }
        if let Some(f) = (0..len).find(|&f| waiting[f] > 0) {
            return Err(DagError::Cyclic { function: functions[f].name.clone() });
        }
        let sinks: Vec<usize> = (0..len).filter(|&f| functions[f].next.is_empty()).collect();
        let [sink] = sinks[..] else {
            let sinks = sinks.iter().map(|&f| functions[f].name.clone()).collect();
            return Err(DagError::Sinks { sinks });
        };
        let mut below = vec![BTreeSet::new(); len];
        for &f in order.iter().rev() {
            let mut reach = BTreeSet::new();
            for &next in &functions[f].next {
                reach.insert(next);
                reach.extend(below[next as usize].iter().copied());
            }
            below[f] = reach;
        }
        Ok(Self { functions, preds, below, sink: sink as FnId })
    }

    /// A chain `f0 → f1 → …`, function *i* reading `reads[i]`.
    pub fn chain(reads: &[&[&str]]) -> Result<Self, DagError> {
        let len = reads.len() as FnId;
        let functions = reads
            .iter()
            .enumerate()
            .map(|(i, keys)| {
                let i = i as FnId;
                let next: Vec<FnId> = if i + 1 < len { vec![i + 1] } else { vec![] };
                Function::new(&format!("f{i}"), keys, &next)
            })
            .collect();
        Self::new(functions)
    }

    /// The functions, by id.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// Function `id` (which must exist).
    pub fn function(&self, id: FnId) -> &Function {
        &self.functions[id as usize]
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Always false: a DAG has at least one function.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The functions that trigger `id`.
    pub fn preds(&self, id: FnId) -> &BTreeSet<FnId> {
        &self.preds[id as usize]
    }

    /// The functions nothing triggers.
    pub fn sources(&self) -> impl Iterator<Item = FnId> + '_ {
        (0..self.len() as FnId).filter(|&f| self.preds(f).is_empty())
    }

    /// The function triggering nothing, whose output is the result.
    pub fn sink(&self) -> FnId {
        self.sink
    }

    /// Whether `upstream` runs before `downstream` on every execution (a path leads there).
    pub fn precedes(&self, upstream: FnId, downstream: FnId) -> bool {
        self.below[upstream as usize].contains(&downstream)
    }

    /// The keys some function after `id` may read: only these need pinning.
    pub fn future_reads(&self, id: FnId) -> BTreeSet<&Key> {
        self.below[id as usize].iter().flat_map(|&f| &self.function(f).reads).collect()
    }
}
