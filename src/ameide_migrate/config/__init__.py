"""Settings: what the tool is told, read and checked before anything runs (no client of any
external system is imported here)."""
