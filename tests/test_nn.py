"""convkit.nn: gradients (finite differences through a whole network), parity
with torch.nn / torch.optim, state_dict compatibility, freezing, save/load,
train/eval, and a short training run on sklearn's digits."""

from __future__ import annotations

import time

import numpy as np
import pytest

import convkit
import convkit.nn as nn

if not hasattr(nn, "Module"):  # pragma: no cover - depends on the install
    raise ImportError("convkit.nn resolved to an empty namespace package: the editable install predates "
                      "convkit/nn/__init__.py; reinstall with `pip install -e .`")


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many kernels on tiny arrays, where OpenMP fork/join
    dominates; on an oversubscribed machine two threads made a training step
    ~50x slower than one. Multi-threaded kernels are covered by test_threads."""
    original = convkit.get_num_threads()
    convkit.set_num_threads(1)
    yield
    convkit.set_num_threads(original)

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _small_net():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, groups=2),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 3),
    )


def _digits_net():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )


def _torch_digits_net(torch):
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 8, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(8, 16, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(16 * 2 * 2, 10),
    )


def _loss_and_grads(net, loss_fn, x, y):
    net.zero_grad()
    loss = loss_fn(net(x), y)
    gx = net.backward(loss_fn.backward())
    return loss, gx, {k: p.grad.copy() for k, p in net.named_parameters()}


# --------------------------------------------------------------------------- #
# gradients
# --------------------------------------------------------------------------- #

def test_network_gradcheck_float64(rng):
    nn.manual_seed(1)
    net = _small_net().double()
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((3, 2, 8, 8))
    y = np.array([0, 2, 1])
    loss, gx, grads = _loss_and_grads(net, loss_fn, x, y)
    assert gx.shape == x.shape and gx.dtype == np.float64

    def f():
        return loss_fn(net(x), y)

    eps = 1e-6

    def numeric(arr, flat_idx):
        out = []
        flat = arr.reshape(-1)
        for i in flat_idx:
            old = flat[i]
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            out.append((fp - fm) / (2 * eps))
        return np.array(out)

    idx = np.arange(x.size)
    np.testing.assert_allclose(gx.reshape(-1), numeric(x, idx), rtol=1e-5, atol=1e-8)
    for name, p in net.named_parameters():
        idx = np.arange(p.size)
        np.testing.assert_allclose(grads[name].reshape(-1), numeric(p.data, idx), rtol=1e-5, atol=1e-8,
                                   err_msg=name)


def test_backward_accumulates_parameter_grads(rng):
    nn.manual_seed(2)
    net = _small_net().double()
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((2, 2, 8, 8))
    y = np.array([1, 0])
    _, _, g1 = _loss_and_grads(net, loss_fn, x, y)
    loss_fn(net(x), y)
    net.backward(loss_fn.backward())  # no zero_grad: gradients add up
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * g1[name], rtol=1e-12, err_msg=name)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_losses_and_softmax(rng):
    x = rng.standard_normal((5, 4)) * 50
    p = nn.softmax(x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(nn.log_softmax(x), np.log(p), rtol=1e-9, atol=1e-12)
    big = np.array([[1000.0, 0.0, -1000.0]])
    ce = nn.CrossEntropyLoss()
    assert np.isfinite(ce(big, np.array([2]))) and abs(ce(big, np.array([2])) - 2000.0) < 1e-9
    assert np.isfinite(ce.backward()).all()
    # MSE gradient vs finite differences
    mse = nn.MSELoss()
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    mse(a, b)
    np.testing.assert_allclose(mse.backward(), 2 * (a - b) / a.size, rtol=1e-12)


# --------------------------------------------------------------------------- #
# parity with torch.nn
# --------------------------------------------------------------------------- #

def _layer_cases():
    # (name, ours, torch factory, input shape)
    return [
        ("conv", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
         lambda t: t.nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
        ("conv_same_dil_groups", lambda: nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2),
         lambda t: t.nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2), (2, 4, 7, 8)),
        ("conv_valid_nobias", lambda: nn.Conv2d(3, 2, (2, 3), padding="valid", bias=False),
         lambda t: t.nn.Conv2d(3, 2, (2, 3), padding="valid", bias=False), (2, 3, 6, 7)),
        ("convT", lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
         lambda t: t.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
         (2, 4, 5, 5)),
        ("convT_dil", lambda: nn.ConvTranspose2d(3, 2, 2, dilation=2, bias=False),
         lambda t: t.nn.ConvTranspose2d(3, 2, 2, dilation=2, bias=False), (1, 3, 4, 5)),
        ("maxpool", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
         lambda t: t.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 9, 8)),
        ("maxpool_dil", lambda: nn.MaxPool2d(2, dilation=2),
         lambda t: t.nn.MaxPool2d(2, dilation=2), (2, 2, 9, 9)),
        ("avgpool", lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
         lambda t: t.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 3, 8, 9)),
        ("lppool", lambda: nn.LPPool2d(2, 2), lambda t: t.nn.LPPool2d(2, 2), (2, 3, 6, 6)),
        ("adaptive_avg", lambda: nn.AdaptiveAvgPool2d((3, 2)),
         lambda t: t.nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
        ("adaptive_max", lambda: nn.AdaptiveMaxPool2d(3),
         lambda t: t.nn.AdaptiveMaxPool2d(3), (2, 3, 7, 5)),
        ("global_avg", lambda: nn.GlobalAvgPool2d(), lambda t: t.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 4)),
        ("relu", lambda: nn.ReLU(), lambda t: t.nn.ReLU(), (2, 3, 4, 4)),
        ("leaky", lambda: nn.LeakyReLU(0.2), lambda t: t.nn.LeakyReLU(0.2), (2, 3, 4, 4)),
        ("sigmoid", lambda: nn.Sigmoid(), lambda t: t.nn.Sigmoid(), (2, 3, 4, 4)),
        ("tanh", lambda: nn.Tanh(), lambda t: t.nn.Tanh(), (2, 3, 4, 4)),
        ("flatten", lambda: nn.Flatten(), lambda t: t.nn.Flatten(), (2, 3, 4, 4)),
        ("linear", lambda: nn.Linear(7, 5), lambda t: t.nn.Linear(7, 5), (4, 7)),
        ("linear_nd_nobias", lambda: nn.Linear(7, 5, bias=False),
         lambda t: t.nn.Linear(7, 5, bias=False), (2, 3, 7)),
    ]


@pytest.mark.torch
@pytest.mark.parametrize("case", _layer_cases(), ids=lambda c: c[0])
def test_layer_matches_torch(case, rng):
    torch = pytest.importorskip("torch")
    _, make_ours, make_torch, shape = case
    ours = make_ours().double()
    ref = make_torch(torch).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal(shape)
    y = ours(x)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = ref(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    gx = ours.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ours.named_parameters():
        tp = dict(ref.named_parameters())[name]
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.torch
def test_dropout_eval_and_losses_match_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    ce = nn.CrossEntropyLoss()
    lt = torch.from_numpy(logits.copy()).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(lt, torch.from_numpy(labels))
    ref.backward()
    assert ce(logits, labels) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), lt.grad.numpy(), rtol=1e-10, atol=1e-14)
    probs = nn.softmax(rng.standard_normal((6, 5)))  # soft targets
    lt.grad = None
    ref = torch.nn.functional.cross_entropy(lt, torch.from_numpy(probs))
    ref.backward()
    assert ce(logits, probs) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), lt.grad.numpy(), rtol=1e-10, atol=1e-14)

    target = rng.standard_normal((6, 5))
    mse = nn.MSELoss()
    lt.grad = None
    ref = torch.nn.functional.mse_loss(lt, torch.from_numpy(target))
    ref.backward()
    assert mse(logits, target) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(mse.backward(), lt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.torch
def test_state_dict_round_trips_with_torch(rng):
    torch = pytest.importorskip("torch")
    nn.manual_seed(3)
    ours = _digits_net().double()
    ref = _torch_digits_net(torch).double()
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = rng.standard_normal((4, 1, 8, 8))
    # ours -> torch
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), ref(torch.from_numpy(x)).numpy(), rtol=1e-10, atol=1e-12)
    # torch -> ours (tensors accepted directly; dtype kept as the module's)
    torch.manual_seed(0)
    ref2 = _torch_digits_net(torch)  # float32 tensors
    ours.load_state_dict(ref2.state_dict())
    assert all(p.dtype == np.float64 for p in ours.parameters())
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), ref2.double()(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-7)


class _Net(nn.Module):
    """A hand-written module: attribute names become state_dict prefixes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 4 * 4, 3))
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))

    def forward(self, x):
        self._unscaled = self.head(self.pool(self.act(self.conv1(x))))
        self._s = self.scale.data.astype(x.dtype)
        return self._unscaled * self._s

    def backward(self, grad_out):
        self.scale.accumulate((grad_out * self._unscaled).sum().reshape(1))
        g = self.head.backward(grad_out * self._s)
        return self.conv1.backward(self.act.backward(self.pool.backward(g)))


