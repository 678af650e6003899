"""Entry module of the Vault block; the code is `ameide_migrate.blocks`.

`prefect block register -m ameide_migrate.blocks` (or `-m blocks.vault` in a checkout).
"""

from ameide_migrate.blocks import VaultDatabaseSecrets

__all__ = ["VaultDatabaseSecrets"]
