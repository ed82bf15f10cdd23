"""Fuzz harness: every public entry point against the common mistakes (issue 10, part 4).

A *spec* (``tests/_fuzz_specs.py``) describes one entry point: how to draw valid arguments,
which of them are arrays, the float64 reference and how to compare with it. The harness
derives the cases: each array argument in every mutation of :data:`MUTATIONS` (dtypes,
NaN/inf, layouts, read-only, 0-d, wrong rank, empty, torch with grad, meta tensors, ...), each
scalar in its bad values, and random valid draws (hypothesis, fixed seed). A case passes when
the call gives

- a result equal to the float64 reference computed on the values the call received, in the
  framework of the input, or
- a ValueError/TypeError whose message names an argument of the entry point;

anything else (another exception, an error that names no argument, a result for NaN/inf or
non-numeric input, a wrong result) is a *defect*. The cases run in a child process
(``python -m tests._fuzz --group G --jsonl``) that announces each case before running it, so
a crash of native code fails the test and names the case instead of killing pytest.

``python -m tests._fuzz --table`` prints every case and its message as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("ops", "gaussian", "bank_metrics", "predict")
SEED = 20261202


class Skip(Exception):
    """A mutation that does not apply to this argument (e.g. NaN in a bool mask)."""


# --- drawing valid arguments ------------------------------------------------------------------


class Gen:
    """Draws sizes and values: from hypothesis (``data``) or from a fixed seed (the table)."""

    def __init__(self, data=None, seed: int = SEED):
        self.data = data
        self.rng = np.random.default_rng(seed)

    def int(self, low: int, high: int, default: int | None = None) -> int:
        if self.data is None:
            return low if default is None else default
        from hypothesis import strategies as st

        return self.data.draw(st.integers(low, high))

    def choice(self, options, default=None):
        if self.data is None:
            return options[0] if default is None else default
        from hypothesis import strategies as st

        return self.data.draw(st.sampled_from(options))

    def normal(self, *shape, scale: float = 1.0) -> np.ndarray:
        """float32 values; under hypothesis sometimes integers (ties) or a large scale."""
        values = self.rng.normal(size=shape) * scale
        style = self.choice(("plain", "ties", "large", "tiny"), "plain")
        if style == "ties":
            values = np.round(values * 2)
        elif style == "large":
            values = values * 1e6
        elif style == "tiny":
            values = values * 1e-3
        return values.astype(np.float32)


# --- mutations of one array argument ----------------------------------------------------------


def _torch():
    import torch

    return torch


def _numeric(x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise Skip
    return x


def _floating(x) -> np.ndarray:
    x = _numeric(x)
    if x.dtype.kind != "f" or x.size == 0:
        raise Skip
    return x


def _poison(value):
    def mutate(x):
        x = _floating(x).copy()
        x.reshape(-1)[x.size // 2] = value
        return x

    return mutate


def _as_dtype(dtype):
    def mutate(x):
        x = _numeric(x)
        if np.dtype(dtype) == x.dtype:
            raise Skip
        if np.dtype(dtype).kind in "iub" and x.dtype.kind == "f":
            return np.round(x).astype(dtype)  # integer-valued data, so a converting op stays exact
        return x.astype(dtype)

    return mutate


def _non_contiguous(x):
    x = _numeric(x)
    if x.ndim == 0 or x.size == 0:
        raise Skip
    wide = np.repeat(x, 2, axis=-1)
    view = wide[..., ::2]
    assert not view.flags.c_contiguous or x.shape[-1] <= 1
    return view


def _negative_strides(x):
    x = _numeric(x)
    if x.ndim == 0 or x.shape[0] < 2:
        raise Skip
    return x[::-1]


def _fortran(x):
    x = _numeric(x)
    if x.ndim < 2 or min(x.shape) < 2:
        raise Skip
    return np.asfortranarray(x)


def _read_only(x):
    x = _numeric(x).copy()
    x.flags.writeable = False
    return x


def _torch_tensor(x, *, grad: bool = False, device: str = "cpu"):
    torch = _torch()
    x = _numeric(x)
    if grad and x.dtype.kind != "f":
        raise Skip
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return t.requires_grad_(True) if grad else t


def _torch_float64_strided(x):
    """A float64 tensor whose last axis is not contiguous (other dtypes: only the layout)."""
    x = x.astype(np.float64) if x.dtype.kind == "f" else x
    if x.ndim < 2:
        return _torch_tensor(x)
    return _torch_tensor(np.ascontiguousarray(np.moveaxis(x, -1, 0))).movedim(0, -1)


MUTATIONS: dict[str, Callable[[Any], Any]] = {
    "float64": _as_dtype(np.float64),
    "float16": _as_dtype(np.float16),
    "int64": _as_dtype(np.int64),
    "int32": _as_dtype(np.int32),
    "uint8": _as_dtype(np.uint8),
    "bool": _as_dtype(np.bool_),
    "complex64": _as_dtype(np.complex64),
    "object": _as_dtype(object),
    "NaN": _poison(np.nan),
    "+inf": _poison(np.inf),
    "-inf": _poison(-np.inf),
    "non-contiguous": _non_contiguous,
    "negative strides": _negative_strides,
    "Fortran order": _fortran,
    "read-only": _read_only,
    "0-d": lambda x: np.asarray(_numeric(x).reshape(-1)[:1].reshape(()) if _numeric(x).size else 0.5),
    "extra leading dim": lambda x: _numeric(x)[None],
    "flattened": lambda x: _numeric(x).reshape(-1) if _numeric(x).ndim > 1 else _numeric(x)[:, None],
    "empty (0 rows)": lambda x: _numeric(x)[:0] if _numeric(x).ndim else (_ for _ in ()).throw(Skip()),
    "1 row": lambda x: _numeric(x)[:1] if _numeric(x).ndim else (_ for _ in ()).throw(Skip()),
    "nested list": lambda x: _numeric(x).tolist(),
    "None": lambda x: None,
    "str": lambda x: "data.npy",
    "torch (alone)": _torch_tensor,
    "torch requires_grad (alone)": lambda x: _torch_tensor(x, grad=True),
    "torch meta (alone)": lambda x: _torch_tensor(x, device="meta"),
}


# --- specs and cases ---------------------------------------------------------------------------


@dataclass
class Spec:
    """One entry point.

    ``valid(gen)`` returns the keyword arguments of a valid call; ``call(**kw)`` makes it;
    ``reference(**kw)`` (numpy float64 arguments) gives the expected result or raises
    ValueError when the reference itself finds the input invalid; ``compare(got, expected,
    kw)`` raises AssertionError on a mismatch (``got`` converted to numpy). ``arrays`` maps the
    keyword of each array argument to the name its error messages use. ``scalars`` maps a keyword
    to bad values (each must give an error). ``nonfinite_ok``: NaN/inf are valid input (the
    reference says what they give).
    """

    name: str
    call: Callable[..., Any]
    valid: Callable[[Gen], dict]
    reference: Callable[..., Any] | None
    compare: Callable[[Any, Any, dict], None]
    arrays: dict[str, str]
    scalars: dict[str, list] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # further words an error may name (e.g. "N=" bounds)
    all_torch: bool = True  # also run every array argument as a torch tensor (and with grad)
    torch_out: bool = True  # torch input gives torch output (metrics return numpy / floats)
    nonfinite_ok: bool = False
    exact_any_finite: bool = False  # the contract holds for any finite value: huge/tiny values too
    extra: Callable[[dict], list] | None = None  # handcrafted (arg, mistake, kwargs) cases
    group: str = "ops"


@dataclass
class Outcome:
    spec: str
    arg: str
    mutation: str
    kind: str  # "result" | "error" | "skip"
    message: str
    defect: str  # "" when the case passed

    def row(self) -> dict:
        return self.__dict__.copy()


def to_numpy(x):
    """Results of any framework as numpy (tuples, dicts and NamedTuples walked)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(to_numpy(v) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x)
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    return x


