//! The Segue load generator: listeners, album-drop storms, outages. Built by the
//! "Edge POP core" issue; not wired to the CLI yet.
