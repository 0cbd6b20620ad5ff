//! postgres_changes: the bindings a channel asks for ([`binding`]), their column filters
//! ([`filter`]), the table feeds that read the change log and fan changes out ([`feed`]), and
//! the batched Row Level Security checks ([`rls`]) and their fast path for owner policies
//! ([`owner_rule`]).

pub mod binding;
pub mod feed;
pub mod filter;
pub mod owner_rule;
pub mod rls;
