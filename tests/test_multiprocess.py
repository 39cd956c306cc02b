"""Multi-process data parallelism for real: two `jax.distributed` processes on localhost (CPU,
gloo collectives) against one process with two devices.

What multi-host bertlab relies on, checked here with real processes:
- the mesh helpers (bertlab.train.mesh) give the same numbers whether the two devices of the
  "data" axis live in one process or in two (a loss and its gradient over a sharded batch);
- every process gets the same number of batches whatever the shard sizes (BatchIterator: each
  process slices the same global batch, so no process runs out first and none waits forever);
- (slow) the real pretraining loop: 2 processes x 1 device give the losses of 1 process x 2
  devices, and a 2-process run stopped at step 10 resumes to the same step-20 losses.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds for a group of processes; a hang fails the test instead of the suite

# Run in each process: join the job (when there are several), then the work.
PREAMBLE = textwrap.dedent("""
    import json, os, sys
    import jax
    count, index, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if count > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=count, process_id=index)
""")

MEAN_AND_GRADIENT = PREAMBLE + textwrap.dedent("""
    import numpy as np
    from bertlab.train import mesh as mesh_lib

    mesh = mesh_lib.data_mesh()
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3) / 7.0   # (B, F): the global batch
    y = np.linspace(-1.0, 1.0, 16, dtype=np.float32)                 # (B,)
    rows = slice(index * 16 // count, (index + 1) * 16 // count)   # this process's rows
    batch = mesh_lib.global_batch({"x": x[rows], "y": y[rows]}, mesh)
    w = mesh_lib.replicate(np.array([0.5, -1.0, 2.0], np.float32), mesh)

    def loss(w, batch):
        return jax.numpy.mean((batch["x"] @ w - batch["y"]) ** 2)

    value, grad = jax.jit(jax.value_and_grad(loss))(w, batch)
    print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                      "local_rows": int(batch["x"].addressable_shards[0].data.shape[0]),
                      "loss": float(value), "grad": np.asarray(grad).tolist()}), flush=True)
""")

PRETRAIN = PREAMBLE + textwrap.dedent("""
    from bertlab import cli
    sys.exit(cli.main(["pretrain", "--config", "configs/pretrain.py:quick", *sys.argv[4:]]))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(devices_per_process: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", BERTLAB_COMPILATION_CACHE="off")
    env.pop("XLA_FLAGS", None)
    if devices_per_process > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    return env


def run_processes(script: str, count: int, *args: str, devices_per_process: int = 1
                  ) -> list[str]:
    """Runs `script` in `count` processes of one job; returns each one's stdout. A process that
    fails, or a job that hangs past TIMEOUT, fails the test with the processes' output."""
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-c", script, str(count), str(i), port, *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=REPO, env=environment(devices_per_process))
                 for i in range(count)]
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            if process.returncode != 0:
                pytest.fail(f"process exited with {process.returncode}:\n{err[-3000:]}")
            outputs.append(out)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{count} processes did not finish within {TIMEOUT} s (a hang)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def test_two_processes_equal_one_process_with_two_devices():
    (one,) = run_processes(MEAN_AND_GRADIENT, 1, devices_per_process=2)
    two = run_processes(MEAN_AND_GRADIENT, 2)
    one = json.loads(one.strip().splitlines()[-1])
    two = [json.loads(out.strip().splitlines()[-1]) for out in two]
    assert (one["devices"], one["processes"], one["local_rows"]) == (2, 1, 8)
    assert [(r["devices"], r["processes"], r["local_rows"]) for r in two] == [(2, 2, 8)] * 2
    # the reference, by hand in float64: mean squared error of a linear model and its gradient
    x = np.arange(48, dtype=np.float64).reshape(16, 3) / 7.0
    y = np.linspace(-1.0, 1.0, 16)
    w = np.array([0.5, -1.0, 2.0])
    residual = x @ w - y
    expected_loss, expected_grad = np.mean(residual ** 2), 2 * x.T @ residual / 16
    for result in [one] + two:
        np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)
        np.testing.assert_allclose(result["grad"], expected_grad, rtol=1e-5)
    assert two[0]["loss"] == two[1]["loss"] == one["loss"]  # bit for bit, all three
    assert two[0]["grad"] == two[1]["grad"] == one["grad"]


