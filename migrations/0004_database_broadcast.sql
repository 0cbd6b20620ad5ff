-- One realtime.messages for both vocabularies: Supabase Realtime's (Broadcast from Database,
-- authorization policies, broadcast replay) and the seeds' persisted chat messages.
--
-- * Supabase's columns, as its tenant migrations define them: id, topic, extension, event,
--   payload, private, inserted_at, updated_at, binary_payload; the table is partitioned by day on
--   inserted_at (`messages_YYYY_MM_DD`, plus a default partition so that an insert never fails for
--   want of a partition). realtime.topic(), realtime.send(), realtime.send_binary() and
--   realtime.broadcast_changes() have Supabase's signatures and behaviour.
-- * The seeds' chat columns (channel_id, user_id, content, message_type, metadata, thread_id,
--   sent_at, edited_at, deleted_at) with their policies. A chat row is also a database
--   broadcast: a trigger fills its topic (the channel's slug), event (message:new,
--   message:updated, message:deleted), payload (the message as clients see it) and private (the
--   channel is private or direct), so the same WAL → CDC → JetStream → gateway path delivers
--   realtime.send() calls, trigger broadcasts and chat messages alike.
--
-- Migration 0003 created realtime.messages unpartitioned; this file turns it into the
-- partitioned table, keeping every row. Idempotent: every statement may run again.

-- ---------------------------------------------------------------------------------------------
-- The partitioned table
-- ---------------------------------------------------------------------------------------------

-- The functions and view of 0003 are typed by (or read) the old table: they go first, and are
-- created again below.
DROP VIEW IF EXISTS realtime.channel_stats;
DROP FUNCTION IF EXISTS realtime.send_message(text, text, text, jsonb, text);
DROP FUNCTION IF EXISTS realtime.edit_message(uuid, text);
DROP FUNCTION IF EXISTS realtime.delete_message(uuid);

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'realtime' AND c.relname = 'messages' AND c.relkind = 'r'
    ) THEN
        ALTER TABLE realtime.messages RENAME TO messages_unpartitioned;
        ALTER INDEX IF EXISTS realtime.messages_pkey RENAME TO messages_unpartitioned_pkey;
        ALTER INDEX IF EXISTS realtime.messages_channel_sent
            RENAME TO messages_unpartitioned_channel_sent;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS realtime.messages (
    -- Supabase Realtime's columns.
    topic          text NOT NULL,
    extension      text NOT NULL,
    payload        jsonb,
    event          text,
    private        boolean DEFAULT false,
    updated_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    inserted_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    binary_payload bytea,
    -- The seeds' chat columns (NULL on rows that are not chat messages).
    channel_id     uuid REFERENCES realtime.channels (id) ON DELETE CASCADE,
    user_id        text DEFAULT realtime.user_id(),
    content        text,
    message_type   text NOT NULL DEFAULT 'text'
                   CHECK (message_type IN ('text', 'system', 'file', 'event')),
    metadata       jsonb NOT NULL DEFAULT '{}',
    thread_id      text,
    sent_at        timestamptz NOT NULL DEFAULT now(),
    edited_at      timestamptz,
    deleted_at     timestamptz,
    CONSTRAINT messages_pkey PRIMARY KEY (id, inserted_at),
    CONSTRAINT messages_payload_exclusive CHECK (payload IS NULL OR binary_payload IS NULL),
    CONSTRAINT messages_chat_row CHECK (
        channel_id IS NULL
        OR (user_id IS NOT NULL AND char_length(content) BETWEEN 1 AND 100000)
    )
) PARTITION BY RANGE (inserted_at);

CREATE TABLE IF NOT EXISTS realtime.messages_default PARTITION OF realtime.messages DEFAULT;

-- History reads newest first per channel (`messages`, `replay`, channel_stats); Supabase's
-- broadcast replay reads a private topic's broadcasts since a time.
CREATE INDEX IF NOT EXISTS messages_channel_sent ON realtime.messages (channel_id, sent_at DESC)
    WHERE channel_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_inserted_at_topic_index
    ON realtime.messages (inserted_at DESC, topic)
    WHERE extension = 'broadcast' AND private IS TRUE;

-- The day partition holding `day`, created when missing, with what every partition needs: the
-- whole old row in the WAL (a hard DELETE of a chat message still names its channel). When the
-- default partition already holds rows of that day (partitions were not kept ahead), the day
-- stays there (NULL is returned): moving them would publish them again.
CREATE OR REPLACE FUNCTION realtime.create_messages_partition(day date) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    name text := 'messages_' || to_char(day, 'YYYY_MM_DD');
BEGIN
    IF to_regclass('realtime.' || name) IS NOT NULL THEN
        RETURN name;
    END IF;
    IF EXISTS (SELECT 1 FROM realtime.messages_default
                WHERE inserted_at >= day AND inserted_at < day + 1) THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'CREATE TABLE realtime.%I PARTITION OF realtime.messages FOR VALUES FROM (%L) TO (%L)',
        name, day, day + 1);
    EXECUTE format('ALTER TABLE realtime.%I REPLICA IDENTITY FULL', name);
    RETURN name;
