"""Core statements planned once, then run straight on the DBAPI connection.

SQLAlchemy's execution machinery (execution context, cache-key lookup, parameter processing,
cursor result) costs tens of microseconds per statement on top of the driver, several times
what SQLite itself takes for a keyed UPDATE. A hot path that runs the same module-level
statements over and over can skip it: `StatementPlans.plan` compiles a statement once per
parameter shape into its SQL text and a `Plan` that turns the caller's parameters into the
driver's positional arguments (values by key, literal binds, Python-side scalar defaults of an
INSERT, bind processors, expanded IN lists) and the driver's rows into a SQLAlchemy `Result`
(result processors applied), so callers still use `.mappings()`, `.scalar_one()`, `.rowcount`.

Only a statement seen before is planned: a statement built per call (a new object every
time) is never cached and goes through SQLAlchemy as usual (`plan` returns None), and so does
anything a plan does not cover (callable defaults, escaped bind names, non-positional
paramstyles, many parameter sets with RETURNING). The cache keeps the statements it keys on,
so an id is never reused while cached, and is bounded (least recently used out).

On PostgreSQL an INSERT of many rows can also run as one statement (`StatementPlans.arrays`):
`INSERT ... SELECT FROM unnest($1::type[], ...) WITH ORDINALITY ORDER BY ordinality`, one
array per column, so the server plans and runs one statement instead of one per row, and the
rows are inserted (and take their serial ids) in the order given.

A write whose result its caller never reads can be marked so (`unread_write`): a connection
that defers such writes (the ledger's PostgreSQL writer) sends them with the next statement of
the same transaction, as data-modifying CTEs of one statement (`with_unread`), saving a round
trip each.
"""

from __future__ import annotations

import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Dialect
from sqlalchemy.engine import Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, UpdateBase
from sqlalchemy.sql.elements import BindParameter

Params = Mapping[str, Any]
_MISSING = object()
E = TypeVar("E", bound=Executable)

UNREAD_WRITE = "p2e_unread_write"  # execution option: the table a write writes
_PARAMETER = re.compile(r"\$(\d+)")


def unread_write(statement: E, table: str = "") -> E:
    """`statement`, marked as a write whose result its caller does not read (not even the
    row count): it may be sent later, with the next statement of the same transaction.
    `table`: the table it writes (found by itself for an INSERT, UPDATE or DELETE)."""
    if not table:
        if not isinstance(statement, UpdateBase):
            raise TypeError("unread_write needs the table of a textual statement")
        table = str(cast(Any, statement).table.name)
    return cast(E, statement.execution_options(**{UNREAD_WRITE: table}))


def unread_write_table(statement: Any) -> str | None:
    """The table an `unread_write` statement writes; None for any other statement."""
    if not isinstance(statement, Executable):
        return None
    return statement.get_execution_options().get(UNREAD_WRITE)


def combinable(sql: str) -> bool:
    """Whether `sql` (with $n parameters) can be one part of `with_unread`: no string
    literals (a "$1" inside one would be renumbered) and no WITH of its own."""
    return "'" not in sql and sql.lstrip()[:4].upper() != "WITH"


def with_unread(
    writes: Sequence[tuple[str, Sequence[Any]]], sql: str, args: Sequence[Any]
) -> tuple[str, list[Any]]:
    """One PostgreSQL statement: each of `writes` (sql, args) as a data-modifying CTE, then
    `sql`; parameters renumbered in order. Every part sees the snapshot taken before any of
    them ran: `sql` must not read what `writes` write."""
    parts, combined = [], []
    for n, (part, part_args) in enumerate(writes):
        parts.append(f"w{n} AS ({_shifted(part, len(combined))})")
        combined += part_args
    main = _shifted(sql, len(combined))
    return f"WITH {', '.join(parts)} {main}", [*combined, *args]


def _shifted(sql: str, offset: int) -> str:
    if not offset:
        return sql
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


class PreparedResult(IteratorResult[Any]):
    """A buffered result with the driver's rowcount."""

    def __init__(self, keys: Sequence[str], rows: list[Any], rowcount: int) -> None:
        super().__init__(SimpleResultMetaData(keys), iter(rows))
        self.rowcount = rowcount


@dataclass(frozen=True)
class _Arg:
    key: str  # the caller's parameter key
    index: int | None  # position inside an expanded IN list
    default: Any  # used when the key is absent (_MISSING: required)
    process: Callable[[Any], Any] | None


