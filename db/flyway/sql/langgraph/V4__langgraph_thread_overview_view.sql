-- Per-thread checkpoint overview for debugging and retention jobs.

CREATE VIEW langgraph_thread_overview AS
SELECT
    c.thread_id,
    count(*) AS checkpoint_count,
    count(DISTINCT c.checkpoint_ns) AS namespace_count,
    max(c.checkpoint_id) AS latest_checkpoint_id
FROM checkpoints c
GROUP BY c.thread_id;

COMMENT ON VIEW langgraph_thread_overview IS 'Number of checkpoints and latest checkpoint id per thread.';
