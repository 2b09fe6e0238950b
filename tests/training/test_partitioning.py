"""Mesh, logical-axis rules, optimizer-state shardings, and 8-device sharded training."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from music_spectrogram_diffusion.training import partitioning, summaries

sys.path.insert(0, os.path.dirname(__file__))
import train_worker  # noqa: E402


def test_mesh_axes_and_invalid_split():
    mesh = partitioning.make_mesh(partitioning.PartitionConfig())
    assert mesh.axis_names == ("data", "model")
    assert mesh.shape == {"data": len(jax.devices()), "model": 1}
    with pytest.raises(ValueError, match="cannot be split"):
        partitioning.make_mesh(partitioning.PartitionConfig(num_partitions=3))
    assert partitioning.PartitionConfig(model_parallel_submesh=(1, 1, 2, 1)).model_axis_size == 2


def test_rules_table_maps_model_parallel_axes():
    rules = dict(partitioning.STANDARD_LOGICAL_AXIS_RULES)
    assert rules["batch"] == "data"
    assert rules["mlp"] == rules["heads"] == rules["vocab"] == rules["joined_kv"] == "model"
    assert rules["embed"] is None and rules["mel"] is None


def test_adafactor_factored_state_gets_param_spec_with_axis_dropped():
    mesh = partitioning.make_mesh(partitioning.PartitionConfig())
    params = {"mlp": {"wi": jax.ShapeDtypeStruct((256, 512), np.float32)},
              "norm": jax.ShapeDtypeStruct((256,), np.float32)}
    specs = {"mlp": {"wi": PartitionSpec(None, "model")}, "norm": PartitionSpec(None)}
    shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs,
                             is_leaf=lambda x: isinstance(x, PartitionSpec))
    opt_state = jax.eval_shape(optax.adafactor(1e-3).init, params)
    out = partitioning.optimizer_state_shardings(opt_state, params, shardings, mesh)
    factored = [s for s in jax.tree.leaves(out)]
    leaves = jax.tree.leaves(opt_state)
    by_shape = {tuple(l.shape): s.spec for l, s in zip(leaves, factored)}
    assert tuple(by_shape[(256,)]) in ((), (None,))  # v_row of wi: the 'model' column axis dropped
    assert by_shape[(512,)] == PartitionSpec("model")  # v_col of wi keeps the column axis


_SHARDED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    import train_worker
    from music_spectrogram_diffusion.testing import fake_models
    from music_spectrogram_diffusion.training import optimizers, partitioning, train_state
    assert len(jax.devices()) == 8, jax.devices()
    train_worker.run({model_dir!r}, 3, 100, 0.0, 2)
    config = partitioning.PartitionConfig(num_partitions=2)
    mesh = partitioning.make_mesh(config)
    model = fake_models.FakeSpectrogramModel()
    batch = fake_models.FakeBatchSource().get_batch(0, 8, seed=3)
    state, _, _ = train_state.create_train_state(
        model, lambda p: optimizers.make_optimizer(
            optimizers.OptimizerConfig(), fake_models.frozen_param_mask(p)),
        jax.random.key(0), batch, mesh, config.rules)
    out = {{}}
    for name, x in [("wi", state.params["params"]["wi"]["kernel"]),
                    ("wo", state.params["params"]["wo"]["kernel"]),
                    ("token_embedding", state.params["params"]["token_embedding"])]:
        out[name] = [str(x.sharding.spec), list(x.addressable_shards[0].data.shape),
                     list(x.shape)]
    out["mesh"] = dict(mesh.shape)
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_training_on_8_devices_matches_one_device(tmp_path):
    script = _SHARDED_SCRIPT.format(tests=os.path.dirname(__file__), model_dir=str(tmp_path / "x8"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["mesh"] == {"data": 4, "model": 2}
    # 'embed' x 'mlp' kernel: the mlp axis split over the 2 model devices.
    assert result["wi"][0] == "P(None, 'model')"
    assert result["wi"][1] == [16, 16] and result["wi"][2] == [16, 32]
    assert result["wo"][1] == [16, 128]  # 'mlp' x 'mel'
    assert result["token_embedding"][1] == [768, 16]  # 'vocab' split

    train_worker.run(str(tmp_path / "x1"), 3, 100)
    sharded = summaries.read_scalars(str(tmp_path / "x8" / "train"))["loss"]
    single = summaries.read_scalars(str(tmp_path / "x1" / "train"))["loss"]
    assert [s for s, _ in sharded] == [s for s, _ in single] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in sharded], [v for _, v in single], atol=1e-5, rtol=0)
    assert single[2][1] < single[0][1]


class _FakeCoordinator:
    """The jax.distributed client's key-value calls over a dict; process 1's values are set
    by the test (the real exchange between processes runs in test_multiprocess.py)."""

    def __init__(self):
        self.store = {}

    def key_value_set(self, key, value):
        self.store[key] = value

    def blocking_key_value_get(self, key, timeout_ms):
        if key not in self.store:
            raise RuntimeError(f"DEADLINE_EXCEEDED: {key}")
        return self.store[key]

    def key_value_delete(self, key):
        del self.store[key]


def test_max_over_hosts_exchanges_through_the_coordinator(monkeypatch):
    from jax._src import distributed

    client = _FakeCoordinator()
    monkeypatch.setattr(distributed.global_state, "client", client)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(partitioning, "_exchanges", iter(range(3)))
    for exchange, (mine, theirs) in enumerate([(300, 700), (900, 200), (5, 6)]):
        client.key_value_set(f"msd/max_over_hosts/{exchange}/1", str(theirs))
        assert partitioning.max_over_hosts(mine) == max(mine, theirs)
        assert client.store[f"msd/max_over_hosts/{exchange}/0"] == str(mine)
    # Exchange 2 deleted this process's key of exchange 0 (every process has read it by then).
    assert "msd/max_over_hosts/0/0" not in client.store and "msd/max_over_hosts/1/0" in client.store
    # A process that never answers: one message naming it, not a hang or a bare runtime error.
    monkeypatch.setattr(partitioning, "_exchanges", iter([7]))
    with pytest.raises(RuntimeError, match="process 0: process 1 did not reach exchange 7 .* "
                                           "same command with the same gin config"):
        partitioning.max_over_hosts(1)
