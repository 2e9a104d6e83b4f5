"""Paper 2's Table 1 benchmark: its set-ups, the quick run (resumable) and the notebook on the quick results."""
import importlib.util
import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from probinv.metrics import ms_ssim
from probinv.scenarios import get_scenario

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def paper2():
    mod = _load("paper2")
    if mod.DATA is None:
        # the benchmark models are not shipped with the package (../shared/data on the project's machines and CI)
        pytest.skip("marmousi2.npz not found: set PROBINV_DATA to the folder holding it")
    return mod


def test_marmousi_setup_reproduces_the_reference_start(paper2):
    s = get_scenario("paper2_marmousi", data_dir=paper2.DATA, dtype=torch.float64)
    assert tuple(s.true["vp"].shape) == (44, 100) and s.dx == 80.0 and s.free_surface
    assert s.acquisition.n_shots == 16 and s.acquisition.n_receivers == 100
    assert (s.acquisition.nt, s.acquisition.dt, s.acquisition.freq) == (1500, 0.006, 3.0)
    t = s.true["vp"]
    # the deepwave reference measured MS-SSIM (win 3) 0.705 for this blurred start (3 digits given)
    score = float(ms_ssim(s.initial["vp"], t, data_range=float(t.max() - t.min()), win_size=3))
    assert score == pytest.approx(0.705, abs=0.0006)
    assert float(s.true["vs"].min()) == 400.0  # water cells get PAPER2_VS_WATER for the SH / P-SV rows
    q = get_scenario("q_anomaly", wave="sh")
    assert tuple(q.true["q"].shape) == (30, 50) and q.dx == 60.0
    assert len(q.metadata["frequencies"]) == 24 and q.metadata["frequencies"][-1] == 6.0
    assert 19.5 < float(q.true["q"].min()) < 22.0 and float(q.true["q"].max()) == pytest.approx(100.0, rel=1e-3)


