-- Graph helper functions; recreated whenever this file changes.

CREATE OR REPLACE FUNCTION graph_node_degree(p_node_id uuid)
RETURNS bigint
LANGUAGE sql
STABLE
AS $$
    SELECT count(*)
    FROM graph_edges e
    WHERE e.source_node_id = p_node_id
       OR e.target_node_id = p_node_id;
$$;

COMMENT ON FUNCTION graph_node_degree(uuid) IS 'Number of incoming plus outgoing edges of a node.';

CREATE OR REPLACE FUNCTION graph_neighbors(p_node_id uuid, p_max_depth integer DEFAULT 2)
RETURNS TABLE (node_id uuid, depth integer)
LANGUAGE sql
STABLE
AS $$
    WITH RECURSIVE walk (node_id, depth, path) AS (
        SELECT p_node_id, 0, ARRAY[p_node_id]
        UNION ALL
        SELECT e.target_node_id, w.depth + 1, w.path || e.target_node_id
        FROM walk w
        JOIN graph_edges e ON e.source_node_id = w.node_id
        WHERE w.depth < p_max_depth
          AND NOT (e.target_node_id = ANY (w.path))
    )
    SELECT walk.node_id, min(walk.depth)::integer AS depth
    FROM walk
    WHERE walk.node_id <> p_node_id
    GROUP BY walk.node_id;
$$;

COMMENT ON FUNCTION graph_neighbors(uuid, integer) IS 'Nodes reachable from a node by outgoing edges within p_max_depth hops.';

CREATE OR REPLACE VIEW graph_stats AS
SELECT
    g.id AS graph_id,
    g.tenant_id,
    g.name,
    (SELECT count(*) FROM graph_nodes n WHERE n.graph_id = g.id) AS node_count,
    (SELECT count(*) FROM graph_edges e WHERE e.graph_id = g.id) AS edge_count
FROM graphs g;

COMMENT ON VIEW graph_stats IS 'Node and edge counts per graph.';
