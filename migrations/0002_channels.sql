-- Channels and their members, with the Row Level Security that decides who may join a channel
-- (the gateway asks `SELECT ... FROM realtime.channels WHERE slug = $1` under the user's
-- claims), and realtime.user_id() for policies written in either claim style.
-- Idempotent: every statement may run again on a database that already has it.

-- The user id of the current session's claims: Supabase style (request.jwt.claim.sub or the
-- sub of request.jwt.claims) or Hasura/nself style (hasura.user.id, hasura.user's
-- x-hasura-user-id). NULL when the session has none; never raises on missing settings.
CREATE OR REPLACE FUNCTION realtime.user_id() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', ''),
        nullif(current_setting('hasura.user.id', true), ''),
        nullif(nullif(current_setting('hasura.user', true), '')::jsonb ->> 'x-hasura-user-id', '')
    )
$$;

GRANT EXECUTE ON FUNCTION realtime.user_id() TO anon, authenticated, service_role;

CREATE TABLE IF NOT EXISTS realtime.channels (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL,
    slug             text NOT NULL UNIQUE
                     CHECK (length(slug) BETWEEN 1 AND 255),
    type             text NOT NULL DEFAULT 'public'
                     CHECK (type IN ('public', 'private', 'presence', 'direct')),
    max_members      integer CHECK (max_members IS NULL OR max_members > 0),
    persist_messages boolean NOT NULL DEFAULT false,
    metadata         jsonb NOT NULL DEFAULT '{}',
    tenant_id        uuid,
    created_by       text DEFAULT realtime.user_id(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS realtime.channel_members (
    channel_id uuid NOT NULL REFERENCES realtime.channels (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    role       text NOT NULL DEFAULT 'member'
               CHECK (role IN ('owner', 'admin', 'moderator', 'member', 'guest')),
    can_send   boolean NOT NULL DEFAULT true,
    joined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);

CREATE INDEX IF NOT EXISTS channel_members_user ON realtime.channel_members (user_id);

-- Membership tests for policies. SECURITY DEFINER (owned by the migrating role) so that a
-- policy on channel_members can ask about channel_members without recursing into itself.
CREATE OR REPLACE FUNCTION realtime.is_member(channel uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
    SELECT EXISTS (
        SELECT 1 FROM realtime.channel_members m
        WHERE m.channel_id = channel AND m.user_id = realtime.user_id()
    )
$$;

CREATE OR REPLACE FUNCTION realtime.is_channel_admin(channel uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
    SELECT EXISTS (
        SELECT 1 FROM realtime.channel_members m
        WHERE m.channel_id = channel AND m.user_id = realtime.user_id()
          AND m.role IN ('owner', 'admin')
    )
$$;

REVOKE ALL ON FUNCTION realtime.is_member(uuid), realtime.is_channel_admin(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.is_member(uuid), realtime.is_channel_admin(uuid)
    TO anon, authenticated, service_role;

ALTER TABLE realtime.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.channel_members ENABLE ROW LEVEL SECURITY;

GRANT SELECT ON realtime.channels, realtime.channel_members TO anon, authenticated;
GRANT INSERT, UPDATE, DELETE ON realtime.channels, realtime.channel_members TO authenticated;
GRANT ALL ON realtime.channels, realtime.channel_members TO service_role;

-- Who sees a channel (and so may join it): public and presence channels, everyone with a
-- token; private and direct channels, their members; service_role, everything.
DROP POLICY IF EXISTS channels_public ON realtime.channels;
CREATE POLICY channels_public ON realtime.channels FOR SELECT TO anon, authenticated
    USING (type IN ('public', 'presence'));

DROP POLICY IF EXISTS channels_member ON realtime.channels;
CREATE POLICY channels_member ON realtime.channels FOR SELECT TO authenticated
    USING (realtime.is_member(id));

DROP POLICY IF EXISTS channels_service ON realtime.channels;
CREATE POLICY channels_service ON realtime.channels FOR ALL TO service_role
    USING (true) WITH CHECK (true);

-- Authenticated users may create channels (as themselves), and owners/admins manage them.
DROP POLICY IF EXISTS channels_create ON realtime.channels;
CREATE POLICY channels_create ON realtime.channels FOR INSERT TO authenticated
    WITH CHECK (created_by = realtime.user_id());

DROP POLICY IF EXISTS channels_manage ON realtime.channels;
CREATE POLICY channels_manage ON realtime.channels FOR UPDATE TO authenticated
    USING (realtime.is_channel_admin(id) OR created_by = realtime.user_id());

DROP POLICY IF EXISTS channels_remove ON realtime.channels;
CREATE POLICY channels_remove ON realtime.channels FOR DELETE TO authenticated
    USING (realtime.is_channel_admin(id) OR created_by = realtime.user_id());

-- Members see the members of their channels; owners and admins manage them; anyone may leave.
DROP POLICY IF EXISTS channel_members_see ON realtime.channel_members;
CREATE POLICY channel_members_see ON realtime.channel_members FOR SELECT TO authenticated
    USING (user_id = realtime.user_id() OR realtime.is_member(channel_id));

DROP POLICY IF EXISTS channel_members_add ON realtime.channel_members;
CREATE POLICY channel_members_add ON realtime.channel_members FOR INSERT TO authenticated
    WITH CHECK (realtime.is_channel_admin(channel_id));

DROP POLICY IF EXISTS channel_members_change ON realtime.channel_members;
CREATE POLICY channel_members_change ON realtime.channel_members FOR UPDATE TO authenticated
    USING (realtime.is_channel_admin(channel_id));

DROP POLICY IF EXISTS channel_members_remove ON realtime.channel_members;
CREATE POLICY channel_members_remove ON realtime.channel_members FOR DELETE TO authenticated
    USING (user_id = realtime.user_id() OR realtime.is_channel_admin(channel_id));

DROP POLICY IF EXISTS channel_members_service ON realtime.channel_members;
CREATE POLICY channel_members_service ON realtime.channel_members FOR ALL TO service_role
    USING (true) WITH CHECK (true);
