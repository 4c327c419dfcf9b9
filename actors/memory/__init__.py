"""The memory actor: durable, searchable memory on SQLite (apsw), one database per tenant."""
