"""Everything that talks SQL: tables, migrations, and one module of queries per resource."""