@pytest.mark.torch
def test_custom_module_keys_and_torch_interop(rng):
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.scale = tnn.Parameter(torch.ones(1))
            self.conv1 = tnn.Conv2d(1, 4, 3, padding=1)
            self.act = tnn.ReLU()
            self.pool = tnn.MaxPool2d(2)
            self.head = tnn.Sequential(tnn.Flatten(), tnn.Dropout(0.5), tnn.Linear(4 * 4 * 4, 3))

        def forward(self, x):
            return self.head(self.pool(self.act(self.conv1(x)))) * self.scale

    nn.manual_seed(8)
    ours = _Net().double()
    ref = TNet().double()
    # torch lists a module's own parameters before its children's; so do we
    assert list(ours.state_dict()) == list(ref.state_dict()) == [
        "scale", "conv1.weight", "conv1.bias", "head.2.weight", "head.2.bias"]
    ours.scale.data[:] = 1.5
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    ours.eval()
    ref.eval()
    x = rng.standard_normal((2, 1, 8, 8))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = ref(xt)
    y = ours(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10)
    g = rng.standard_normal(y.shape)
    gx = ours.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    tgrads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.torch
def test_default_init_statistics_like_torch():
    pytest.importorskip("torch")
    nn.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / np.sqrt(16 * 9)
    w = conv.weight.data
    assert w.dtype == np.float32 and np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound
    assert np.abs(conv.bias.data).max() <= bound
    # uniform(-b, b) has std b/sqrt(3)
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    lin = nn.Linear(100, 10)
    assert np.abs(lin.weight.data).max() <= 0.1 and np.abs(lin.bias.data).max() <= 0.1
    convt = nn.ConvTranspose2d(4, 6, 3, groups=2)  # torch: fan_in from weight.size(1) = 3 * 9
    assert np.abs(convt.weight.data).max() <= 1 / np.sqrt(27) + 1e-7
    nn.manual_seed(0)
    again = nn.Conv2d(16, 32, 3)
    np.testing.assert_array_equal(again.weight.data, w)


