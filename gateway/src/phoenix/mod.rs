//! The Phoenix channels protocol as Supabase Realtime speaks it (realtime-js 2.x).
