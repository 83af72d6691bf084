"""Network constructor arguments: each refused by name with what it must be."""

from pathlib import Path

import numpy as np
import pytest
import torch

from neuroeq import ConfigError, Network, Readout
from neuroeq.neuron_model import load_model

MODELS = Path(__file__).resolve().parents[1] / "models"


def build(**kwargs) -> Network:
    """A small Hopfield network with ``kwargs`` changed."""
    sizes = kwargs.pop("sizes", (4, 3, 2))
    return Network(kwargs.pop("model", "hopfield"), sizes, **kwargs)


@pytest.mark.parametrize("alpha", ["0.5", True, False, 1.5, -0.1, float("nan"),
                                   float("inf"), [0.5], 0.5j])
def test_an_alpha_that_is_not_a_number_in_the_unit_interval_is_refused(alpha):
    with pytest.raises(ConfigError, match=r"alpha must be a number in \[0, 1\], got "):
        build(coupling="asymmetric", alpha=alpha)


@pytest.mark.parametrize("alpha", [0, 1, 0.25, np.float32(0.5), np.float64(0.75),
                                   torch.tensor(0.5), np.array(0.5)])
def test_an_alpha_of_any_real_type_is_taken_as_a_float(alpha):
    network = build(coupling="asymmetric", alpha=alpha)
    assert type(network.alpha) is float and network.alpha == float(alpha)


@pytest.mark.parametrize("coupling", ["symmetric", "feedforward"])
@pytest.mark.parametrize("alpha", [0.3, 1.0, 0.0])
def test_an_alpha_given_with_a_coupling_that_has_no_use_for_it_is_refused(coupling, alpha):
    # it only shapes the initial backward weights of coupling 'asymmetric': it was ignored
    with pytest.raises(ConfigError, match=rf"alpha={alpha!r} sets the asymmetry of coupling "
                                          rf"'asymmetric' .*; coupling '{coupling}' has no use "
                                          r"for it .*leave alpha out, or use "
                                          "coupling='asymmetric'"):
        build(coupling=coupling, alpha=alpha)


def test_alpha_left_out_suits_every_coupling():
    """Not given (``None``): 1.0 for an asymmetric network, none for the others; a network's
    own coupling and alpha build it again (its ``describe()`` holds both)."""
    assert build(coupling="asymmetric").alpha == 1.0
    assert build(coupling="asymmetric", alpha=None).alpha == 1.0
    for coupling in ("symmetric", "asymmetric", "feedforward"):
        network = build(coupling=coupling, alpha=None)
        assert network.describe()["alpha"] == network.alpha
        again = build(coupling=coupling, alpha=network.alpha)
        assert all(torch.equal(a, b) for a, b in zip(network.parameters(), again.parameters(),
                                                     strict=True))
    assert build().alpha is None and build(coupling="feedforward").alpha is None


@pytest.mark.parametrize("name", ["lateral", "skip"])
@pytest.mark.parametrize("value", ["False", "no", "", 0, 1, None, 1.0, [True]])
def test_an_edge_switch_that_is_not_a_bool_is_refused(name, value):
    # bool("False") is True: the string switched the edges on
    with pytest.raises(ConfigError, match=rf"{name} must be True or False, got "):
        build(sizes=(4, 3, 3, 2), **{name: value})


def test_numpy_bools_switch_the_edges():
    network = build(sizes=(4, 3, 3, 2), lateral=np.bool_(True), skip=np.bool_(False))
    assert network.lateral is True and network.skip is False
    assert "L1" in network.weights and "S3" not in network.weights


@pytest.mark.parametrize("readout, hint", [
    ("linear", r"pass Readout\(2, n_classes, kind='linear'\)"),
    ("identity", r"pass Readout\(2, n_classes, kind='identity'\)"),
    (3, r"got 3; pass Readout\(2, n_classes\)"),
    (torch.nn.Linear(2, 2), "got Linear"),
])
def test_a_readout_that_is_not_a_readout_is_refused(readout, hint):
    with pytest.raises(ConfigError, match=r"readout must be a neuroeq.readout.Readout or None "
                                          r"\(the identity readout with MSE\), .*" + hint):
        build(readout=readout)


