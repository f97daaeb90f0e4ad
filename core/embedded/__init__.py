"""Embedded implementations of the ports: SQLite and files under the data dir, no network, no account."""
