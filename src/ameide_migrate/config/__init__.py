"""Settings: what the tool is told, read and checked before anything runs (the settings, the
environments, fleets and lint rules of ameide.toml, the state folder); imports only the core, and no
client of any external system."""