# --------------------------------------------------------------------------- #
# optimisers vs torch.optim
# --------------------------------------------------------------------------- #

_OPTIM_CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("adam", dict(lr=1e-2, amsgrad=True)),
]


@pytest.mark.torch
@pytest.mark.parametrize("kind,kw", _OPTIM_CASES, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in sorted(v.items())))
def test_optimiser_matches_torch(kind, kw, rng):
    torch = pytest.importorskip("torch")
    shapes = [(4, 3, 2, 2), (4,), (5, 7)]
    init = [rng.standard_normal(s) for s in shapes]
    ours = [nn.Parameter(a.copy()) for a in init]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    opt = (nn.SGD if kind == "sgd" else nn.Adam)(ours, **kw)
    topt = (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)(theirs, **kw)
    for _ in range(5):
        grads = [rng.standard_normal(s) for s in shapes]
        opt.zero_grad()
        topt.zero_grad()
        for p, t, g in zip(ours, theirs, grads):
            p.grad = g.copy()
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-14)


def test_optimiser_param_groups_and_validation():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))
    opt = nn.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.ones(3), np.ones(3)
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.5)
    with pytest.raises(ValueError):
        nn.SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        nn.Adam([], lr=0.1)


# --------------------------------------------------------------------------- #
# freezing, state, modes
# --------------------------------------------------------------------------- #

def test_freeze_feature_extractor(rng):
    nn.manual_seed(4)
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    net = nn.Sequential(features, head).double()
    assert [k for k, _ in net.named_parameters()] == ["0.0.weight", "0.0.bias", "1.1.weight", "1.1.bias"]
    x = rng.standard_normal((5, 1, 8, 8))
    y = rng.integers(0, 3, 5)
    loss_fn = nn.CrossEntropyLoss()
    _, gx_ref, grads_ref = _loss_and_grads(net, loss_fn, x, y)

    features.freeze()
    assert all(not p.requires_grad for p in features.parameters())
    frozen_before = {k: v for k, v in features.state_dict().items()}
    net.zero_grad()
    loss_fn(net(x), y)
    gx = net.backward(loss_fn.backward())
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-12)  # grad_input still flows through frozen layers
    assert all(p.grad is None for p in features.parameters())
    np.testing.assert_allclose(head[1].weight.grad, grads_ref["1.1.weight"], rtol=1e-12)

    opt = nn.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    adam = nn.Adam(net.parameters(), lr=0.01)
    head_before = head[1].weight.data.copy()
    for step in range(3):
        opt.zero_grad()
        loss_fn(net(x), y)
        net.backward(loss_fn.backward())
        features[0].weight.grad = np.ones_like(features[0].weight.data)  # even a stray grad is ignored
        (opt if step % 2 == 0 else adam).step()
    for k, v in features.state_dict().items():
        np.testing.assert_array_equal(v, frozen_before[k])
    assert not np.allclose(head[1].weight.data, head_before)

    features.unfreeze()
    net.zero_grad()
    loss_fn(net(x), y)
    net.backward(loss_fn.backward())
    assert all(p.grad is not None for p in net.parameters())


