"""The writer's bytes: our flatbuffer builder lays out exactly what `flatbuffers.Builder` lays out,
and generated models keep the bytes they had when the package's builder wrote them."""

import hashlib

import flatbuffers
import numpy as np
import pytest

from coordinator.zoo.flatbuf import Builder, Table
from coordinator.zoo.generate import build_model, make_spec
from coordinator.zoo.testing import tiny_model_bytes

_PREPEND = {
    "i8": flatbuffers.Builder.PrependInt8Slot,
    "u8": flatbuffers.Builder.PrependUint8Slot,
    "bool": flatbuffers.Builder.PrependBoolSlot,
    "i32": flatbuffers.Builder.PrependInt32Slot,
    "u32": flatbuffers.Builder.PrependUint32Slot,
    "f32": flatbuffers.Builder.PrependFloat32Slot,
    "off": flatbuffers.Builder.PrependUOffsetTRelativeSlot,
}
# (slots, fields as (kind, slot, default)): mixed widths, defaults that are not 0, unused and
# trailing slots (the vtable is trimmed), a field order that is not slot order.
_TYPES = [
    (11, [("off", 0, 0), ("i8", 1, 0), ("u32", 2, 0), ("off", 3, 0), ("off", 4, 0)]),
    (4, [("i8", 0, 0), ("i32", 2, 1), ("i32", 3, 0)]),
    (7, [("i8", 0, 0), ("i32", 1, 0), ("i32", 2, 0), ("i8", 3, 0), ("i32", 4, 1), ("i32", 5, 1)]),
    (6, [("i8", 0, 0), ("i8", 1, 0), ("bool", 2, False)]),
    (1, [("f32", 0, 0.0)]),
    (3, [("off", 0, 0)]),
    (0, []),
    (5, [("u8", 3, 0), ("off", 1, 0), ("u32", 4, 0), ("off", 0, 0)]),
]
_TABLES = [Table(n, *fields) for n, fields in _TYPES]
_DTYPES = ["i1", "u1", "<i4", "<f4", "<i8"]


def _value(rng, kind, default, objects):
    if rng.random() < 0.3:
        return default
    if kind == "off":
        return objects[rng.integers(len(objects))] if objects else default
    if kind == "bool":
        return bool(rng.integers(2))
    if kind == "f32":
        return float(rng.integers(-8, 8)) / 4
    bound = {"i8": 127, "u8": 255}.get(kind, 1 << 20)
    return int(rng.integers(0 if kind.startswith("u") else -bound, bound))


def _step(rng, ref: flatbuffers.Builder, ours: Builder, objects: list[int]) -> int:
    """One random object, written by both builders; returns its offset (asserted equal)."""
    what = rng.integers(6)
    if what == 0:
        text = "".join(rng.choice(list("abé/_0"), rng.integers(0, 12)))
        return _same(ref.CreateString(text), ours.string(text))
    if what == 1:
        values = [int(v) for v in rng.integers(-1000, 1000, rng.integers(0, 8))]
        ref.StartVector(4, len(values), 4)
        for v in reversed(values):
            ref.PrependInt32(v)
        return _same(ref.EndVector(), ours.ints(values))
    if what == 2:
        array = rng.integers(-100, 100, rng.integers(0, 10)).astype(rng.choice(_DTYPES))
        return _same(
            ref.CreateNumpyVector(array), ours.blob(array, array.dtype.alignment, array.size)
        )
    if what == 3:
        raw = rng.integers(0, 256, rng.integers(0, 40)).astype(np.uint8).tobytes()
        ref.StartVector(1, len(raw), 16)
        for byte in reversed(raw):
            ref.PrependByte(byte)
        return _same(ref.EndVector(), ours.blob(raw, alignment=16))
    if what == 4 and objects:
        targets = [objects[i] for i in rng.integers(len(objects), size=rng.integers(1, 5))]
        ref.StartVector(4, len(targets), 4)
        for off in reversed(targets):
            ref.PrependUOffsetTRelative(off)
        return _same(ref.EndVector(), ours.offsets(targets))
    k = rng.integers(len(_TYPES))
    n_slots, fields = _TYPES[k]
    values = [_value(rng, kind, default, objects) for kind, _, default in fields]
    ref.StartObject(n_slots)
    for (kind, slot, default), value in zip(fields, values, strict=True):
        _PREPEND[kind](ref, slot, value, default)
    return _same(ref.EndObject(), ours.table(_TABLES[k], *values))


def _same(a: int, b: int) -> int:
    assert a == b
    return a


@pytest.mark.parametrize("seed", range(40))
def test_builder_lays_out_what_the_flatbuffers_package_lays_out(seed):
    rng = np.random.default_rng(seed)
    ref, ours = flatbuffers.Builder(0), Builder()
    objects: list[int] = []
    for _ in range(rng.integers(1, 80)):
        objects.append(_step(rng, ref, ours, objects))
    root = ours.table(_TABLES[5], objects[-1])
    ref.StartObject(3)
    ref.PrependUOffsetTRelativeSlot(0, objects[-1], 0)
    assert ref.EndObject() == root
    ref.Finish(root, file_identifier=b"TFL3")
    assert ours.finish(root, b"TFL3") == bytes(ref.Output())


# sha256 of files written by the flatbuffers package's builder (writer before `flatbuf`). Float32
# only: int8 files depend on BLAS rounding in calibration, which may differ between machines.
PINNED = [
    (
        (
            "nb201",
            "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        ),
        {},
        "056c6e58244fee92286b947139788c11176487fed8a05b09fbbb65af24df5839",
    ),
    (
        (
            "nb201",
            "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_1x1~2|",
        ),
        {},
        "b3c9a8c4ae3389751bb4e6823d7e6a4a97241cf9840fef1c0e5ad8e585a74850",
    ),
    (
        ("nb201", "|none~0|+|nor_conv_3x3~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|"),
        {"dataset": "imagenet16-120", "seed": 1},
        "43f256426af9c0234a3f690e15b01790678b6a518a143ea129aa4810bbd728ef",
    ),
    (
        ("op", "mbconv:16x16x24:k=5,e=6,s=2,cout=32,g=1,act=relu6,se=1"),
        {},
        "89fcaf09db2e0d3d546a444fe0eebbdd1943ae206d96c1d0639df8474f11701c",
    ),
    (
        ("op", "conv:8x8x8:k=3,s=2,cout=8,g=2,act=relu6,pad=explicit"),
        {},
        "159319a5481801c2547ca8c8e4a96e53ee60c74a01c40acb280b01332fdfbdfa",
    ),
    (
        ("op", "concat:8x8x4:n=3"),
        {},
        "b417d15fbaf1236f8a95a6029f3bc86311afc26c21bdaf6a7f7a597eda8d9994",
    ),
    (
        ("op", "fc:1x1x64:cout=10"),
        {},
        "ce24859c559ba231c9c00f00cbb3cca26a6d8a1995d73dfc116989b2f6e553e8",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "sha256"), PINNED, ids=[p[0][1][:24] for p in PINNED])
def test_generated_models_keep_their_bytes(args, kwargs, sha256):
    data, row, _ = build_model(make_spec(*args, **kwargs))
    assert hashlib.sha256(data).hexdigest() == row["sha256"] == sha256


def test_tiny_model_keeps_its_bytes():
    digest = hashlib.sha256(tiny_model_bytes()).hexdigest()
    assert digest == "63dbb92b4d082e0f2befcad2b183bb1d3d6e0683070a95dce1547d920c5a75ff"
