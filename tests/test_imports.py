"""The project's generic top-level package names (models, kernels, ...) must not shadow or be
shadowed by other distributions: transformers probes for modules of such names."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_transformers_and_project_import_together():
    code = (
        "import transformers, tokenizers\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "import models, kernels, engine\n"
        "from pathlib import Path\n"
        f"root = Path({str(ROOT)!r})\n"
        "for m in (models, kernels, engine):\n"
        "    assert Path(m.__file__).resolve().parent.parent == root, m.__file__\n"
        "assert 'site-packages' in transformers.__file__ or 'dist-packages' in transformers.__file__\n"
        "from engine import LLM, SamplingParams\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