def _holds_arrays(x) -> bool:
    return isinstance(x, (tuple, list)) and any(
        v is None or hasattr(v, "detach") or isinstance(v, np.ndarray) or _holds_arrays(v) for v in x)


def as_float64(x):
    """The values a call received as numpy: floats as float64, integers as int64, booleans kept
    (None when they have no real value). Containers of arrays are walked."""
    if x is None or isinstance(x, str):
        return None
    if hasattr(x, "detach"):
        if x.device.type == "meta" or x.is_complex():
            return None
        x = x.detach().cpu().numpy()
    if _holds_arrays(x):
        return type(x)(as_float64(v) for v in x)
    if isinstance(x, dict):
        return {k: as_float64(v) for k, v in x.items()}
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        return None
    if arr.dtype.kind not in "fiub":
        return None
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    return arr.astype(np.int64 if arr.dtype.kind in "iu" else bool)


def _finite(values) -> bool:
    if values is None:
        return True
    if isinstance(values, dict):
        return all(_finite(v) for v in values.values())
    if isinstance(values, (tuple, list)):
        return all(_finite(v) for v in values)
    if isinstance(values, np.ndarray):
        return values.dtype.kind == "b" or bool(np.isfinite(values).all())
    return True


def _is_torch_tree(x) -> bool:
    if hasattr(x, "detach"):
        return True
    if isinstance(x, (tuple, list)):
        return any(_is_torch_tree(v) for v in x)
    return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def run_case(spec: Spec, arg: str, mutation: str, kwargs: dict, originals: dict | None = None) -> Outcome:
    """Calls ``spec`` with ``kwargs`` and judges the outcome (see the module docstring)."""
    names = (*spec.arrays.values(), *spec.scalars, *spec.names)
    try:
        result = spec.call(**kwargs)
    except (ValueError, TypeError) as exc:
        message = _one_line(exc)
        named = any(n in str(exc) for n in names)
        return Outcome(spec.name, arg, mutation, "error", message, "" if named else "error names no argument")
    except Exception as exc:  # every other exception is the defect we look for
        return Outcome(spec.name, arg, mutation, "error", _one_line(exc), "not a ValueError/TypeError")
    heads = {path.split(".")[0] for path in spec.arrays}
    values = {k: as_float64(v) if k in heads else v for k, v in kwargs.items()}
    message = "result"
    for path in spec.arrays:
        try:
            leaf, given = _get(values, path), _get(kwargs, path)
        except (KeyError, IndexError, TypeError):
            continue
        if leaf is None and given is not None:
            return Outcome(spec.name, arg, mutation, "result", message, f"accepted {path} without real values")
    if not spec.nonfinite_ok and not all(_finite(values[k]) for k in heads):
        return Outcome(spec.name, arg, mutation, "result", message, "accepted NaN/inf")
    if spec.reference is None:
        return Outcome(spec.name, arg, mutation, "result", message, "")
    torch_in = any(_is_torch_tree(kwargs[k]) for k in heads)
    if torch_in and spec.torch_out and not _is_torch_tree(result) and not isinstance(result, (float, dict)):
        return Outcome(spec.name, arg, mutation, "result", message, "torch input gave a non-torch result")
    try:
        expected = spec.reference(**values)
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
        return Outcome(spec.name, arg, mutation, "result", message, f"accepted input the reference rejects: {exc}")
    try:
        spec.compare(to_numpy(result), expected, values)
    except AssertionError as exc:
        return Outcome(spec.name, arg, mutation, "result", message, f"differs from the float64 reference: {exc}")
    return Outcome(spec.name, arg, mutation, "result", message, "")


