//! postgres_changes: the bindings a channel asks for ([`binding`]), their column filters
//! ([`filter`]), the table feeds that read the change log and fan changes out ([`feed`]), and
//! the batched Row Level Security checks ([`rls`]).

pub mod binding;
pub mod feed;
pub mod filter;
pub mod rls;
