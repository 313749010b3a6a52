"""The SQL plumbing every SQL store shares, written once.

:mod:`~aims_snaptrade._sql.database` opens SQLite (WAL, owner-only, secure delete) and PostgreSQL
(psycopg 3) behind one small ``Database`` protocol: connections per process (fork- and
thread-safe), placeholders, DDL types, write transactions with a durability flag, busy retries
(:mod:`~aims_snaptrade._sql.busy`), errors raised as each store's own class, and schema versions
(:mod:`~aims_snaptrade._sql.schema`). The secret store, consent store, audit trail, order-intent
journal, webhook dedupe store and sync ledger keep only their own queries
(``tests/test_sql_plumbing.py`` holds them to it).
"""
