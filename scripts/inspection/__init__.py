"""The inspection service behind ``scripts/predict --watch``: drop folder -> model -> MQTT.

One job per module: ``drop_folder`` finds complete photos, ``model_client`` asks the model
(retrying what is transient), ``message`` shapes the result, ``outbox`` keeps results on
disk until the broker acknowledges them, ``publisher`` sends them (paho-mqtt, QoS 1),
``folders`` files photos under done/failed/relabel, ``service`` runs the loop and ``cli``
turns the command line into settings (usage errors exit 2).
"""

import sys
from pathlib import Path

# The shadow comparison matches detections with models/training/scoring.py (one implementation for
# the project): the repository's root goes on the path once, as models/training puts scripts/ there.
# The charm's manifests (standard library only) say where a model and its shadow answer on the
# gateway: one source for those paths.
_ROOT = str(Path(__file__).resolve().parents[2])
for _path in (_ROOT, str(Path(_ROOT) / "charms" / "onnx-model" / "src")):
    if _path not in sys.path:
        sys.path.append(_path)
