"""The method core stands alone: it imports without Ray or MLflow."""

from __future__ import annotations

import subprocess
import sys


def test_method_core_imports_without_ray_or_mlflow():
    code = ("import sys; import distill.core.features, distill.core.augment, distill.core.models, distill.core.fit, distill.core.crops, distill.core.labels, distill.core.protocols, "
            "distill.config, distill.stages, distill.core.checkpoint, distill.data.speech_commands; "
            "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
