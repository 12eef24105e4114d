//! The specification pages of `docs/`, compiled with the code.
//!
//! Each submodule is one page. Rust code blocks in them are doc-tested.

#[doc = include_str!("../../docs/architecture.md")]
pub mod architecture {}

#[doc = include_str!("../../docs/glossary.md")]
pub mod glossary {}

#[doc = include_str!("../../docs/protocols/lattices.md")]
pub mod lattices {}

#[doc = include_str!("../../docs/protocols/gossip.md")]
pub mod gossip {}

#[doc = include_str!("../../docs/protocols/kvs.md")]
pub mod kvs {}

#[doc = include_str!("../../docs/protocols/cache.md")]
pub mod cache {}

#[doc = include_str!("../../docs/cards.md")]
pub mod cards {}

#[doc = include_str!("../../docs/wire.md")]
pub mod wire {}

#[doc = include_str!("../../docs/conformance.md")]
pub mod conformance {}

#[doc = include_str!("../../docs/invariants.md")]
pub mod invariants {}

#[doc = include_str!("../../docs/verification.md")]
pub mod verification {}

#[doc = include_str!("../../docs/protocols/session.md")]
pub mod session {}

#[doc = include_str!("../../docs/consistency.md")]
pub mod consistency {}
