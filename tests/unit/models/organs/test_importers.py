"""Published-weight loaders: files written in the release's layouts load to the same network.

The Keras .h5 files are written with h5py exactly as Keras 2 saves them (layer groups named as
Keras names them, `layer_names` in model order, `weight_names`, `<layer>/<layer>/kernel:0`);
the ONNX files are real graphs built with onnx.helper (Conv, Relu, MaxPool, Resize, Slice,
Concat, Softmax) that the onnx reference evaluator runs, so the test also checks that the graph
computes what the torch network computes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from models.organs.importers import KERAS_TO_TORCH, import_network
from models.organs.registry import ModelFileError
from models.organs.unet import CONTEXT_MARGIN, UNet3D

TORCH_TO_KERAS = (2, 3, 4, 1, 0)  # inverse of KERAS_TO_TORCH

# The layer names of the release's functional model in model order (its notebook prints the
# summary: conv3d ... conv3d_13, then the head `output_segm` and `softmax`). Alphabetically
# conv3d_10 sorts before conv3d_2: a loader that walked the groups in h5py order would fail.
KERAS_LAYERS = [
    "input_1", "conv3d", "conv3d_1", "max_pooling3d", "conv3d_2", "conv3d_3",
    "max_pooling3d_1", "conv3d_4", "conv3d_5", "max_pooling3d_2", "conv3d_6", "conv3d_7",
    "up_sampling3d", "cropping3d", "concatenate", "conv3d_8", "conv3d_9",
    "up_sampling3d_1", "cropping3d_1", "concatenate_1", "conv3d_10", "conv3d_11",
    "up_sampling3d_2", "cropping3d_2", "concatenate_2", "conv3d_12", "conv3d_13", "output_segm",
    "softmax",
]  # fmt: skip
CONV_LAYERS = [name for name in KERAS_LAYERS if name.startswith("conv3d") or name == "output_segm"]


def random_net(seed: int = 0, width: int = 2, n_classes: int = 23) -> UNet3D:
    torch.manual_seed(seed)
    net = UNet3D(n_classes=n_classes, width=width).eval()
    with torch.no_grad():
        for conv in net.conv_layers():  # visible biases, so a bias mix-up cannot pass
            conv.bias.uniform_(-0.5, 0.5)
    return net


def ct_cube(side: int = 92, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, side, side, side, generator=generator) * 900 - 500).float()


def assert_same_network(a: UNet3D, b: UNet3D) -> None:
    x = ct_cube()
    with torch.inference_mode():
        assert torch.allclose(a(x), b(x), atol=1e-6)


def write_keras_h5(net: UNet3D, path: Path, full_model: bool, keras3: bool = False) -> None:
    """A Keras 2 .h5 as `model.save` (full_model) or `model.save_weights` writes it; keras3:
    as Keras 3's legacy .h5 writer does (weight names without the `:0` suffix)."""
    convs = iter(net.conv_layers())
    suffix = "" if keras3 else ":0"
    with h5py.File(path, "w") as handle:
        if full_model:
            handle.attrs["keras_version"] = b"3.5.0" if keras3 else b"2.4.0"
            handle.attrs["backend"] = b"tensorflow"
            handle.attrs["model_config"] = b'{"class_name": "Functional"}'
            root = handle.create_group("model_weights")
        else:
            root = handle
        root.attrs["layer_names"] = np.array([n.encode() for n in KERAS_LAYERS])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.4.0"
        for name in KERAS_LAYERS:
            group = root.create_group(name)
            if name not in CONV_LAYERS:
                group.attrs["weight_names"] = np.array([])  # what Keras writes for no weights
                continue
            conv = next(convs)
            kernel = conv.weight.detach().numpy().transpose(TORCH_TO_KERAS)
            inner = group.create_group(name)
            inner.create_dataset(f"kernel{suffix}", data=kernel)
            inner.create_dataset(f"bias{suffix}", data=conv.bias.detach().numpy())
            group.attrs["weight_names"] = np.array(
                [f"{name}/kernel{suffix}".encode(), f"{name}/bias{suffix}".encode()]
            )
        if full_model:  # an optimizer group, as model.save writes one
            handle.create_group("optimizer_weights")


# The release's layers by Keras class, in model order: what Keras 3 names the groups of a
# .weights.h5 after (keras saving_lib: snake-case class name, numbered per class).
KERAS_CLASSES = {"input_1": "input_layer", "output_segm": "conv3d", "softmax": "softmax"}


def keras3_group_names() -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for layer in KERAS_LAYERS:
        kind = KERAS_CLASSES.get(layer) or layer.rstrip("_0123456789")
        number = seen.get(kind, -1) + 1
        seen[kind] = number
        names.append(kind if number == 0 else f"{kind}_{number}")
    return names


