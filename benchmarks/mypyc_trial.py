"""What compiling sagakit's hot, typed modules with mypyc would buy: a trial, not a build.

sagakit ships as pure Python. These modules are fully typed and run on every step of every
saga, so mypyc (which ships with mypy) could compile them to C extensions as an optional
build; before anyone maintains such a build, this measures what it gains, in-process, where
the engine's own code is the whole cost (the memory store: no disk, no server).

The trial never touches ``src/``: it copies ``src/sagakit`` twice into a scratch directory,
removed afterwards. Each candidate module is first compiled alone in a copy of its own and
given a smoke run (some compile but then fail at import: mypyc's semantics are not quite
CPython's), so the report can say which ones mypyc refuses and why; the ones that pass are
compiled together into one copy, the other copy stays pure.

Each measurement is a child process (``python -m benchmarks.mypyc_trial --child SPEC``)
whose ``PYTHONPATH`` puts one of the copies first, so ``sagakit`` is imported from it (the
child reports each module's file, and the trial checks the compiled ones are the ``.so``
files); the harness (``benchmarks``) is this checkout's for both. The children alternate,
pure then compiled then compiled then pure..., so drift in the machine's speed touches both
alike; each runs the suite's in-process scenarios: the hand-written orchestrator (the
baseline, which mypyc does not touch, so its figure shows the noise) and ``sagakit`` on
``MemoryStore``, sequential and concurrent, every timed run on a fresh subject. The first
child sizes the runs; every other one runs as many sagas.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.measure import Mode, sized, timed
from benchmarks.pg_fleet import ROOT
from benchmarks.suite import FULL, HAND_WRITTEN, MEMORY, SCENARIOS, Scenario

SOURCE = ROOT / "src" / "sagakit"
CANDIDATES = (
    "sagakit/log/_state.py",
    "sagakit/log/_records.py",
    "sagakit/log/_fast.py",
    "sagakit/log/_codec.py",
    "sagakit/orchestration/_driver.py",
    "sagakit/orchestration/_plan.py",
    "sagakit/orchestration/_context.py",
    "sagakit/store/memory.py",
)
"""The state fold, the records, the enum namespaces, the JSON codec, the step driver and
plan, the step contexts and the memory store: pure code on the hot path, typed strictly."""
TRIAL = tuple(s for s in SCENARIOS if s.name in (HAND_WRITTEN, MEMORY))
REPETITIONS = 5
RUNS_PER_CHILD = 2
TARGET_SECONDS = 0.5
SMOKE_SAGAS = 20
BUILD_TIMEOUT = 900.0
CHILD_TIMEOUT = 600.0
TIMES = "\u00d7"
DASH = "\u2013"
_ERROR_LINE = re.compile(r"^\S+\.py:\d+: error: .*$", re.MULTILINE)
_TRACE_FILE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


class Variant(StrEnum):
    PURE = "pure Python"
    COMPILED = "mypyc"


@dataclass(frozen=True, slots=True)
class Probe:
    """One candidate compiled alone: whether it builds and runs, and why not."""

    module: str
    compiled: bool
    reason: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Figure:
    """One scenario's rates in one variant, over every child and run."""

    scenario: str
    mode: Mode
    variant: Variant
    sagas: int
    cpu_rates: tuple[float, ...]
    """Sagas per second of the child's CPU time, one per timed run: the figure compared, as
    other work on a shared machine moves it far less than the wall clock (the scenarios
    never wait on I/O, so their CPU time is their whole cost)."""
    wall_rates: tuple[float, ...]
    """Sagas per wall-clock second, as the suite reports them."""
    ok: bool
    """Every saga completed and (on the memory store) every log is whole."""

    def median(self, cpu: bool = True) -> float:
        rates = self.cpu_rates if cpu else self.wall_rates
        return statistics.median(rates) if rates else float("nan")


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What compiled, how long the build took, and both variants' figures."""

    probes: tuple[Probe, ...] = ()
    modules: tuple[str, ...] = ()
    """The candidates that passed their probe, compiled together for the timing."""
    build_seconds: float = 0.0
    repetitions: int = 0
    runs_per_child: int = 0
    figures: tuple[Figure, ...] = ()
    error: str | None = None
    """Why nothing was timed (no candidate compiled, the build failed), if so."""
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems and all(f.ok for f in self.figures)

    def figure(self, scenario: str, mode: Mode, variant: Variant) -> Figure:
        return next(
            f for f in self.figures if (f.scenario, f.mode, f.variant) == (scenario, mode, variant)
        )

    def speedup(self, scenario: str, mode: Mode, cpu: bool = True) -> float:
        """The compiled median over the pure one (above 1: mypyc is faster)."""
        pure = self.figure(scenario, mode, Variant.PURE).median(cpu)
        return self.figure(scenario, mode, Variant.COMPILED).median(cpu) / pure

    def versus_hand_written(self, mode: Mode, variant: Variant, cpu: bool = True) -> float:
        """sagakit on MemoryStore over the hand-written orchestrator, in the same children."""
        hand = self.figure(HAND_WRITTEN, mode, variant).median(cpu)
        return self.figure(MEMORY, mode, variant).median(cpu) / hand


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What a child process measures (passed as JSON on its command line)."""

    modules: list[str]
    """Dotted names whose files the child reports."""
    warmup_scale: float = 1.0
    target_seconds: float = TARGET_SECONDS
    runs: int = RUNS_PER_CHILD
    sagas: dict[str, int] | None = None
    """Sagas per timed run, by :func:`_key`; None: size them from the warm-ups."""


@dataclass(slots=True)
class _Collected:
    """Rates gathered from the children, per variant and scenario."""

    cpu: dict[tuple[Variant, str], list[float]] = field(default_factory=dict)
    wall: dict[tuple[Variant, str], list[float]] = field(default_factory=dict)
    ok: dict[tuple[Variant, str], bool] = field(default_factory=dict)
    sagas: dict[str, int] | None = None


# -- the trial ----------------------------------------------------------------------------


def run_trial(
    candidates: Sequence[str] = CANDIDATES,
    repetitions: int = REPETITIONS,
    quick: bool = False,
) -> TrialResult:
    """Probe each candidate, compile the ones that pass together, time both variants."""
    with tempfile.TemporaryDirectory(prefix="sagakit-mypyc-") as scratch:
        pure = _copy_source(Path(scratch) / "pure")
        probes = tuple(probe(pure, module, Path(scratch) / "probe") for module in candidates)
        modules = tuple(p.module for p in probes if p.compiled)
        if not modules:
            return TrialResult(probes, error="mypyc compiled none of the candidates")
        compiled = _copy_source(Path(scratch) / "compiled")
        began = time.perf_counter()
        failure = compile_modules(compiled, modules)
        build = time.perf_counter() - began
        if failure is not None:
            return TrialResult(
                probes, modules, build, error=f"the combined build failed: {failure}"
            )
        _progress(f"mypyc: {len(modules)} modules compiled together in {build:.0f} s")
        roots = {Variant.PURE: pure, Variant.COMPILED: compiled}
        collected, problems = _alternate(roots, modules, repetitions, quick)
    runs = 1 if quick else RUNS_PER_CHILD
    figures = _figures(collected)
    return TrialResult(probes, modules, build, repetitions, runs, figures, problems=problems)


def _copy_source(root: Path) -> Path:
    """A copy of ``src/sagakit`` under ``root`` (without bytecode or built extensions)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
    shutil.copytree(SOURCE, root / "sagakit", ignore=ignore)
    return root