def test_paper2_quick_runs_resumes_and_feeds_the_notebook(paper2, tmp_path, monkeypatch):
    rows = "acoustic_l2,viscoacoustic_q_attenuation"
    res = paper2.main(["--quick", "--rows", rows, "--out", str(tmp_path)])
    for row in rows.split(","):
        r = res["rows"][row]
        n = r["scored"]
        assert r["iterations"] == 2 and len(r["history"]) == 2
        arrays = np.load(tmp_path / f"paper2_{row}.npz")
        # the recorded initial score is the metric of the saved arrays (an independent recomputation)
        t = torch.as_tensor(arrays[f"true_{n}"])
        init = float(ms_ssim(torch.as_tensor(arrays[f"initial_{n}"]), t, data_range=float(t.max() - t.min()),
                             win_size=3))
        assert r["initial"][n]["ms_ssim"] == pytest.approx(init, abs=1e-12)
        assert np.all(arrays[f"std_{n}"] > 0)
        assert (tmp_path / f"paper2_{row}.png").stat().st_size > 10_000  # the row's figure (4 panels per field)
    # resumable: a second call with the same settings skips the finished rows and returns them unchanged
    again = paper2.main(["--quick", "--rows", rows, "--out", str(tmp_path)])
    assert again["rows"]["acoustic_l2"]["seconds_map"] == res["rows"]["acoustic_l2"]["seconds_map"]
    assert "acoustic_l2" in (tmp_path / "paper2.md").read_text()
    # the notebook on these results
    monkeypatch.setenv("PROBINV_PAPER2_RESULTS", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(ROOT / "notebooks" / "paper2_table1.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "reduced size" in out and "viscoacoustic_q_attenuation" in out
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    saved = json.loads((tmp_path / "paper2.json").read_text())
    assert sorted(saved["rows"]) == sorted(rows.split(","))


def test_reference_loop_steps_scores_and_resumes(paper2, tmp_path):
    """benchmarks/paper2_reference.py (the side-by-side acoustic row): two Adam steps of the probinv solver, then a
    resumed third. The start's score is the issue's 0.705; the clip holds; the resumed run continues the history."""
    ref = _load("paper2_reference")
    args = ["--solver", "probinv", "--out", str(tmp_path), "--data-dir", str(paper2.DATA), "--tag", "t"]
    ref.main(args + ["--iterations", "2"])
    r = json.loads((tmp_path / "reference.json").read_text())["runs"]["t"]
    assert r["iterations"] == 2 and [h["step"] for h in r["history"]] == [0, 1, 2]
    assert r["ms_ssim_at"]["0"] == pytest.approx(0.705, abs=0.0006)
    # the misfit (recorded before each step) falls from the first Adam step to the second, and the model moved (the
    # score first dips, measured 0.7052 -> 0.698 after 2 steps, then rises: 0.736 after 10)
    assert r["history"][2]["loss"] < r["history"][1]["loss"]
    assert r["history"][2]["ms_ssim"] != r["history"][0]["ms_ssim"]
    ref.main(args + ["--iterations", "3"])
    r3 = json.loads((tmp_path / "reference.json").read_text())["runs"]["t"]
    assert [h["step"] for h in r3["history"]] == [0, 1, 2, 3]
    # the resumed run continues from the saved state (bit-equal history up to step 2)
    assert r3["history"][:3] == r["history"]
    assert "| t |" in (tmp_path / "reference.md").read_text()


def test_water_option_pins_the_water_cells(paper2, tmp_path):
    """--water fixed / fluid: the water cells (rows 0-4 of this window) start at and stay at their true values: the
    forward ignores whatever the inverted fields hold there; fluid gives the water vs = 0 (P-SV only)."""
    s, fwd, _, fields = paper2.setup("psv_l2", quick=True, water="fluid")
    mask = s.metadata["water"]
    assert fields == ("vp", "vs") and bool(mask.any()) and not bool(mask.all())
    assert float(s.true["vs"][mask].abs().max()) == 0.0 and float(s.true["vs"][~mask].min()) > 0
    for n in fields:
        assert torch.equal(s.initial[n][mask], s.true[n][mask])
    with torch.no_grad():
        d0 = fwd({n: s.initial[n] for n in fields})
        junk = {n: torch.where(mask, torch.full_like(s.initial[n], 2500.0), s.initial[n]) for n in fields}
        d1 = fwd(junk)
        moved = {n: s.initial[n] + 50.0 * (~mask) for n in fields}
        d2 = fwd(moved)
    assert torch.equal(d0, d1)  # the water cells are pinned: bit-equal data
    assert float((d2 - d0).abs().max()) > 1e-3 * float(d0.abs().max())  # the others are not
    # the whole row (quick): the MAP and its Laplace std keep the water pinned (MAP = truth, std 0 there)
    res = paper2.main(["--quick", "--rows", "psv_l2", "--water", "fluid", "--out", str(tmp_path)])
    arrays = np.load(tmp_path / "paper2_psv_l2.npz")
    m = mask.numpy()
    for n in fields:
        assert np.array_equal(arrays[f"map_{n}"][m], s.true[n].numpy()[m])
        assert np.all(arrays[f"std_{n}"][m] == 0) and np.all(arrays[f"std_{n}"][~m] > 0)
    assert res["rows"]["psv_l2"]["settings"]["water"] == "fluid"
    s2, _, _, _ = paper2.setup("sh_l2", quick=True, water="fixed")
    assert float(s2.true["vs"][s2.metadata["water"]].min()) == 400.0  # fixed keeps the solid water of the SH rows
    with pytest.raises(ValueError, match="water='fluid'"):
        paper2.setup("sh_l2", quick=True, water="fluid")


def test_seabed_option_runs_sh_below_the_water(paper2):
    """--water seabed (SH): the solver sees only the rows below the water, so the data do not depend on the water
    cells at all and equal an SH run on the cropped model with the sources and receivers on its top row."""
    s, fwd, _, fields = paper2.setup("sh_l2", quick=True, water="seabed")
    top = int(s.metadata["water"].all(dim=1).sum())
    assert fields == ("vs",) and top >= 1
    with torch.no_grad():
        d0 = fwd({"vs": s.initial["vs"]})
        d1 = fwd({"vs": torch.where(s.metadata["water"], torch.full_like(s.initial["vs"], 3000.0), s.initial["vs"])})
        acq = s.acquisition
        amp = paper2.ricker(acq.freq, acq.nt, acq.dt, dtype=paper2.D).expand(acq.n_shots, 1, acq.nt).contiguous()
        ref = paper2.SHForward(s.dx, acq.dt, amp, acq.source_locations, acq.receiver_locations, density="rho",
                               options={"pml_width": s.pml_width, "free_surface": True, "accuracy": 4,
                                        "checkpoint_every": 150})
        d2 = ref({"vs": s.initial["vs"][top:], "rho": s.true["rho"][top:]})
    assert torch.equal(d0, d1) and torch.equal(d0, d2) and float(d0.abs().max()) > 0
    with pytest.raises(ValueError, match="water='seabed'"):
        paper2.setup("psv_l2", quick=True, water="seabed")


def test_marmousi_source_layouts(paper2):
    """The two layouts of the 16 sources: spread over columns 0-99 (ends included) or at the centres of 16 equal
    segments (the layout with which the issue's acoustic reference is reproduced)."""
    spread = get_scenario("paper2_marmousi", data_dir=paper2.DATA).acquisition.source_locations[:, 0]
    centred = get_scenario("paper2_marmousi", data_dir=paper2.DATA, sources="centred").acquisition.source_locations
    assert spread[:, 1].tolist() == [0, 7, 13, 20, 26, 33, 40, 46, 53, 59, 66, 73, 79, 86, 92, 99]
    # centre of segment k: (k + 0.5) * 100 / 16 = 3.125 + 6.25 k, truncated
    assert centred[:, 0, 1].tolist() == [int(3.125 + 6.25 * k) for k in range(16)]
    assert int(centred[..., 0].abs().max()) == 0 and int(spread[:, 0].abs().max()) == 0  # all on row 0
    with pytest.raises(ValueError, match="sources must be"):
        get_scenario("paper2_marmousi", data_dir=paper2.DATA, sources="random")


def test_auto_water_and_checkpoint_guard(paper2, tmp_path):
    """--water auto picks the fluid water for P-SV, the seabed for SH and inverts every cell of the acoustic rows; a
    row's checkpoint is resumed only under the options it was written with (another problem stops with a message)."""
    assert [paper2.water_for(r, "auto") for r in ("psv_l2", "sh_traveltime", "acoustic_l2", "viscoacoustic_q_l2")] \
        == ["fluid", "seabed", "free", "free"]
    assert paper2.water_for("psv_l2", "fixed") == "fixed"
    args = ["--quick", "--rows", "acoustic_l2", "--laplace-rank", "0", "--out", str(tmp_path)]
    paper2.main(args)
    saved = json.loads((tmp_path / "paper2_acoustic_l2_problem.json").read_text())
    assert saved["water"] == "free" and saved["noise"] == 0.02
    with pytest.raises(SystemExit, match="written for another problem"):
        paper2.main(args + ["--iterations", "3", "--noise", "0"])
    res = paper2.main(args + ["--iterations", "3"])  # the same problem resumes
    assert res["rows"]["acoustic_l2"]["iterations"] == 3
