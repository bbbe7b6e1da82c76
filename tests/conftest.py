import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # runs started here keep this count, whatever else runs here

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache (toy CLIP, rendered glyphs) from tests."""
    monkeypatch.setenv("DMC_CACHE", str(tmp_path_factory.getbasetemp() / "dmc-cache"))
