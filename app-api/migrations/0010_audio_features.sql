-- Audio features from the packaging manifest (JSON; '' for content packaged before
-- features existed): what recommendations compare tracks by.
ALTER TABLE tracks ADD COLUMN audio_features TEXT NOT NULL DEFAULT '';
