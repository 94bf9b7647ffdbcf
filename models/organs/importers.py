"""Load the published U-Net weights (Keras .h5 or .onnx) into `UNet3D`.

The release (DIAGNijmegen/MedicalTransferLearning3D-UNet, `weights/unet3d_Isomulti1v810.h5` and
`.onnx`) is a Keras/TF 2.3 model. Both loaders reduce a file to the 15 (kernel, bias) pairs of
the convolutions in published order (`UNet3D.conv_layers()`), infer the width (output channels
of the first convolution) and the number of classes (output channels of the head) from the
tensors, check every shape against `UNet3D(n_classes, width)`, and return the network.

**Keras .h5.** A full-model save (`model.save`) keeps the weights in the group `model_weights`;
a weights-only save (`model.save_weights`) keeps them at the root. Either group has the
attribute `layer_names` (the layers in model order; h5py itself lists groups alphabetically,
where conv3d_10 comes before conv3d_2, so that order must not be used). Each layer group has
the attribute `weight_names` (paths relative to the layer group: `<layer>/kernel:0` and
`<layer>/bias:0` from Keras 2, `<layer>/kernel` and `<layer>/bias` from Keras 3's legacy .h5
writer, which drops the `:0`). Layers without weights (input, pooling, upsampling, cropping,
concatenate, activation) have an empty list and are skipped.

**Keras 3 .weights.h5** (`model.save_weights("x.weights.h5")`, also the `model.weights.h5`
inside a `.keras` archive): no `layer_names`; the root has a group `layers` with one group per
layer, `layers/<name>/vars/0` (kernel) and `vars/1` (bias). Keras 3 names these groups after the
layer's class, numbered in model order (`conv3d`, `conv3d_1`, ..., `conv3d_14`; keras
saving_lib `_save_container_state`), not after the layer's own name, and h5py lists them
alphabetically, so the order is read from that number. That is unambiguous only when every
layer with weights is of one class, as in this U-Net (15 Conv3D); a file with weighted layers
of several classes is refused. A Keras Conv3D kernel is
(kd, kh, kw, in, out) for channels-last input (batch, z, y, x, channel); torch wants
(out, in, kd, kh, kw), i.e. the kernel permuted by (4, 3, 0, 1, 2). Spatial axes keep their
order (z, y, x), as the release's arrays are Z, Y, X.

**ONNX.** The tensors are read with the `onnx` package, from initializers and Constant nodes.
When the graph has Conv nodes (a real exported model), the 15 convolutions are taken in graph
order (ONNX requires topologically sorted nodes, and in this U-Net every convolution depends on
the one before it, so that order is the published one); each Conv's weight input is traced
back through Transpose / Identity / Cast / Reshape nodes to its tensor, applying any Transpose
permutation, so both layouts converters produce are handled: the ONNX Conv layout
(out, in, kd, kh, kw) that tf2onnx normally folds to, and the Keras layout
(kd, kh, kw, in, out) behind an explicit Transpose. A bias comes from the Conv's third input
or, when a converter left BiasAdd as a separate node, from an `Add` of a constant right after
the Conv. ASSUMPTION for a file that holds only initializers (no Conv nodes): the 5-D tensors
appear in layer order; each is read as (out, in, kd, kh, kw) when that shape fits the next
expected layer, otherwise as a Keras kernel (permuted by (4, 3, 0, 1, 2)); each 1-D tensor after
it is its bias. Layers of the same shape (enc2a/dec1b, enc3a/dec2b, bottom_a/dec3b) cannot be
told apart by shape alone, so that fallback depends on the order in the file.

Neither format says at which voxel spacing the network was trained; the importer's caller
states that as an assumption in the model card.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch

from models.organs.registry import ModelFileError
from models.organs.unet import UNet3D

KERAS_TO_TORCH = (4, 3, 0, 1, 2)
N_CONVS = 15

ConvPair = tuple[np.ndarray, np.ndarray]  # torch layout kernel (out, in, kd, kh, kw), bias (out,)


def network_from_convs(pairs: list[ConvPair], source: str = "weights") -> UNet3D:
    """`UNet3D` holding these 15 (kernel, bias) pairs, width and classes read from the shapes."""
    if len(pairs) != N_CONVS:
        raise ModelFileError(f"{source}: {len(pairs)} convolution layers, the U-Net has {N_CONVS}")
    width, n_classes = int(pairs[0][0].shape[0]), int(pairs[-1][0].shape[0])
    net = UNet3D(n_classes=n_classes, width=width)
    for index, (conv, (kernel, bias)) in enumerate(zip(net.conv_layers(), pairs, strict=True)):
        if tuple(kernel.shape) != tuple(conv.weight.shape) or tuple(bias.shape) != tuple(
            conv.bias.shape
        ):
            raise ModelFileError(
                f"{source}: convolution {index + 1} has kernel {tuple(kernel.shape)} and bias "
                f"{tuple(bias.shape)}; a width-{width} {n_classes}-class U-Net needs "
                f"{tuple(conv.weight.shape)} and {tuple(conv.bias.shape)}"
            )
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(kernel, dtype=torch.float32))
            conv.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return net.eval()


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _weight_key(name: str) -> str:
    """`kernel` or `bias` from a weight path: `conv3d/kernel:0` (Keras 2), `conv3d/kernel`
    (Keras 3's legacy .h5)."""
    return re.sub(r":\d+$", "", name.rsplit("/", 1)[-1])


def _conv_pair(kernel, bias, path: Path, layer: str) -> ConvPair:
    kernel = np.asarray(kernel[()], dtype=np.float32)
    bias = np.asarray(bias[()], dtype=np.float32)
    if kernel.ndim != 5 or bias.ndim != 1:
        raise ModelFileError(
            f"{path}: layer {layer!r} has weights {kernel.shape} and {bias.shape}, "
            "not a Conv3D kernel and bias"
        )
    return kernel.transpose(KERAS_TO_TORCH), bias


def keras_h5_convs(path: Path, data: bytes | None = None) -> list[ConvPair]:
    """The (kernel, bias) pairs of a Keras .h5 file (read from `data` when given), torch
    layout, in model order."""
    import h5py

    try:
        handle = h5py.File(io.BytesIO(data) if data is not None else path, "r")
    except OSError as error:
        raise ModelFileError(f"{path}: not an HDF5 file ({error})") from error
    with handle:
        root = handle.get("model_weights", handle)
        if "layer_names" in root.attrs:
            return _keras_layer_names_convs(root, path)
        if isinstance(handle.get("layers"), h5py.Group):
            return _keras3_weights_convs(handle["layers"], path)
        raise ModelFileError(
            f"{path}: no `layer_names` attribute in the root or in model_weights (Keras 2, or "
            "Keras 3 legacy .h5) and no `layers` group (Keras 3 .weights.h5); not a Keras "
            "weight file"
        )


def _keras_layer_names_convs(root, path: Path) -> list[ConvPair]:
    """Keras 2 saves and Keras 3's legacy .h5: layers in `layer_names` order."""
    import h5py

    pairs = []
    for layer_name in (_text(n) for n in root.attrs["layer_names"]):
        layer = root[layer_name]
        datasets = {}
        if "weight_names" in layer.attrs:
            for weight_name in (_text(n) for n in layer.attrs["weight_names"]):
                datasets[_weight_key(weight_name)] = layer[weight_name]
        else:  # tolerate writers without the attribute: find the datasets themselves
            layer.visititems(
                lambda name, item, found=datasets: (
                    found.setdefault(_weight_key(name), item)
                    if isinstance(item, h5py.Dataset)
                    else None
                )
            )
        if not datasets:
            continue  # input, pooling, upsampling, cropping, concatenate: no weights
        if "kernel" not in datasets or "bias" not in datasets:
            raise ModelFileError(
                f"{path}: layer {layer_name!r} has weights {sorted(datasets)}, "
                "not a convolution's kernel and bias"
            )
        pairs.append(_conv_pair(datasets["kernel"], datasets["bias"], path, layer_name))
    return pairs


KERAS3_GROUP = re.compile(r"(?P<kind>.+?)(?:_(?P<number>\d+))?")


def _keras3_weights_convs(layers, path: Path) -> list[ConvPair]:
    """Keras 3 .weights.h5: `layers/<class>_<n>/vars/0, 1`, ordered by n (see the module
    docstring)."""
    weighted: dict[str, list[tuple[int, str]]] = {}
    for group_name, group in layers.items():
        variables = group.get("vars")
        if variables is None or len(variables) == 0:
            continue  # input, pooling, upsampling, cropping, concatenate: no weights
        match = KERAS3_GROUP.fullmatch(group_name)
        weighted.setdefault(match["kind"], []).append((int(match["number"] or 0), group_name))
    if len(weighted) > 1:
        raise ModelFileError(
            f"{path}: layers with weights of several kinds ({', '.join(sorted(weighted))}); "
            "a Keras 3 .weights.h5 numbers layers per class, so their order cannot be known"
        )
    pairs = []
    for _, group_name in sorted(next(iter(weighted.values()), [])):
        variables = layers[group_name]["vars"]
        if sorted(variables) != ["0", "1"]:
            raise ModelFileError(
                f"{path}: layer {group_name!r} has variables {sorted(variables)}, "
                "not a convolution's kernel (0) and bias (1)"
            )
        pairs.append(_conv_pair(variables["0"], variables["1"], path, group_name))
    return pairs


def _expected_shapes(width: int, n_classes: int) -> list[tuple[int, ...]]:
    return [tuple(c.weight.shape) for c in UNet3D(n_classes, width).conv_layers()]


def onnx_convs(path: Path, data: bytes | None = None) -> list[ConvPair]:
    """The (kernel, bias) pairs of an .onnx file (read from `data` when given), torch layout,
    in graph (= layer) order."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_model_from_string(data) if data is not None else onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others from protobuf
        raise ModelFileError(f"{path}: not an ONNX model ({error})") from error
    graph = model.graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    tensors[node.output[0]] = numpy_helper.to_array(attribute.t)
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def resolve(name: str) -> np.ndarray | None:
        """The constant behind `name`, through layout-only nodes."""
        if name in tensors:
            return tensors[name]
        node = producer.get(name)
        if node is None or node.op_type not in ("Transpose", "Identity", "Cast", "Reshape"):
            return None
        value = resolve(node.input[0])
        if value is None:
            return None
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            return np.transpose(value, perm)
        if node.op_type == "Reshape":
            shape = resolve(node.input[1])
            return None if shape is None else value.reshape([int(s) for s in shape])
        return value

    convs = [node for node in graph.node if node.op_type == "Conv"]
    if not convs:
        return _onnx_convs_by_order(list(graph.initializer), tensors, path)
    pairs = []
    for node in convs:
        kernel = resolve(node.input[1])
        if kernel is None or kernel.ndim != 5:
            raise ModelFileError(f"{path}: Conv {node.name!r} has no constant 5-D weight")
        bias = resolve(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is None:  # BiasAdd kept as a separate Add of a constant
            for follower in consumers.get(node.output[0], []):
                if follower.op_type == "Add":
                    other = [n for n in follower.input if n != node.output[0]]
                    value = resolve(other[0]) if other else None
                    if value is not None and value.size == kernel.shape[0]:
                        bias = value
        if bias is None:
            bias = np.zeros(kernel.shape[0], dtype=np.float32)
        pairs.append((kernel.astype(np.float32), bias.reshape(-1).astype(np.float32)))
    return pairs


def _onnx_convs_by_order(initializers: list, tensors: dict, path: Path) -> list[ConvPair]:
    """Initializers only (no Conv nodes): 5-D tensors in file order, each followed by its bias."""
    ordered = [tensors[t.name] for t in initializers]
    kernels = [i for i, t in enumerate(ordered) if t.ndim == 5]
    if len(kernels) != N_CONVS:
        raise ModelFileError(f"{path}: {len(kernels)} 5-D tensors, the U-Net has {N_CONVS}")
    first = ordered[kernels[0]]
    # The first convolution has one input channel: (w, 1, 3, 3, 3) or Keras (3, 3, 3, 1, w).
    width = first.shape[0] if first.shape[1] == 1 else first.shape[4]
    last = ordered[kernels[-1]]
    n_classes = last.shape[0] if last.shape[2:] == (1, 1, 1) else last.shape[4]
    pairs = []
    for index, expected in zip(kernels, _expected_shapes(int(width), int(n_classes)), strict=True):
        kernel = ordered[index]
        if kernel.shape != expected:
            kernel = kernel.transpose(KERAS_TO_TORCH)
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        if following is None or following.ndim != 1:
            raise ModelFileError(f"{path}: the 5-D tensor #{index} is not followed by a bias")
        pairs.append((kernel, following))
    return pairs


def import_network(path: Path, data: bytes | None = None) -> UNet3D:
    """The published U-Net (or one of another width) from a Keras .h5 or an .onnx file; its
    bytes come from `data` when given (the bytes whose sha256 the caller checked)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        pairs = keras_h5_convs(path, data)
    elif suffix == ".onnx":
        pairs = onnx_convs(path, data)
    else:
        raise ModelFileError(f"{path}: import reads Keras .h5 or .onnx files, not {suffix!r}")
    return network_from_convs(pairs, source=str(path))