def probe(pure: Path, module: str, workdir: Path) -> Probe:
    """Compile ``module`` alone in a fresh copy and smoke-run it there; the copy goes after."""
    began = time.perf_counter()
    shutil.copytree(pure, workdir)
    try:
        failure = compile_modules(workdir, [module])
        if failure is None:
            failure = _smoke(workdir, module)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - began
    verdict = "compiles" if failure is None else f"refused: {failure}"
    _progress(f"mypyc probe: {module} {verdict} ({seconds:.0f} s)")
    return Probe(module, failure is None, failure, seconds)


def compile_modules(root: Path, modules: Sequence[str]) -> str | None:
    """mypyc ``modules`` (paths under ``root``) in place, as one group; None, or why not."""
    command = [sys.executable, "-m", "mypyc", *modules]
    try:
        done = subprocess.run(
            command, cwd=root, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"mypyc did not finish within {BUILD_TIMEOUT:g} s"
    if done.returncode == 0:
        return None
    errors = _ERROR_LINE.findall(done.stdout + done.stderr)
    return "; ".join(errors[:3]) if errors else _last_line(done.stdout + done.stderr)


def _smoke(root: Path, module: str) -> str | None:
    """A few sagas of every scenario with ``module`` compiled; None, or what went wrong."""
    sagas = {_key(s): SMOKE_SAGAS for s in TRIAL}
    spec = ChildSpec([_dotted(module)], warmup_scale=0.0, runs=1, sagas=sagas)
    try:
        out = run_child(root, spec)
    except ChildError as error:
        return str(error)
    problems = verify(out, root, [module], [module])
    if not all(scenario["ok"] for scenario in out["scenarios"]):
        problems.append("some sagas did not complete or their logs are not whole")
    return "; ".join(problems) or None


def _alternate(
    roots: dict[Variant, Path], modules: Sequence[str], repetitions: int, quick: bool
) -> tuple[_Collected, tuple[str, ...]]:
    """Children in alternating order, pure first; their rates and what went wrong."""
    collected = _Collected()
    problems: list[str] = []
    for number in range(repetitions):
        order = list(Variant) if number % 2 == 0 else list(reversed(Variant))
        for variant in order:
            compiled = modules if variant is Variant.COMPILED else []
            spec = ChildSpec(
                [_dotted(m) for m in modules],
                warmup_scale=0.02 if quick else 1.0,
                target_seconds=0.05 if quick else TARGET_SECONDS,
                runs=1 if quick else RUNS_PER_CHILD,
                sagas=collected.sagas,
            )
            try:
                out = run_child(roots[variant], spec)
            except ChildError as error:
                return collected, (*problems, f"{variant}: {error}")
            problems += verify(out, roots[variant], modules, compiled)
            _collect(collected, variant, out)
        _progress(f"mypyc trial: round {number + 1}/{repetitions}")
    return collected, tuple(dict.fromkeys(problems))


def _collect(collected: _Collected, variant: Variant, out: dict[str, Any]) -> None:
    for scenario in out["scenarios"]:
        key = (variant, str(scenario["key"]))
        collected.cpu.setdefault(key, []).extend(float(r) for r in scenario["cpu_rates"])
        collected.wall.setdefault(key, []).extend(float(r) for r in scenario["wall_rates"])
        collected.ok[key] = collected.ok.get(key, True) and bool(scenario["ok"])
    if collected.sagas is None:
        collected.sagas = {str(s["key"]): int(s["sagas"]) for s in out["scenarios"]}


def _figures(collected: _Collected) -> tuple[Figure, ...]:
    sagas = collected.sagas or {}
    figures = []
    for scenario in TRIAL:
        key = _key(scenario)
        for variant in Variant:
            cpu = tuple(collected.cpu.get((variant, key), []))
            wall = tuple(collected.wall.get((variant, key), []))
            ok = collected.ok.get((variant, key), False)
            name, mode = scenario.name, scenario.mode
            figures.append(Figure(name, mode, variant, sagas.get(key, 0), cpu, wall, ok))
    return tuple(figures)


def verify(
    out: dict[str, Any], root: Path, modules: Sequence[str], compiled: Sequence[str]
) -> list[str]:
    """What is wrong with where the child's modules came from: each under ``root``, the
    ``compiled`` ones a C extension, the others Python source."""
    problems = []
    for module in modules:
        file = Path(str(out["files"][_dotted(module)]))
        wanted = ".so" if module in compiled else ".py"
        if not file.is_relative_to(root) or file.suffix != wanted:
            problems.append(f"{_dotted(module)} was imported from {file}, not a {wanted} in {root}")
    return problems


class ChildError(Exception):
    """A child process failed: its last line of output says why."""


def run_child(root: Path, spec: ChildSpec) -> dict[str, Any]:
    """One measuring child with the copy at ``root`` first on its path; what it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}
    command = [sys.executable, "-m", "benchmarks.mypyc_trial", "--child", json.dumps(asdict(spec))]
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT
        )
    except subprocess.TimeoutExpired as error:
        raise ChildError(f"the child did not finish within {CHILD_TIMEOUT:g} s") from error
    if done.returncode != 0:
        raise ChildError(_traceback_reason(done.stderr, root))
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _traceback_reason(stderr: str, root: Path) -> str:
    """The exception's line, and the copy's innermost frame it came from (if any): a
    compiled module's frames name it relative to the copy, the others absolutely."""
    reason = _last_line(stderr)
    ours = [
        found
        for found in _TRACE_FILE.finditer(stderr)
        if not Path(found["file"]).is_absolute() or Path(found["file"]).is_relative_to(root)
    ]
    if not ours:
        return reason
    file = Path(ours[-1]["file"])
    where = file.relative_to(root) if file.is_absolute() else file
    return f"{reason} (raised at {where.as_posix()}, line {ours[-1]['line']})"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _dotted(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def _key(scenario: Scenario) -> str:
    return f"{scenario.name}, {scenario.mode}"


# -- the child ------------------------------------------------------------------------------


async def measure_child(spec: ChildSpec) -> dict[str, Any]:
    """Every trial scenario in this process: a warm-up, then ``spec.runs`` timed runs, each
    on a fresh subject (so no run inherits another's heap)."""
    import sagakit

    files = {name: importlib.import_module(name).__file__ for name in spec.modules}
    scenarios = [await _measure_scenario(scenario, spec) for scenario in TRIAL]
    return {"root": sagakit.__file__, "files": files, "scenarios": scenarios}


async def _measure_scenario(scenario: Scenario, spec: ChildSpec) -> dict[str, Any]:
    width = FULL.width
    workdir = Path(tempfile.gettempdir())  # neither subject writes files
    warm = max(10, int(scenario.warmup * spec.warmup_scale))
    subject = await scenario.make(workdir)
    warmup = await timed(subject.run_one, scenario.mode, warm, width)
    await subject.close()
    floor = 2 * width if scenario.mode is Mode.CONCURRENT else 10
    sagas = (spec.sagas or {}).get(_key(scenario)) or sized(warmup, spec.target_seconds, floor)
    cpu_rates, wall_rates, ok = [], [], warmup.completed == warmup.sagas
    for _ in range(spec.runs):
        subject = await scenario.make(workdir)
        gc.collect()  # timed() collects too, but inside this CPU clock it then finds nothing
        began = time.process_time()
        run = await timed(subject.run_one, scenario.mode, sagas, width)
        cpu_rates.append(sagas / max(time.process_time() - began, 1e-9))
        wall_rates.append(run.rate)
        logged = await subject.close()
        ok = ok and run.completed == sagas and logged in (None, sagas)
    key = _key(scenario)
    return {"key": key, "sagas": sagas, "cpu_rates": cpu_rates, "wall_rates": wall_rates, "ok": ok}


# -- the report -------------------------------------------------------------------------------

COLUMNS = (
    "Scenario",
    "Mode",
    "Sagas per run",
    f"{Variant.PURE} sagas/CPU s",
    f"{Variant.COMPILED} sagas/CPU s",
    "Speedup (CPU)",
    "Speedup (wall)",
    f"Pure {TIMES} hand-written",
    f"mypyc {TIMES} hand-written",
)


def rows(result: TrialResult) -> list[tuple[str, ...]]:
    """One row per scenario: both medians (min-max beside), the speedup, the ratios."""
    table = []
    for scenario in TRIAL:
        pure = result.figure(scenario.name, scenario.mode, Variant.PURE)
        compiled = result.figure(scenario.name, scenario.mode, Variant.COMPILED)
        ratios = ["", ""]  # the hand-written rows are the baseline itself
        if scenario.name == MEMORY:
            ratios = [f"{result.versus_hand_written(scenario.mode, v):.3f}{TIMES}" for v in Variant]
        speedups = [
            f"{result.speedup(scenario.name, scenario.mode, cpu):.2f}{TIMES}"
            for cpu in (True, False)
        ]
        name, mode = scenario.name, str(scenario.mode)
        table.append(
            (name, mode, f"{pure.sagas:,}", _rate(pure), _rate(compiled), *speedups, *ratios)
        )
    return table


def _rate(figure: Figure) -> str:
    if not figure.cpu_rates:
        return "\u2014"
    spread = f"{min(figure.cpu_rates):,.0f}{DASH}{max(figure.cpu_rates):,.0f}"
    return f"{figure.median():,.0f} ({spread})"


def probe_lines(result: TrialResult) -> list[str]:
    lines = []
    for p in result.probes:
        verdict = "compiled" if p.compiled else f"not compiled: {p.reason}"
        lines.append(f"`{p.module}`: {verdict} ({p.seconds:.0f} s)")
    return lines


def markdown(result: TrialResult) -> str:
    """The trial as a report section: method, modules, the table, what went wrong."""
    lines = ["## mypyc trial (MemoryStore, in-process)", ""]
    lines += [
        "- Command: `.venv/bin/python -m benchmarks.mypyc_trial`",
        "- Method: `src/sagakit` copied twice to a scratch directory; each candidate module"
        " compiled alone and smoke-run, those that pass compiled together in one copy;"
        f" {result.repetitions} rounds of two child processes (pure, then compiled, the"
        " order alternating), each importing `sagakit` from its copy and running the"
        f" suite's in-process scenarios ({result.runs_per_child} timed run(s) each, on fresh"
        " subjects, as many sagas in every child); medians over all runs, min\u2013max beside."
        " Rates are per second of the child's CPU time (other work on the machine hardly"
        " moves them; these scenarios never wait on I/O); the wall-clock speedup is beside",
        "",
        *(f"- {line}" for line in probe_lines(result)),
        "",
    ]
    if result.error:
        return "\n".join([*lines, f"Not timed: {result.error}", ""])
    lines.append(f"Combined build of {len(result.modules)} modules: {result.build_seconds:.0f} s.")
    lines += ["", _md_row(COLUMNS), _md_row(tuple("---" for _ in COLUMNS))]
    lines += [_md_row(row) for row in rows(result)]
    if not result.ok:
        lines += ["", "> **FAILED**: " + "; ".join(result.problems or ("some sagas failed",))]
    return "\n".join(lines) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_table(result: TrialResult) -> None:
    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns when piped, which wraps every cell
        console = Console(width=160)
    for line in probe_lines(result):
        console.print(line.replace("`", ""), highlight=False)
    if result.error:
        console.print(f"Not timed: {result.error}", highlight=False)
        return
    console.print(f"combined build: {result.build_seconds:.0f} s", highlight=False)
    table = Table(title="mypyc trial (sagas per CPU second, median and min-max)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("Scenario", "Mode") else "right")
    for row in rows(result):
        table.add_row(*row)
    console.print(table)
    for problem in result.problems:
        console.print(f"problem: {problem}", highlight=False)


# -- the command ------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mypyc_trial",
        description="Compile sagakit's hot modules with mypyc in a scratch copy and time them.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs; figures mean little")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument(
        "--modules", nargs="+", default=list(CANDIDATES), help="candidates, as paths under src/"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The trial's table; 1 if nothing could be timed or a check failed."""
    args = parse(argv)
    if args.child is not None:
        spec = ChildSpec(**json.loads(args.child))
        print(json.dumps(asyncio.run(measure_child(spec))), flush=True)
        return 0
    repetitions = args.repetitions or (2 if args.quick else REPETITIONS)
    result = run_trial(args.modules, repetitions, args.quick)
    print_table(result)
    return 0 if result.ok else 1


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
