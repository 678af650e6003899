-- Thread listing view used by the conversations API.

CREATE VIEW thread_summaries AS
SELECT
    t.id,
    t.tenant_id,
    t.agent_id,
    t.title,
    t.status,
    t.metadata,
    count(m.id) AS message_count,
    coalesce(sum(m.token_count), 0) AS total_tokens,
    t.last_message_at,
    t.created_at
FROM threads t
LEFT JOIN messages m ON m.thread_id = t.id
GROUP BY t.id;

COMMENT ON VIEW thread_summaries IS 'Threads with message and token totals.';