def test_every_process_gets_the_same_batches_count_whatever_the_shard_sizes(tmp_path):
    """37 examples in shards of 5, 5, ..., 2 and a global batch of 8 over 2 processes: both
    processes draw the same number of batches in every epoch (4, the tail of 5 dropped), their
    slices never overlap and together are the one-process batch, so neither waits on the other."""
    from bertlab.data.pretraining.iterator import BatchIterator
    from bertlab.data.pretraining.shards import ShardedExamples, ShardWriter

    writer = ShardWriter(str(tmp_path / "train"), max_seq_length=8, vocab_size=50,
                         examples_per_shard=5)
    for n in range(37):
        writer.add(np.full(3 + n % 4, 5 + n, np.int32), np.zeros(3 + n % 4, np.int32))
    writer.close()
    (tmp_path / "meta.json").write_text("{}")  # a finished dataset (the creator writes it last)
    examples = ShardedExamples.open(str(tmp_path / "train"))
    assert [s["num_examples"] for s in json.loads((tmp_path / "train" / "index.json").read_text())
            ["shards"]] == [5] * 7 + [2]
    assert len(examples) == 37
    whole = BatchIterator(examples, 8, seed=3)
    parts = [BatchIterator(examples, 8, seed=3, process_index=i, process_count=2)
             for i in range(2)]
    for _ in range(3 * whole.batches_per_epoch + 2):  # across epoch boundaries
        expected = whole.next_indices()
        got = [part.next_indices() for part in parts]
        assert [len(g) for g in got] == [4, 4]
        np.testing.assert_array_equal(np.concatenate(got), expected)
        assert [part.state() for part in parts] == [whole.state()] * 2
    assert whole.batches_per_epoch == 4


# ------------------------------------------------------------------ the real pretraining loop

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there had been one all we their has would when "
         "if so no").split()


def write_corpus(path) -> str:
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(40):
            for _ in range(rng.randint(3, 8)):
                f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))).capitalize()
                        + ".\n")
            f.write("\n")
    return str(path)


def train_losses(workdir) -> dict[int, tuple]:
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record["split"] == "train":
                out[record["step"]] = (record["loss"], record["grad_norm"])
            else:
                out[("eval", record["step"])] = record["mlm_loss"]
    return out


@pytest.mark.slow
def test_two_process_pretraining_matches_one_process_and_resumes(tmp_path):
    """~3 minutes on 2 busy cores: 1 process x 2 devices (the reference, which also makes the
    vocabulary and shards), 2 processes x 1 device on the same data, and 2 processes stopped at
    step 10 then resumed."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    common = ["--config.train.peak_flops=1e12"]
    reference = tmp_path / "one"
    run_processes(PRETRAIN, 1, "--workdir", str(reference), f"--config.data.corpus={corpus}",
                  *common, devices_per_process=2)
    prepared = [f"--config.data.prepared={reference / 'data'}",
                f"--config.data.vocab={reference / 'vocab.txt'}", *common]
    straight = tmp_path / "two"
    run_processes(PRETRAIN, 2, "--workdir", str(straight), *prepared)
    expected = train_losses(reference)
    assert sorted(k for k in expected if isinstance(k, int)) == [5, 10, 15, 20]
    got = train_losses(straight)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=str(key))

    resumed = tmp_path / "resumed"
    run_processes(PRETRAIN, 2, "--workdir", str(resumed), *prepared, "--config.train.stop_after=10")
    assert json.loads((resumed / "final_metrics.json").read_text())["step"] == 10
    run_processes(PRETRAIN, 2, "--workdir", str(resumed), *prepared)
    got = train_losses(resumed)
    for key in (15, 20, ("eval", 20)):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=str(key))
