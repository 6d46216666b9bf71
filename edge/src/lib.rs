//! The Segue edge (POP daemon): byte-range caching reverse proxy with a tiered memory +
//! SSD cache, request coalescing, parent/origin fallback and signed-URL checks.
//! Built by the "Edge POP" issues; nothing here is wired to the CLI yet.
