"""Shared pytest set-up: quiet TensorFlow, CPU-only JAX, deterministic test environment."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def small_embedded_dataset(tmp_path_factory):
    """``build(max_piece_seconds) -> data_dir``: a 3-piece embedded dataset, built once per length
    per test session (rendering the pieces is the slow part)."""
    from music_spectrogram_diffusion.data import embedded_dataset

    built: dict[float, str] = {}

    def build(max_piece_seconds: float = 12.0) -> str:
        if max_piece_seconds not in built:
            out = tmp_path_factory.mktemp("embedded")
            embedded_dataset.build_embedded_dataset(
                out, num_pieces=3, seed=0, num_workers=1, progress=False,
                max_piece_seconds=max_piece_seconds)
            built[max_piece_seconds] = str(out)
        return built[max_piece_seconds]

    return build


@pytest.fixture
def clean_gin(monkeypatch):
    """gin's global state cleared before and after the test, which runs in the repository root
    (gin includes are written relative to it)."""
    import gin

    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    gin.clear_config()
    yield
    gin.clear_config()
