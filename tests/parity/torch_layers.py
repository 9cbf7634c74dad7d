"""Small models written with standard PyTorch layers, the way a user writes them (not with
scripts/models' generators): each returns its scalar training loss, takes (inputs..., labels),
and has no dropout, so one step is deterministic and PyTorch's float64 gradient is the
reference for every plan.

  se_cnn   MobileNet-style: Conv2d + BatchNorm2d + ReLU stem, a depthwise inverted residual
           with a squeeze-excite block (1x1 Conv2d with biases, ReLU, sigmoid),
           AdaptiveAvgPool2d, Linear classifier with bias, CrossEntropyLoss. (MobileNetV3's
           Hardswish/Hardsigmoid are not imported yet: ONNX HardSwish/HardSigmoid.)
  gpt_tied A GPT as people write it: token + position embeddings, pre-LayerNorm blocks whose
           attention applies a causal mask with masked_fill from a bool buffer, GELU MLP, an
           LM head tied to the token embedding, CrossEntropyLoss over every position.
  mlp      Linear layers with biases, LayerNorm and ReLU, CrossEntropyLoss.
  llama    Llama-style blocks: RMSNorm, rotary position embeddings (cos/sin buffers, the
           rotate-half by Slice and Concat), causal attention from a bool buffer, a SwiGLU MLP
           (SiLU), no biases, an untied LM head.
  mha      nn.MultiheadAttention (batch_first, which runs sequence-first inside) over a
           projected input, mean-pooled into a Linear classifier, CrossEntropyLoss.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class SeCnn(nn.Module):
    def __init__(self, classes=10, width=16, expand=32, squeezed=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(width, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(expand, expand, 3, padding=1, groups=expand, bias=False),
                                       nn.BatchNorm2d(expand), nn.ReLU())
        self.se = SqueezeExcite(expand, squeezed)
        self.project = nn.Sequential(nn.Conv2d(expand, width, 1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, classes)

    def forward(self, images, labels):
        x = self.stem(images)
        y = self.project(self.se(self.depthwise(self.expand(x))))
        x = x + y
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.cross_entropy(self.head(x), labels)


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, seq: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.register_buffer("causal", torch.ones(seq, seq, dtype=torch.bool).triu(1))  # persistent: an initializer, sliced by a node

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=2)
        q, k, v = (t.reshape(b, s, self.heads, h // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(h // self.heads)
        scores = scores.masked_fill(self.causal[:s, :s], float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, s, h))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, seq: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, seq)
        self.fc = nn.Linear(hidden, 4 * hidden)
        self.proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GptTied(nn.Module):
    def __init__(self, vocab=64, hidden=32, heads=4, seq=8, layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(seq, hidden)
        self.blocks = nn.ModuleList([Block(hidden, heads, seq) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, input_ids, labels):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tok(input_ids) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


class Mlp(nn.Module):
    def __init__(self, inputs=32, hidden=64, classes=16):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x, labels):
        x = F.relu(self.norm(self.fc1(x)))
        return F.cross_entropy(self.fc3(F.relu(self.fc2(x))), labels)


class RMSNorm(nn.Module):
    def __init__(self, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, seq: int):
        super().__init__()
        self.heads, self.dim = heads, hidden // heads
        self.q = nn.Linear(hidden, hidden, bias=False)
        self.k = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.o = nn.Linear(hidden, hidden, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, self.dim, 2).float() / self.dim))
        angles = torch.outer(torch.arange(seq).float(), inv)
        emb = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("causal", torch.ones(seq, seq, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = (p(x).reshape(b, s, self.heads, self.dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        cos, sin = self.cos[:s], self.sin[:s]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.dim)
        scores = scores.masked_fill(self.causal[:s, :s], float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(b, s, h))


class LlamaBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, seq: int, ffn: int):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(hidden), RMSNorm(hidden)
        self.attn = LlamaAttention(hidden, heads, seq)
        self.gate = nn.Linear(hidden, ffn, bias=False)
        self.up = nn.Linear(hidden, ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, vocab=64, hidden=32, heads=4, seq=8, ffn=48, layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([LlamaBlock(hidden, heads, seq, ffn) for _ in range(layers)])
        self.norm = RMSNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids, labels):
        x = self.tok(input_ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


class MhaClassifier(nn.Module):
    def __init__(self, inputs=16, hidden=32, heads=4, classes=8):
        super().__init__()
        self.embed = nn.Linear(inputs, hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x, labels):
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return F.cross_entropy(self.head(self.norm(h + a).mean(dim=1)), labels)


def make(name: str, batch: int, gen: torch.Generator):
    """(model, [(input name, tensor)], labels included) for one batch."""
    if name == "se_cnn":
        model = SeCnn()
        inputs = [("images", torch.randn(batch, 3, 16, 16, generator=gen)),
                  ("labels", torch.randint(0, 10, (batch,), generator=gen))]
    elif name == "gpt_tied":
        model = GptTied()
        inputs = [("input_ids", torch.randint(0, 64, (batch, 8), generator=gen)),
                  ("labels", torch.randint(0, 64, (batch, 8), generator=gen))]
    elif name == "mlp":
        model = Mlp()
        inputs = [("x", torch.randn(batch, 32, generator=gen)),
                  ("labels", torch.randint(0, 16, (batch,), generator=gen))]
    elif name == "llama":
        model = Llama()
        inputs = [("input_ids", torch.randint(0, 64, (batch, 8), generator=gen)),
                  ("labels", torch.randint(0, 64, (batch, 8), generator=gen))]
    elif name == "mha":
        model = MhaClassifier()
        inputs = [("x", torch.randn(batch, 6, 16, generator=gen)),
                  ("labels", torch.randint(0, 8, (batch,), generator=gen))]
    elif name in FAMILIES:
        # The project's own test-size families (scripts/models), for the sweep's edits of the
        # plans the repository's tests use.
        import generate
        module = generate.FAMILIES[name]
        cfg = generate.make_config(name, "test", {})
        model = module.make_model(cfg)
        inputs = list(module.example_inputs(cfg, batch, gen))
    else:
        raise SystemExit(f"unknown model {name}")
    return model, inputs


FAMILIES = ("gpt", "bert", "moe", "wresnet")
MODELS = ("se_cnn", "gpt_tied", "mlp", "llama", "mha", *FAMILIES)
