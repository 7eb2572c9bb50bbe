"""The prepared CUDA check runs its whole code path on the CPU at a tiny width (fp32 and bf16)."""

import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_code_path_on_cpu():
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--layers", "2", "--steps", "3",
                          "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [l for l in out.stdout.splitlines() if l.startswith(("| float32", "| bfloat16"))]
    assert len(rows) == 2 and all(r.rstrip().endswith("| ok |") for r in rows), out.stdout