class Plan:
    """One statement in one parameter shape: SQL text, argument builder, result builder."""

    def __init__(
        self,
        sql: str,
        args: list[_Arg],
        keys: Sequence[str] | None,
        processors: list[Callable[[Any], Any] | None] | None,
    ) -> None:
        self.sql = sql
        self._args = args
        self.returns_rows = keys is not None
        self._keys = tuple(keys or ())
        self._processors = processors if processors and any(processors) else None
        # Every value by its key, none from a list: one C call takes them all (`args`), until
        # a parameter set lacks a key (one left to its default): then always one by one.
        self._take: Callable[[Params], Any] | None = (
            operator.itemgetter(*[arg.key for arg in args])
            if args and all(arg.index is None for arg in args)
            else None
        )
        self._single = len(args) == 1
        self._process = [(n, arg.process) for n, arg in enumerate(args) if arg.process]

    @property
    def arg_keys(self) -> list[str]:
        """The parameter key of each positional argument, in order."""
        return [arg.key for arg in self._args]

    def args(self, params: Params | None) -> tuple[Any, ...]:
        take = self._take
        if take is None or not params:
            return self._args_one_by_one(params)
        try:
            taken = take(params)
        except KeyError:
            self._take = None
            return self._args_one_by_one(params)
        values = (taken,) if self._single else taken
        if not self._process:
            return values
        converted = list(values)
        for n, process in self._process:
            converted[n] = process(converted[n])
        return tuple(converted)

    def _args_one_by_one(self, params: Params | None) -> tuple[Any, ...]:
        values = []
        for arg in self._args:
            value = (params or {}).get(arg.key, arg.default)
            if value is _MISSING:
                raise KeyError(f"a value is required for bind parameter {arg.key!r}")
            if arg.index is not None:  # a list padded to its bucket with its last value
                value = value[min(arg.index, len(value) - 1)]
            values.append(arg.process(value) if arg.process else value)
        return tuple(values)

    def result(self, rows: Sequence[Sequence[Any]] | None, rowcount: int) -> Result[Any]:
        if not self.returns_rows:
            return PreparedResult((), [], rowcount)
        processors = self._processors
        if processors is None:
            out = [tuple(row) for row in rows or ()]
        else:
            out = [
                tuple(p(v) if p else v for p, v in zip(processors, row, strict=True))
                for row in rows or ()
            ]
        return PreparedResult(self._keys, out, rowcount)


class ArrayInsert:
    """A many-row INSERT as one PostgreSQL statement over one array per column."""

    def __init__(self, sql: str, plan: Plan) -> None:
        self.sql = sql
        self.plan = plan

    def args(self, rows: Sequence[Params]) -> list[list[Any]]:
        """The column arrays of `rows` (each row's values as the plan builds them)."""
        return [list(column) for column in zip(*(self.plan.args(row) for row in rows), strict=True)]


class StatementPlans:
    """Plans for one dialect, by statement and parameter shape (bounded, LRU)."""

    def __init__(self, dialect: Dialect, *, size: int = 256) -> None:
        self.dialect = dialect
        self.size = size
        self._plans: OrderedDict[tuple[Any, ...], Plan | None] = OrderedDict()
        self._arrays: OrderedDict[Plan, ArrayInsert | None] = OrderedDict()
        self._seen: OrderedDict[ClauseElement, None] = OrderedDict()

    def plan(self, statement: Any, params: Params | Sequence[Params] | None) -> Plan | None:
        """The plan for `statement` with these parameters, or None: run it through SQLAlchemy."""
        if not isinstance(statement, ClauseElement):
            return None
        many = isinstance(params, Sequence)
        sample = cast(Sequence[Params], params)[0] if many and params else params
        if many and not params:
            return None
        sample = cast(Params | None, sample)
        key = (statement, many, *_shape(sample))
        found = self._plans.get(key, _MISSING)
        if found is not _MISSING:
            self._plans.move_to_end(key)
            return cast(Plan | None, found)
        if statement not in self._seen:  # first sighting: maybe a statement built per call
            self._seen[statement] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return None
        plan = _build(statement, self.dialect, sample, many)
        self._plans[key] = plan
        if len(self._plans) > self.size:
            self._plans.popitem(last=False)
        return plan

    def arrays(self, statement: Any, plan: Plan) -> ArrayInsert | None:
        """`plan` (an INSERT planned for many rows) as one statement over column arrays, on
        PostgreSQL; None for anything else (run the plan once per row)."""
        found = self._arrays.get(plan, _MISSING)
        if found is _MISSING:
            found = _array_insert(statement, self.dialect, plan)
            self._arrays[plan] = found
            if len(self._arrays) > self.size:
                self._arrays.popitem(last=False)
        return cast(ArrayInsert | None, found)


