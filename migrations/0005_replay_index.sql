-- Broadcast replay (`config.broadcast.replay`) reads the newest stored broadcasts of one private
-- topic. Supabase's index for it, (inserted_at DESC, topic), makes that read every private
-- broadcast of the replay window, whatever its topic; one that leads with the topic finds the
-- `limit` rows directly, and keeps one generic plan for the gateway's prepared replay query.
-- Building it takes a lock on realtime.messages for as long as it needs to read the table.
DROP INDEX IF EXISTS realtime.messages_inserted_at_topic_index;
CREATE INDEX IF NOT EXISTS messages_topic_inserted_at_index
    ON realtime.messages (topic, inserted_at DESC)
    WHERE extension = 'broadcast' AND private IS TRUE;
