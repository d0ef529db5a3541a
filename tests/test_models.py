"""Models: every registered kind builds, has the transfer interface, and runs channels-last and compiled."""

import pytest
import torch

from core.models.build import build_model, to_channels_last

IMAGE = 32  # small enough for CPU CI; vit patch 16 -> 4 tokens
# name, kwargs: one CNN, one transformer (fixed img_size), the Scaling-MLPs MLP
MODELS = [
    ("resnet10t", {}),
    ("vit_tiny_patch16_224", {}),
    ("bmlp", {"depth": 2, "width": 32, "expansion": 4}),
    ("bmlp-1-16", {}),
]


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,kwargs", MODELS, ids=[m[0] for m in MODELS])
def test_interface(name, kwargs, batch):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, image_size=IMAGE, **kwargs).eval()
    with torch.no_grad():
        logits = model(batch)
        feats = model.forward_features(batch)
    assert logits.shape == (batch.shape[0], 7)
    assert feats.shape == (batch.shape[0], model.feature_dim)
    # logits are the head applied to those features: the features are what a new head will see
    model.reset_head(4)
    with torch.no_grad():
        new_logits = model(batch)
        assert new_logits.shape == (batch.shape[0], 4)
        assert torch.allclose(model.forward_features(batch), feats, atol=1e-5)
    # the new head trains: gradients reach it
    model.train()
    model(batch).sum().backward()
    head_grads = [p.grad for n, p in model.named_parameters() if "head" in n or "fc" in n]
    assert head_grads and all(g is not None for g in head_grads)


def test_bmlp_sizes():
    m = build_model("bmlp", num_classes=5, image_size=8, in_chans=1, depth=3, width=16, expansion=2)
    assert len(m.blocks) == 3 and m.feature_dim == 16
    assert m.blocks[0].up.out_features == 2 * 16
    assert m.embed.in_features == 1 * 8 * 8
    m2 = build_model("bmlp-4-24", num_classes=5, image_size=8)
    assert len(m2.blocks) == 4 and m2.feature_dim == 24
    with pytest.raises(ValueError, match="built for"):
        m(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError):
        build_model("bmlp-4-24", num_classes=5, image_size=8, depth=2)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no_such_model_xyz", num_classes=5, image_size=8)


@pytest.mark.parametrize("name,kwargs", MODELS[:1] + MODELS[2:3], ids=["resnet10t", "bmlp"])
def test_channels_last_matches(name, kwargs, batch):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, image_size=IMAGE, **kwargs).eval()
    with torch.no_grad():
        ref = model(batch)
        model = to_channels_last(model)
        x = batch.contiguous(memory_format=torch.channels_last)
        out = model(x)
    if name.startswith("resnet"):
        assert model.net.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_compiled_matches_eager(batch):
    # the one compile in the suite (about 20 s on CPU): a tiny bmlp, forward and backward
    torch.manual_seed(0)
    model = build_model("bmlp", num_classes=7, image_size=IMAGE, depth=1, width=16)
    compiled = torch.compile(model)
    out_c = compiled(batch)
    out_c.sum().backward()
    grads_c = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out_e = model(batch)
    out_e.sum().backward()
    assert torch.allclose(out_c, out_e, atol=1e-5, rtol=1e-4)
    for gc, p in zip(grads_c, model.parameters()):
        assert torch.allclose(gc, p.grad, atol=1e-5, rtol=1e-4)
