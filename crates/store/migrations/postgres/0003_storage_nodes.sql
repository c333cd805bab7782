-- The node (server id) whose work a `pending` or `deleting` blob is: that node's startup
-- recovery finishes it; once the node's `node:<id>` lease has expired, the node holding the
-- `storage-gc` lease does. NULL for `live` blobs, and for rows from before nodes existed
-- (which any node's recovery may finish).
ALTER TABLE blobs ADD COLUMN node TEXT;
CREATE INDEX blobs_in_flight ON blobs (state, node);
