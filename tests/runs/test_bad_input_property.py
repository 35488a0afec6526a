"""Property: whatever a user gives avi, the outcome is exit code 0, or exit code 2 with one line
on standard error; never a traceback, and never a config value of the wrong type or a
non-finite number accepted (issue 25).

Config keys come from the :class:`~avi.runs.config.Config` model itself, so that a new key is
covered as soon as it exists; values mix types (huge and negative integers, inf, nan, -0.0,
booleans, unicode and path-like text, lists, tables), written as a TOML file or given as
``--set section.key=VALUE``. Flag values are drawn for every row of
:data:`avi.cli_options.FIT_FLAGS` and for the options of ``avi evaluate``, ``gaps``, ``report`` and
``compare``.

The commands run in-process through :func:`avi.cli.main`, the ``avi`` script itself: it turns
usage errors (``--lr abc``) into one line, where typer's own handling (``CliRunner.invoke(app)``)
would print a usage box. ``avi fit`` stops where it would build the model (:class:`_Validated`)
unless the resolved config is tiny (:func:`_tiny`); a few examples train for real.
"""

from __future__ import annotations

import itertools
import math
import shutil
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import not_
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from unittest import mock

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from avi.cli import main
from avi.cli_options import FIT_FLAGS, Flag, parse_set
from avi.errors import AviError
from avi.runs import train
from avi.runs.config import BUILTIN_MODELS, FAMILY_NAMES, PRESETS, Config, load_config, merge_tables
from avi.runs.train import run_fit
from tests.cli_harness import time_limit, toml_value, working_directory
from tests.runs.conftest import small_job

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomllib parser as its backport, tomli
    import tomli as tomllib

#: seconds one command may take before it counts as a hang
TIME_LIMIT = 30
#: the tiny synthetic job every command starts from: one epoch on 60 points of 12 dimensions
BASE_JOB = small_job(epochs=1, points=60)

#: Contexts in which settings apply (objective.k needs an objective with k samples, refine_steps
#: the semi-amortized strategy, ...), so that a value reaches its own check, not applicability's.
BASES: dict[str, dict[str, dict[str, Any]]] = {
    "vae": tomllib.loads(BASE_JOB),
    "iwae": {"objective": {"name": "iwae"}},
    "renyi": {"objective": {"name": "renyi"}},
    "semi-amortized": {"inference": {"strategy": "semi-amortized"}},
    "per-datapoint": {"inference": {"strategy": "per-datapoint"}},
    "iterative": {"inference": {"strategy": "iterative"}},
    "plateau": {"train": {"lr_schedule": "plateau"}, "remedies": {"kl_warmup": 1, "kl_cycles": 1}},
    "discrete-vae": {"model": {"name": "discrete-vae"}},
    "sylvester": {"inference": {"family": "sylvester"}},
    "gaussian": {"model": {"likelihood": "gaussian"}, "data": {"standardize": True}},
}


# --- what a config section holds -----------------------------------------------------------------


def _field_annotation(section: str, key: str) -> Any:
    """The annotation of the config field ``section.key``; None for a key the config lacks."""
    model = Config.model_fields[section].annotation if section in Config.model_fields else None
    field = model.model_fields.get(key) if model is not None else None  # type: ignore[union-attr]
    return None if field is None else field.annotation


#: every (section, key) of the config, and three that do not exist
KEYS: list[tuple[str, str]] = [
    (section, key)
    for section, field in Config.model_fields.items()
    for key in field.annotation.model_fields  # type: ignore[union-attr]
] + [("model", "no_such_key"), ("remedies", "no_such_remedy"), ("no_such_section", "key")]


