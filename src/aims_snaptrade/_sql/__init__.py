"""The SQL plumbing every SQL store shares, written once.

:mod:`~aims_snaptrade._sql.database` opens SQLite (WAL, owner-only, secure delete) and PostgreSQL
(psycopg 3) behind one small ``Database`` protocol: placeholders, DDL types, write transactions
with a durability flag, busy retries (:mod:`~aims_snaptrade._sql.busy`) and schema creation. Each
store keeps only its own queries.
"""
