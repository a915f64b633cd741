"""`halo-coord zoo ...`: generate, inspect, list and verify TFLite models of NAS search spaces."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import click
import numpy as np

from coordinator.errors import UserError
from coordinator.render import table
from coordinator.zoo import lut
from coordinator.zoo.analytics import stats
from coordinator.zoo.generate import DTYPES, MANIFEST, Generator, make_spec, read_manifest
from coordinator.zoo.reader import read_model
from coordinator.zoo.spaces import SPACES, fbnet, get_space

DATASET_CHOICES = ("cifar10", "cifar100", "imagenet16-120", "imagenet")


@click.group()
def zoo() -> None:
    """Write real TFLite models of NAS search spaces (no TensorFlow needed)."""


@zoo.command()
@click.option("--space", required=True, type=click.Choice(list(SPACES)), help="Search space.")
@click.option(
    "--arch",
    "archs",
    multiple=True,
    metavar="ARCH_OR_INDEX",
    help="Architecture encoding (nb201 also takes an index). Repeatable.",
)
@click.option("--sample", type=click.IntRange(min=1), help="Sample N architectures.")
@click.option("--all", "all_", is_flag=True, help="Every architecture (enumerable spaces only).")
@click.option("--seed", default=0, show_default=True, help="Seed for sampling and weights.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for <model-id>.tflite files and manifest.jsonl.",
)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES))
@click.option(
    "--dataset",
    type=click.Choice(DATASET_CHOICES),
    help="Macro setting (default: the space's own).",
)
@click.option("--resolution", type=click.IntRange(4, 1024), help="Override the input size.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest lines written.")
def generate(space, archs, sample, all_, seed, out_dir, dtype, dataset, resolution, as_json):
    """Generate models into --out and append them to its manifest.jsonl.

    \b
    Examples:
      halo-coord zoo generate --space nb201 --arch 0 --arch 1462 --out zoo/
      halo-coord zoo generate --space fbnet --sample 50 --seed 3 --dtype int8 --out zoo/
      halo-coord zoo generate --space nb201 --all --out nb201-all/
    """
    if sum(map(bool, (archs, sample, all_))) != 1:
        raise UserError("give exactly one of --arch, --sample N or --all")
    module = get_space(space)
    if all_:
        if module.SIZE is None or not hasattr(module, "enumerate_all"):
            raise UserError(f"space {space} is not enumerable; use --arch or --sample")
        arch_list = module.enumerate_all()
    elif sample:
        arch_list = module.sample(np.random.default_rng(seed), sample)
    else:
        arch_list = list(archs)
    specs = [make_spec(space, a, dataset, resolution, dtype, seed) for a in arch_list]
    _write(specs, out_dir, f"{space} {dtype}", as_json)


def _write(specs: list, out_dir: Path, label: str, as_json: bool) -> None:
    try:
        gen = Generator(out_dir)
    except OSError as exc:
        raise UserError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    written, rows = 0, []
    with (
        gen,
        click.progressbar(specs, label=label, file=sys.stderr, show_pos=True) as bar,
    ):
        for spec in bar:
            try:
                row, new = gen.add(spec)
            except OSError as exc:
                raise UserError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
            written += new
            rows.append(row)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
    else:
        click.echo(
            f"{written} written, {len(rows) - written} already present in {out_dir} "
            f"(manifest: {out_dir / MANIFEST})"
        )


@zoo.command("lut")
@click.option("--space", required=True, type=click.Choice(lut.SPACES), help="Layer-wise space.")
@click.option(
    "--dataset",
    default=fbnet.DEFAULT_DATASET,
    show_default=True,
    type=click.Choice(list(fbnet.DATASETS)),
    help="Macro setting: fixes each layer's input shape.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the models and manifest.jsonl (without it: print the op archs).",
)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES))
@click.option("--seed", default=0, show_default=True, help="Seed for the weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest lines written.")
def lut_command(space, dataset, out_dir, dtype, seed, as_json):
    """Write the single-block models of a space's per-layer lookup table (space `op`, one per
    distinct layer shape and block; the identity costs nothing and has none). Measure the
    directory on a device, then `halo-coord predict --method lut --lut DEVICE` sums them.

    \b
    Examples:
      halo-coord zoo lut --space fbnet --dataset cifar100 --out lut-fbnet/
      halo-coord zoo lut --space fbnet > fbnet-ops.txt
    """
    archs = lut.op_archs(space, dataset)
    if out_dir is None:
        for arch in archs:
            click.echo(arch)
        return
    specs = [make_spec("op", a, None, None, dtype, seed) for a in archs]
    _write(specs, out_dir, f"{space} {dataset} lookup table", as_json)


@zoo.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(file, as_json):
    """Describe any .tflite file: ops, tensors, quantisation, MACs.

    \b
    Example:
      halo-coord zoo info zoo/nb201-cifar10-f32-i00000-s0.tflite --json
    """
    data = file.read_bytes()
    model = read_model(data)
    g = model.graph
    doc = {
        "file": str(file),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "description": model.description,
        "schema_version": model.schema_version,
        "subgraphs": model.subgraphs,
        "signatures": model.signatures,
        "inputs": [_tensor_doc(g, t) for t in g.inputs],
        "outputs": [_tensor_doc(g, t) for t in g.outputs],
        "opcodes": [{"op": k, "version": v} for k, v in model.opcodes],
        "operators": [
            {
                "op": op.kind,
                "version": op.version,
                "inputs": op.inputs,
                "outputs": op.outputs,
                "options": op.options,
            }
            for op in g.ops
        ],
        "tensors": [_tensor_doc(g, t) for t in range(len(g.tensors))],
        **stats(g).to_dict(),
    }
    if as_json:
        click.echo(json.dumps(doc, default=_jsonable))
        return
    click.echo(f"{file}  {len(data):,} bytes  sha256 {doc['sha256'][:16]}…")
    click.echo(
        f"description: {model.description or '-'}  schema v{model.schema_version}  "
        f"signatures: {', '.join(model.signatures) or '-'}"
    )
    for label in ("inputs", "outputs"):
        for t in doc[label]:
            click.echo(f"{label[:-1]:6s} {t['name']} {t['shape']} {t['dtype']}{_quant_text(t)}")
    click.echo(
        f"MACs {doc['macs']:,}  params {doc['params']:,}  activation peak "
        f"{doc['activation_peak_bytes']:,} B  kernels {doc['kernels']}  "
        f"ops {len(g.ops)}"
    )
    click.echo(
        table(
            ["op", "version", "count"],
            [
                [k, v, sum(1 for op in g.ops if op.kind == k and op.version == v)]
                for k, v in model.opcodes
            ],
        )
    )


@zoo.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def spaces(as_json):
    """List the search spaces, their sizes and datasets."""
    docs = [
        {
            "space": name,
            "size": m.SIZE,
            "datasets": [d for d in m.DATASETS if d != "none"],
            "default_dataset": m.DEFAULT_DATASET,
            "about": m.SUMMARY,
        }
        for name, m in SPACES.items()
    ]
    if as_json:
        click.echo(json.dumps(docs))
        return
    click.echo(
        table(
            ["space", "size", "datasets", "about"],
            [
                [d["space"], _size_text(d["size"]), ",".join(d["datasets"]) or "-", d["about"]]
                for d in docs
            ],
        )
    )


@zoo.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds allowed per model.")
def verify(directory, as_json, timeout):
    """Run every model of a generated directory in LiteRT (reference kernels) and compare its
    output with the writer's own NumPy forward pass. Exit code 1 if any model fails.

    \b
    Example:
      halo-coord zoo verify zoo/
    """
    from coordinator.zoo.verify import FLOAT_TOL, INT8_STEPS, Verifier

    rows = read_manifest(directory)
    if not rows:
        raise UserError(f"{directory} has no {MANIFEST}; generate models into it first")
    verdicts = []
    with (
        Verifier(timeout) as verifier,
        click.progressbar(
            list(rows.values()), label="verify", file=sys.stderr, show_pos=True
        ) as bar,
    ):
        for row in bar:
            path = directory / row["file"]
            if not path.exists():
                raise UserError(f"{path} is named in the manifest but missing")
            verdicts.append(verifier.verify(path, row))
    failed = [v for v in verdicts if not v.ok]
    if as_json:
        click.echo(json.dumps([v.__dict__ for v in verdicts]))
    else:
        click.echo(
            table(
                ["model", "dtype", "resolver", "max abs err", "steps", "argmax", "result"],
                [
                    [
                        v.id,
                        v.dtype,
                        v.resolver,
                        _num(v.max_abs_err),
                        _num(v.max_steps),
                        {None: "-", True: "same", False: "DIFF"}[v.argmax_ok],
                        ("ok" if v.ok else "FAIL") + (f" ({v.detail})" if v.detail else ""),
                    ]
                    for v in verdicts
                ],
            )
        )
        click.echo(
            f"{len(verdicts) - len(failed)}/{len(verdicts)} models match "
            f"(float32 ≤ {FLOAT_TOL:g} abs; int8 ≤ {INT8_STEPS} steps, same top class)"
        )
    if failed:
        raise SystemExit(1)


def _tensor_doc(g, t: int) -> dict:
    tensor = g.tensors[t]
    doc = {
        "index": t,
        "name": tensor.name,
        "shape": list(tensor.shape),
        "dtype": tensor.dtype,
        "const": tensor.is_const or tensor.nbytes_stored > 0,
    }
    if tensor.quant is not None:
        doc["quant"] = {
            "scale": tensor.quant.scale.tolist(),
            "zero_point": tensor.quant.zero_point.tolist(),
            "axis": tensor.quant.axis,
        }
    return doc


def _quant_text(t: dict) -> str:
    q = t.get("quant")
    if not q:
        return ""
    if len(q["scale"]) == 1:
        return f" scale={q['scale'][0]:.6g} zp={q['zero_point'][0]}"
    return f" per-channel({len(q['scale'])}, axis {q['axis']})"


def _size_text(size) -> str:
    if size is None:
        return "open"
    return f"{size:,}" if size < 10**9 else f"{size:.2e}"


def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
