"""Versioned SQL migrations of the registry, applied in order by `store.migrate`.

`NNNN_name.sql`: the number is the version. A migration, once released, is
never edited: add a new file instead (the runner warns when an applied
migration's checksum changed).
"""
