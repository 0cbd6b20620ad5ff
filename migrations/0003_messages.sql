-- Persisted chat messages with the Row Level Security that decides who reads and who sends, the
-- functions the gateways call to send, edit and delete them under a user's claims, the history
-- tables gateways write in batches when REALTIME_LOG_EVENTS is on (events, connections), the
-- record of CLI/REST broadcasts, the cleanup functions `nself-realtime cleanup` calls, and the
-- analytics views of seed 001.
-- Idempotent: every statement may run again on a database that already has it.

-- ---------------------------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS realtime.messages (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel_id   uuid NOT NULL REFERENCES realtime.channels (id) ON DELETE CASCADE,
    user_id      text NOT NULL DEFAULT realtime.user_id(),
    content      text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 100000),
    message_type text NOT NULL DEFAULT 'text'
                 CHECK (message_type IN ('text', 'system', 'file', 'event')),
    metadata     jsonb NOT NULL DEFAULT '{}',
    thread_id    text,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    edited_at    timestamptz,
    deleted_at   timestamptz
);

-- History reads newest first per channel (`messages`, `replay`, channel_stats).
CREATE INDEX IF NOT EXISTS messages_channel_sent ON realtime.messages (channel_id, sent_at DESC);

-- The whole old row goes through logical replication, so a hard DELETE still carries channel_id
-- and the gateways can route it to the channel's subscribers.
ALTER TABLE realtime.messages REPLICA IDENTITY FULL;

