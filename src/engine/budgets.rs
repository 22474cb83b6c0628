//! (filled by a later change)