def write_keras3_weights_h5(net: UNet3D, path: Path) -> None:
    """A Keras 3 `model.save_weights("x.weights.h5")`: `layers/<class>_<n>/vars/0, 1`, groups
    created in model order (h5py lists them alphabetically: conv3d_10 before conv3d_2)."""
    convs = iter(net.conv_layers())
    with h5py.File(path, "w") as handle:
        handle.create_group("vars")  # the model's own variables: none
        layers = handle.create_group("layers")
        for layer, group_name in zip(KERAS_LAYERS, keras3_group_names(), strict=True):
            variables = layers.create_group(group_name).create_group("vars")
            if layer not in CONV_LAYERS:
                continue
            conv = next(convs)
            variables.create_dataset(
                "0", data=conv.weight.detach().numpy().transpose(TORCH_TO_KERAS)
            )
            variables.create_dataset("1", data=conv.bias.detach().numpy())
        handle.create_group("optimizer").create_group("vars")


def onnx_unet(
    net: UNet3D, keras_layout: bool = False, separate_bias: bool = False
) -> onnx.ModelProto:
    """The U-Net as an ONNX graph: NCDHW Conv/Relu/MaxPool/Resize/Slice/Concat/Softmax.

    keras_layout: kernels stored as Keras (kd, kh, kw, in, out) behind a Transpose node;
    separate_bias: Conv without bias followed by Add of a (1, C, 1, 1, 1) constant (BiasAdd)."""
    nodes, inits = [], []
    convs = iter(net.conv_layers())
    counter = iter(range(10_000))

    def name(prefix: str) -> str:
        return f"{prefix}_{next(counter)}"

    def const(array: np.ndarray, prefix: str) -> str:
        tensor_name = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(array), tensor_name))
        return tensor_name

    def conv(x: str, relu: bool = True) -> str:
        layer = next(convs)
        kernel = layer.weight.detach().numpy()
        bias = layer.bias.detach().numpy()
        if keras_layout:
            kernel_name = name("kernel_t")
            nodes.append(
                helper.make_node(
                    "Transpose", [const(kernel.transpose(TORCH_TO_KERAS), "kernel")],
                    [kernel_name], perm=list(KERAS_TO_TORCH),
                )
            )  # fmt: skip
        else:
            kernel_name = const(kernel, "kernel")
        out = name("conv")
        side = kernel.shape[2]
        if separate_bias:
            nodes.append(helper.make_node("Conv", [x, kernel_name], [out], kernel_shape=[side] * 3))
            added = name("biasadd")
            nodes.append(
                helper.make_node("Add", [out, const(bias.reshape(1, -1, 1, 1, 1), "bias")], [added])
            )
            out = added
        else:
            nodes.append(
                helper.make_node(
                    "Conv", [x, kernel_name, const(bias, "bias")], [out], kernel_shape=[side] * 3
                )
            )
        if not relu:
            return out
        activated = name("relu")
        nodes.append(helper.make_node("Relu", [out], [activated]))
        return activated

    def pool(x: str) -> str:
        out = name("pool")
        nodes.append(
            helper.make_node("MaxPool", [x], [out], kernel_shape=[2, 2, 2], strides=[2, 2, 2])
        )
        return out

    def upsample_concat(x: str, skip: str, shrink: int) -> str:
        up = name("up")
        scales = const(np.array([1, 1, 2, 2, 2], dtype=np.float32), "scales")
        nodes.append(helper.make_node("Resize", [x, "", scales], [up], mode="nearest"))
        cropped = name("crop")
        starts = const(np.array([shrink // 2] * 3, dtype=np.int64), "starts")
        ends = const(np.array([-(shrink // 2)] * 3, dtype=np.int64), "ends")
        axes = const(np.array([2, 3, 4], dtype=np.int64), "axes")
        nodes.append(helper.make_node("Slice", [skip, starts, ends, axes], [cropped]))
        out = name("concat")
        nodes.append(helper.make_node("Concat", [up, cropped], [out], axis=1))
        return out

    # Crop sizes (skip length - upsampled length), the same for every 92 + 8k input: 8, 32, 80.
    skip1 = conv(conv("input"))
    skip2 = conv(conv(pool(skip1)))
    skip3 = conv(conv(pool(skip2)))
    x = conv(conv(pool(skip3)))
    x = conv(conv(upsample_concat(x, skip3, 8)))
    x = conv(conv(upsample_concat(x, skip2, 32)))
    x = conv(conv(upsample_concat(x, skip1, 80)))
    logits = conv(x, relu=False)
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "unet3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, None, None, None])],
        [
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, [1, net.n_classes, None, None, None]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("full_model", [True, False], ids=["full-model", "weights-only"])
def test_keras_h5_round_trip(tmp_path, full_model):
    net = random_net(seed=4)
    path = tmp_path / "unet.h5"
    write_keras_h5(net, path, full_model)
    imported = import_network(path)
    assert (imported.width, imported.n_classes) == (2, 23)
    assert_same_network(net, imported)


@pytest.mark.parametrize("full_model", [True, False], ids=["full-model", "weights-only"])
def test_keras3_legacy_h5_without_the_suffix(tmp_path, full_model):
    net = random_net(seed=9)
    path = tmp_path / "unet.h5"
    write_keras_h5(net, path, full_model, keras3=True)
    with h5py.File(path) as handle:  # the file really has no ':0' names
        names = []
        handle.visit(names.append)
        assert "model_weights/conv3d/conv3d/kernel" in names or "conv3d/conv3d/kernel" in names
        assert not any(":0" in name for name in names)
    assert_same_network(net, import_network(path))


def test_keras3_weights_h5(tmp_path):
    net = random_net(seed=10)
    path = tmp_path / "unet.weights.h5"
    write_keras3_weights_h5(net, path)
    with h5py.File(path) as handle:
        assert list(handle["layers"])[:4] == ["concatenate", "concatenate_1", "concatenate_2",
                                              "conv3d"]  # fmt: skip
        assert handle["layers/conv3d_14/vars/0"].shape[-1] == 23  # the head, Keras layout
    imported = import_network(path)
    assert (imported.width, imported.n_classes) == (2, 23)
    assert_same_network(net, imported)
    # Weighted layers of two classes cannot be ordered from class-numbered group names.
    with h5py.File(path, "a") as handle:
        handle["layers"].move("conv3d_14", "dense")
    with pytest.raises(ModelFileError, match="several kinds"):
        import_network(path)


def test_width_and_classes_come_from_the_tensors(tmp_path):
    net = random_net(seed=5, width=3, n_classes=5)
    write_keras_h5(net, tmp_path / "unet.h5", full_model=True)
    imported = import_network(tmp_path / "unet.h5")
    assert (imported.width, imported.n_classes) == (3, 5)
    assert_same_network(net, imported)


def test_onnx_graph_runs_like_the_torch_network():
    """The ONNX builder above is a faithful U-Net: the onnx reference evaluator agrees."""
    from onnx.reference import ReferenceEvaluator

    net = random_net(seed=6, width=1)
    x = ct_cube()
    (probabilities,) = ReferenceEvaluator(onnx_unet(net)).run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected = net(x).numpy()
    assert probabilities.shape == expected.shape == (1, 23, 92 - 2 * CONTEXT_MARGIN, 4, 4)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


@pytest.mark.parametrize(
    "keras_layout,separate_bias",
    [(False, False), (True, False), (False, True)],
    ids=["onnx-layout", "keras-layout-transposed", "bias-add"],
)
def test_onnx_round_trip(tmp_path, keras_layout, separate_bias):
    net = random_net(seed=7)
    path = tmp_path / "unet.onnx"
    onnx.save(onnx_unet(net, keras_layout, separate_bias), str(path))
    assert_same_network(net, import_network(path))


@pytest.mark.parametrize("keras_layout", [False, True], ids=["onnx-layout", "keras-layout"])
def test_onnx_initializers_only(tmp_path, keras_layout):
    """The documented fallback: no Conv nodes, tensors in layer order (kernel, then bias)."""
    net = random_net(seed=8)
    inits = []
    for index, conv in enumerate(net.conv_layers()):
        kernel = conv.weight.detach().numpy()
        if keras_layout:
            kernel = kernel.transpose(TORCH_TO_KERAS)
        inits.append(numpy_helper.from_array(kernel, f"conv{index}/kernel"))
        inits.append(numpy_helper.from_array(conv.bias.detach().numpy(), f"conv{index}/bias"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "weights",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / "weights.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert_same_network(net, import_network(path))


def test_wrong_files_raise(tmp_path):
    net = random_net()
    path = tmp_path / "unet.h5"
    write_keras_h5(net, path, full_model=False)
    with h5py.File(path, "a") as handle:  # drop the head: 14 convolutions
        names = [n for n in handle.attrs["layer_names"] if n != b"output_segm"]
        handle.attrs["layer_names"] = np.array(names)
    with pytest.raises(ModelFileError, match="14 convolution layers"):
        import_network(path)
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ModelFileError, match="layer_names.*no `layers` group"):
        import_network(tmp_path / "other.h5")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(ModelFileError):
        import_network(tmp_path / "junk.onnx")
    with pytest.raises(ModelFileError, match="not '.pth'"):
        import_network(tmp_path / "model.pth")
