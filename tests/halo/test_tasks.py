"""Domain-shift tasks: packaged thyroid data, digits, synthetic drift, user CSV files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from halo.errors import (
    FeatureMismatchError,
    MissingLabelError,
    NonFiniteValueError,
    TaskDataError,
    TaskDependencyError,
)
from halo.tasks import DriftSettings, csv_task, digits_task, drift_task, thyroid_task
from halo.tasks.thyroid import DATA_DIR

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def test_thyroid_ships_its_data_and_licence() -> None:
    assert (DATA_DIR / "LICENSE-HALO.txt").read_text().startswith("MIT License")
    assert "Copyright (c) 2022 GaTech-EIC" in (DATA_DIR / "LICENSE-HALO.txt").read_text()
    assert (DATA_DIR / "README.md").is_file()


def test_thyroid_domains_split_and_normalisation() -> None:
    task = thyroid_task(seed=0)
    s, t = task.source, task.target
    assert len(s.x_train) + len(s.x_test) == 986 and len(t.x_train) + len(t.x_test) == 2235
    assert s.x_train.shape[1] == 26 and task.n_classes == 4 and task.input_shape == (26,)
    # Stratified 75/25: every class keeps its proportion within a row.
    for d in (s, t):
        for c in range(4):
            n_c = np.sum(d.y_train == c) + np.sum(d.y_test == c)
            assert abs(np.sum(d.y_test == c) - 0.25 * n_c) <= 1
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([t.y_train, t.y_test])), [1895, 167, 104, 69]
    )
    # Source training statistics: zero mean; sex (f1) is constant for men, so it is only
    # centred and the women's column sits at -1 (part of the domain shift).
    np.testing.assert_allclose(s.x_train.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(t.x_train[:, 1], -1.0)
    assert "male training split" in task.info["normalisation"]
    again = thyroid_task(seed=0)
    np.testing.assert_array_equal(again.target.x_test, t.x_test)
    assert not np.array_equal(thyroid_task(seed=1).target.y_test, t.y_test)
    net = task.optimizee()
    assert [layer.n_out for layer in net.layers] == [30, 30, 4]


@pytest.mark.skipif(
    not HAS_SKLEARN, reason="scikit-learn is not installed (optional 'analysis' extra)"
)
def test_digits_even_to_odd() -> None:
    task = digits_task(seed=0)
    assert task.n_classes == 5 and task.input_shape == (8, 8, 1) and task.reinit_head
    n_source = len(task.source.x_train) + len(task.source.x_test)
    n_target = len(task.target.x_train) + len(task.target.x_test)
    assert n_source + n_target == 1797
    assert 0.0 <= task.source.x_train.min() and task.source.x_train.max() <= 1.0
    assert set(np.unique(task.target.y_train)) == set(range(5))
    assert task.optimizee().name == "cnn2d"


def test_digits_without_sklearn_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(TaskDependencyError, match=r"pip install 'halofarm\[analysis\]'"):
        digits_task()


def test_drift_is_seeded_and_shifts_the_domain() -> None:
    a = drift_task(DriftSettings(seed=3))
    b = drift_task(DriftSettings(seed=3))
    np.testing.assert_array_equal(a.target.x_train, b.target.x_train)
    assert not np.array_equal(drift_task(DriftSettings(seed=4)).target.x_train, a.target.x_train)
    no_drift = drift_task(DriftSettings(seed=3, drift=0.0))
    # Drift moves the target's feature means away from the source's (which are 0).
    assert np.abs(a.target.x_train.mean(axis=0)).mean() > 0.5
    assert np.abs(no_drift.target.x_train.mean(axis=0)).mean() < 0.15
    assert a.info["settings"]["seed"] == 3


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_task_reads_features_and_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows_b = "\n".join(
        f"{rng.normal()},{rng.normal()},{'cat' if i % 2 else 'dog'}" for i in range(40)
    )
    rows_a = "\n".join(
        f"{'dog' if i % 2 else 'cat'},{rng.normal()},{rng.normal()}" for i in range(40)
    )
    src = _write(tmp_path / "b.csv", "x1,x2,label\n" + rows_b + "\n")
    # Same features in another column order: aligned to the source's order.
    tgt = _write(tmp_path / "a.csv", "label,x2,x1\n" + rows_a + "\n\n")
    task = csv_task(src, tgt, seed=1)
    assert task.class_names == ["cat", "dog"] and task.n_classes == 2
    assert task.feature_names == ["x1", "x2"] and task.name == "a"
    assert len(task.target.x_train) == 30 and len(task.target.x_test) == 10
    net = task.optimizee()
    assert net.param_shapes[0] == (2, 30) and net.n_classes == 2


def test_csv_errors_are_one_line_and_typed(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.csv", "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    cases = [
        ("a,b,klass\n1,2,0\n", MissingLabelError, "no 'label' column"),
        ("a,b,label\n1,2,\n", MissingLabelError, "line 2: empty 'label'"),
        ("a,b,label\n1,nan,0\n", NonFiniteValueError, "line 2, column 'b'"),
        ("a,b,label\n1,,0\n", NonFiniteValueError, "'' is not a number"),
        ("a,b,label\n1,x,0\n", NonFiniteValueError, "'x' is not a number"),
        ("a,b,label\n1,2\n", TaskDataError, "2 cells but the header has 3"),
        ("", TaskDataError, "file is empty"),
        ("a,b,label\n", TaskDataError, "no data rows"),
    ]
    for i, (text, exc, message) in enumerate(cases):
        bad = _write(tmp_path / f"bad{i}.csv", text)
        with pytest.raises(exc, match=message) as info:
            csv_task(good, bad)
        assert "\n" not in str(info.value)
    other = _write(tmp_path / "other.csv", "a,c,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    with pytest.raises(FeatureMismatchError, match=r"only in source: \['b'\]"):
        csv_task(good, other)
    fewer = _write(tmp_path / "fewer.csv", "a,label\n1,0\n3,1\n")
    with pytest.raises(FeatureMismatchError, match="has 2 features.*has 1"):
        csv_task(good, fewer)
    with pytest.raises(TaskDataError, match="cannot open"):
        csv_task(good, tmp_path / "missing.csv")
