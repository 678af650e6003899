-- Knowledge graph storage: graphs, nodes and directed edges.

CREATE TABLE graphs (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT graphs_tenant_name_key UNIQUE (tenant_id, name)
);

COMMENT ON TABLE graphs IS 'A named knowledge graph owned by a tenant.';

CREATE TABLE graph_nodes (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    graph_id    uuid        NOT NULL REFERENCES graphs (id) ON DELETE CASCADE,
    label       text        NOT NULL,
    node_key    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT graph_nodes_graph_key_key UNIQUE (graph_id, node_key),
    -- Needed so edges can reference (graph_id, id) and stay inside one graph.
    CONSTRAINT graph_nodes_graph_id_id_key UNIQUE (graph_id, id)
);

CREATE INDEX graph_nodes_graph_label_idx ON graph_nodes (graph_id, label);

COMMENT ON TABLE graph_nodes IS 'Entities of a graph, identified by a caller supplied node_key.';

CREATE TABLE graph_edges (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    graph_id        uuid        NOT NULL,
    source_node_id  uuid        NOT NULL,
    target_node_id  uuid        NOT NULL,
    relation        text        NOT NULL,
    weight          double precision NOT NULL DEFAULT 1.0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT graph_edges_source_fk FOREIGN KEY (graph_id, source_node_id)
        REFERENCES graph_nodes (graph_id, id) ON DELETE CASCADE,
    CONSTRAINT graph_edges_target_fk FOREIGN KEY (graph_id, target_node_id)
        REFERENCES graph_nodes (graph_id, id) ON DELETE CASCADE,
    CONSTRAINT graph_edges_graph_fk FOREIGN KEY (graph_id)
        REFERENCES graphs (id) ON DELETE CASCADE,
    CONSTRAINT graph_edges_weight_chk CHECK (weight >= 0)
);

COMMENT ON TABLE graph_edges IS 'Directed, typed relation between two nodes of the same graph.';