def _get(kwargs: dict, path: str):
    head, _, rest = path.partition(".")
    value = kwargs[head]
    for part in filter(None, rest.split(".")):
        value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
    return value


def _set(kwargs: dict, path: str, new) -> dict:
    """A copy of ``kwargs`` with the (possibly nested: ``weights.0``) argument replaced."""
    head, _, rest = path.partition(".")
    out = dict(kwargs)
    if not rest:
        out[head] = new
        return out
    parts = rest.split(".")

    def replace(container, parts):
        key = int(parts[0]) if isinstance(container, (list, tuple)) else parts[0]
        inner = new if len(parts) == 1 else replace(container[key], parts[1:])
        if isinstance(container, dict):
            return {**container, key: inner}
        items = list(container)
        items[key] = inner
        return type(container)(items) if not hasattr(container, "_fields") else type(container)(*items)

    out[head] = replace(kwargs[head], parts)
    return out


def _map_arrays(spec: Spec, kwargs: dict, fn) -> dict:
    out = kwargs
    for path in spec.arrays:
        value = _get(kwargs, path)
        if isinstance(value, np.ndarray):
            out = _set(out, path, fn(value))
    return out


def cases(spec: Spec):
    """(arg, mutation, kwargs) of every table case of ``spec``."""
    base = spec.valid(Gen())
    yield "-", "valid", base
    for path in spec.arrays:
        for name, mutate in MUTATIONS.items():
            try:
                new = mutate(_get(base, path))
            except Skip:
                continue
            yield path, name, _set(base, path, new)
        if spec.exact_any_finite:
            value = _get(base, path)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
                unit = value / max(float(np.abs(value).max()), 1e-30)
                yield path, "huge values (1e38)", _set(base, path, (unit * 1e38).astype(value.dtype))
                yield path, "subnormal values (1e-40)", _set(base, path, (unit * 1e-40).astype(value.dtype))
    for path, bad in spec.scalars.items():
        for value in bad:
            yield path, f"= {value!r}", _set(base, path, value)
    if spec.extra:
        yield from spec.extra(base)
    if spec.all_torch:
        yield "all", "torch", _map_arrays(spec, base, _torch_tensor)
        yield "all", "torch float64 non-contiguous", _map_arrays(spec, base, _torch_float64_strided)
        yield "all", "torch requires_grad", _map_arrays(
            spec, base, lambda x: _torch_tensor(x, grad=x.dtype.kind == "f"))


