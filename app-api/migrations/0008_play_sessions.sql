-- The stream session a play came from (the `sid` signed into its stream URL, which POPs
-- write to their access logs), for reconciling counted plays with CDN deliveries.
ALTER TABLE play_events ADD COLUMN session TEXT NOT NULL DEFAULT '';
