-- Environment specific runtime settings; the environment name is injected
-- by Flyway through the "environment" placeholder when this file is applied.

CREATE OR REPLACE VIEW workflows_runtime_environment AS
SELECT
    '${environment}'::text AS environment,
    ('${environment}'::text IN ('prod', 'production')) AS is_production,
    CASE WHEN '${environment}'::text IN ('prod', 'production') THEN 3 ELSE 1 END AS default_max_attempts,
    CASE WHEN '${environment}'::text IN ('prod', 'production') THEN interval '30 minutes'
         ELSE interval '5 minutes' END AS default_step_timeout;

COMMENT ON VIEW workflows_runtime_environment IS 'Deployment environment and derived workflow runtime defaults.';