def run_group(group: str, emit: Callable[[str], None] | None = None) -> list[Outcome]:
    """Runs every table case of ``group``; ``emit`` gets a line before each case (crash locator)."""
    from tests import _fuzz_specs

    out = []
    for spec in _fuzz_specs.specs(group):
        for arg, mutation, kwargs in cases(spec):
            if emit:
                emit(json.dumps({"start": [spec.name, arg, mutation]}))
            try:
                outcome = run_case(spec, arg, mutation, kwargs)
            except Exception:  # a harness error is reported, not hidden
                outcome = Outcome(spec.name, arg, mutation, "error", traceback.format_exc(limit=2), "harness error")
            out.append(outcome)
            if emit:
                emit(json.dumps(outcome.row()))
    return out


def property_check(group: str, max_examples: int) -> list[str]:
    """Random valid draws (hypothesis, derandomized) of every spec: each must match its reference
    or give a named ValueError/TypeError. Returns the failures (one line each)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests import _fuzz_specs

    def prop_for(spec: Spec):
        @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(st.data(), st.integers(0, 2**32 - 1))
        def prop(data, seed):
            kwargs = spec.valid(Gen(data, seed))
            outcome = run_case(spec, "-", "random", kwargs)
            assert not outcome.defect, f"{outcome.defect} ({outcome.message}; shapes {_shapes(kwargs)})"

        return prop

    failures = []
    for spec in _fuzz_specs.specs(group):
        if spec.reference is None:
            continue
        try:
            prop_for(spec)()
        except AssertionError as exc:
            failures.append(f"{spec.name}: {str(exc).splitlines()[0]}")
    return failures


def _shapes(kwargs: dict) -> str:
    return ", ".join(f"{k}={tuple(v.shape) if hasattr(v, 'shape') else v!r}" for k, v in kwargs.items()
                     if not isinstance(v, (list, tuple, dict)))


def run_in_subprocess(group: str, *extra: str, timeout: float = 300) -> tuple[list[dict], str | None]:
    """Runs a group in a child process; returns its outcome rows and, when the child died,
    which case it was running."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, "-m", "tests._fuzz", "--group", group, "--jsonl", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    rows, last = [], None
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "start" in row:
            last = row["start"]
        else:
            rows.append(row)
            last = None
    crash = None
    if proc.returncode != 0:
        crash = f"child exited with {proc.returncode} during {last}: {proc.stderr[-2000:]}"
    return rows, crash


def assert_clean(group: str, hypothesis: int = 0, min_cases: int = 1) -> list[dict]:
    """Runs ``group`` in a child process; fails on a crash, a defect or too few cases."""
    rows, crash = run_in_subprocess(group, *(["--hypothesis", str(hypothesis)] if hypothesis else []))
    assert crash is None, crash
    defects = [r for r in rows if r["defect"]]
    assert not defects, f"{len(defects)} defects:\n" + table(defects)
    assert len(rows) >= min_cases, f"only {len(rows)} cases ran"
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| entry point | argument | mistake | outcome | message | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        message = r["message"].replace("|", "\\|").replace("\n", " ")[:160]
        verdict = "ok" if not r["defect"] else f"**DEFECT**: {r['defect']}"
        lines.append(f"| {r['spec']} | {r['arg']} | {r['mutation']} | {r['kind']} | {message} | "
                     f"{verdict.replace('|', '/')[:200]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=GROUPS, action="append")
    parser.add_argument("--jsonl", action="store_true", help="one JSON line per case (child mode)")
    parser.add_argument("--table", action="store_true", help="markdown table of every case")
    parser.add_argument("--hypothesis", type=int, default=0, metavar="N",
                        help="also run N random valid draws per entry point")
    parser.add_argument("--selftest-crash", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    groups = args.group or list(GROUPS)
    if args.jsonl:
        import warnings

        warnings.simplefilter("ignore")  # the judged outcome is the return value or the exception

        def emit(line):
            print(line, flush=True)
            if args.selftest_crash and line.startswith('{"start"'):
                os.abort()  # the harness's own test: a native crash in the middle of a case

        for group in groups:
            run_group(group, emit)
            if args.hypothesis:
                for failure in property_check(group, args.hypothesis):
                    print(json.dumps({"spec": failure.split(":")[0], "arg": "-", "mutation": "random valid draw",
                                      "kind": "result", "message": failure, "defect": failure}), flush=True)
        return 0
    rows = []
    for group in groups:
        group_rows, crash = run_in_subprocess(group, *(["--hypothesis", str(args.hypothesis)] if args.hypothesis
                                                       else []))
        rows += group_rows
        if crash:
            print(f"CRASH in group {group}: {crash}", file=sys.stderr)
    if args.table:
        defects = sum(1 for r in rows if r["defect"])
        print(f"{len(rows)} cases, {defects} defects\n")
        print(table(rows))
    return 1 if any(r["defect"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
