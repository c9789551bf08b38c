"""Backups of a coordinator's data (issue 18.3): a consistent snapshot taken while the
coordinator runs, restored into an empty data folder (or, forced, in place of one).

`take.take_backup` writes one ``phonefarm-backup-<UTC time>/`` folder; `restore.restore_backup`
checks and restores one; `manifest` owns the folder's format (hashes, listing, pruning);
`engines` the seam per database engine (`SqliteEngine`; `postgres.PostgresEngine` with
``pg_dump -Fc``), `choose.engine_for` picks one by the farm's ``--db``.
"""

from actors.store.backup.choose import engine_for
from actors.store.backup.manifest import (BackupBusy, BackupError, list_backups, prune,
                                          read_manifest, summary, verify)
from actors.store.backup.restore import RestoreReport, restore_backup
from actors.store.backup.take import take_backup

__all__ = ["BackupBusy", "BackupError", "RestoreReport", "engine_for", "list_backups", "prune",
           "read_manifest", "restore_backup", "summary", "take_backup", "verify"]
