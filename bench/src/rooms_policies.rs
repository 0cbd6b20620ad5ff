//! The authorization Supabase's docs teach for private channels ("Broadcast and Presence
//! Authorization"): a `public.rooms_users` table of (user, topic) memberships and two policies
//! on `realtime.messages`, a SELECT policy to receive and an INSERT policy to send and track,
//! each an `exists` over `rooms_users` for `auth.uid()` and `realtime.topic()`. The policies are
//! the docs' text verbatim, so the scenarios measure what a Supabase app's join costs; the
//! table gets an index on (user_id, topic), as any app with more than a few rooms has.
//!
//! Users are numbered; user `n`'s id is a UUID (`auth.uid()` casts the token's `sub` to one).

use realtime_tests::token;
use serde_json::json;

/// User `n`'s id: `00000000-0000-4000-8000-<n, 12 digits>`.
pub fn user_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A token of user `n` (role `authenticated`).
pub fn user_token(n: usize) -> String {
    token(json!({"role": "authenticated", "sub": user_id(n)}))
}

/// Creates `public.rooms_users` and the docs' two policies on `realtime.messages`.
pub async fn install(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    db.batch_execute(
        r#"create table public.rooms_users (user_id uuid, topic text);
           create index on public.rooms_users (user_id, topic);
           grant select on public.rooms_users to authenticated;
           create policy "authenticated can read broadcast and presence state"
             on realtime.messages
             for select
             to authenticated
             using (
               exists (
                 select
                   user_id
                 from
                   rooms_users
                 where
                   user_id = (select auth.uid())
                   and topic = (select realtime.topic())
                   and realtime.messages.extension in ('broadcast', 'presence')
               )
             );
           create policy "authenticated can send broadcast and presence state"
             on realtime.messages
             for insert
             to authenticated
             with check (
               exists (
                 select
                   user_id
                 from
                   rooms_users
                 where
                   user_id = (select auth.uid())
                   and topic = (select realtime.topic())
                   and realtime.messages.extension in ('broadcast', 'presence')
               )
             );"#,
    )
    .await?;
    Ok(())
}

/// Makes each user a member of its topic: `(user number, topic)` pairs.
pub async fn add_members(
    db: &tokio_postgres::Client,
    members: impl IntoIterator<Item = (usize, String)>,
) -> anyhow::Result<()> {
    let (users, topics): (Vec<String>, Vec<String>) = members
        .into_iter()
        .map(|(user, topic)| (user_id(user), topic))
        .unzip();
    db.execute(
        "INSERT INTO public.rooms_users (user_id, topic)
         SELECT user_id::uuid, topic FROM unnest($1::text[], $2::text[]) AS m (user_id, topic)",
        &[&users, &topics],
    )
    .await?;
    db.batch_execute("ANALYZE public.rooms_users").await?;
    Ok(())
}