END
$$;

ALTER TABLE realtime.messages REPLICA IDENTITY FULL;
ALTER TABLE realtime.messages_default REPLICA IDENTITY FULL;

-- Keeps the day partitions: today (UTC) and `days_ahead` days after it exist; partitions of
-- days before the retention window are dropped, and default-partition rows that old deleted.
-- Returns how many messages went. Called by the CDC every hour and by `nself-realtime cleanup`.
CREATE OR REPLACE FUNCTION realtime.maintain_messages_partitions(
    retention  interval DEFAULT '30 days',
    days_ahead integer DEFAULT 3
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    today  date := (now() AT TIME ZONE 'utc')::date;
    oldest date := ((now() - retention) AT TIME ZONE 'utc')::date;
    part   record;
    counted bigint;
    gone   bigint := 0;
BEGIN
    FOR i IN 0..greatest(days_ahead, 0) LOOP
        PERFORM realtime.create_messages_partition(today + i);
    END LOOP;
    FOR part IN
        SELECT c.relname::text AS name,
               to_date(substr(c.relname, 10), 'YYYY_MM_DD') AS day
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = 'realtime.messages'::regclass
           AND n.nspname = 'realtime'
           AND c.relname ~ '^messages_[0-9]{4}_[0-9]{2}_[0-9]{2}$'
    LOOP
        IF part.day < oldest THEN
            EXECUTE format('SELECT count(*) FROM realtime.%I', part.name) INTO counted;
            EXECUTE format('DROP TABLE realtime.%I', part.name);
            gone := gone + counted;
        END IF;
    END LOOP;
    DELETE FROM realtime.messages_default WHERE inserted_at < oldest;
    GET DIAGNOSTICS counted = ROW_COUNT;
    RETURN (gone + counted)::integer;
END
$$;

REVOKE ALL ON FUNCTION
    realtime.create_messages_partition(date),
    realtime.maintain_messages_partitions(interval, integer)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.maintain_messages_partitions(interval, integer) TO service_role;

SELECT realtime.maintain_messages_partitions('100 years', 3);

-- ---------------------------------------------------------------------------------------------
-- Chat rows are database broadcasts
-- ---------------------------------------------------------------------------------------------

-- A timestamp as clients read it: ISO 8601 in UTC with microseconds.
CREATE OR REPLACE FUNCTION realtime.iso_utc(at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = '' AS $$
    SELECT to_char(at AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Fills a chat row's broadcast columns from its chat columns, on every insert and update, so
-- that what subscribers, history and replay see cannot drift from the message (nor be forged
-- by its author). SECURITY DEFINER: it reads the channel whatever the writer may see of it.
CREATE OR REPLACE FUNCTION realtime.chat_message_broadcast() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    slug         text;
    channel_type text;
BEGIN
    SELECT c.slug, c.type INTO slug, channel_type
      FROM realtime.channels c WHERE c.id = NEW.channel_id;
    NEW.topic := coalesce(slug, NEW.channel_id::text);
    NEW.extension := 'broadcast';
    NEW.private := channel_type IN ('private', 'direct');
    NEW.binary_payload := NULL;
    IF TG_OP = 'INSERT' THEN
        NEW.event := 'message:new';
    ELSIF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        NEW.event := 'message:deleted';
        NEW.updated_at := now() AT TIME ZONE 'utc';
    ELSE
        NEW.event := 'message:updated';
        NEW.updated_at := now() AT TIME ZONE 'utc';
    END IF;
    NEW.payload := jsonb_build_object(
        'id', NEW.id,
        'roomName', NEW.topic,
        'channel', NEW.topic,
        'channelId', NEW.channel_id,
        'userId', NEW.user_id,
        'content', NEW.content,
        'messageType', NEW.message_type,
        'threadId', NEW.thread_id,
        'metadata', NEW.metadata,
        'timestamp', realtime.iso_utc(NEW.sent_at),
        'sentAt', realtime.iso_utc(NEW.sent_at),
        'editedAt', realtime.iso_utc(NEW.edited_at),
        'deletedAt', realtime.iso_utc(NEW.deleted_at),
        'persisted', true
    );
    RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION realtime.chat_message_broadcast() FROM PUBLIC;

DROP TRIGGER IF EXISTS messages_chat_broadcast ON realtime.messages;
CREATE TRIGGER messages_chat_broadcast BEFORE INSERT OR UPDATE ON realtime.messages
    FOR EACH ROW WHEN (NEW.channel_id IS NOT NULL)
    EXECUTE FUNCTION realtime.chat_message_broadcast();

-- The rows of 0003's table (the trigger above fills their broadcast columns), then the table
-- itself. The publications that carried the old table
-- carry the new one (a partitioned table publishes as its root with publish_via_partition_root,
-- which the CDC sets on its publications).
DO $$
DECLARE
    publication text;
BEGIN
    IF to_regclass('realtime.messages_unpartitioned') IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO realtime.messages (id, channel_id, user_id, content, message_type, metadata,
                                   thread_id, sent_at, edited_at, deleted_at, inserted_at,
                                   updated_at, topic, extension)
    SELECT id, channel_id, user_id, content, message_type, metadata, thread_id, sent_at,
           edited_at, deleted_at, sent_at AT TIME ZONE 'utc',
           coalesce(edited_at, deleted_at, sent_at) AT TIME ZONE 'utc', '', 'broadcast'
      FROM realtime.messages_unpartitioned;
    FOR publication IN
        SELECT p.pubname FROM pg_publication p
          JOIN pg_publication_rel r ON r.prpubid = p.oid
         WHERE r.prrelid = 'realtime.messages_unpartitioned'::regclass
    LOOP
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE realtime.messages', publication);
    END LOOP;
    DROP TABLE realtime.messages_unpartitioned;
END
$$;

-- A chat message is persisted unless its channel opts out (`channel create --ephemeral`), as
-- the seeds say: "Messages are persistent chat messages stored in the database".
ALTER TABLE realtime.channels ALTER COLUMN persist_messages SET DEFAULT true;

-- ---------------------------------------------------------------------------------------------
-- Row Level Security: the seeds' policies again, and Supabase's grants
-- ---------------------------------------------------------------------------------------------

ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

-- Supabase lets anon and authenticated read and write realtime.messages under the policies an
-- app writes (its own, for topics and extensions); chat authors still cannot change who sent a
-- message, when, or where: those columns are not granted for UPDATE.
GRANT SELECT ON realtime.messages TO anon, authenticated;
GRANT INSERT (id, topic, extension, event, payload, private, binary_payload, channel_id,
              user_id, content, message_type, metadata, thread_id)
    ON realtime.messages TO anon, authenticated;
GRANT UPDATE (content, message_type, metadata, edited_at, deleted_at)
    ON realtime.messages TO authenticated;
GRANT DELETE ON realtime.messages TO authenticated;
GRANT ALL ON realtime.messages TO service_role;

DROP POLICY IF EXISTS messages_read ON realtime.messages;
CREATE POLICY messages_read ON realtime.messages FOR SELECT TO anon, authenticated
    USING (channel_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM realtime.channels c WHERE c.id = channel_id));

DROP POLICY IF EXISTS messages_send ON realtime.messages;
CREATE POLICY messages_send ON realtime.messages FOR INSERT TO authenticated
    WITH CHECK (channel_id IS NOT NULL AND user_id = realtime.user_id()
                AND realtime.can_send(channel_id));

DROP POLICY IF EXISTS messages_edit ON realtime.messages;
CREATE POLICY messages_edit ON realtime.messages FOR UPDATE TO authenticated
    USING (channel_id IS NOT NULL
           AND (user_id = realtime.user_id() OR realtime.is_channel_admin(channel_id)));

DROP POLICY IF EXISTS messages_remove ON realtime.messages;
CREATE POLICY messages_remove ON realtime.messages FOR DELETE TO authenticated
    USING (channel_id IS NOT NULL
           AND (user_id = realtime.user_id() OR realtime.is_channel_admin(channel_id)));

DROP POLICY IF EXISTS messages_service ON realtime.messages;
CREATE POLICY messages_service ON realtime.messages FOR ALL TO service_role
    USING (true) WITH CHECK (true);

-- ---------------------------------------------------------------------------------------------
-- Supabase Realtime's functions
-- ---------------------------------------------------------------------------------------------

-- Supabase Auth's helpers, which the policies Supabase's docs show call (`auth.uid()`): created
-- only where the database has none (a Supabase database has its own), reading the claims the
-- gateway sets exactly as Supabase's do.
CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
            )::uuid
        $f$;
    END IF;
    IF to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
            )::text
        $f$;
    END IF;
    IF to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $f$;
    END IF;
