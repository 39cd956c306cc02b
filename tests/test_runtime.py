"""bertlab.runtime.configure(): what it puts in XLA_FLAGS, that a second call adds nothing, that
the user's own flags win, and that XLA accepts the flags (an unknown one aborts the process)."""

import os
import subprocess
import sys

from bertlab import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_inference_commands_get_the_eigen_dots_and_training_keeps_xla_defaults():
    env = {}
    assert runtime.configure("predict", env) == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
    for command in ("finetune", "pretrain", None):
        env = {}
        assert runtime.configure(command, env) == {}
        assert "XLA_FLAGS" not in env
    assert runtime.kind_of("embed") == runtime.kind_of("evaluate") == "inference"
    assert runtime.COMPILER_OPTIONS["inference"] == runtime.flags_for("similarity")


def test_configure_adds_every_flag_once(monkeypatch):
    monkeypatch.setattr(runtime, "TRAINING_FLAGS", {"xla_a": "1", "xla_b": "x,y"})
    env = {}
    assert runtime.configure("finetune", env) == {"xla_a": "1", "xla_b": "x,y"}
    assert env["XLA_FLAGS"] == "--xla_a=1 --xla_b=x,y"
    assert runtime.configure("finetune", env) == {}  # idempotent
    assert env["XLA_FLAGS"] == "--xla_a=1 --xla_b=x,y"


def test_flags_the_user_set_are_kept_and_win(monkeypatch):
    monkeypatch.setattr(runtime, "TRAINING_FLAGS", {"xla_a": "1", "xla_b": "2"})
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/d  --xla_a=7"}
    assert runtime.configure("pretrain", env) == {"xla_b": "2"}
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/d --xla_a=7 --xla_b=2"


def test_switched_off_by_the_environment():
    env = {"BERTLAB_RUNTIME": "off", "XLA_FLAGS": "--xla_c=3"}
    assert runtime.configure("predict", env) == {}
    assert env["XLA_FLAGS"] == "--xla_c=3"


def test_describe_names_every_flag():
    assert runtime.describe("predict") == "--xla_cpu_experimental_ynn_fusion_type="
    assert runtime.describe("finetune") == "XLA defaults"


def test_xla_accepts_the_flags_and_compiles():
    """A fresh process (XLA reads XLA_FLAGS once): configure("predict"), then jax compiles and
    runs a matmul + GELU on XLA's own dot (no YNNPACK fusion left) with the exact result. XLA
    aborts on a flag it does not know. (A 64 x 48 matmul: XLA's default sends it to YNNPACK.)"""
    code = ("from bertlab import runtime; added = runtime.configure('predict')\n"
            "import jax, jax.numpy as jnp\n"
            "x = jnp.arange(64 * 48.0).reshape(64, 48) / 1000\n"
            "y = jax.jit(lambda a: jax.nn.gelu(a @ a.T, approximate=False))(x)\n"
            "import numpy as np, math\n"
            "ref = np.asarray(x) @ np.asarray(x).T\n"
            "ref = ref * 0.5 * (1 + np.vectorize(math.erf)(ref / math.sqrt(2)))\n"
            "assert np.allclose(np.asarray(y), ref, rtol=1e-6, atol=1e-6), (y, ref)\n"
            "f = jax.jit(lambda a: a @ a.T).lower(x).compile().as_text()\n"
            "assert '__ynn_fusion' not in f and ' dot(' in f, f\n"
            "print(sorted(added))\n")
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS",
                                                                          "BERTLAB_RUNTIME")}
    env["PYTHONPATH"] = REPO
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(sorted(runtime.INFERENCE_FLAGS))
