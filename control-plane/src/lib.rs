//! The Segue control plane: POP registry and health, release schedules that pre-warm
//! POPs before a drop, purge fan-out. Built by the "Control plane" issue; not wired to the CLI yet.