def _array_insert(statement: Any, dialect: Dialect, plan: Plan) -> ArrayInsert | None:
    if dialect.name != "postgresql" or not isinstance(statement, Insert) or plan.returns_rows:
        return None
    if statement._multi_values or statement._values or statement.select is not None:
        return None
    table = statement.table
    preparer = dialect.identifier_preparer
    names, arrays = [], []
    for n, arg in enumerate(plan.arg_keys):
        column = table.c.get(arg)
        if column is None:
            return None
        names.append(preparer.format_column(column))
        arrays.append(f"${n + 1}::{column.type.compile(dialect=dialect)}[]")
    aliases = [f"c{n}" for n in range(len(names))]
    sql = (
        f"INSERT INTO {preparer.format_table(table)} ({', '.join(names)}) "
        f"SELECT {', '.join(aliases)} FROM unnest({', '.join(arrays)}) "
        f"WITH ORDINALITY AS u({', '.join(aliases)}, ordinality) ORDER BY ordinality"
    )
    return ArrayInsert(sql, plan)


def _shape(params: Params | None) -> tuple[Any, ...]:
    """What the compiled SQL depends on: the keys given and the lengths of list values,
    rounded up to a power of two (the list is padded by repeating its last value, which an
    IN list does not mind), so a statement has a handful of plans, not one per length."""
    if not params:
        return ()
    return tuple(
        (k, _bucket(len(v))) if isinstance(v, list | tuple) else k
        for k, v in sorted(params.items())
    )


def _bucket(length: int) -> int:
    return 1 << (length - 1).bit_length() if length > 1 else length


def _padded(params: Params | None) -> dict[str, Any]:
    """`params` with each list value padded to its bucket's length (see `_shape`)."""
    out = dict(params or {})
    for key, value in out.items():
        if isinstance(value, list | tuple) and value:
            out[key] = [*value, *[value[-1]] * (_bucket(len(value)) - len(value))]
    return out


def _build(statement: Any, dialect: Dialect, sample: Params | None, many: bool) -> Plan | None:
    keys = sorted(sample) if sample else []
    compiled = statement.compile(dialect=dialect, column_keys=keys, for_executemany=many)
    if not isinstance(compiled, SQLCompiler) or not compiled.positional:
        return None
    if compiled.escaped_bind_names or compiled.literal_execute_params:
        return None
    returns_rows = bool(compiled._result_columns) or bool(getattr(compiled, "returning", None))
    if many and returns_rows:
        return None
    by_name: dict[str, BindParameter[Any]] = {n: b for b, n in compiled.bind_names.items()}
    # Columns whose Python-side default (INSERT) or onupdate (UPDATE) SQLAlchemy would supply.
    prefetch = {c.key: c.default for c in compiled.insert_prefetch}
    prefetch |= {c.key: c.onupdate for c in compiled.update_prefetch}
    if compiled.post_compile_params:
        state = compiled.construct_expanded_state(_padded(sample))
        sql, names, processors = state.statement, state.positiontup or [], state.processors
        expanded = {
            x: (o, i) for o, xs in state.parameter_expansion.items() for i, x in enumerate(xs)
        }
    else:
        sql, names = compiled.string, compiled.positiontup or []
        processors, expanded = compiled._bind_processors, {}
    args = []
    for name in names:
        original, index = expanded.get(name, (name, None))
        bind = by_name.get(original)
        if bind is None or bind.callable is not None:
            return None
        default: Any = _MISSING if bind.required else bind.value
        if bind.key in prefetch:
            generator = prefetch[bind.key]
            if generator is None or not generator.is_scalar:
                return None  # a callable or SQL default: SQLAlchemy computes it
            default = getattr(generator, "arg", None)
        process = processors.get(name)
        if process is not None and not callable(process):
            return None  # a tuple type's per-element processors
        args.append(_Arg(bind.key, index, default, cast(Callable[[Any], Any] | None, process)))
    if not returns_rows:
        return Plan(sql, args, None, None)
    columns = compiled._result_columns
    result_keys = [entry[0] for entry in columns]
    result_processors = [
        cast(Callable[[Any], Any] | None, entry[3]._cached_result_processor(dialect, None))
        for entry in columns
    ]
    return Plan(sql, args, result_keys, result_processors)
