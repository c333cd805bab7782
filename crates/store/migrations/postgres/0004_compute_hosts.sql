-- Compute hosts: every instance and mapping records the compute host it runs on (config
-- `compute.host`, by default the node's server id). Rows from before hosts existed have ''
-- and are adopted by the first node that reconciles.
ALTER TABLE instances ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE mappings ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE INDEX instances_by_host ON instances (host, status);

-- Public ports are owned per host: two hosts may both publish port 20000.
DROP INDEX mappings_by_port;
CREATE UNIQUE INDEX mappings_by_port ON mappings (host, server_ip, server_port);

-- Lifecycle actions and mapping changes asked through a node that does not run the instance:
-- the owning host's node performs them in `id` order and sets `done_at` (and `error`).
CREATE TABLE instance_actions (
    id          BIGSERIAL PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES instances (id),
    host        TEXT NOT NULL,
    action      TEXT NOT NULL,
    payload     TEXT NOT NULL DEFAULT '',
    error       TEXT,
    created_at  BIGINT NOT NULL,
    done_at     BIGINT
);
CREATE INDEX instance_actions_pending ON instance_actions (host, id) WHERE done_at IS NULL;
