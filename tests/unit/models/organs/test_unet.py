"""The published 3D U-Net: parameter count, output geometry, channel order."""

import torch

from models.organs.unet import (
    PUBLISHED_CLASSES,
    PUBLISHED_PARAMETERS,
    UNet3D,
    count_parameters,
    is_valid_input_side,
    output_side,
    valid_input_side,
)


def test_published_width_has_the_published_parameter_count():
    assert count_parameters(UNet3D()) == PUBLISHED_PARAMETERS == 16_317_015


def test_fifteen_convolutions_in_published_order():
    net = UNet3D(width=2)
    convs = net.conv_layers()
    assert len(convs) == 15
    assert [c.in_channels for c in convs] == [1, 2, 4, 4, 8, 8, 16, 16, 48, 16, 24, 8, 12, 4, 4]
    assert convs[-1].out_channels == PUBLISHED_CLASSES
    assert sum(c.weight.numel() + c.bias.numel() for c in convs) == count_parameters(net)


def test_valid_convolutions_shrink_by_88_and_softmax_sums_to_one():
    torch.manual_seed(0)
    net = UNet3D(width=1)
    x = torch.randn(1, 1, 108, 100, 116) * 300
    probabilities = net(x)
    assert probabilities.shape == (1, PUBLISHED_CLASSES, 20, 12, 28)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 20, 12, 28), atol=1e-5)


def test_input_sides():
    assert [s for s in range(80, 190) if is_valid_input_side(s)][:4] == [92, 100, 108, 116]
    assert all(is_valid_input_side(s) for s in (108, 132, 156, 180))
    assert output_side(132) == 44
    assert valid_input_side(101) == 108