def _literals(annotation: Any) -> list[Any]:
    """The choices of every ``Literal`` within ``annotation``."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [choice for arg in get_args(annotation) for choice in _literals(arg)]


def _admits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is of the annotation's type, strictly: a bool is not a number, a float
    not an int, every float finite, nothing parsed from text."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _admits(args[0], value)
    if origin in (Union, types.UnionType):
        return any(_admits(arg, value) for arg in args)
    if origin is Literal:
        return any(type(value) is type(choice) and value == choice for choice in args)
    if origin is list:
        return type(value) is list and all(_admits(args[0], item) for item in value)
    return _admits_scalar(annotation if origin is None else origin, value)


def _admits_scalar(kind: Any, value: Any) -> bool:
    """Whether ``value`` is of the plain type ``kind`` (``dict`` for any table, ``Any`` for anything)."""
    if kind is Any:
        return True
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    return type(value) is kind or (kind is type(None) and value is None)


def _floats(value: Any) -> Iterator[float]:
    """Every float within a config's dump."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        yield from itertools.chain.from_iterable(map(_floats, value.values()))
    elif isinstance(value, list):
        yield from itertools.chain.from_iterable(map(_floats, value))


# --- values and their TOML -----------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([2**31, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]),
    st.floats(),
    st.sampled_from([0.0, -0.0, 0.5, 1e-320, 1e308, math.inf, -math.inf, math.nan]),
)
TEXTS = st.one_of(
    st.text(st.characters(exclude_characters="\x00"), max_size=8),
    st.sampled_from(["", "auto", "cpu", "cuda:1", "meta", "x.npy", "/dev/null", "../up", "é∂😀", "1", "true", "inf"]),
)
SCALARS = st.one_of(st.booleans(), NUMBERS, TEXTS)
VALUES = st.one_of(
    SCALARS,
    st.lists(st.one_of(st.integers(-2, 70), SCALARS), max_size=3),
    st.dictionaries(st.text("abc_", min_size=1, max_size=6), SCALARS, max_size=2),
)
#: text as a flag's value might be typed
FLAG_TEXTS = st.one_of(
    st.sampled_from(["", "0", "-1", "1", "2", "0.5", "-0.0", "1e-320", "1e309", "inf", "-inf", "nan", "true",
                     "abc", "0x10", "1_000", "2,3", "64,", ",", "１２", "é∂😀", "/dev/null", "../x",
                     str(2**63), str(2**64), str(-(2**63) - 1), "9" * 40]),
    st.integers().map(str),
    st.floats().map(repr),
    st.text(st.characters(exclude_characters="\x00"), max_size=8),
)  # fmt: skip


def toml_text(tables: dict[str, Any]) -> str:
    """Nested ``{section: {key: value}}`` as a TOML document; checked to parse back as it was
    meant, so that each example tests the value it drew, not a TOML syntax error."""
    text = "".join(f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
                   for section, table in tables.items())  # fmt: skip
    assert tomllib.loads(text).keys() == tables.keys(), text
    return text


# --- running avi in-process ----------------------------------------------------------------------


class _Validated(Exception):
    """Raised where ``avi fit`` would build the model: every check before it has passed."""


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    stderr: str
    error: BaseException | None

    def check(self) -> None:
        """Exit 0 (or stopped as validated), or exit 2 with exactly one non-empty line on stderr."""
        if currently_in_test_context():  # the outcomes' shares, for --hypothesis-show-statistics
            stopped = "validated" if isinstance(self.error, _Validated) else f"exit {self.code}"
            event(f"avi {self.argv[0]}: {stopped}")
        if self.error is not None and not isinstance(self.error, _Validated):
            trace = "".join(traceback.format_exception(self.error))
            pytest.fail(f"avi {self.argv} raised:\n{trace}")
        lines = self.stderr.splitlines()
        if self.code == 2:
            assert len(lines) == 1 and lines[0].strip(), f"avi {self.argv} exit 2 with stderr {self.stderr!r}"
        else:
            assert self.code == 0 or isinstance(self.error, _Validated), (self.argv, self.code, self.stderr)


def _sizes(config: Config) -> list[int]:
    """The settings that size a model, its data and a training step."""
    m, d, i, o = config.model, config.data, config.inference, config.objective
    widths = [*(m.hidden or []), *(i.encoder_hidden or []), *i.flow_hidden]
    return [*widths, m.latent_dim, m.num_classes, d.synthetic_dim, o.k, o.num_samples, i.flow_transforms,
            i.flow_length or 0, i.householder_reflections]  # fmt: skip