END
$$;

-- The topic being authorized, for policies: `realtime.topic() like 'room:%'`.
CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('realtime.topic', true), '')::text
$$;

GRANT EXECUTE ON FUNCTION realtime.topic() TO anon, authenticated, service_role;

-- Broadcast from Database: stores a broadcast that every subscriber of `topic` receives once the
-- transaction commits. It runs with the caller's rights, so the caller's INSERT policies on
-- realtime.messages apply (`realtime.topic()` reads `topic` meanwhile). As in Supabase, a
-- failure never aborts the caller's transaction: it is raised as a warning.
CREATE OR REPLACE FUNCTION realtime.send(
    payload jsonb, event text, topic text, private boolean DEFAULT true
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    generated_id  uuid;
    final_payload jsonb;
BEGIN
    BEGIN
        generated_id := gen_random_uuid();
        IF payload ? 'id' THEN
            final_payload := payload;
        ELSE
            final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
        END IF;
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
        VALUES (generated_id, final_payload, event, topic, private, 'broadcast');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
    END;
END
$$;

-- The same with a binary payload: vsn 2.0.0 clients receive it as a binary broadcast frame.
CREATE OR REPLACE FUNCTION realtime.send_binary(
    payload bytea, event text, topic text, private boolean DEFAULT true
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    generated_id uuid;
BEGIN
    BEGIN
        generated_id := gen_random_uuid();
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, binary_payload, event, topic, private, extension)
        VALUES (generated_id, payload, event, topic, private, 'broadcast');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
    END;
END
$$;

-- For row triggers: broadcasts `{schema, table, operation, record, old_record}` to topic_name.
CREATE OR REPLACE FUNCTION realtime.broadcast_changes(
    topic_name text, event_name text, operation text, table_name text, table_schema text,
    new record, old record, level text DEFAULT 'ROW'
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    row_data jsonb := '{}'::jsonb;
BEGIN
    IF level = 'STATEMENT' THEN
        RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
    END IF;
    IF operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE' THEN
        row_data := jsonb_build_object('old_record', OLD, 'record', NEW, 'operation', operation,
                                       'table', table_name, 'schema', table_schema);
        PERFORM realtime.send(row_data, event_name, topic_name);
    ELSE
        RAISE EXCEPTION 'Unexpected operation type: %', operation;
    END IF;
EXCEPTION
    WHEN OTHERS THEN
        RAISE EXCEPTION 'Failed to process the row: %', SQLERRM;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The seeds' functions on the new table (as in 0003)
-- ---------------------------------------------------------------------------------------------

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
    IF NOT pg_has_role('service_role', 'USAGE') AND NOT realtime.can_send(target) THEN
        RAISE EXCEPTION 'you may not send messages to channel %', p_channel
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO realtime.messages (channel_id, content, message_type, metadata, thread_id,
                                   topic, extension)
    VALUES (target, p_content, kind, coalesce(p_metadata, '{}'), p_thread_id, '', 'broadcast')
    RETURNING * INTO sent;
    RETURN sent;
END
$$;

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
     WHERE m.id = p_id AND m.channel_id IS NOT NULL AND m.deleted_at IS NULL
    RETURNING * INTO edited;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist, was deleted, or is not yours to edit', p_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN edited;
END
$$;

CREATE OR REPLACE FUNCTION realtime.delete_message(p_id uuid)
RETURNS realtime.messages
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    deleted realtime.messages;
BEGIN
    UPDATE realtime.messages m
       SET deleted_at = now()
     WHERE m.id = p_id AND m.channel_id IS NOT NULL AND m.deleted_at IS NULL
    RETURNING * INTO deleted;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist, was already deleted, or is not yours to delete', p_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION
    realtime.send_message(text, text, text, jsonb, text),
    realtime.edit_message(uuid, text),
    realtime.delete_message(uuid)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    realtime.send_message(text, text, text, jsonb, text),
    realtime.edit_message(uuid, text),
    realtime.delete_message(uuid)
TO authenticated, service_role;

-- Messages sent before the retention window go: whole day partitions and old rows of the
-- default partition (realtime.maintain_messages_partitions, which the CDC also runs), then chat
-- messages whose sent_at is that old wherever they are (imported history). Returns how many.
CREATE OR REPLACE FUNCTION realtime.cleanup_old_messages(p_retention interval DEFAULT '30 days')
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    dropped integer := realtime.maintain_messages_partitions(p_retention, 3);
    deleted integer;
BEGIN
    DELETE FROM realtime.messages
     WHERE channel_id IS NOT NULL AND sent_at < now() - p_retention;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN dropped + deleted;
END
$$;

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

REVOKE ALL ON realtime.channel_stats FROM PUBLIC, anon, authenticated;
GRANT SELECT ON realtime.channel_stats TO service_role;
