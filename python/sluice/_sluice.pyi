"""The native module of sluice (Rust, PyO3); use the ``sluice`` package's functions."""

from typing import Any, Callable, Mapping, Optional

import pyarrow as pa

__version__: str

class SluiceError(Exception):
    """Base class of every error sluice raises."""

class InputError(SluiceError):
    """An input cannot be read (no match, missing, corrupt, a bad row under on_error='fail')."""

class SchemaError(SluiceError):
    """The inputs' columns cannot be merged into one schema."""

class ConfigError(SluiceError):
    """An option, a pipeline or an output is wrong."""

class SqlError(SluiceError):
    """A SQL statement cannot be planned."""

class ApiError(SluiceError):
    """An HTTP API call of an enrich stage failed (on_error='fail')."""

class FunctionError(SluiceError):
    """A Python batch function raised; its exception is the __cause__."""

class UnreadRowsWarning(UserWarning):
    """Rows of the input are not in a result (rejected, skipped, unreadable files)."""

class Relation:
    """A lazy relation (see ``sluice.Relation``)."""

    @property
    def schema(self) -> pa.Schema: ...
    def sql(self, query: str, table_name: Optional[str] = None) -> Relation: ...
    def to_arrow(self) -> pa.Table: ...
    def to_batches(self) -> pa.RecordBatchReader: ...
    def explain(self) -> str: ...
    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any: ...

def scan(
    paths: Any,
    options: Optional[Mapping[str, Any]] = None,
    rejects: Optional[str] = None,
    threads: Optional[int] = None,
    storage_options: Optional[Mapping[str, str]] = None,
) -> Relation: ...
def run_file(path: str, progress: bool = False) -> str: ...
def run_toml(spec: Mapping[str, Any], progress: bool = False) -> str: ...
def run_steps(steps: list, progress: bool = False) -> str: ...