def _buildable(config: Config) -> bool:
    """Whether building ``config``'s run takes a moment and little memory: a synthetic data set
    (MNIST would be read) and moderate sizes; a size between these and one no allocator can
    serve could take gigabytes of the machine's memory before failing."""
    return config.data.source != "mnist" and config.data.synthetic_points <= 10_000 and max(_sizes(config)) <= 1024


def _tiny(config: Config) -> bool:
    """Whether a fit of ``config`` takes about a second: two epochs at most of a small built-in
    model on a small synthetic data set, eager, without trackers or aggressive training."""
    i, t = config.inference, config.train
    small = t.epochs <= 2 and config.data.synthetic_points <= 200 and max(_sizes(config)) <= 64
    # the inner steps of the strategy's posterior, per training step (per-datapoint: per epoch)
    inner = {"semi-amortized": i.refine_steps, "iterative": i.iterations, "per-datapoint": i.validation_steps // 5}
    steps = inner.get(i.strategy, 0) <= 10
    tracked = config.tracking.tensorboard or config.tracking.mlflow
    plain = not (config.model.custom or i.encoder or t.compile or tracked or config.remedies.aggressive)
    return small and steps and plain and config.data.source == "synthetic" and t.device in ("cpu", "auto")


def run_avi(argv: list[str], cwd: Path, *, train_tiny: bool = False, build_all: bool = False) -> Outcome:
    """``avi ARGV`` through :func:`avi.cli.main` in this process, in the directory ``cwd``, its
    output captured. ``avi fit`` stops (:class:`_Validated`) once it has built the run where that
    is cheap (:func:`_buildable`) or ``build_all`` says so (for sizes that must fail at once),
    else before; with ``train_tiny`` it trains where the config is :func:`_tiny`. The process's
    threads and random state are kept."""
    real_build = train.build_run

    def build_run(config: Config) -> Any:
        if train_tiny and _tiny(config):
            return real_build(config)
        if build_all or _buildable(config):
            real_build(config)
        raise _Validated

    error: BaseException | None = None
    code: int | None = None
    with (
        CliRunner().isolation() as (_, stderr, _),
        mock.patch.object(sys, "argv", ["avi", *argv]),
        mock.patch.object(torch, "set_num_threads", lambda threads: None),
        mock.patch.object(train, "build_run", build_run),
        torch.random.fork_rng(),
        working_directory(cwd),
    ):
        try:
            with time_limit(TIME_LIMIT):
                main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException as err:  # noqa: B036 -- the property is that nothing else escapes
            error = err
        sys.stderr.flush()
        text = stderr.getvalue().decode(errors="replace")
    return Outcome(argv, code, text, error)


# --- paths a user might give ---------------------------------------------------------------------


@dataclass
class Places:
    """Paths of each kind a command might be given, under one temporary directory."""

    root: Path
    config: Path
    run: Path
    counter: itertools.count

    def path(self, kind: str) -> str:
        """A path of ``kind``: a fresh directory to create, an existing file, one under a file,
        a directory, a missing one, the trained run, an empty or binary file, or a literal."""
        made = {
            "new": lambda: self.root / f"out-{next(self.counter)}",
            "config": lambda: self.config,
            "run": lambda: self.run,
            "file": lambda: self.root / "file.txt",
            "under-file": lambda: self.root / "file.txt" / "sub",
            "dir": lambda: self.root / "dir",
            "missing": lambda: self.root / "missing" / "x",
            "empty": lambda: self.root / "empty.toml",
            "binary": lambda: self.root / "binary.npy",
            "dangling-link": lambda: self.root / "dangling",
            "link-loop": lambda: self.root / "loop" / "run",
            "long-name": lambda: self.root / ("x" * 300),
            "long-new-name": lambda: self.root / "new" / ("y" * 300),
            "blocked-run": lambda: self.root / "blocked-run",
        }
        return str(made[kind]()) if kind in made else kind


PATH_KINDS = ["new", "config", "run", "file", "under-file", "dir", "missing", "empty", "binary", "dangling-link",
              "link-loop", "long-name", "long-new-name", "", "/", "/proc/x"]  # fmt: skip


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Places:
    """The paths, and a finished one-epoch run of the base job."""
    root = tmp_path_factory.mktemp("bad-input")
    (root / "base.toml").write_text(BASE_JOB)
    (root / "file.txt").write_text("not a directory\n")
    (root / "dir").mkdir()
    (root / "empty.toml").write_text("")
    (root / "binary.npy").write_bytes(bytes(range(256)))
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "loop").symlink_to(root / "loop")
    with mock.patch.object(torch, "set_num_threads", lambda threads: None), torch.random.fork_rng():
        run = run_fit(load_config(root / "base.toml"), root / "run")
    shutil.copytree(run, root / "blocked-run")  # a directory where gaps.png and report.html go
    for blocked in ("gaps.png", "report.html"):
        (root / "blocked-run" / blocked).mkdir()
    return Places(root, root / "base.toml", run, itertools.count())


