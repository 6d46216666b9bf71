//! The Segue app API: catalog and search, rights, stream URLs, licenses, playlists,
//! play counting and royalties. Built by the "App-api" issues; not wired to the CLI yet.
