"""A stand-in for ``polars`` on a GPU host whose carried wheels leave polars out (benchmarks/gpu_suite.sh).

Why: ultralytics 8.4 imports polars in exactly one place on the training path,
``BaseTrainer.read_results_csv`` (results.csv -> a dict stored in every checkpoint), and in
plotting code that ``plots=False`` never reaches. The real wheel (polars-runtime-32) is 54 MB,
most of what the 64 MiB a device call may carry. The suite puts this folder on ``PYTHONPATH``
only when ``import polars`` fails, and every JSON result names it (``"polars": "shim (...)"``).

Only what that path calls is here, backed by pandas: ``read_csv(source).to_dict(as_series=False)``
and ``DataFrame(data, schema=...)`` with ``to_dict``/``write_csv``. Anything else raises, so a
new use shows up as an error, never as a silently different result. Not for use elsewhere.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

PYROBLUR_SHIM = True
__version__ = "0+pyroblur-shim"


class DataFrame:
    def __init__(self, data: Any = None, schema: Any = None, **_: Any) -> None:
        if isinstance(data, pd.DataFrame):
            self._df = data
        else:
            columns = list(schema) if schema is not None else None
            self._df = pd.DataFrame(data, columns=columns)

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self._df.columns]

    def __len__(self) -> int:
        return len(self._df)

    def to_dict(self, as_series: bool = True) -> dict[str, list]:
        if as_series:
            raise NotImplementedError("polars shim: only to_dict(as_series=False)")
        return {str(c): self._df[c].tolist() for c in self._df.columns}

    def write_csv(self, file: Any = None) -> str | None:
        text = self._df.to_csv(index=False)
        if file is None:
            return text
        with open(file, "w") as fh:
            fh.write(text)
        return None


def read_csv(source: Any, infer_schema_length: int | None = None, **_: Any) -> DataFrame:
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    return DataFrame(pd.read_csv(source))


def __getattr__(name: str) -> Any:
    raise AttributeError(f"polars shim (benchmarks/gpu_shims): '{name}' is not provided; carry the real polars")