# --- config keys and values ----------------------------------------------------------------------


@st.composite
def key_values(draw: st.DrawFn) -> tuple[str, str, Any]:
    """A config key and a value for it: any value, or one of its choices."""
    section, key = draw(st.sampled_from(KEYS))
    choices = _literals(_field_annotation(section, key))
    value = draw(st.sampled_from(choices) | VALUES if choices else VALUES)
    return section, key, value


def _loaded(load: Callable[[], Config]) -> Config | None:
    """The config ``load`` gives, or None where it refuses with one line."""
    try:
        return load()
    except AviError as err:
        assert str(err).strip() and "\n" not in str(err), repr(str(err))
        return None


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), item=key_values(), as_set=st.booleans())
def test_a_config_value_is_accepted_as_typed_or_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, base: str, item: tuple[str, str, Any], as_set: bool
) -> None:
    section, key, value = item
    tables = merge_tables(BASES["vae"], BASES[base])
    path = tmp_path_factory.getbasetemp() / "property.toml"
    if as_set:
        path.write_text(toml_text(tables))
        config = _loaded(lambda: load_config(path, parse_set([f"{section}.{key}={toml_value(value)}"])))
    else:
        path.write_text(toml_text(merge_tables(tables, {section: {key: value}})))
        config = _loaded(lambda: load_config(path))
    if config is not None:
        annotation = _field_annotation(section, key)
        assert annotation is not None and _admits(annotation, value), f"{section}.{key} = {value!r} accepted"
        assert all(math.isfinite(x) for x in _floats(config.model_dump())), config.model_dump()


# --- avi fit's flags -----------------------------------------------------------------------------


#: good values of the text settings that are not a ``Literal``'s choices
GOOD_TEXTS: dict[str, list[str]] = {
    "model.name": list(BUILTIN_MODELS),
    "model.preset": sorted(PRESETS),
    "data.source": ["synthetic"],
    "train.device": ["cpu", "auto"],
    "inference.encoder": ["nowhere.py:factory"],
}
GOOD_BY_TYPE: dict[type, list[str]] = {int: ["1", "2", "3"], float: ["0.5", "0.001", "1", "0"], list: ["8", "8,8", ""]}


def _flag_argv(draw: st.DrawFn, flag: Flag, good: st.SearchStrategy[bool]) -> list[str]:
    """``flag`` with a value: one of its good ones where ``good`` draws True, else any text."""
    if flag.type is bool:
        return [draw(st.sampled_from([flag.option, f"--no-{flag.option[2:]}"] if flag.negatable else [flag.option]))]
    section, key = flag.key.split(".")
    goods = [str(choice) for choice in _literals(_field_annotation(section, key))]
    goods = goods or GOOD_TEXTS.get(flag.key) or GOOD_BY_TYPE[flag.type]
    return [flag.option, draw(st.sampled_from(goods) if draw(good) else FLAG_TEXTS)]


def _mostly(kind: str, others: list[str]) -> st.SearchStrategy[str]:
    """``kind`` nine times in ten, else one of ``others``."""
    return _one_in(10).flatmap(lambda other: st.sampled_from(others) if other else st.just(kind))


def _one_in(n: int) -> st.SearchStrategy[bool]:
    """True once in ``n`` draws."""
    return st.sampled_from([True] + [False] * (n - 1))


