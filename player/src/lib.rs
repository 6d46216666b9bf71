//! The Segue player library: prefetch, dual-buffer gapless playback, crossfade, seek,
//! offline decrypt. Built by the "Player library" issue; not wired to the CLI yet.
