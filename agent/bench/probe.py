"""Does this runtime apply XNNPACK by default? Answered by running a model, not by guessing.

The probe builds a tiny known-good float32 model under the "auto" resolver (default delegates)
and under "xnnpack_off": XNNPACK applies when the first shows a DELEGATE node and the second does
not. The model is a FULLY_CONNECTED x[1,8] -> y[1,4] (784 bytes), written by the in-repo zoo
writer (``coordinator.zoo.testing.tiny_model_bytes(0)``) and embedded here because the agent must
not import the coordinator.
"""

from __future__ import annotations

import base64
from typing import Any

from agent.bench.ops import is_delegated
from agent.runtime import make_interpreter

PROBE_MODEL_B64 = (
    "HAAAAFRGTDMUABwAGAAUABAADAAIAAAAAAAEABQAAAAYAAAAHAAAADgAAAAkAAAAKAAAAAMAAAABAAAARAAAAAMA"
    "AADIAgAALAIAAPgBAAABAAAAoAAAAAEAAAD0AAAADgAAAGhhbG9mYXJtLXpvby8xAAAAAAoAEAAMAAgABAAKAAAA"
    "DAAAABwAAABAAAAADwAAAHNlcnZpbmdfZGVmYXVsdAABAAAADAAAAAgADAAIAAQACAAAAAMAAAAEAAAABgAAAG91"
    "dHB1dAAAAQAAAAQAAABm/v//BAAAAAUAAABpbnB1dAAOABgAFAAQAAwACAAEAA4AAABAAAAAEAAAABQAAAAYAAAA"
    "HAAAAAEAAABYAAAAAQAAAAMAAAABAAAAAAAAAAQAAAD4AAAAvAAAAIgAAABkAAAABAAAAG1haW4AAAAADAAKAAkA"
    "AAAAAAQADAAAAAkAAAAACQ4AFAAAABAADAALAAQADgAAABAAAAAAAAAIDAAAABAAAAB0/v//AQAAAAMAAAADAAAA"
    "AAAAAAEAAAACAAAAhP///xQAAAAEAAAAAgAAAAEAAAAEAAAAAgAAAGZjAADc////FAAAAAIAAAAEAAAAAQAAAAQA"
    "AAAHAAAAZmMvYmlhcwAMABAADAAAAAgABAAMAAAAGAAAAAEAAAAEAAAAAgAAAAQAAAAIAAAACgAAAGZjL3dlaWdo"
    "dHMAAAwADAAIAAAAAAAEAAwAAAAUAAAABAAAAAIAAAABAAAACAAAAAUAAABpbnB1dAAAANb///8EAAAAEAAAAOIL"
    "I77bdAo/ms9bPmnztT4AAAAAAAAAAAAAAAAAAAYACAAEAAYAAAAEAAAAgAAAAGy/AD5/Rge+vfIjP9/V1j2hIQm/"
    "/SK5Pnnppj/mc3I//ic0v1X5ob/qjh+/bkUpPU7NFMDsCmC+A3qfv+B1O7+PVAu/GPKhvj3B0j4UcYU/l54Dvkbo"
    "rj8zSiq/IfmzPtJJZz+FicA9+FU+vzL2a78KW+q+1XphPis7gb8fMla+AAAAAAAAAAAEAAQABAAAAA=="
)


def probe_model() -> bytes:
    return base64.b64decode(PROBE_MODEL_B64)


def _delegated(runtime: Any, resolver: str) -> bool:
    interpreter = make_interpreter(runtime, model_content=probe_model(), resolver=resolver)
    interpreter.allocate_tensors()
    return is_delegated(interpreter)


def xnnpack_by_default(runtime: Any) -> bool:
    """True when the default resolver delegates a float model to XNNPACK and "xnnpack_off"
    does not; False when it does not or the probe cannot run."""
    try:
        return _delegated(runtime, "auto") and not _delegated(runtime, "xnnpack_off")
    except (RuntimeError, ValueError):
        return False
