"""``manage.py branch_create NAME``: a new branch schema, optionally with tables."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import IntegrityError
from django.db import ProgrammingError
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from psycopg import sql

from branching_ops.management import arguments
from branching_ops.management.base import BranchCommand

# The tables of a schema, each logical table once (a partitioned table
# without its partitions).
TABLES_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

# Column defaults of the new schema's tables that draw from a sequence of the
# source schema (serial columns: LIKE copies the default, not the sequence).
SHARED_SEQUENCES_SQL = """
SELECT t.relname, a.attname, s.relname, format_type(q.seqtypid, NULL), q.seqincrement,
       q.seqmin, q.seqmax, q.seqstart, q.seqcache, q.seqcycle
FROM pg_attrdef d
JOIN pg_class t ON t.oid = d.adrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
    AND dep.refclassid = 'pg_class'::regclass
JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence q ON q.seqrelid = s.oid
WHERE tn.nspname = %s AND sn.nspname = %s
ORDER BY t.relname, a.attnum
"""

SEQUENCE_TYPES = {"smallint", "integer", "bigint"}


class Command(BranchCommand):
    help = (
        "Create a branch: the schema NAME, and with --from-schema the structure of "
        "that schema's tables, in one transaction."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The branch (schema) name.")
        parser.add_argument(
            "--from-schema",
            metavar="SCHEMA",
            help="Copy the structure (not the rows) of this schema's tables.",
        )
        parser.add_argument(
            "--if-not-exists",
            action="store_true",
            help="Succeed without changing anything if the branch already exists.",
        )
        arguments.add_database_argument(parser)

    def handle(
        self,
        *args: Any,
        name: str,
        from_schema: str | None,
        if_not_exists: bool,
        database: str,
        verbosity: int,
        **options: Any,
    ) -> None:
        arguments.check_branch_schema(name)
        if from_schema is not None:
            arguments.check_branch_name(from_schema, argument="--from-schema: ")
        connection = arguments.database_connection(database)
        if schema_exists(connection, name):
            if not if_not_exists:
                raise CommandError(f"Branch {name!r} already exists.")
            if verbosity >= 1:
                self.stdout.write(f"Branch {name!r} already exists; nothing to do.")
            return
        if from_schema is not None and not schema_exists(connection, from_schema):
            raise CommandError(f"Schema {from_schema!r} does not exist.")
        try:
            with arguments.privilege_errors(), transaction.atomic(using=database):
                tables = create_branch(connection, name, from_schema)
        except (ProgrammingError, IntegrityError) as exc:
            # Created by someone else since the check above (DuplicateSchema,
            # or a unique violation when both transactions ran at once).
            if schema_exists(connection, name):
                raise CommandError(f"Branch {name!r} already exists.") from exc
            raise
        if verbosity >= 1:
            copied = (
                f" with the structure of {len(tables)} table(s) from schema {from_schema!r}"
                if from_schema is not None
                else ""
            )
            self.stdout.write(self.style.SUCCESS(f"Created branch {name!r}{copied}."))


def schema_exists(connection: BaseDatabaseWrapper, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name])
        return cursor.fetchone() is not None


def create_branch(connection: BaseDatabaseWrapper, name: str, source: str | None) -> list[str]:
    """Create schema ``name`` with the tables of ``source``; return the tables copied."""
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        if source is None:
            return []
        cursor.execute(TABLES_SQL, [source])
        tables = [table for (table,) in cursor.fetchall()]
        for table in tables:
            cursor.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(name, table), sql.Identifier(source, table)
                )
            )
        give_own_sequences(cursor, name, source)
    return tables


def give_own_sequences(cursor: CursorWrapper, name: str, source: str) -> None:
    """Give serial columns a sequence in the branch instead of the source's.

    ``LIKE ... INCLUDING ALL`` gives identity columns (Django's ``AutoField``
    since 4.1) a new sequence, but copies a serial column's default as it is:
    ``nextval('source.t_id_seq')``. The branch would then advance the source's
    counter and break when the source is dropped.
    """
    cursor.execute(SHARED_SEQUENCES_SQL, [name, source])
    created: set[str] = set()
    for (
        table,
        column,
        sequence,
        type_,
        increment,
        min_,
        max_,
        start,
        cache,
        cycle,
    ) in cursor.fetchall():
        if type_ not in SEQUENCE_TYPES:  # pragma: no cover - PostgreSQL has no others
            raise CommandError(f"Unexpected sequence type {type_!r} of {source}.{sequence}.")
        new_sequence = sql.Identifier(name, sequence)
        if sequence not in created:
            created.add(sequence)
            cursor.execute(
                sql.SQL(
                    "CREATE SEQUENCE {} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} "
                    "START WITH {} CACHE {} {} OWNED BY {}"
                ).format(
                    new_sequence,
                    sql.SQL(type_),
                    *map(sql.Literal, (increment, min_, max_, start, cache)),
                    sql.SQL("CYCLE" if cycle else "NO CYCLE"),
                    sql.Identifier(name, table, column),
                )
            )
        cursor.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT nextval({}::regclass)").format(
                sql.Identifier(name, table),
                sql.Identifier(column),
                sql.Literal(new_sequence.as_string(cursor.connection)),
            )
        )
