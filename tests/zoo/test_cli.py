"""`halo-coord zoo ...` end to end through the real entry point: generation, determinism,
inspection, verification, and one-line errors with exit code 2 for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def coord(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def manifest(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "manifest.jsonl").read_text().splitlines()]


def test_generate_verify_info_and_rerun(tmp_path):
    out = tmp_path / "zoo"
    r = coord(
        "zoo",
        "generate",
        "--space",
        "nb201",
        "--arch",
        "1462",
        "--arch",
        "10",
        "--sample",
        "2",
        "--out",
        str(out),
    )
    assert r.returncode == 2  # --arch and --sample together
    assert (
        coord(
            "zoo", "generate", "--space", "nb201", "--sample", "3", "--seed", "1", "--out", str(out)
        ).returncode
        == 0
    )
    assert (
        coord(
            "zoo",
            "generate",
            "--space",
            "nb201",
            "--arch",
            "10",
            "--arch",
            "1462",
            "--dtype",
            "int8",
            "--out",
            str(out),
        ).returncode
        == 0
    )
    assert (
        coord(
            "zoo", "generate", "--space", "op", "--arch", "conv:8x8x8", "--out", str(out)
        ).returncode
        == 0
    )
    rows = manifest(out)
    assert len(rows) == 6
    folded = next(r for r in rows if r["index"] == 10)
    assert folded["connected"] is False and folded["folded"] is True and folded["macs"] == 0
    for row in rows:
        assert (out / row["file"]).stat().st_size == row["bytes"]
        assert {"sha256", "macs", "params", "ops", "input_shape", "writer"} <= row.keys()

    again = coord(
        "zoo", "generate", "--space", "nb201", "--sample", "3", "--seed", "1", "--out", str(out)
    )
    assert again.returncode == 0 and again.stdout.startswith("0 written, 3 already present")
    assert len(manifest(out)) == 6

    v = coord("zoo", "verify", str(out), "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    verdicts = json.loads(v.stdout)
    assert len(verdicts) == 6 and all(x["ok"] for x in verdicts)

    model = out / rows[0]["file"]
    info = json.loads(coord("zoo", "info", str(model), "--json").stdout)
    assert info["macs"] == rows[0]["macs"] and info["params"] == rows[0]["params"]
    assert info["sha256"] == rows[0]["sha256"] and info["signatures"] == ["serving_default"]


def test_verify_fails_on_a_tampered_model(tmp_path):
    out = tmp_path / "zoo"
    coord("zoo", "generate", "--space", "op", "--arch", "conv:8x8x8", "--out", str(out))
    path = out / manifest(out)[0]["file"]
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    path.write_bytes(bytes(data))
    assert coord("zoo", "verify", str(out)).returncode == 1


def test_same_seed_gives_byte_identical_files(tmp_path):
    for d in ("a", "b"):
        for dtype in ("float32", "int8"):
            r = coord(
                "zoo",
                "generate",
                "--space",
                "fbnet",
                "--sample",
                "2",
                "--seed",
                "4",
                "--dtype",
                dtype,
                "--out",
                str(tmp_path / d),
            )
            assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "a").glob("*.tflite"))
    assert len(files) == 4
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_spaces_lists_all(tmp_path):
    docs = json.loads(coord("zoo", "spaces", "--json").stdout)
    assert {d["space"] for d in docs} == {"nb201", "fbnet", "mbv2", "op"}
    assert next(d for d in docs if d["space"] == "nb201")["size"] == 15625


@pytest.fixture
def not_a_dir(tmp_path) -> Path:
    f = tmp_path / "file"
    f.write_text("x")
    return f / "sub"


BAD = {
    "unknown op": ["zoo", "generate", "--space", "op", "--arch", "bogus:8x8x8", "--out", "{tmp}"],
    "malformed nb201": [
        "zoo",
        "generate",
        "--space",
        "nb201",
        "--arch",
        "|conv~0|+",
        "--out",
        "{tmp}",
    ],
    "index out of range": [
        "zoo",
        "generate",
        "--space",
        "nb201",
        "--arch",
        "15625",
        "--out",
        "{tmp}",
    ],
    "not enumerable": ["zoo", "generate", "--space", "fbnet", "--all", "--out", "{tmp}"],
    "unknown space": ["zoo", "generate", "--space", "resnet", "--sample", "1", "--out", "{tmp}"],
    "wrong dataset": [
        "zoo",
        "generate",
        "--space",
        "nb201",
        "--arch",
        "0",
        "--dataset",
        "imagenet",
        "--out",
        "{tmp}",
    ],
    "unwritable out": ["zoo", "generate", "--space", "nb201", "--arch", "0", "--out", "{bad}"],
    "missing file": ["zoo", "info", "{tmp}/nope.tflite"],
    "verify empty dir": ["zoo", "verify", "{tmp}"],
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2(case, tmp_path, not_a_dir):
    args = [a.format(tmp=tmp_path, bad=not_a_dir) for a in BAD[case]]
    r = coord(*args)
    assert r.returncode == 2, (case, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("halo-coord: error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_truncated_tflite_info_is_one_line_exit_2(tmp_path):
    coord("zoo", "generate", "--space", "op", "--arch", "conv:8x8x8", "--out", str(tmp_path))
    model = next(tmp_path.glob("*.tflite"))
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(model.read_bytes()[:300])
    r = coord("zoo", "info", str(cut))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