-- Whether the current user may send to a channel: a member whose membership allows sending, or,
-- without a membership, anyone on a public or presence channel. SECURITY DEFINER (like
-- is_member) so it reads memberships whatever the caller may see of them.
CREATE OR REPLACE FUNCTION realtime.can_send(channel uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
    SELECT coalesce((
        SELECT CASE
                   WHEN m.user_id IS NOT NULL THEN m.can_send
                   ELSE c.type IN ('public', 'presence')
               END
          FROM realtime.channels c
          LEFT JOIN realtime.channel_members m
                 ON m.channel_id = c.id AND m.user_id = realtime.user_id()
         WHERE c.id = channel
    ), false)
$$;

REVOKE ALL ON FUNCTION realtime.can_send(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.can_send(uuid) TO anon, authenticated, service_role;

ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

-- Users write only what a message's author controls: who sent it, when, and to which channel are
-- fixed once sent (an UPDATE cannot move a message or change its author), and sent_at is the
-- server's clock.
GRANT SELECT ON realtime.messages TO anon, authenticated;
GRANT INSERT (id, channel_id, user_id, content, message_type, metadata, thread_id)
    ON realtime.messages TO authenticated;
GRANT UPDATE (content, message_type, metadata, edited_at, deleted_at)
    ON realtime.messages TO authenticated;
GRANT DELETE ON realtime.messages TO authenticated;
GRANT ALL ON realtime.messages TO service_role;

-- Whoever sees a channel (under channels' own policies) reads its messages, soft-deleted ones
-- included (their UPDATE must reach subscribers; clients hide them).
DROP POLICY IF EXISTS messages_read ON realtime.messages;
CREATE POLICY messages_read ON realtime.messages FOR SELECT TO anon, authenticated
    USING (EXISTS (SELECT 1 FROM realtime.channels c WHERE c.id = channel_id));

DROP POLICY IF EXISTS messages_send ON realtime.messages;
CREATE POLICY messages_send ON realtime.messages FOR INSERT TO authenticated
    WITH CHECK (user_id = realtime.user_id() AND realtime.can_send(channel_id));

-- Authors and channel owners/admins edit and remove messages.
DROP POLICY IF EXISTS messages_edit ON realtime.messages;
CREATE POLICY messages_edit ON realtime.messages FOR UPDATE TO authenticated
    USING (user_id = realtime.user_id() OR realtime.is_channel_admin(channel_id));

DROP POLICY IF EXISTS messages_remove ON realtime.messages;
CREATE POLICY messages_remove ON realtime.messages FOR DELETE TO authenticated
    USING (user_id = realtime.user_id() OR realtime.is_channel_admin(channel_id));

DROP POLICY IF EXISTS messages_service ON realtime.messages;
CREATE POLICY messages_service ON realtime.messages FOR ALL TO service_role
    USING (true) WITH CHECK (true);

-- A channel named by slug, or by id in its text form, among the channels the caller sees; NULL
-- when there is none. A slug wins over an id that happens to be spelled the same.
CREATE OR REPLACE FUNCTION realtime.resolve_channel(p_channel text) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
    by_id uuid;
    found uuid;
BEGIN
    IF p_channel ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        by_id := p_channel::uuid;
    END IF;
    SELECT c.id INTO found
      FROM realtime.channels c
     WHERE c.slug = p_channel OR c.id = by_id
     ORDER BY c.slug = p_channel DESC
     LIMIT 1;
    RETURN found;
END
$$;

-- Sends a message as the caller (the gateway runs it under the sender's role and claims, so the
-- policies above decide) and returns the stored row. Errors name the problem:
-- P0002 the channel does not exist or is not visible to the caller (indistinguishable on
-- purpose: private channels do not reveal their existence), 42501 the caller may not send there
-- or has no user id, 22023 bad content or message type.
CREATE OR REPLACE FUNCTION realtime.send_message(
    p_channel      text,
    p_content      text,
    p_message_type text DEFAULT 'text',
    p_metadata     jsonb DEFAULT '{}',
    p_thread_id    text DEFAULT NULL
) RETURNS realtime.messages
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    target uuid;
    kind   text := coalesce(p_message_type, 'text');
    sent   realtime.messages;
BEGIN
    IF realtime.user_id() IS NULL THEN
        RAISE EXCEPTION 'sending a message needs a user id: the token has no sub claim'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_content IS NULL OR char_length(p_content) NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'message content must be 1 to 100,000 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind NOT IN ('text', 'system', 'file', 'event') THEN
        RAISE EXCEPTION 'unknown message type %: use text, system, file or event', kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    target := realtime.resolve_channel(p_channel);
    IF target IS NULL THEN
        RAISE EXCEPTION 'channel % does not exist or you are not a member', p_channel
            USING ERRCODE = 'no_data_found';
    END IF;
    -- The insert policy would refuse too, but with a message naming no channel. service_role
    -- (and the owner) are not bound by it.
    IF NOT pg_has_role('service_role', 'USAGE') AND NOT realtime.can_send(target) THEN
        RAISE EXCEPTION 'you may not send messages to channel %', p_channel
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO realtime.messages (channel_id, content, message_type, metadata, thread_id)
    VALUES (target, p_content, kind, coalesce(p_metadata, '{}'), p_thread_id)
    RETURNING * INTO sent;
    RETURN sent;
END
$$;

-- Edits a message's content as the caller (author or channel admin, by the policies).
CREATE OR REPLACE FUNCTION realtime.edit_message(p_id uuid, p_content text)
RETURNS realtime.messages
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    edited realtime.messages;
BEGIN
    IF p_content IS NULL OR char_length(p_content) NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'message content must be 1 to 100,000 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE realtime.messages m
       SET content = p_content, edited_at = now()
     WHERE m.id = p_id AND m.deleted_at IS NULL
    RETURNING * INTO edited;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist, was deleted, or is not yours to edit', p_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN edited;
END
$$;

-- Soft-deletes a message as the caller: deleted_at is set, the row stays for history.
CREATE OR REPLACE FUNCTION realtime.delete_message(p_id uuid)
RETURNS realtime.messages
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    deleted realtime.messages;
BEGIN
    UPDATE realtime.messages m
       SET deleted_at = now()
     WHERE m.id = p_id AND m.deleted_at IS NULL
    RETURNING * INTO deleted;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist, was already deleted, or is not yours to delete', p_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN deleted;
END
$$;

-- The members of a channel the caller sees, as the caller may see them (members see the
-- members of their channels).
CREATE OR REPLACE FUNCTION realtime.get_channel_members(p_channel text)
RETURNS TABLE (user_id text, role text, can_send boolean, joined_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    target uuid := realtime.resolve_channel(p_channel);
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'channel % does not exist or you are not a member', p_channel
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY
        SELECT m.user_id, m.role, m.can_send, m.joined_at
          FROM realtime.channel_members m
         WHERE m.channel_id = target
         ORDER BY m.joined_at, m.user_id;
END
$$;

REVOKE ALL ON FUNCTION
    realtime.resolve_channel(text),
    realtime.send_message(text, text, text, jsonb, text),
    realtime.edit_message(uuid, text),
    realtime.delete_message(uuid),
    realtime.get_channel_members(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.resolve_channel(text), realtime.get_channel_members(text)
    TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    realtime.send_message(text, text, text, jsonb, text),
    realtime.edit_message(uuid, text),
    realtime.delete_message(uuid)
TO authenticated, service_role;

-- A channel's max_members holds however members are added (CLI, gateway, SQL). The channel row
-- is locked so that two concurrent joins cannot both take the last place.
CREATE OR REPLACE FUNCTION realtime.check_max_members() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    channel_slug text;
    maximum      integer;
BEGIN
    SELECT c.slug, c.max_members INTO channel_slug, maximum
      FROM realtime.channels c WHERE c.id = NEW.channel_id
       FOR NO KEY UPDATE;
    IF maximum IS NOT NULL AND (
        SELECT count(*) FROM realtime.channel_members m
         WHERE m.channel_id = NEW.channel_id AND m.user_id <> NEW.user_id
    ) >= maximum THEN
        RAISE EXCEPTION 'channel % is full (max_members %): remove a member or raise max_members',
            channel_slug, maximum
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION realtime.check_max_members() FROM PUBLIC;

DROP TRIGGER IF EXISTS channel_members_max ON realtime.channel_members;
CREATE TRIGGER channel_members_max BEFORE INSERT ON realtime.channel_members
    FOR EACH ROW EXECUTE FUNCTION realtime.check_max_members();

-- ---------------------------------------------------------------------------------------------
-- History written by gateways (REALTIME_LOG_EVENTS) and by the CLI/REST broadcast
-- ---------------------------------------------------------------------------------------------

-- The event log (seed 001's realtime_events): connects, joins, messages, errors, ... Written in
-- batches by the gateways' own connection (the table owner); service_role reads it.
CREATE TABLE IF NOT EXISTS realtime.events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text NOT NULL,
    user_id    text,
    channel    text,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS events_type ON realtime.events (type);
CREATE INDEX IF NOT EXISTS events_created ON realtime.events (created_at DESC);
CREATE INDEX IF NOT EXISTS events_channel_created ON realtime.events (channel, created_at DESC);

-- Connection history: one row per WebSocket a gateway accepted, keyed by the gateway-assigned
-- connection id. Live connection figures come from the gateways themselves, not from here.
CREATE TABLE IF NOT EXISTS realtime.connections (
    id              text PRIMARY KEY,
    gateway_id      text NOT NULL,
    user_id         text,
    protocol        text NOT NULL CHECK (protocol IN ('phoenix', 'socketio', 'websocket')),
    remote_addr     text,
    user_agent      text,
    connected_at    timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    disconnected_at timestamptz,
    metadata        jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS connections_open ON realtime.connections (last_seen)
    WHERE disconnected_at IS NULL;
CREATE INDEX IF NOT EXISTS connections_closed ON realtime.connections (disconnected_at)
    WHERE disconnected_at IS NOT NULL;

-- Broadcasts sent by the CLI or the REST endpoint (seed 000 "Event Expiry": kept 5 minutes by
-- default; `ALTER COLUMN expires_at SET DEFAULT now() + interval '10 minutes'` to change).
CREATE TABLE IF NOT EXISTS realtime.broadcasts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel    text NOT NULL,
    event      text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    sent_by    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL DEFAULT now() + interval '5 minutes'
);

CREATE INDEX IF NOT EXISTS broadcasts_expires ON realtime.broadcasts (expires_at);

-- RLS on as well as grants: a later broad GRANT cannot expose these to users by accident.
ALTER TABLE realtime.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.broadcasts ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON realtime.events, realtime.connections, realtime.broadcasts
    FROM PUBLIC, anon, authenticated;
GRANT SELECT ON realtime.events, realtime.connections, realtime.broadcasts TO service_role;

DROP POLICY IF EXISTS events_service ON realtime.events;
CREATE POLICY events_service ON realtime.events FOR SELECT TO service_role USING (true);

DROP POLICY IF EXISTS connections_service ON realtime.connections;
CREATE POLICY connections_service ON realtime.connections FOR SELECT TO service_role
    USING (true);

DROP POLICY IF EXISTS broadcasts_service ON realtime.broadcasts;
CREATE POLICY broadcasts_service ON realtime.broadcasts FOR SELECT TO service_role USING (true);

-- ---------------------------------------------------------------------------------------------
-- Cleanup (`nself-realtime cleanup`, or a cron job). Admin functions: SECURITY DEFINER so that
-- service_role may run them without write access to the tables; nobody else may.
-- ---------------------------------------------------------------------------------------------

-- Connections a gateway never closed (it was killed) are marked disconnected as of their last
-- sign of life. Returns how many.
CREATE OR REPLACE FUNCTION realtime.cleanup_stale_connections(p_stale interval DEFAULT '5 minutes')
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
    WITH closed AS (
        UPDATE realtime.connections
           SET disconnected_at = last_seen
         WHERE disconnected_at IS NULL AND last_seen < now() - p_stale
        RETURNING 1
    )
    SELECT count(*)::integer FROM closed
$$;

CREATE OR REPLACE FUNCTION realtime.cleanup_expired_broadcasts() RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
    WITH gone AS (
        DELETE FROM realtime.broadcasts WHERE expires_at < now() RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- Hard-deletes messages sent before the retention window.
CREATE OR REPLACE FUNCTION realtime.cleanup_old_messages(p_retention interval DEFAULT '30 days')
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
    WITH gone AS (
        DELETE FROM realtime.messages WHERE sent_at < now() - p_retention RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- Deletes events, and connection rows closed, before the retention window; returns both counted
-- together.
CREATE OR REPLACE FUNCTION realtime.cleanup_old_events(p_retention interval DEFAULT '30 days')
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
    WITH events AS (
        DELETE FROM realtime.events WHERE created_at < now() - p_retention RETURNING 1
    ), connections AS (
        DELETE FROM realtime.connections
         WHERE disconnected_at < now() - p_retention
        RETURNING 1
    )
    SELECT ((SELECT count(*) FROM events) + (SELECT count(*) FROM connections))::integer
$$;

REVOKE ALL ON FUNCTION
    realtime.cleanup_stale_connections(interval),
    realtime.cleanup_expired_broadcasts(),
    realtime.cleanup_old_messages(interval),
    realtime.cleanup_old_events(interval)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    realtime.cleanup_stale_connections(interval),
    realtime.cleanup_expired_broadcasts(),
    realtime.cleanup_old_messages(interval),
    realtime.cleanup_old_events(interval)
TO service_role;

-- ---------------------------------------------------------------------------------------------
-- Analytics views (seed 001, adapted). security_invoker: a view shows only what its reader's own
-- privileges and policies allow. Typing indicators and presence live in the gateways and the
-- NATS KV bucket by design, not in tables, so seed 001's realtime_current_typing and
-- realtime_presence_summary have no counterpart here.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW realtime.active_connections WITH (security_invoker = true) AS
SELECT id, gateway_id, user_id, protocol, remote_addr, user_agent, connected_at, last_seen,
       metadata
  FROM realtime.connections
 WHERE disconnected_at IS NULL
 ORDER BY connected_at DESC;

CREATE OR REPLACE VIEW realtime.channel_stats WITH (security_invoker = true) AS
SELECT c.id, c.slug, c.name, c.type,
       (SELECT count(*) FROM realtime.channel_members m WHERE m.channel_id = c.id)
           AS member_count,
       (SELECT count(*) FROM realtime.messages msg
         WHERE msg.channel_id = c.id AND msg.deleted_at IS NULL
           AND msg.sent_at > now() - interval '24 hours')
           AS messages_24h,
       (SELECT max(msg.sent_at) FROM realtime.messages msg
         WHERE msg.channel_id = c.id AND msg.deleted_at IS NULL)
           AS last_message_at,
       c.created_at
  FROM realtime.channels c;

CREATE OR REPLACE VIEW realtime.event_summary WITH (security_invoker = true) AS
SELECT type, channel, count(*) AS count, max(created_at) AS last_at
  FROM realtime.events
 WHERE created_at > now() - interval '24 hours'
 GROUP BY type, channel
 ORDER BY count(*) DESC, type, channel;

REVOKE ALL ON realtime.active_connections, realtime.channel_stats, realtime.event_summary
    FROM PUBLIC, anon, authenticated;
GRANT SELECT ON realtime.active_connections, realtime.channel_stats, realtime.event_summary
    TO service_role;
