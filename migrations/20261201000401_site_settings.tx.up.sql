-- Per-site thresholds: a site's own offline and stale windows, in seconds (NULL: the server's
-- --offline-after and --stale-after). A table of its own rather than columns on sites, so a
-- site without settings costs nothing and the sites table is left as it is.
CREATE TABLE site_settings (
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    site_id               TEXT NOT NULL REFERENCES sites (id),
    offline_after_seconds BIGINT,
    stale_after_seconds   BIGINT,
    updated_at            BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, site_id)
);