def test_save_load_round_trip(tmp_path, rng):
    nn.manual_seed(5)
    net = _digits_net()
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    y = net(x)
    path = tmp_path / "model.npz"
    net.save(path)
    nn.manual_seed(6)
    other = _digits_net()
    assert not np.allclose(other(x), y)
    other.load(path)
    np.testing.assert_array_equal(other(x), y)
    for (k, a), (k2, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    # a name without the suffix is written as given; load finds it either way
    net.save(tmp_path / "plain")
    other.double().load(tmp_path / "plain")
    assert other[0].weight.dtype == np.float64
    with pytest.raises(KeyError):
        nn.Sequential(nn.Linear(2, 2)).load(path)
    with pytest.raises(ValueError):
        nn.Sequential(nn.Conv2d(1, 3, 3)).load_state_dict({"0.weight": np.zeros((8, 1, 3, 3)),
                                                          "0.bias": np.zeros(3)})


def test_dropout_train_eval(rng):
    x = rng.standard_normal((64, 128)) + 3.0
    drop = nn.Dropout(0.25, generator=0)
    net = nn.Sequential(nn.Linear(128, 128).double(), drop)
    assert net.training and drop.training
    y = drop(x)
    zero = y == 0
    assert 0.2 < zero.mean() < 0.3
    np.testing.assert_allclose(y[~zero], x[~zero] / 0.75, rtol=1e-12)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(drop.backward(g), np.where(zero, 0.0, g / 0.75), rtol=1e-12)
    # seeded generators give the same masks
    np.testing.assert_array_equal(nn.Dropout(0.25, generator=0)(x), y)
    net.eval()
    assert not net.training and not drop.training
    np.testing.assert_array_equal(drop(x), x)
    np.testing.assert_array_equal(drop.backward(g), g)
    net.train()
    assert drop.training
    assert (drop(x) == 0).any()
    assert (nn.Dropout(1.0)(x) == 0).all()


def test_sequential_indexing_dtype_and_device(rng):
    nn.manual_seed(7)
    net = _small_net()
    assert len(net) == 8 and isinstance(net[0], nn.Conv2d) and isinstance(net[-1], nn.Linear)
    sub = net[:3]
    assert isinstance(sub, nn.Sequential) and len(sub) == 3 and sub[0] is net[0]
    assert [type(m).__name__ for m in net][:2] == ["Conv2d", "ReLU"]
    assert all(p.dtype == np.float32 for p in net.parameters())
    x32 = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    assert net(x32).dtype == np.float32
    # the input's dtype rules the computation; gradients keep the parameters' dtype
    out = net(x32.astype(np.float64))
    assert out.dtype == np.float64
    assert net.backward(np.ones_like(out)).dtype == np.float64
    assert net[0].weight.grad.dtype == np.float32
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.to("cpu") is net and net[0].weight.device == "cpu"
    with pytest.raises(ValueError):
        net.to("tpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="CuPy"):
            net.to("cuda")


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #

def test_training_on_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n_test = 360
    x_train, y_train, x_test, y_test = x[n_test:], y[n_test:], x[:n_test], y[:n_test]

    nn.manual_seed(0)
    net = _digits_net()
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(net.parameters(), lr=0.05, momentum=0.9)
    batch_rng = np.random.default_rng(1)
    start = time.perf_counter()
    for _epoch in range(6):
        net.train()
        perm = batch_rng.permutation(len(x_train))
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            loss_fn(net(x_train[idx]), y_train[idx])
            net.backward(loss_fn.backward())
            opt.step()
    elapsed = time.perf_counter() - start
    net.eval()
    accuracy = float((net(x_test).argmax(axis=1) == y_test).mean())
    print(f"digits: test accuracy {accuracy:.3f} after {elapsed:.2f} s of training")
    assert accuracy >= 0.90
    assert elapsed < 60
