"""What the interpreter will run: op histogram and delegate nodes, from ``_get_ops_details()``.

``_get_ops_details()`` is private but present in both runtimes (tflite-runtime 2.13/2.14 and
ai-edge-litert 2.x). It lists every node of the primary subgraph: the model's ops, plus one
``DELEGATE`` node per partition a delegate (XNNPACK by default) took over.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict

DELEGATE_OP = "DELEGATE"


def op_histogram(interpreter: Any) -> Dict[str, int]:
    """{op name: count}, ``DELEGATE`` counting delegated partitions."""
    return dict(
        sorted(Counter(str(op["op_name"]) for op in interpreter._get_ops_details()).items())
    )


def is_delegated(interpreter: Any) -> bool:
    return any(op["op_name"] == DELEGATE_OP for op in interpreter._get_ops_details())
