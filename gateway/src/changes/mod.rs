//! postgres_changes: the bindings a channel asks for ([`binding`]) and their column filters
//! ([`filter`], comparing typed values with [`compare`]); the table feeds that read the change
//! log ([`feed`]) for the channels' [`subscription`]s and run each batch through its stages
//! ([`batch`]: the slim [`header`] of each change, table facts, candidates, the batched Row
//! Level Security checks of [`rls`] with the [`owner_index`] fast path for owner policies
//! ([`owner_rule`]), and frames).

pub mod batch;
pub mod binding;
pub mod compare;
pub mod feed;
pub mod filter;
#[cfg(test)]
mod fixtures;
pub mod header;
pub mod owner_index;
pub mod owner_rule;
pub mod rls;
pub mod subscription;
