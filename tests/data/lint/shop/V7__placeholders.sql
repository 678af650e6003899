CREATE TABLE ${flyway:defaultSchema}.notes (id bigint PRIMARY KEY, body ${text_type});
CREATE INDEX ${index_name}
    ON ${schema}.orders (note);
