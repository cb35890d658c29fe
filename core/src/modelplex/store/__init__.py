"""modelplex's stores on disk: the conversation log (:mod:`~modelplex.store.logs`), stored
conversations as chat history (:mod:`~modelplex.store.conversations`), the SQLite response
cache (:mod:`~modelplex.store.sqlite_cache`), schema migrations
(:mod:`~modelplex.store.migrations`) and the one SQLite helper they all use
(:mod:`~modelplex.store.sqlite`: connection setup, transactions, the writer thread, and the
storage-failure policy).

Importing this package imports none of them: each is loaded when first used.
"""
