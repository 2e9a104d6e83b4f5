"""probinv.io: NetCDF round trips readable by plain xarray, atomic writes, SEG-Y import with header geometry."""
import os
import re

import numpy as np
import pytest
import torch
import xarray as xr

from probinv import io


def _model(nz=5, nx=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return {"vp": 2000 + 500 * torch.rand(nz, nx, generator=g, dtype=dtype),
            "q": 20 + 30 * torch.rand(nz, nx, generator=g, dtype=dtype)}


def test_model_roundtrip_exact_and_plain_xarray(tmp_path):
    fields = _model()
    path = io.write_model(tmp_path / "m.nc", fields, dx=12.5, origin=(0.0, 100.0), config={"time": {"dt": 1e-3}})
    m = io.read_model(path, dtype=torch.float64)
    # float64 written and read back: the round trip must be bit exact
    for k in fields:
        assert torch.equal(m.fields[k], fields[k])
    assert m.dx == 12.5 and m.origin == (0.0, 100.0) and m.shape == (5, 7)
    with xr.open_dataset(path) as ds:  # plain xarray, default engine
        assert ds["vp"].attrs["units"] == "m/s"
        assert ds["q"].attrs["units"] == "1"
        assert ds["z"].attrs["units"] == "m" and ds["x"].attrs["units"] == "m"
        np.testing.assert_allclose(ds["x"].values, 100.0 + 12.5 * np.arange(7))
        assert ds.attrs["probinv_version"] == io.__version__
        assert '"dt": 0.001' in ds.attrs["probinv_config"]


def test_model_follows_dtype_and_rejects_bad_input(tmp_path):
    path = io.write_model(tmp_path / "m.nc", {"vp": np.full((3, 4), 1500.0, np.float32)}, dx=10)
    assert io.read_model(path, dtype=torch.float32).fields["vp"].dtype == torch.float32
    with pytest.raises(ValueError, match=re.escape("dx must be a positive grid spacing in m, got -1")):
        io.write_model(tmp_path / "b.nc", {"vp": np.ones((3, 4))}, dx=-1)
    with pytest.raises(ValueError, match=re.escape("fields['vs'] has shape (3, 5) but the other fields have (3, 4)")):
        io.write_model(tmp_path / "b.nc", {"vp": np.ones((3, 4)), "vs": np.ones((3, 5))}, dx=1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_model(tmp_path / "missing.nc")


def test_gather_roundtrip(tmp_path):
    data = torch.randn(3, 4, 50, dtype=torch.float64)
    src = torch.tensor([[[2, 1]], [[2, 5]], [[2, 9]]])
    rec = torch.stack([torch.stack([torch.full((4,), 3), torch.arange(0, 8, 2)], -1)] * 3)
    path = io.write_gather(tmp_path / "d.nc", data=data, dt=2e-3, source_locations=src, receiver_locations=rec,
                           dx=10.0, units="Pa")
    g = io.read_gather(path, dtype=torch.float64)
    assert torch.equal(g.data, data) and torch.equal(g.source_locations, src) and torch.equal(g.receiver_locations, rec)
    assert g.dt == 2e-3 and g.dx == 10.0 and g.units == "Pa"
    with xr.open_dataset(path) as ds:
        assert ds["time"].attrs["units"] == "s"
        assert ds["data"].dims == ("shot", "receiver", "time")
        np.testing.assert_allclose(ds["time"].values, 2e-3 * np.arange(50))
        np.testing.assert_allclose(ds["source_x"].values[:, 0], [10.0, 50.0, 90.0])  # index * dx, in m
        assert ds["receiver_z"].attrs["units"] == "m"
    with pytest.raises(ValueError, match=re.escape("receiver_locations must be shaped [3, 4, 2]")):
        io.write_gather(tmp_path / "e.nc", data=data, dt=1e-3, source_locations=src, receiver_locations=rec[:, :2],
                        dx=10.0)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.nc"
    io.write_model(path, {"vp": np.full((3, 4), 1500.0)}, dx=10)
    before = path.read_bytes()

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise Boom()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.nc"]  # the temporary file was removed


segyio = pytest.importorskip("segyio")


def _write_segy(path, traces, headers, interval_us):
    spec = segyio.spec()
    spec.format = 5  # IEEE float
    spec.samples = list(range(traces.shape[1]))
    spec.tracecount = traces.shape[0]
    with segyio.create(str(path), spec) as f:
        f.bin.update({segyio.BinField.Interval: interval_us, segyio.BinField.Samples: traces.shape[1]})
        for i, (tr, h) in enumerate(zip(traces, headers, strict=True)):
            f.header[i] = {**h, segyio.TraceField.TRACE_SAMPLE_INTERVAL: interval_us}
            f.trace[i] = tr.astype(np.float32)


def test_segy_gather_geometry_from_headers(tmp_path):
    tf = segyio.TraceField
    n_shots, n_rec, nt, dx = 2, 3, 40, 12.5
    rng = np.random.default_rng(0)
    traces = rng.standard_normal((n_shots * n_rec, nt)).astype(np.float32)
    headers = []
    for s in range(n_shots):
        for r in range(n_rec):
            # coordinates in cm with scalar -100: source at x = (4 + 8 s) dx, receivers at x = (2 + 3 r) dx
            headers.append({tf.FieldRecord: 101 + s, tf.SourceGroupScalar: -100, tf.ElevationScalar: -10,
                            tf.SourceX: int(round((4 + 8 * s) * dx * 100)), tf.SourceDepth: int(2 * dx * 10),
                            tf.GroupX: int(round((2 + 3 * r) * dx * 100)), tf.ReceiverGroupElevation: int(dx * 10)})
    path = tmp_path / "shots.sgy"
    _write_segy(path, traces, headers, interval_us=2000)
    g = io.read_segy_gather(path, dx=dx, dtype=torch.float64)
    assert g.data.shape == (2, 3, 40) and g.dt == pytest.approx(2e-3)
    # float32 traces in the file: exact after the float64 cast
    np.testing.assert_array_equal(g.data.numpy(), traces.reshape(2, 3, 40).astype(np.float64))
    assert g.source_locations.tolist() == [[[2, 4]], [[2, 12]]]
    assert g.receiver_locations[0].tolist() == [[1, 2], [1, 5], [1, 8]]
    with pytest.raises(ValueError, match=re.escape("is not on the grid of spacing dx = 10.0 m")):
        io.read_segy_gather(path, dx=10.0)


def test_segy_model_import(tmp_path):
    tf = segyio.TraceField
    nz, nx, dx = 6, 4, 5.0
    vp = (1500 + 10 * np.arange(nz)[:, None] + np.arange(nx)[None, :]).astype(np.float32)
    headers = [{tf.CDP_X: int(i * dx * 10), tf.SourceGroupScalar: -10} for i in range(nx)]
    path = tmp_path / "vp.sgy"
    _write_segy(path, vp.T.copy(), headers, interval_us=int(dx * 1000))  # depth step 5 m stored as 5000
    m = io.read_segy_model(path, dtype=torch.float64)
    assert m.dx == 5.0 and m.shape == (nz, nx)
    np.testing.assert_array_equal(m.fields["vp"].numpy(), vp.astype(np.float64))
    with pytest.raises(ValueError, match="needs equal spacing"):
        io.read_segy_model(path, dx=4.0)
