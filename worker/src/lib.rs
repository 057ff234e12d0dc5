//! Parley job handlers.
