//! postgres_changes: bindings, filters, the table feeds from the change log, and RLS checks.
