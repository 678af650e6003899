-- Traversal indexes and de-duplication of edges.

CREATE INDEX graph_edges_source_idx ON graph_edges (graph_id, source_node_id, relation);
CREATE INDEX graph_edges_target_idx ON graph_edges (graph_id, target_node_id, relation);

ALTER TABLE graph_edges
    ADD CONSTRAINT graph_edges_unique_relation_key UNIQUE (graph_id, source_node_id, target_node_id, relation),
    ADD CONSTRAINT graph_edges_relation_format_chk CHECK (relation ~ '^[A-Z][A-Z0-9_]*$');

COMMENT ON CONSTRAINT graph_edges_relation_format_chk ON graph_edges IS 'Relations use UPPER_SNAKE_CASE, e.g. WORKS_FOR.';
