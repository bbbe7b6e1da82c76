import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # runs started here keep this count, whatever else runs here

import pytest  # noqa: E402
import torch  # noqa: E402

from dmc.catalog import register_lab  # noqa: E402

register_lab()  # the lab's names (glyphs, toy, data.world), as the command line knows them; nothing of it loads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache (toy CLIP, rendered glyphs) from tests."""
    monkeypatch.setenv("DMC_CACHE", str(tmp_path_factory.getbasetemp() / "dmc-cache"))


@pytest.fixture(scope="session")
def tiny_dmc_run(tmp_path_factory):
    """One uninterrupted 3-task DMC run on the tiny backbone, shared by the run-directory tests (the
    reference of every resume; tests copy it, never change it)."""
    from dmc.engine.loop import run
    from dmc.training.runtime import make_runtime
    from tests.helpers import tiny_cfg

    return run(tiny_cfg("dmc"), out=tmp_path_factory.mktemp("full") / "run",
               rt=make_runtime("cpu", "fp32", progress=False))
