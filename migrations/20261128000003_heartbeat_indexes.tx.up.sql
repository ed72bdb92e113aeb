-- Every event that names an agent also names its asset, so listing an agent's events goes
-- through events_asset_idx (store.EventFilter); this index cost each heartbeat a random write.
DROP INDEX events_agent_idx;
