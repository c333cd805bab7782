-- Token families: a token minted from another (an access token from a refresh token, a TwoCloud
-- token renewed with a token) belongs to the family of the token it came from; revoking any
-- token of a family revokes all of it. Roots have no row: their family is their own hash.
CREATE TABLE token_links (
    -- hex sha256 of the child token's text
    token_hash        TEXT PRIMARY KEY,
    -- hex sha256 of the family's root token
    family            TEXT NOT NULL,
    expires_at        BIGINT NOT NULL,
    -- when the root token expires
    family_expires_at BIGINT NOT NULL
);
CREATE INDEX token_links_by_family ON token_links (family);
CREATE INDEX token_links_expiry ON token_links (expires_at);
