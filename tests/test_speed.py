"""What makes runs faster changes no number: the optimisers update all tensors at once (foreach), with the
same elementwise kernels as the per-tensor loop, so every weight is bit for bit the same."""
import pytest
import torch


@pytest.mark.parametrize("make", [
    lambda params, foreach: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, foreach=foreach),
    lambda params, foreach: torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=0.05, foreach=foreach),
])
def test_foreach_updates_are_the_per_tensor_ones(make):
    def train(foreach: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32),
                                    torch.nn.Linear(32, 5))
        opt = make(model.parameters(), foreach)
        for step in range(20):
            x = torch.randn(8, 16, generator=torch.Generator().manual_seed(step))
            loss = model(x).logsumexp(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(train(True), train(False)))