@st.composite
def fit_argv(draw: st.DrawFn, places: Places) -> list[str]:
    """``avi fit`` with a config path, one or two flags, maybe a ``--set`` item, and an
    ``--out``, most often good; or ``--resume`` of the trained run with its flags or others."""
    if draw(_one_in(10)):
        flags = draw(st.lists(st.sampled_from([f for f in FIT_FLAGS if f.resumable or draw(_one_in(5))]), max_size=2))
        argv = [arg for flag in dict.fromkeys(flags) for arg in _flag_argv(draw, flag, _one_in(4).map(not_))]
        return ["fit", "--resume", places.path(draw(_mostly("run", PATH_KINDS))), *argv]
    flags = draw(st.lists(st.sampled_from(FIT_FLAGS), min_size=1, max_size=2, unique=True))
    argv = [arg for flag in flags for arg in _flag_argv(draw, flag, _one_in(4).map(not_))]
    if draw(_one_in(3)):
        section, key, value = draw(key_values())
        argv += ["--set", f"{section}.{key}={draw(st.just(toml_value(value)) | FLAG_TEXTS)}"]
    config = places.path(draw(_mostly("config", PATH_KINDS)))
    return ["fit", config, *argv, "--out", places.path(draw(_mostly("new", PATH_KINDS)))]


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fit_flags_end_in_exit_0_or_one_line(places: Places, data: st.DataObject) -> None:
    run_avi(data.draw(fit_argv(places)), places.root).check()


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_tiny_fits_with_a_good_flag_train_or_refuse_in_one_line(places: Places, data: st.DataObject) -> None:
    flag = data.draw(st.sampled_from(FIT_FLAGS))
    argv = _flag_argv(data.draw, flag, st.just(True))
    run_avi(["fit", str(places.config), *argv, "--out", places.path("new")], places.root, train_tiny=True).check()


# --- evaluate, gaps, report, compare -------------------------------------------------------------