def test_a_readout_object_is_used():
    readout = Readout(2, 5, kind="linear")
    assert build(readout=readout).readout is readout
    assert build(readout=None).readout.kind == "identity"


def test_a_cuda_device_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ConfigError, match=r"device .*cuda.* is not available: torch finds "
                                              r"no CUDA GPU \(torch.cuda.is_available\(\) is "
                                              r"False\); use 'cpu'"):
            build(device=device)


def test_a_cuda_device_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"device 'cuda:3' is not available: this machine "
                                          r"has 1 CUDA device\(s\), 'cuda:0' to 'cuda:0'"):
        build(device="cuda:3")


@pytest.mark.parametrize("device, message", [
    ("gpu", r"device 'gpu' is not a torch device name; use 'cpu', 'cuda' or 'cuda:N'"),
    ("CPU", r"device 'CPU' is not a torch device name"),
    (True, r"device must be a device such as 'cpu' or 'cuda', got True"),
    (1.5, r"device must be a device such as 'cpu' or 'cuda', got 1.5"),
])
def test_a_device_that_is_not_a_device_is_refused(device, message):
    with pytest.raises(ConfigError, match=message):
        build(device=device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_an_accelerator_this_machine_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"device 'mps' is not available on this machine "
                                          r"\(.*\); use 'cpu'"):
        build(device="mps")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), None])
def test_the_cpu_is_a_device(device):
    assert build(device=device).device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_network_on_the_gpu():
    network = build(device="cuda")
    assert network.device.type == "cuda" and network.readout.n_out == 2


@pytest.mark.parametrize("model", [5, None, ["hopfield"]])
def test_a_model_that_is_not_a_model_is_refused(model):
    with pytest.raises(ConfigError, match=r"model must be a NeuronModel or the name or path "
                                          r"of a model file \(such as 'fhn'\), got "):
        build(model=model)


@pytest.mark.parametrize("model", [MODELS / "hopfield.toml", str(MODELS / "hopfield.toml"),
                                   load_model("hopfield")])
def test_a_model_is_a_model_a_name_or_a_path(model):
    assert build(model=model).model.name == "hopfield"


@pytest.mark.parametrize("sizes", [{4, 3, 2}, {4: "input", 2: "output"}, frozenset((4, 2))])
def test_sizes_without_an_order_are_refused(sizes):
    # a set's order is not the order the layers were written in
    with pytest.raises(ConfigError, match=r"must be a sequence of layer sizes, input first"):
        build(sizes=sizes)


@pytest.mark.parametrize("sizes", [[4, 3, 2], np.array([4, 3, 2]), (4.0, 3, 2),
                                   range(4, 1, -1)])
def test_ordered_sizes_are_taken(sizes):
    assert build(sizes=sizes).sizes == (4, 3, 2)


@pytest.mark.parametrize("coupling, message", [
    ("symetric", r"coupling 'symetric' must be one of symmetric, asymmetric, feedforward "
                 r"\(did you mean 'symmetric'\?\)"),
    (None, r"coupling None must be one of symmetric, asymmetric, feedforward$"),
])
def test_a_coupling_is_one_of_the_couplings(coupling, message):
    with pytest.raises(ConfigError, match=message):
        build(coupling=coupling)


@pytest.mark.parametrize("dtype, message", [
    ("float64", r"dtype 'float64' must be torch.float32 or torch.float64 \(a torch dtype, "
                r"not a string\)"),
    (torch.float16, r"dtype torch.float16 must be torch.float32 or torch.float64$"),
])
def test_a_dtype_is_a_torch_float_dtype(dtype, message):
    with pytest.raises(ConfigError, match=message):
        build(dtype=dtype)