def _option(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A good value three times in four, else a bad one."""
    return _one_in(4).flatmap(lambda is_bad: bad if is_bad else good)


def _counts(top: int) -> st.SearchStrategy[str]:
    """A count from 1 to ``top`` (affordable when accepted), or a bad one."""
    bad = st.sampled_from(["0", "-1", "", "abc", "1.5", "inf", "nan", "1e3", "0x10", str(2**63), str(2**64), "9" * 40])
    return _option(st.integers(1, top).map(str), bad)


MEGABYTES = _option(
    st.sampled_from(["64", "0.5", "1000"]),
    st.sampled_from(["0", "-1", "1e-30", "1e308", "inf", "nan", "", "abc"]) | st.floats().map(repr),
)
EVALUATE_OPTIONS = {
    "--k": _counts(20),
    "--device": _option(st.sampled_from(["cpu", "auto"]), st.sampled_from(
        ["cuda", "cuda:0", "cuda:99", "meta", "mps", "xpu", "", "CPU", "cpu:0"])),
    "--precision": _option(st.sampled_from(["fp32", "bf16"]), st.sampled_from(["fp16", "", "FP32"])),
    "--memory-budget": MEGABYTES,
}  # fmt: skip
GAPS_OPTIONS = {
    "--family": _option(st.sampled_from(["mean-field", "full-rank"]), st.sampled_from([*FAMILY_NAMES, "", "normal"])),
    "--k": _counts(20),
    "--split": _option(st.sampled_from(["train", "test"]), st.sampled_from(["val", "", "TEST"])),
    "--points": _counts(8),
    "--ais-steps": _option(st.sampled_from(["0", "2"]), _counts(3)),
}


@st.composite
def command_argv(draw: st.DrawFn, places: Places) -> list[str]:
    """``avi evaluate``, ``gaps``, ``report`` or ``compare`` with drawn paths and option values."""
    command = draw(st.sampled_from(["evaluate"] * 3 + ["gaps"] * 3 + ["compare"] * 2 + ["report"]))
    run = places.path(draw(_mostly("run", PATH_KINDS)))
    data = ["--data", places.path(draw(st.sampled_from(PATH_KINDS)))] if draw(_one_in(5)) else []
    if command == "compare":
        return ["compare", *draw(_compare_argv(places))]
    if command == "report":
        return ["report", run]
    options = EVALUATE_OPTIONS if command == "evaluate" else GAPS_OPTIONS
    names = draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True))
    if command == "evaluate":  # --consistency asks for 28x28 images, which the run's data are not
        switches = ["--cubo", "--json", *(["--consistency"] if draw(_one_in(4)) else [])]
        data += draw(st.lists(st.sampled_from(switches), max_size=2, unique=True))
    else:
        data += ["--steps", draw(_counts(5))]  # always given: the default is 1000 steps
    return [command, run, *data, *(arg for name in names for arg in (name, draw(options[name])))]


@st.composite
def _compare_argv(draw: st.DrawFn, places: Places) -> list[str]:
    """Run directories (or a model that no method can run on), ``--out`` and switches."""
    runs = [places.path(kind) for kind in draw(st.lists(_mostly("run", PATH_KINDS), max_size=3))]
    if draw(st.booleans()):
        # a model by name with methods that do not run it, or an unknown model: nothing is sampled
        model = draw(st.sampled_from(["normal-normal", "linear-regression", "nope", ""]))
        methods = draw(st.sampled_from(["xx", "exact,xx", ",", "nuts;mh"]))
        runs += ["--model", model, "--methods", methods] if model in ("normal-normal", "linear-regression") else [
            "--model", model]  # fmt: skip
    runs += ["--out", places.path(draw(_mostly("new", PATH_KINDS)))] if draw(st.booleans()) else []
    return runs + draw(st.lists(st.sampled_from(["--json", "--quick"]), max_size=2, unique=True))


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_evaluate_gaps_report_compare_options_end_in_exit_0_or_one_line(places: Places, data: st.DataObject) -> None:
    run_avi(data.draw(command_argv(places)), places.root).check()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gaps", "run", "--ais-steps", str(2**64), "--steps", "1"], "AIS steps must be at most 2^63 - 1"),
        (["gaps", "run", "--k", str(2**63), "--steps", "1"], "k must be at most 2^63 - 1"),
        (["gaps", "run", "--steps", str(2**64)], "steps must be at most 2^63 - 1"),
        (["fit", "config", "--out", "dangling-link"], "goes through"),
        (["compare", "run", "--out", "dangling-link"], "a link to"),
        (["fit", "config", "--out", "long-name"], "cannot be used: File name too long"),
        (["compare", "run", "--out", "long-new-name"], "has a name longer than the file system's 255 bytes"),
        (["fit", "config", "--out", "link-loop"], "cannot be used"),
        (["gaps", "blocked-run", "--steps", "1"], "blocked-run/gaps.png: Is a directory"),
        (["report", "blocked-run"], "blocked-run/report.html: Is a directory"),
        (
            ["fit", "config", "--set", "inference.family='iaf'", "--set", f"inference.flow_transforms={2**40}"],
            "invalid value for inference.flow_transforms: Input should be less than or equal to 1000",
        ),
        (
            ["fit", "config", "--set", "inference.family='iaf'", "--set", f"inference.flow_hidden=[{2**64}]"],
            "a tensor size past 64 bits for",
        ),
        (["fit", "config", "--latent-dim", str(2**64)], "a tensor size past 64 bits for model.latent_dim"),
        (["fit", "config", "--set", f"data.synthetic_points={2**40}"], "data.synthetic_points = 1099511627776"),
    ],
)
def test_inputs_the_audit_benchmark_found_are_one_line(places: Places, argv: list[str], message: str) -> None:
    """Found by benchmarks/bad_inputs.py: counts past 64 bits given to ``avi gaps`` (tracebacks
    in AIS and importance sampling, or a run without end), output paths that cannot be made
    (tracebacks from mkdir after the check had passed them), a directory where a file is to be
    written, flow sizes (2^40 transforms built one by one; widths past 64 bits, an
    OverflowError in zuko), and sizes of the synthetic data's model and sample."""
    argv = [arg if arg.startswith("-") or arg.isdigit() else places.path(arg) for arg in argv]
    outcome = run_avi(argv, places.root, build_all=True)
    outcome.check()
    assert outcome.code == 2 and message in outcome.stderr, outcome.stderr
